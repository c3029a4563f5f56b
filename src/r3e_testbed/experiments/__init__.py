"""The R3E harness: scenarios (data), fault and bad-input injection, measurement, the report.

Experiments reach the testbed only through its public interfaces (Airflow's REST API, S3,
Ansible playbooks against an inventory), so they run against real hosts as well.
"""

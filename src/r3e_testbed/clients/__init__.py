"""Clients of the stack's public interfaces: Airflow's REST API (the official client inside) and
the one way to wait for something (tenacity, one monotonic clock)."""

"""The ML pipeline as plain functions: generate, load, validate, preprocess, train, evaluate.

The data is the public Kaggle "Temperature Readings: IoT Devices" file (``IOT-temp.csv``) or
synthetic data in its exact layout (:mod:`.generate`). Nothing here imports Airflow, Ansible or
podman: the DAGs call these functions, not the other way round.
"""

"""r3e-testbed: measure the R3E properties of ML pipelines on Apache Airflow."""

__version__ = "0.1.0"

"""What the IoT DAGs share: their assets, robust default arguments, and the object stores.

Not a DAG file (listed in .airflowignore); the DAG files import it from the DAG folder.
Settings come from the R3E_* environment of every Airflow component (see
r3e_testbed.pipeline.config), written by the Airflow role from the playbooks' wiring.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset

from r3e_testbed.pipeline.config import PipelineConfig
from r3e_testbed.storage import FsspecStore, ObjectStore

CONFIG = PipelineConfig.from_env()

#: Every new or changed object under a routed prefix of the data bucket (created by the event
#: bridge through the REST API from the object store's notifications).
DATA_CHANGES = Asset(name="iot_data_changes", uri=f"s3://{CONFIG.data_bucket}/")
#: A newly registered model version (extra: version).
MODEL_VERSIONS = Asset(name="iot_model_versions", uri=f"s3://{CONFIG.models_bucket}/iot/versions/")
#: The production pointer (extra: version).
PRODUCTION_MODEL = Asset(name="iot_production_model", uri=f"s3://{CONFIG.models_bucket}/iot/production.json")

#: Retries with exponential backoff (10 s, 20 s, 40 s, ... capped at 5 min) and a timeout on every
#: task: a lost worker or a slow object store delays a run instead of failing it, and a hung task
#: cannot hold a slot forever.
DEFAULT_ARGS = {
    "retries": 3,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=20),
}


def store(bucket: str) -> ObjectStore:
    """A bucket through Airflow's object storage and its connection (endpoint and keys live
    there, not in DAG code)."""
    from airflow.sdk import ObjectStoragePath

    return FsspecStore(ObjectStoragePath(f"s3://{CONFIG.conn_id}@{bucket}/").fs, bucket)

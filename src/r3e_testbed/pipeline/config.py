"""Where the pipeline's data lives and which data change starts which pipeline.

Read from the environment (``R3E_*``), which the Airflow role writes into every Airflow
component's environment file from the playbooks' wiring (``playbooks/group_vars``); the
defaults below are the testbed's values, for tests and local runs.

``R3E_DATA_ROUTES`` is a JSON object: object-key prefix in the data bucket -> DAG id. The same
table sets the object store's event filter, so the data listener only hears about these prefixes.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ROUTES: dict[str, str] = {"raw/": "iot_training", "forecast-requests/": "iot_batch_forecast"}

# Airflow's run ids allow these characters only.
_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.~:+-]")


@dataclass(frozen=True)
class PipelineConfig:
    """The object store connection, buckets and routes the DAGs use."""

    conn_id: str = "object_store"
    data_bucket: str = "iot-data"
    models_bucket: str = "models"
    routes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ROUTES))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineConfig:
        env = os.environ if environ is None else environ
        defaults = cls()
        routes: Any = defaults.routes
        if env.get("R3E_DATA_ROUTES"):
            try:
                routes = json.loads(env["R3E_DATA_ROUTES"])
            except json.JSONDecodeError as error:
                raise ValueError(f"R3E_DATA_ROUTES is not JSON: {error}") from error
        config = cls(
            conn_id=env.get("R3E_OBJECT_STORE_CONN_ID", defaults.conn_id),
            data_bucket=env.get("R3E_DATA_BUCKET", defaults.data_bucket),
            models_bucket=env.get("R3E_MODELS_BUCKET", defaults.models_bucket),
            routes=routes,
        )
        config.check()
        return config

    def check(self) -> None:
        for name in ("conn_id", "data_bucket", "models_bucket"):
            if not getattr(self, name):
                raise ValueError(f"pipeline setting {name} is empty")
        if not isinstance(self.routes, Mapping) or not self.routes:
            raise ValueError(
                f"R3E_DATA_ROUTES must be a non-empty object of prefix -> DAG id, got {self.routes!r}"
            )
        for prefix, dag_id in self.routes.items():
            if not isinstance(prefix, str) or not prefix.endswith("/") or prefix.startswith("/"):
                raise ValueError(f"route prefix {prefix!r} must be a relative key prefix ending in '/'")
            if not isinstance(dag_id, str) or not dag_id:
                raise ValueError(f"route {prefix!r} has no DAG id")
        prefixes = sorted(self.routes)
        for a, b in itertools.pairwise(prefixes):
            if b.startswith(a):
                raise ValueError(
                    f"route prefixes {a!r} and {b!r} overlap: one object would start two pipelines"
                )

    def uri(self, bucket: str, key: str = "") -> str:
        """An Airflow ObjectStoragePath URI on the connection: ``s3://<conn>@<bucket>/<key>``."""
        return f"s3://{self.conn_id}@{bucket}/{key}"


def route_event(extra: Mapping[str, Any], config: PipelineConfig) -> dict[str, Any] | None:
    """The DAG run an object event starts, or ``None`` when no route matches.

    ``extra`` is the asset event's extra: ``bucket``, ``key``, ``etag`` (and ``size``). Returns the
    TriggerDagRunOperator arguments ``trigger_dag_id``, ``trigger_run_id``, ``conf``. The run id is
    derived from key and ETag, so a repeated event cannot start a second run for the same content.
    """
    bucket, key, etag = extra.get("bucket"), extra.get("key"), extra.get("etag")
    if not (isinstance(bucket, str) and isinstance(key, str) and isinstance(etag, str) and key and etag):
        raise ValueError(f"object event lacks bucket, key or etag: {dict(extra)!r}")
    if bucket != config.data_bucket or key.endswith("/"):
        return None
    for prefix, dag_id in config.routes.items():
        if key.startswith(prefix):
            return {
                "trigger_dag_id": dag_id,
                "trigger_run_id": run_id_for(key, etag),
                "conf": {"bucket": bucket, "key": key, "etag": etag, "size": extra.get("size")},
            }
    return None


def run_id_for(key: str, etag: str) -> str:
    """``upload__<key>__<etag>`` with characters Airflow refuses in run ids replaced (max 250)."""
    run_id = _RUN_ID_UNSAFE.sub("_", f"upload__{key}__{etag.strip(chr(34))}")
    return run_id[:250]

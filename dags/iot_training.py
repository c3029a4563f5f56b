"""Train the IoT temperature models on one raw object and register them as a new model version.

    fetch -> validate (quarantine) -> preprocess -> train [In, Out] -> evaluate -> register

Started by data_listener for every new or changed object under raw/ (conf: bucket, key, etag),
or by hand with the same params. Tasks hand on object-store keys and small values; the daily
series and the models travel through the object-storage XCom backend.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException
from iot_common import CONFIG, DEFAULT_ARGS, MODEL_VERSIONS, store

from r3e_testbed.pipeline.schema import LOCATIONS

log = logging.getLogger(__name__)


@dag(
    dag_id="iot_training",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    params={
        "bucket": Param(CONFIG.data_bucket, type="string"),
        "key": Param("raw/IOT-temp.csv", type="string", description="raw CSV in the data bucket"),
        "etag": Param("", type="string", description="the ETag the event saw (empty: current)"),
    },
    tags=["iot", "training"],
)
def iot_training():
    @task
    def fetch(params=None) -> dict:
        """Pin the object version to train on: its current ETag and size."""
        bucket, key = params["bucket"], params["key"]
        etag = store(bucket).etag(key)
        if etag is None:
            raise AirflowFailException(f"s3://{bucket}/{key} does not exist")
        if params["etag"] and params["etag"].strip('"') != etag:
            log.warning("s3://%s/%s changed since the event (%s -> %s)", bucket, key, params["etag"], etag)
        return {"bucket": bucket, "key": key, "etag": etag}

    @task
    def validate(source: dict) -> dict:
        """Stream the object in chunks; clean rows to Parquet parts, bad rows to quarantine."""
        from r3e_testbed.pipeline.ingest import ingest_object, output_prefix
        from r3e_testbed.pipeline.load import DataFileError

        data = store(source["bucket"])
        try:
            report = ingest_object(data, source["key"], data, output_prefix(source["key"], source["etag"]))
        except DataFileError as error:  # the file itself is unusable: retrying cannot help
            raise AirflowFailException(f"{error} (report: quarantine/.../report.json)") from error
        log.info("validated %s: %s", source["key"], {k: report[k] for k in ("rows", "clean_rows")})
        return {**source, **report}

    @task
    def preprocess(validated: dict):
        """Daily mean per series, gaps interpolated, read part by part."""
        from r3e_testbed.pipeline.ingest import daily_from_parts

        return daily_from_parts(store(validated["bucket"]), validated["clean_parts"])

    @task(queue="compute")
    def train(series: str, daily) -> dict:
        """Prophet and the baseline on one series: holdout scores, then both refitted on all days."""
        from r3e_testbed.pipeline.evaluate import evaluate_series
        from r3e_testbed.pipeline.preprocess import prophet_frame
        from r3e_testbed.pipeline.train import MODEL_KINDS, model_to_bytes, train_model

        frame = prophet_frame(daily, series)
        evaluation = evaluate_series(frame)
        models = {kind: model_to_bytes(kind, train_model(kind, frame)).decode() for kind in MODEL_KINDS}
        return {"series": series, "evaluation": evaluation, "models": models}

    @task
    def evaluate(trained) -> dict:
        """Holdout MAE/RMSE/MAPE of Prophet, the baseline and the naive floor, per series."""
        evaluations = {item["series"]: item["evaluation"] for item in trained}
        for series, result in sorted(evaluations.items()):
            for kind in ("prophet", "baseline", "naive"):
                scores = result[kind]
                log.info(
                    "%s %-8s MAE %.3f  RMSE %.3f  MAPE %.2f %%",
                    series, kind, scores["mae"], scores["rmse"], scores["mape"],
                )  # fmt: skip
            log.info("%s selected: %s (holdout %s)", series, result["selected"], result["holdout"])
        return evaluations

    @task(outlets=[MODEL_VERSIONS])
    def register(evaluations: dict, trained, validated: dict, outlet_events=None) -> dict:
        """Write models, metrics, data fingerprint and code version as a new model version."""
        from r3e_testbed.pipeline.registry import code_version, register_version, version_id

        code = code_version()
        version = version_id(validated["sha256"], code)
        models = {item["series"]: {k: v.encode() for k, v in item["models"].items()} for item in trained}
        data = {k: validated[k] for k in ("bucket", "key", "etag", "sha256", "bytes", "rows", "clean_rows")}
        data["quarantined_rows"] = validated["quarantined_rows"]
        _manifest, created = register_version(
            store(CONFIG.models_bucket),
            version,
            models,
            {"code_version": code, "data": data, "series": evaluations},
        )
        log.info("model version %s %s", version, "registered" if created else "already registered")
        outlet_events[MODEL_VERSIONS].extra = {"version": version, "created": created}
        return {"version": version, "created": created}

    source = fetch()
    validated = validate(source)
    daily = preprocess(validated)
    trained = train.partial(daily=daily).expand(series=list(LOCATIONS))
    register(evaluate(trained), trained, validated)


iot_training()

"""Pipeline settings from the environment and the data listener's routing (pipeline.config)."""

from __future__ import annotations

import json

import pytest

from r3e_testbed.pipeline.config import DEFAULT_ROUTES, PipelineConfig, route_event, run_id_for

EVENT = {"bucket": "iot-data", "key": "raw/IOT-temp.csv", "etag": '"0123abcd"', "size": 10}


def test_defaults_without_environment():
    config = PipelineConfig.from_env({})
    assert (config.conn_id, config.data_bucket, config.models_bucket) == (
        "object_store",
        "iot-data",
        "models",
    )
    assert dict(config.routes) == DEFAULT_ROUTES


def test_environment_overrides():
    config = PipelineConfig.from_env(
        {"R3E_DATA_BUCKET": "d", "R3E_MODELS_BUCKET": "m", "R3E_DATA_ROUTES": json.dumps({"in/": "x"})}
    )
    assert (config.data_bucket, config.models_bucket, dict(config.routes)) == ("d", "m", {"in/": "x"})
    assert config.uri("d", "in/a.csv") == "s3://object_store@d/in/a.csv"


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ("{", "not JSON"),
        ("[]", "non-empty object"),
        ("{}", "non-empty object"),
        ('{"raw": "x"}', "ending in '/'"),
        ('{"/raw/": "x"}', "relative"),
        ('{"raw/": ""}', "no DAG id"),
        ('{"raw/": "x", "raw/new/": "y"}', "overlap"),
    ],
)
def test_bad_routes_are_refused_with_the_reason(routes, message):
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_env({"R3E_DATA_ROUTES": routes})


def test_empty_bucket_is_refused():
    with pytest.raises(ValueError, match="data_bucket is empty"):
        PipelineConfig.from_env({"R3E_DATA_BUCKET": ""})


def test_raw_data_starts_training_and_requests_start_the_batch_forecast():
    config = PipelineConfig()
    training = route_event(EVENT, config)
    assert training["trigger_dag_id"] == "iot_training"
    assert training["conf"] == {
        "bucket": "iot-data",
        "key": "raw/IOT-temp.csv",
        "etag": '"0123abcd"',
        "size": 10,
    }
    request = route_event({**EVENT, "key": "forecast-requests/r.csv"}, config)
    assert request["trigger_dag_id"] == "iot_batch_forecast"


@pytest.mark.parametrize(
    "change", [{"key": "clean/raw/a.csv/e/part-0.parquet"}, {"bucket": "models"}, {"key": "raw/folder/"}]
)
def test_unrouted_objects_start_nothing(change):
    assert route_event({**EVENT, **change}, PipelineConfig()) is None


@pytest.mark.parametrize("missing", ["bucket", "key", "etag"])
def test_an_event_without_its_identity_is_refused(missing):
    event = {k: v for k, v in EVENT.items() if k != missing}
    with pytest.raises(ValueError, match="lacks bucket, key or etag"):
        route_event(event, PipelineConfig())


def test_run_id_is_the_same_for_the_same_content_and_safe_for_airflow():
    assert run_id_for("raw/IOT temp (1).csv", '"ab12"') == "upload__raw_IOT_temp__1_.csv__ab12"
    assert run_id_for("raw/a.csv", "e1") != run_id_for("raw/a.csv", "e2")
    assert len(run_id_for("raw/" + "x" * 400, "e")) == 250

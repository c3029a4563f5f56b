"""iot_deploy's switch_production has retries: a retry after a try that got its pointer PUT through
(a worker lost right after it, say) must not promote a second time."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.pipeline import registry
from r3e_testbed.pipeline.train import model_to_bytes, train_baseline
from r3e_testbed.storage import DirectoryStore

SERIES = ("In", "Out")


def baseline_bytes(level: float) -> bytes:
    days = pd.date_range("2018-07-28", periods=40, freq="D")
    frame = pd.DataFrame({"ds": days, "y": level + 0.01 * np.arange(40)})
    return model_to_bytes("baseline", train_baseline(frame))


@pytest.fixture
def models(tmp_path, monkeypatch, dags, pipeline_env) -> DirectoryStore:
    """A local models bucket in place of the object store, for the deploy DAG's tasks."""
    models_store = DirectoryStore(tmp_path / "models")

    def store(bucket: str) -> DirectoryStore:
        assert bucket == pipeline_env["R3E_MODELS_BUCKET"]
        return models_store

    switch = dags["iot_deploy"].get_task("switch_production").python_callable
    monkeypatch.setitem(switch.__globals__, "store", store)
    return models_store


def register(models: DirectoryStore, version: str, level: float) -> dict:
    """A registered version with its forecasts published: a candidate that won."""
    registry.register_version(
        models,
        version,
        {series: {"baseline": baseline_bytes(level + i)} for i, series in enumerate(SERIES)},
        {"series": {series: {"selected": "baseline"} for series in SERIES}},
    )
    forecasts = {series: registry.forecast_key(version, series) for series in SERIES}
    for key in forecasts.values():
        models.put(key, b"ds,yhat\n")
    return {"version": version, "selected": dict.fromkeys(SERIES, "baseline"), "forecasts": forecasts}


def put_in_production(models: DirectoryStore, candidate: dict) -> None:
    manifest = registry.read_manifest(models, candidate["version"])
    registry.promote(models, manifest, candidate["selected"], candidate["forecasts"], {})


def switch_production(dags, candidate: dict, production_version: str | None) -> tuple[dict, dict]:
    """One try of the task, as the worker runs it; returns its result and its asset event's extra."""
    task = dags["iot_deploy"].get_task("switch_production")
    (production_asset,) = task.outlets
    outlet_events = {production_asset: SimpleNamespace(extra=None)}
    decision = {"promote": True, "reasons": [], "production_version": production_version}
    result = task.python_callable(candidate, candidate["forecasts"], decision, outlet_events=outlet_events)
    return result, outlet_events[production_asset].extra


def test_a_retry_after_the_pointer_was_written_promotes_nothing_twice(dags, models):
    put_in_production(models, register(models, "v-1", 30.0))
    candidate = register(models, "v-2", 40.0)

    first, first_event = switch_production(dags, candidate, "v-1")
    pointer = models.get(registry.PRODUCTION_KEY)
    records = models.keys("iot/promotions/")
    retried, retried_event = switch_production(dags, candidate, "v-1")

    assert first == retried == {"version": "v-2", "previous": "v-1"}
    assert first_event == retried_event == {"version": "v-2"}
    assert models.get(registry.PRODUCTION_KEY) == pointer
    assert models.keys("iot/promotions/") == records
    assert len(records) == 2  # v-1's and v-2's


def test_the_first_try_switches_production(dags, models):
    put_in_production(models, register(models, "v-1", 30.0))
    candidate = register(models, "v-2", 40.0)

    switch_production(dags, candidate, "v-1")

    assert registry.read_production(models)["version"] == "v-2"
    assert len(models.keys("iot/promotions/")) == 2

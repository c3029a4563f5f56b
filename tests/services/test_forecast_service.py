"""The forecast service (r3e_testbed.services.forecast) on uvicorn over HTTP, with a folder store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from r3e_testbed.pipeline.generate import generate_readings
from r3e_testbed.pipeline.preprocess import daily_series, prophet_frame
from r3e_testbed.pipeline.registry import PRODUCTION_KEY, model_key, promote, register_version
from r3e_testbed.pipeline.schema import LOCATIONS
from r3e_testbed.pipeline.train import forecast_model, model_from_bytes, model_to_bytes, train_model
from r3e_testbed.pipeline.validate import validate_chunk
from r3e_testbed.services import forecast as service_module
from r3e_testbed.services.forecast import create_app, load_config
from r3e_testbed.services.skeleton import ConfigError
from r3e_testbed.storage import DirectoryStore, FsspecStore

POLL = 0.05
DEADLINE = 10.0
START = "2018-07-28"


# --- data and registry -------------------------------------------------------------------------


def training_frames(days: int, seed: int) -> dict[str, pd.DataFrame]:
    daily = daily_series(validate_chunk(generate_readings(0.05, seed=seed, start=START, days=days)).clean)
    return {series: prophet_frame(daily, series) for series in LOCATIONS}


@pytest.fixture(scope="module")
def frames() -> dict[str, dict[str, pd.DataFrame]]:
    # Two trainings of different lengths: their forecasts start on different days.
    return {"first": training_frames(40, seed=1), "second": training_frames(55, seed=2)}


@pytest.fixture(scope="module")
def baselines(frames) -> dict[str, dict[str, bytes]]:
    """name -> series -> baseline model bytes."""

    def fit(frame: pd.DataFrame) -> bytes:
        return model_to_bytes("baseline", train_model("baseline", frame))

    return {name: {series: fit(frame) for series, frame in by.items()} for name, by in frames.items()}


def register(store: DirectoryStore, version: str, models: dict[str, dict[str, bytes]]) -> dict[str, Any]:
    manifest, created = register_version(store, version, models, {"code_version": "test", "data": {}})
    assert created
    return manifest


def promote_kinds(store: DirectoryStore, manifest: dict[str, Any], kinds: dict[str, str]) -> dict[str, Any]:
    return promote(store, manifest, kinds, {}, {"promote": True, "reasons": []})


def publish(store: DirectoryStore, version: str, models: dict[str, bytes]) -> dict[str, Any]:
    """Register ``version`` with one baseline per series and promote it; returns the pointer."""
    manifest = register(store, version, {series: {"baseline": data} for series, data in models.items()})
    return promote_kinds(store, manifest, dict.fromkeys(models, "baseline"))


# --- the service -------------------------------------------------------------------------------


class CountingStore(DirectoryStore):
    """A folder store that counts the checks of the production pointer (the service's polls)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.etag_calls = 0

    def etag(self, key: str) -> str | None:
        self.etag_calls += 1
        return super().etag(key)


@pytest.fixture
def store(tmp_path) -> CountingStore:
    return CountingStore(tmp_path / "models")


class RunningService:
    """The app on uvicorn in a thread, on a free port of the loopback (lifespan and all)."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="forecast-test-server", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "uvicorn to start")
        assert self.server.started, "uvicorn did not start"
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def serve(store) -> Iterator[Callable[..., RunningService]]:
    started: list[RunningService] = []

    def start(**options: Any) -> RunningService:
        service = RunningService(create_app(store, poll_seconds=POLL, **options))
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def request(url: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            assert error.headers["Content-Type"] == "application/json"
            return error.code, json.load(error)


def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}")


def health(service: RunningService) -> dict[str, Any]:
    status, document = request(f"{service.url}/health")
    assert status == 200
    return document


def wait_for_version(service: RunningService, version: str) -> dict[str, Any]:
    return wait_for(
        lambda: (doc := health(service))["version"] == version and doc["status"] == "ok" and doc,
        f"version {version} to be served",
    )


def expected_start(model_bytes: bytes) -> str:
    model = model_from_bytes("baseline", model_bytes)
    return (pd.Timestamp(model.last_day) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")


# --- tests -------------------------------------------------------------------------------------


def test_no_model_yet_answers_503_and_health_says_no_model(serve, store):
    service = serve()
    wait_for(lambda: store.etag_calls > 0 and health(service)["last_check"], "the first check")

    document = health(service)
    assert document["status"] == "no_model"
    assert document["version"] is None and document["last_error"] is None
    assert request(f"{service.url}/forecast?series=In&days=3") == (503, {"error": "no production model yet"})
    assert request(f"{service.url}/forecast")[0] == 503


def test_serves_the_promoted_version_from_the_day_after_training(serve, store, baselines):
    pointer = publish(store, "v-first", baselines["first"])
    service = serve()
    document = wait_for_version(service, "v-first")
    assert document["promoted_at"] == pointer["promoted_at"]
    assert document["series"] == {"In": "baseline", "Out": "baseline"}

    status, body = request(f"{service.url}/forecast?series=In&days=7")
    assert status == 200
    start = expected_start(baselines["first"]["In"])
    assert body["version"] == "v-first" and body["series"] == "In" and body["kind"] == "baseline"
    assert body["start"] == start and body["days"] == 7
    assert [row["ds"] for row in body["forecast"]] == [
        day.strftime("%Y-%m-%d") for day in pd.date_range(start, periods=7, freq="D")
    ]

    status, both = request(f"{service.url}/forecast")
    assert status == 200
    assert both["version"] == "v-first" and both["days"] == 30
    assert sorted(both["forecasts"]) == ["In", "Out"]
    for series in LOCATIONS:
        assert both["forecasts"][series]["start"] == expected_start(baselines["first"][series])
        assert len(both["forecasts"][series]["forecast"]) == 30


def test_forecast_values_are_the_models_forecast(serve, store, baselines):
    publish(store, "v-first", baselines["first"])
    service = serve()
    wait_for_version(service, "v-first")
    for series in LOCATIONS:
        expected = forecast_model("baseline", model_from_bytes("baseline", baselines["first"][series]), 12)
        status, body = request(f"{service.url}/forecast?series={series}&days=12")
        assert status == 200
        assert [row["yhat"] for row in body["forecast"]] == expected["yhat"].tolist()
        assert [row["ds"] for row in body["forecast"]] == expected["ds"].dt.strftime("%Y-%m-%d").tolist()


def test_a_new_promotion_is_served_without_restart(serve, store, baselines):
    publish(store, "v-first", baselines["first"])
    service = serve()
    wait_for_version(service, "v-first")
    first = request(f"{service.url}/forecast?series=Out&days=5")[1]

    pointer = publish(store, "v-second", baselines["second"])
    document = wait_for_version(service, "v-second")
    assert document["promoted_at"] == pointer["promoted_at"]
    second = request(f"{service.url}/forecast?series=Out&days=5")[1]
    assert second["version"] == "v-second"
    assert second["start"] == expected_start(baselines["second"]["Out"]) != first["start"]


def test_requests_are_answered_while_a_promotion_loads(serve, store, baselines, monkeypatch):
    loads: list[str | None] = []
    second_load_started, release = threading.Event(), threading.Event()
    real_load = service_module.load_model_set

    def slow_load(st: DirectoryStore, etag: str | None) -> Any:
        loads.append(etag)
        if len(loads) > 1:  # hold the second load until the test has made its requests
            second_load_started.set()
            release.wait(DEADLINE)
        return real_load(st, etag)

    monkeypatch.setattr(service_module, "load_model_set", slow_load)
    publish(store, "v-first", baselines["first"])
    service = serve()
    wait_for_version(service, "v-first")

    publish(store, "v-second", baselines["second"])
    assert second_load_started.wait(DEADLINE)
    try:
        started = time.monotonic()
        status, body = request(f"{service.url}/forecast?series=In&days=4")
        assert status == 200 and body["version"] == "v-first"
        assert health(service)["version"] == "v-first"
        assert time.monotonic() - started < 2
    finally:
        release.set()
    wait_for_version(service, "v-second")


def test_corrupt_model_in_a_promotion_keeps_the_old_version(serve, store, baselines, monkeypatch):
    loads: list[str | None] = []
    real_load = service_module.load_model_set
    monkeypatch.setattr(
        service_module, "load_model_set", lambda st, etag: loads.append(etag) or real_load(st, etag)
    )
    publish(store, "v-first", baselines["first"])
    service = serve()
    wait_for_version(service, "v-first")

    manifest = register(store, "v-second", {s: {"baseline": d} for s, d in baselines["second"].items()})
    corrupt = model_key("v-second", "In", "baseline")
    store.put(corrupt, baselines["first"]["In"])  # a valid model, but not the bytes the manifest recorded
    promote_kinds(store, manifest, {"In": "baseline", "Out": "baseline"})

    document = wait_for(lambda: (doc := health(service))["status"] == "degraded" and doc, "degraded")
    assert document["version"] == "v-first"
    assert corrupt in document["last_error"]["message"]
    assert "SHA-256" in document["last_error"]["message"]
    status, body = request(f"{service.url}/forecast?series=In&days=3")
    assert status == 200 and body["version"] == "v-first"

    # The failed pointer is not reloaded on every poll (retry_seconds is 60 s by default).
    attempts, polls = len(loads), store.etag_calls
    wait_for(lambda: store.etag_calls >= polls + 5, "five more polls")
    assert len(loads) == attempts == 2
    assert health(service)["status"] == "degraded"


def test_a_failed_promotion_is_retried_and_recovers(serve, store, baselines):
    publish(store, "v-first", baselines["first"])
    service = serve(retry_seconds=0.3)
    wait_for_version(service, "v-first")

    manifest = register(store, "v-second", {s: {"baseline": d} for s, d in baselines["second"].items()})
    broken = model_key("v-second", "Out", "baseline")
    store.put(broken, b"not a model")
    promote_kinds(store, manifest, {"In": "baseline", "Out": "baseline"})
    wait_for(lambda: health(service)["status"] == "degraded", "degraded")

    store.put(broken, baselines["second"]["Out"])  # repaired: the pointer itself does not change
    document = wait_for_version(service, "v-second")
    assert document["last_error"] is None


def test_corrupt_pointer_keeps_the_old_version(serve, store, baselines):
    publish(store, "v-first", baselines["first"])
    service = serve()
    wait_for_version(service, "v-first")

    store.put(PRODUCTION_KEY, b"{ half a document")
    document = wait_for(lambda: (doc := health(service))["status"] == "degraded" and doc, "degraded")
    assert PRODUCTION_KEY in document["last_error"]["message"]
    assert document["last_error"]["at"]
    assert request(f"{service.url}/forecast?series=Out&days=2")[1]["version"] == "v-first"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("series=Nowhere", "'Nowhere'"),
        ("series=in", "'in'"),
        ("days=abc", "'days'"),
        ("days=0", "'days'"),
        ("days=-3", "'days'"),
        ("days=2.5", "'days'"),
        ("days=101", "'days'"),
        ("days=", "'days'"),
        ("days=3&days=4", "'days'"),
        ("series=In&colour=red", "colour"),
    ],
)
def test_bad_parameters_answer_400_naming_them(serve, store, baselines, query, named):
    publish(store, "v-first", baselines["first"])
    service = serve(max_days=100)
    wait_for_version(service, "v-first")
    status, body = request(f"{service.url}/forecast?{query}")
    assert status == 400
    assert named in body["error"]


def test_the_largest_allowed_days_is_served(serve, store, baselines):
    publish(store, "v-first", baselines["first"])
    service = serve(max_days=100)
    wait_for_version(service, "v-first")
    status, body = request(f"{service.url}/forecast?series=In&days=100")
    assert status == 200 and len(body["forecast"]) == 100


def test_unknown_paths_and_methods(serve):
    service = serve()
    status, body = request(f"{service.url}/forecasts")
    assert status == 404 and "/forecasts" in body["error"]
    status, body = request(f"{service.url}/forecast", method="POST")
    assert status == 405 and "POST" in body["error"]


def test_forecasts_are_cached_per_version_series_and_days(serve, store, baselines, monkeypatch):
    calls: list[tuple[str, int]] = []

    def counting(kind: str, model: Any, days: int) -> pd.DataFrame:
        calls.append((kind, days))
        return forecast_model(kind, model, days)

    monkeypatch.setattr(service_module, "forecast_model", counting)
    publish(store, "v-first", baselines["first"])
    service = serve()
    wait_for_version(service, "v-first")
    before = len(calls)  # the check of each new model forecasts one day

    first = request(f"{service.url}/forecast?series=In&days=9")
    assert request(f"{service.url}/forecast?series=In&days=9") == first
    assert len(calls) == before + 1
    request(f"{service.url}/forecast?series=In&days=10")
    request(f"{service.url}/forecast?series=Out&days=9")
    assert len(calls) == before + 3

    publish(store, "v-second", baselines["second"])
    wait_for_version(service, "v-second")
    before = len(calls)
    assert request(f"{service.url}/forecast?series=In&days=9")[1]["version"] == "v-second"
    assert len(calls) == before + 1


def test_prophet_model_is_served(serve, store, frames, baselines):
    prophet = train_model("prophet", frames["first"]["In"])
    data = model_to_bytes("prophet", prophet)
    models = {"In": {"prophet": data}, "Out": {"baseline": baselines["first"]["Out"]}}
    manifest = register(store, "v-prophet", models)
    promote_kinds(store, manifest, {"In": "prophet", "Out": "baseline"})
    service = serve()
    wait_for_version(service, "v-prophet")

    status, body = request(f"{service.url}/forecast?series=In&days=6")
    assert status == 200 and body["kind"] == "prophet"
    expected = forecast_model("prophet", model_from_bytes("prophet", data), 6)
    assert [row["yhat"] for row in body["forecast"]] == pytest.approx(expected["yhat"].tolist(), rel=1e-9)
    assert body["forecast"][0]["ds"] == expected["ds"].iloc[0].strftime("%Y-%m-%d")


# --- metrics and the API's description ---------------------------------------------------------


def scrape(service: RunningService) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics parsed: (sample name, labels) -> value."""
    with urllib.request.urlopen(f"{service.url}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**pairs: str) -> frozenset[tuple[str, str]]:
    return frozenset(pairs.items())


def http_requests(route: str, status: int, method: str = "GET") -> tuple[str, frozenset[tuple[str, str]]]:
    key = labels(service="forecast-service", method=method, route=route, status=str(status))
    return "r3e_http_requests_total", key


def test_metrics_before_the_first_promotion(serve, store):
    service = serve()
    wait_for(lambda: health(service)["last_check"], "the first check")
    samples = scrape(service)
    status = "r3e_forecast_status"
    assert samples[(status, labels(r3e_forecast_status="no_model"))] == 1
    assert samples[(status, labels(r3e_forecast_status="ok"))] == 0
    assert not [name for name, _ in samples if name == "r3e_forecast_model_info"]
    assert samples[("r3e_forecast_model_loads_total", labels())] == 0
    assert samples[("r3e_forecast_last_check_timestamp_seconds", labels())] == pytest.approx(
        time.time(), abs=60
    )


def test_metrics_count_requests_loads_and_forecasts(serve, store, baselines):
    pointer = publish(store, "v-first", baselines["first"])
    service = serve()
    wait_for_version(service, "v-first")
    assert request(f"{service.url}/forecast?series=In&days=5")[0] == 200  # computed
    assert request(f"{service.url}/forecast?series=In&days=5")[0] == 200  # cached
    assert request(f"{service.url}/forecast?days=0")[0] == 400
    assert request(f"{service.url}/nowhere")[0] == 404

    samples = scrape(service)
    version = labels(version="v-first", promoted_at=pointer["promoted_at"])
    assert samples[("r3e_forecast_model_info", version)] == 1
    assert samples[("r3e_forecast_series_info", labels(series="In", kind="baseline"))] == 1
    assert samples[("r3e_forecast_series_info", labels(series="Out", kind="baseline"))] == 1
    assert samples[("r3e_forecast_status", labels(r3e_forecast_status="ok"))] == 1
    assert samples[("r3e_forecast_model_loads_total", labels())] == 1
    assert samples[("r3e_forecast_model_load_failures_total", labels())] == 0
    assert samples[("r3e_forecast_cache_lookups_total", labels(result="miss"))] == 1
    assert samples[("r3e_forecast_cache_lookups_total", labels(result="hit"))] == 1
    assert samples[("r3e_forecast_compute_seconds_count", labels(kind="baseline"))] == 1
    assert samples[http_requests("/forecast", 200)] == 2
    assert samples[http_requests("/forecast", 400)] == 1
    assert samples[http_requests("unmatched", 404)] == 1
    assert samples[http_requests("/health", 200)] >= 1
    assert (
        samples[
            (
                "r3e_http_request_seconds_count",
                labels(service="forecast-service", method="GET", route="/forecast"),
            )
        ]
        == 3
    )
    assert not [key for key in samples if ("route", "/metrics") in key[1]]

    # A promotion that cannot be loaded: counted, and the status turns degraded.
    manifest = register(store, "v-second", {s: {"baseline": d} for s, d in baselines["second"].items()})
    store.put(model_key("v-second", "In", "baseline"), b"not a model")
    promote_kinds(store, manifest, {"In": "baseline", "Out": "baseline"})
    wait_for(lambda: health(service)["status"] == "degraded", "degraded")
    samples = scrape(service)
    assert samples[("r3e_forecast_model_load_failures_total", labels())] == 1
    assert samples[("r3e_forecast_status", labels(r3e_forecast_status="degraded"))] == 1
    assert samples[("r3e_forecast_model_info", version)] == 1  # still serving v-first


def test_a_failing_forecast_answers_500_and_is_counted(serve, store, baselines, monkeypatch):
    publish(store, "v-first", baselines["first"])
    service = serve()
    wait_for_version(service, "v-first")

    def broken(kind: str, model: Any, days: int) -> pd.DataFrame:
        raise RuntimeError("the model broke")

    monkeypatch.setattr(service_module, "forecast_model", broken)
    status, body = request(f"{service.url}/forecast?series=In&days=3")
    assert status == 500 and "service log" in body["error"] and "broke" not in body["error"]
    assert health(service)["status"] == "ok"
    assert scrape(service)[http_requests("/forecast", 500)] == 1


def test_openapi_documents_the_forecast_parameters(serve):
    service = serve(max_days=100)
    status, document = request(f"{service.url}/openapi.json")
    assert status == 200
    operation = document["paths"]["/forecast"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert set(parameters) == {"series", "days"}
    assert {parameter["in"] for parameter in parameters.values()} == {"query"}
    days = parameters["days"]["schema"]
    assert (days["type"], days["minimum"], days["maximum"], days["default"]) == ("integer", 1, 100, 30)
    assert {"type": "string"} in parameters["series"]["schema"]["anyOf"]
    # Bad parameters are answered 400 (not FastAPI's 422), and the documents are described.
    assert {"200", "400", "503"} == set(operation["responses"])
    schemas = document["components"]["schemas"]
    assert {"SeriesForecast", "AllForecasts", "Health", "ErrorResponse"} <= set(schemas)
    assert schemas["Health"]["properties"]["status"]["enum"] == ["ok", "no_model", "degraded"]
    assert "/health" in document["paths"] and "/metrics" not in document["paths"]

    with urllib.request.urlopen(f"{service.url}/docs", timeout=10) as page:
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "/openapi.json" in page.read().decode()


# --- configuration and the process -------------------------------------------------------------

S3_SETTINGS = {
    "R3E_S3_ENDPOINT_URL": "http://storage:8333",
    "R3E_S3_ACCESS_KEY": "access",
    "R3E_S3_SECRET_KEY": "secret",
    "R3E_MODELS_BUCKET": "models",
}


def test_config_defaults_and_stores(tmp_path):
    local = load_config({"R3E_MODELS_DIR": str(tmp_path)})
    assert (local.bind, local.port, local.poll_seconds, local.max_days) == ("127.0.0.1", 8090, 5.0, 365)
    assert isinstance(local.store, DirectoryStore) and local.store.folder == tmp_path

    remote = load_config({**S3_SETTINGS, "R3E_FORECAST_PORT": "9000", "R3E_FORECAST_POLL_SECONDS": "0.5"})
    assert isinstance(remote.store, FsspecStore) and remote.store.root == "models"
    assert (remote.port, remote.poll_seconds) == (9000, 0.5)
    assert "secret" not in remote.store_description


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "R3E_MODELS_BUCKET"),
        ({**S3_SETTINGS, "R3E_S3_SECRET_KEY": ""}, "R3E_S3_SECRET_KEY"),
        ({**S3_SETTINGS, "R3E_S3_ENDPOINT_URL": "storage:8333"}, "R3E_S3_ENDPOINT_URL"),
        ({**S3_SETTINGS, "R3E_FORECAST_PORT": "http"}, "R3E_FORECAST_PORT"),
        ({**S3_SETTINGS, "R3E_FORECAST_PORT": "70000"}, "R3E_FORECAST_PORT"),
        ({**S3_SETTINGS, "R3E_FORECAST_POLL_SECONDS": "0"}, "R3E_FORECAST_POLL_SECONDS"),
        ({**S3_SETTINGS, "R3E_FORECAST_MAX_DAYS": "-1"}, "R3E_FORECAST_MAX_DAYS"),
        ({**S3_SETTINGS, "R3E_FORECAST_PORT": "8_0"}, "R3E_FORECAST_PORT"),
        ({**S3_SETTINGS, "R3E_FORECAST_POLL_SECONDS": "nan"}, "R3E_FORECAST_POLL_SECONDS"),
        ({**S3_SETTINGS, "R3E_FORECAST_POLL_SECONDS": "3601"}, "R3E_FORECAST_POLL_SECONDS"),
        ({**S3_SETTINGS, "R3E_FORECAST_MAX_DAYS": "5.0"}, "R3E_FORECAST_MAX_DAYS"),
        ({**S3_SETTINGS, "R3E_MODELS_BUCKET": " "}, "R3E_MODELS_BUCKET"),
        ({"R3E_MODELS_DIR": "/nonexistent/models"}, "R3E_MODELS_DIR"),
        ({**S3_SETTINGS, "R3E_MODELS_DIR": "."}, "R3E_MODELS_DIR"),  # an existing folder, and S3
    ],
)
def test_bad_config_names_the_variable(environ, named, capsys):
    with pytest.raises(ConfigError, match=named):
        load_config(environ)
    assert service_module.main(environ) == 2
    assert named in capsys.readouterr().err


def test_empty_settings_take_the_defaults(tmp_path):
    settings = load_config(
        {
            "R3E_MODELS_DIR": f" {tmp_path} ",
            "R3E_FORECAST_BIND": "",
            "R3E_FORECAST_PORT": " ",
            "R3E_FORECAST_POLL_SECONDS": "",
            "R3E_FORECAST_MAX_DAYS": "",
            "R3E_S3_ENDPOINT_URL": "",
        }
    )
    assert (settings.bind, settings.port, settings.poll_seconds, settings.max_days) == (
        "127.0.0.1",
        8090,
        5.0,
        365,
    )
    assert settings.store.folder == tmp_path


def test_the_s3_secret_may_come_from_a_file(tmp_path):
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text("from-the-file\n")
    environ = {k: v for k, v in S3_SETTINGS.items() if k != "R3E_S3_SECRET_KEY"}
    settings = load_config({**environ, "R3E_S3_SECRET_KEY_FILE": str(secret_file)})
    assert settings.s3_secret_key.get_secret_value() == "from-the-file"
    assert "from-the-file" not in repr(settings)
    with pytest.raises(ConfigError, match="R3E_S3_SECRET_KEY_FILE"):
        load_config({**environ, "R3E_S3_SECRET_KEY_FILE": str(tmp_path / "missing")})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_module_runs_and_stops_cleanly_on_sigterm(tmp_path, baselines):
    publish(DirectoryStore(tmp_path), "v-first", baselines["first"])
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("R3E_")},
        "R3E_MODELS_DIR": str(tmp_path),
        "R3E_FORECAST_PORT": str(port),
        "R3E_FORECAST_POLL_SECONDS": "0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "r3e_testbed.services.forecast"],
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answered() -> dict[str, Any] | None:
            try:
                document = request(f"http://127.0.0.1:{port}/health")[1]
            except (urllib.error.URLError, ConnectionError):
                return None
            return document if document["version"] == "v-first" else None

        wait_for(answered, "the service to answer")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
    assert f"listening on http://127.0.0.1:{port}" in stderr
    assert "loaded production v-first" in stderr
    assert "stopped" in stderr


def test_the_module_exits_2_on_a_configuration_error(tmp_path):
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("R3E_")},
        "R3E_MODELS_DIR": str(tmp_path),
        "R3E_FORECAST_PORT": "eighty",
    }
    finished = subprocess.run(
        [sys.executable, "-m", "r3e_testbed.services.forecast"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The unit's RestartPreventExitStatus=2: systemd does not restart what cannot start.
    assert finished.returncode == 2
    assert "R3E_FORECAST_PORT='eighty'" in finished.stderr.splitlines()[-1]

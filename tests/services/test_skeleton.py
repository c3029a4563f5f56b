"""The shared service skeleton (r3e_testbed.services.skeleton): settings, metrics, serving, stopping."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import Field, SecretStr, field_validator, model_validator
from uvicorn.config import STARTUP_FAILURE

from r3e_testbed.services import skeleton

DEADLINE = 20.0


class ExampleSettings(skeleton.ServiceSettings):
    secret_files: ClassVar[tuple[str, ...]] = ("EXAMPLE_TOKEN",)

    name: str = Field(validation_alias="EXAMPLE_NAME")
    port: int = Field(8000, ge=1, le=65535, validation_alias="EXAMPLE_PORT")
    hosts: list[str] = Field(["localhost"], validation_alias="EXAMPLE_HOSTS")
    token: SecretStr | None = Field(None, min_length=8, validation_alias="EXAMPLE_TOKEN")
    low: int = Field(0, validation_alias="EXAMPLE_LOW")
    high: int = Field(10, validation_alias="EXAMPLE_HIGH")

    _split = field_validator("hosts", mode="before")(lambda cls, v: skeleton.split_commas(v))

    @model_validator(mode="after")
    def _ordered(self) -> ExampleSettings:
        if self.low > self.high:
            raise ValueError("EXAMPLE_LOW must not exceed EXAMPLE_HIGH")
        return self


# --- settings -------------------------------------------------------------------------------------


def test_settings_from_the_given_environment():
    settings = skeleton.load_settings(ExampleSettings, {"EXAMPLE_NAME": "x", "EXAMPLE_HOSTS": " a, b ,,c "})
    assert (settings.name, settings.port, settings.hosts) == ("x", 8000, ["a", "b", "c"])


def test_a_given_environment_is_the_whole_environment(monkeypatch):
    monkeypatch.setenv("EXAMPLE_NAME", "from-the-process")
    monkeypatch.setenv("EXAMPLE_PORT", "9999")
    assert skeleton.load_settings(ExampleSettings, {"EXAMPLE_NAME": "given"}).port == 8000
    with pytest.raises(skeleton.ConfigError, match="EXAMPLE_NAME is not set"):
        skeleton.load_settings(ExampleSettings, {})
    # Without one, the process's environment is read.
    settings = skeleton.load_settings(ExampleSettings)
    assert (settings.name, settings.port) == ("from-the-process", 9999)


def test_errors_name_every_bad_variable_and_what_it_was():
    with pytest.raises(skeleton.ConfigError) as raised:
        skeleton.load_settings(ExampleSettings, {"EXAMPLE_PORT": "0", "EXAMPLE_LOW": "ten"})
    message = str(raised.value)
    assert "EXAMPLE_NAME is not set" in message
    assert "EXAMPLE_PORT='0': Input should be greater than or equal to 1" in message
    assert "EXAMPLE_LOW='ten'" in message


def test_a_check_across_settings_gives_its_own_message():
    with pytest.raises(skeleton.ConfigError, match=r"^EXAMPLE_LOW must not exceed EXAMPLE_HIGH$"):
        skeleton.load_settings(ExampleSettings, {"EXAMPLE_NAME": "x", "EXAMPLE_LOW": "11"})


def test_a_secret_is_never_echoed(tmp_path):
    with pytest.raises(skeleton.ConfigError) as raised:
        skeleton.load_settings(ExampleSettings, {"EXAMPLE_NAME": "x", "EXAMPLE_TOKEN": "short"})
    assert "EXAMPLE_TOKEN" in str(raised.value) and "short" not in str(raised.value)


def test_a_secret_from_a_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("  a-long-token  \n")
    settings = skeleton.load_settings(
        ExampleSettings, {"EXAMPLE_NAME": "x", "EXAMPLE_TOKEN_FILE": str(secret)}
    )
    assert settings.token.get_secret_value() == "a-long-token"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"EXAMPLE_TOKEN": "a-long-token"}, "set EXAMPLE_TOKEN or EXAMPLE_TOKEN_FILE, not both"),
        ({"EXAMPLE_TOKEN_FILE": "/nonexistent/token"}, "EXAMPLE_TOKEN_FILE: cannot read /nonexistent/token"),
    ],
)
def test_bad_secret_files(tmp_path, extra, problem):
    environ = {"EXAMPLE_NAME": "x", "EXAMPLE_TOKEN_FILE": str(tmp_path / "token"), **extra}
    (tmp_path / "token").write_text("a-long-token")
    with pytest.raises(skeleton.ConfigError, match=problem):
        skeleton.load_settings(ExampleSettings, environ)


def test_an_empty_secret_file(tmp_path):
    (tmp_path / "token").write_text("\n")
    environ = {"EXAMPLE_NAME": "x", "EXAMPLE_TOKEN_FILE": str(tmp_path / "token")}
    with pytest.raises(skeleton.ConfigError, match="is empty"):
        skeleton.load_settings(ExampleSettings, environ)


# --- metrics --------------------------------------------------------------------------------------


def instrumented_app() -> tuple[FastAPI, CollectorRegistry]:
    app = FastAPI()
    registry = CollectorRegistry()
    skeleton.instrument(app, registry, "example")

    @app.get("/items/{item}")
    def item(item: int) -> dict[str, int]:
        return {"item": item}

    @app.get("/broken")
    def broken() -> None:
        raise RuntimeError("broken on purpose")

    return app, registry


def get_all(app: FastAPI, *paths: str) -> list[httpx.Response]:
    async def fetch() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(fetch())


def samples_of(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_total(route: str, status: int) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"service": "example", "method": "GET", "route": route, "status": str(status)}
    return "r3e_http_requests_total", frozenset(labels.items())


def test_requests_are_counted_by_route_template_and_status():
    app, _ = instrumented_app()
    *_, metrics = get_all(app, "/items/1", "/items/2", "/items/x", "/nowhere", "/broken", "/metrics")
    assert metrics.status_code == 200  # answered, not redirected to /metrics/
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = samples_of(metrics.text)
    assert samples[requests_total("/items/{item}", 200)] == 2
    assert samples[requests_total("/items/{item}", 422)] == 1
    assert samples[requests_total("unmatched", 404)] == 1
    assert samples[requests_total("/broken", 500)] == 1  # an exception is counted too
    latency = {"service": "example", "method": "GET", "route": "/items/{item}"}
    assert samples[("r3e_http_request_seconds_count", frozenset(latency.items()))] == 3


def test_metrics_are_not_counted_and_not_in_the_openapi_document():
    app, _ = instrumented_app()
    _, second = get_all(app, "/metrics", "/metrics")
    assert not [key for key in samples_of(second.text) if ("route", "/metrics") in key[1]]
    assert "/metrics" not in app.openapi()["paths"]


def test_the_services_own_metrics_are_on_the_same_page():
    from prometheus_client import Gauge

    app, registry = instrumented_app()
    Gauge("example_queue_length", "Things waiting.", registry=registry).set(7)
    (metrics,) = get_all(app, "/metrics")
    assert samples_of(metrics.text)[("example_queue_length", frozenset())] == 7


# --- serving and stopping -------------------------------------------------------------------------

SERVICE_SCRIPT = textwrap.dedent(
    """
    import contextlib, sys
    from fastapi import FastAPI
    from r3e_testbed.services import skeleton

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        print("lifespan ended", file=sys.stderr, flush=True)

    def build():
        if sys.argv[2] == "bad":
            raise skeleton.ConfigError("EXAMPLE_PORT='bad': not a port")
        app = FastAPI(lifespan=lifespan)

        @app.get("/health")
        def health():
            return {"status": "ok"}

        return app, sys.argv[1], int(sys.argv[2])

    sys.exit(skeleton.run("example-service", build))
    """
)


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def ipv6_loopback() -> bool:
    try:
        free_port("::1")
    except OSError:
        return False
    return True


def start_service(tmp_path: Path, host: str, port: str) -> subprocess.Popen[str]:
    script = tmp_path / "service.py"
    script.write_text(SERVICE_SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), host, port],
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("EXAMPLE_")},
    )


@pytest.mark.parametrize(
    ("host", "stop"),
    [
        ("127.0.0.1", signal.SIGTERM),
        ("127.0.0.1", signal.SIGINT),
        pytest.param(
            "::1",
            signal.SIGTERM,
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback"),
        ),
    ],
)
def test_a_stop_signal_ends_the_service_with_exit_status_0(tmp_path, host, stop):
    port = free_port(host)
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    process = start_service(tmp_path, host, str(port))
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                assert httpx.get(f"{url}/health", timeout=5).json() == {"status": "ok"}
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the service did not answer"
                time.sleep(0.05)
        process.send_signal(stop)
        # Not killed by the signal (-15) nor ended by KeyboardInterrupt (1): a clean exit.
        assert process.wait(timeout=DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
    assert f"listening on {url}" in stderr
    assert "lifespan ended" in stderr
    assert "Traceback" not in stderr


def test_a_port_in_use_exits_with_uvicorns_startup_failure(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = start_service(tmp_path, "127.0.0.1", str(taken.getsockname()[1]))
        _, stderr = process.communicate(timeout=DEADLINE)
    assert process.returncode == STARTUP_FAILURE == 3
    assert "listening on" not in stderr


def test_a_configuration_error_exits_2_with_one_line(tmp_path):
    process = start_service(tmp_path, "127.0.0.1", "bad")
    _, stderr = process.communicate(timeout=DEADLINE)
    assert process.returncode == skeleton.CONFIG_ERROR_EXIT == 2
    assert stderr.strip() == "example-service: configuration error: EXAMPLE_PORT='bad': not a port"


def test_serve_in_process_restores_the_signal_handlers_it_found():
    def mine(signum: int, frame: Any) -> None:
        raise AssertionError("not expected")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            app, _ = instrumented_app()
            assert skeleton.serve(app, "127.0.0.1", taken.getsockname()[1]) == STARTUP_FAILURE
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)

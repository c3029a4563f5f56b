"""What every long-running service of the testbed shares: settings, logging, metrics, the server.

A service is a FastAPI app run by uvicorn (``serve``), configured by a pydantic-settings model
(``load_settings``: a wrong or missing variable stops it at start with a message naming the
variable, exit status 2), logging to stderr (the journal), with ``/metrics`` in Prometheus' text
format (``instrument``: requests by route and status, their latency, plus the service's own
metrics on the same registry). uvicorn turns SIGTERM and SIGINT into a graceful shutdown: the
app's lifespan stops the service's background work, then the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The signals that stop a service gracefully (systemd stops with SIGTERM, a terminal with SIGINT).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Exit status of a configuration error: systemd units say RestartPreventExitStatus=2.
CONFIG_ERROR_EXIT = 2

S = TypeVar("S", bound="ServiceSettings")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class ServiceSettings(BaseSettings):
    """Base of every service's settings, read from the environment. Each field names its variable
    as its ``validation_alias`` (so errors name the variable); no .env file; other variables are
    ignored. Fields listed in ``secret_files`` may instead come from a file named by
    ``<VARIABLE>_FILE`` (a secret kept out of the environment file)."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    secret_files: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: Any, **_other_sources: Any
    ) -> Any:
        # Only what load_settings hands over: the variables of the environment it was given (so
        # a test's environment is the whole environment), no .env file, no secrets folder.
        return (init_settings,)


def split_commas(value: Any) -> Any:
    """For a ``mode="before"`` validator: ``"a, b"`` -> ``["a", "b"]`` (settings are not JSON here)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _secrets_from_files(cls: type[ServiceSettings], env: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for name in cls.secret_files:
        file_name = env.get(f"{name}_FILE", "")
        if not file_name:
            continue
        if env.get(name):
            raise ConfigError(f"set {name} or {name}_FILE, not both")
        try:
            value = Path(file_name).read_text().strip()
        except OSError as error:
            raise ConfigError(f"{name}_FILE: cannot read {file_name}: {error.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE: {file_name} is empty")
        found[name] = value
    return found


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """The settings from the process's environment, or from ``environ`` when given (tests);
    ConfigError names every bad or missing variable."""
    env = os.environ if environ is None else environ
    variables = {info.validation_alias for info in cls.model_fields.values()}
    given = {name: value for name, value in env.items() if name in variables} | _secrets_from_files(cls, env)
    try:
        return cls(**given)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"])
            message = problem["msg"].removeprefix("Value error, ")
            if not name:  # a check across settings: its message names them
                problems.append(message)
            elif problem["type"] == "missing":
                problems.append(f"{name} is not set")
            elif name in cls.secret_files:  # never echo a secret
                problems.append(f"{name}: {message}")
            else:
                problems.append(f"{name}={problem['input']!r}: {message}")
        raise ConfigError("; ".join(problems)) from None


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def instrument(app: Any, registry: Any, service: str) -> None:
    """``/metrics`` on ``registry`` and per-request metrics for every route of ``app``."""
    from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
    from starlette.responses import Response

    requests = Counter(
        "r3e_http_requests",
        "HTTP requests answered, by route template and status.",
        ["service", "method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "r3e_http_request_seconds",
        "Seconds to answer an HTTP request, by route template.",
        ["service", "method", "route"],
        registry=registry,
    )

    def record(request: Any, status: int, started: float) -> None:
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        if template != "/metrics":
            latency.labels(service, request.method, template).observe(time.perf_counter() - started)
            requests.labels(service, request.method, template, str(status)).inc()

    @app.middleware("http")
    async def measure(request: Any, call_next: Callable[[Any], Any]) -> Any:
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # answered 500 by the server error handler further out
            record(request, 500, started)
            raise
        record(request, response.status_code, started)
        return response

    # A plain route, not a mount: a mount answers /metrics with a redirect to /metrics/. A sync
    # endpoint, so collectors that read a file or a database run off the event loop.
    def metrics(_request: Any) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)


def service_app(
    *,
    service: str,
    title: str,
    summary: str,
    registry: Any,
    start: Callable[[], None],
    stop: Callable[[], None],
) -> Any:
    """A FastAPI app whose lifespan runs the service's background work (``start`` when the server
    is up, ``stop`` on shutdown), instrumented on ``registry``."""
    from fastapi import FastAPI

    log = logging.getLogger(f"r3e_testbed.{service.replace('-', '_')}")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        start()
        yield
        stop()
        log.info("stopped")

    app = FastAPI(title=title, summary=summary, lifespan=lifespan)
    instrument(app, registry, service)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app: Any, host: str, port: int, *, on_listening: Callable[[str], None] | None = None) -> int:
    """Run ``app`` until SIGTERM or SIGINT; 0 after a clean stop, else uvicorn's status (3 when the
    port cannot be bound or the app's startup fails: systemd restarts it, unlike 2)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if on_listening is not None:
        original = server.startup

        async def startup(sockets: Any = None) -> None:
            await original(sockets)
            if server.started:
                bound = server.servers[0].sockets[0].getsockname()
                on_listening(_url(bound[0], bound[1]))

        server.startup = startup  # type: ignore[method-assign]
    # After a graceful stop uvicorn raises the signal again for the handler it found installed;
    # with Python's defaults that kills the process by SIGTERM (or raises KeyboardInterrupt)
    # instead of exiting 0. Its own handler, installed first, makes that second delivery a no-op
    # and also covers a signal that arrives before uvicorn installs its handlers.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in STOP_SIGNALS} if in_main_thread else {}
    try:
        server.run()
    except SystemExit as stop:  # uvicorn's way out of a failed startup
        return int(stop.code or 1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


def run(name: str, build: Callable[[], tuple[Any, str, int]]) -> int:
    """The ``main`` of a service: logging, ``build()`` (settings and app; ConfigError exits 2
    with the one line systemd's status shows), then ``serve``."""
    configure_logging()
    log = logging.getLogger(f"r3e_testbed.{name.replace('-', '_')}")
    try:
        app, host, port = build()
    except ConfigError as error:
        print(f"{name}: configuration error: {error}", file=sys.stderr)
        return CONFIG_ERROR_EXIT
    return serve(app, host, port, on_listening=lambda url: log.info("listening on %s", url))

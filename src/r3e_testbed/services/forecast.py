"""The forecast service: answers forecasts over HTTP from the production model in the object store.

Run it with ``python -m r3e_testbed.services.forecast``. It serves JSON:

``GET /health``
    Always 200: ``{"status", "version", "promoted_at", "loaded_at", "last_check", "last_error",
    "series"}``. ``status`` is ``ok``, ``no_model`` (nothing promoted or loaded yet) or
    ``degraded`` (a model is served, but the last check or load failed: ``last_error`` says why).
``GET /forecast?series=In&days=30``
    ``{"version", "series", "kind", "start", "days", "forecast": [{"ds": "YYYY-MM-DD", "yhat"}]}``
    for the ``days`` days after the model's last training day. Without ``series``:
    ``{"version", "days", "forecasts": {series: <the document above>}}`` for every series.
    ``days`` defaults to 30. 400 names a bad or unknown parameter; 503 before the first promotion.

A background thread polls the ETag of the production pointer (``registry.PRODUCTION_KEY``). When it
changes, the pointer and every model it names are loaded and checked off to the side, then swapped
in with one assignment: requests in flight finish on the set they started with, and loading never
blocks a request. If the new pointer or a model cannot be loaded, the service keeps serving the
models it has, reports ``degraded`` with the error, and tries the same pointer again only after
``RETRY_SECONDS``. Forecasts are cached per (version, series, days).

Configuration (environment variables):

``R3E_FORECAST_BIND``          address to listen on (default ``127.0.0.1``)
``R3E_FORECAST_PORT``          TCP port (default ``8090``)
``R3E_FORECAST_POLL_SECONDS``  seconds between checks of the production pointer (default ``5``)
``R3E_FORECAST_MAX_DAYS``      largest ``days`` a request may ask for (default ``365``)

and the model store, one of:

``R3E_MODELS_DIR``             a local folder laid out like the models bucket (local use, tests)
``R3E_S3_ENDPOINT_URL``, ``R3E_S3_ACCESS_KEY``, ``R3E_S3_SECRET_KEY``, ``R3E_MODELS_BUCKET``
                               the S3 models bucket; ``R3E_S3_REGION`` is optional (``us-east-1``)

A missing or invalid setting stops the service at start with a message naming the variable.
Logs (one line per model load or failure) go to stderr, which systemd hands to the journal.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from r3e_testbed.pipeline.registry import (
    PRODUCTION_KEY,
    DirectoryStore,
    ObjectStore,
    RegistryError,
    production_models,
    read_production,
    s3_store,
)
from r3e_testbed.pipeline.train import forecast_model, model_last_day

log = logging.getLogger("r3e_testbed.forecast_service")

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_POLL_SECONDS = 5.0
DEFAULT_MAX_DAYS = 365
DEFAULT_DAYS = 30
DEFAULT_S3_REGION = "us-east-1"
#: A pointer that failed to load is tried again after this long, not on every poll.
RETRY_SECONDS = 60.0
#: Cached forecasts kept, least recently used dropped first.
CACHE_ENTRIES = 512

_DIGITS = re.compile(r"[0-9]{1,9}")

# Prophet's predict seeds and restores numpy's global random state, which two threads at once would
# mix up: every forecast in this process (requests and the check of a new model) holds this lock.
_FORECAST_LOCK = threading.Lock()


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- configuration -------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Config:
    bind: str
    port: int
    poll_seconds: float
    max_days: int
    store: ObjectStore
    store_description: str


def _int_setting(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise ConfigError(f"{name} must be an integer from {low} to {high}; got {raw!r}")
    return int(raw)


def _seconds_setting(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # also refuses nan
        raise ConfigError(f"{name} must be a number of seconds above 0 and at most 3600; got {raw!r}")
    return value


def _store_from(environ: Mapping[str, str]) -> tuple[ObjectStore, str]:
    directory = environ.get("R3E_MODELS_DIR", "").strip()
    s3_names = ("R3E_S3_ENDPOINT_URL", "R3E_S3_ACCESS_KEY", "R3E_S3_SECRET_KEY", "R3E_MODELS_BUCKET")
    s3 = {name: environ.get(name, "").strip() for name in s3_names}
    if directory:
        if any(s3.values()):
            given = ", ".join(name for name, value in s3.items() if value)
            raise ConfigError(f"R3E_MODELS_DIR is set together with {given}: set either the folder or S3")
        if not Path(directory).is_dir():
            raise ConfigError(f"R3E_MODELS_DIR={directory!r} is not a directory")
        return DirectoryStore(directory), f"directory {directory}"
    missing = [name for name, value in s3.items() if not value]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set: the S3 models bucket needs {', '.join(s3_names)} "
            "(or set R3E_MODELS_DIR to serve from a local folder)"
        )
    endpoint = s3["R3E_S3_ENDPOINT_URL"]
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"R3E_S3_ENDPOINT_URL must be an http:// or https:// URL; got {endpoint!r}")
    store = s3_store(
        s3["R3E_MODELS_BUCKET"],
        endpoint_url=endpoint,
        access_key=s3["R3E_S3_ACCESS_KEY"],
        secret_key=s3["R3E_S3_SECRET_KEY"],
        region=environ.get("R3E_S3_REGION", "").strip() or DEFAULT_S3_REGION,
    )
    return store, f"s3 bucket {s3['R3E_MODELS_BUCKET']} at {endpoint}"


def load_config(environ: Mapping[str, str]) -> Config:
    """The service's settings from ``environ``; ``ConfigError`` naming the first bad variable."""
    bind = environ.get("R3E_FORECAST_BIND", "").strip() or DEFAULT_BIND
    port = _int_setting(environ, "R3E_FORECAST_PORT", DEFAULT_PORT, 1, 65535)
    poll_seconds = _seconds_setting(environ, "R3E_FORECAST_POLL_SECONDS", DEFAULT_POLL_SECONDS)
    max_days = _int_setting(environ, "R3E_FORECAST_MAX_DAYS", DEFAULT_MAX_DAYS, 1, 100_000)
    store, description = _store_from(environ)
    return Config(bind, port, poll_seconds, max_days, store, description)


# --- the production models -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSet:
    """The models of one production pointer, loaded and checked; never changed once built."""

    version: str
    promoted_at: str | None
    loaded_at: str
    etag: str | None
    #: series -> (kind, model, first forecast day)
    series: Mapping[str, tuple[str, Any, dt.date]]


def load_model_set(store: ObjectStore, etag: str | None) -> ModelSet | None:
    """The production models now in ``store`` (``None`` if nothing is promoted); raises on failure."""
    pointer = read_production(store)
    if pointer is None:
        return None
    version = pointer.get("version")
    if not isinstance(version, str) or not version:
        raise RegistryError(f"{PRODUCTION_KEY} names no version")
    entries = pointer.get("series")
    if not isinstance(entries, Mapping) or not entries:
        raise RegistryError(f"{PRODUCTION_KEY} of {version} names no series")
    for name, entry in entries.items():
        if not isinstance(entry, Mapping) or not {"kind", "key", "sha256"} <= entry.keys():
            raise RegistryError(f"{PRODUCTION_KEY} of {version}: series {name!r} lacks kind, key or sha256")
    series = {}
    for name, (kind, model) in production_models(store, pointer).items():
        # A model that cannot forecast must not replace one that can.
        with _FORECAST_LOCK:
            forecast_model(kind, model, 1)
        start = (model_last_day(kind, model) + dt.timedelta(days=1)).date()
        series[name] = (kind, model, start)
    return ModelSet(version, pointer.get("promoted_at"), _utc_now(), etag, series)


class ModelHolder:
    """The served :class:`ModelSet`, replaced by a background thread when production changes."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._current: ModelSet | None = None
        self._last_check: str | None = None
        self._last_error: dict[str, str] | None = None
        self._failed_etag: str | None = None
        self._failed_message = ""
        self._failed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ModelSet | None:
        with self._lock:
            return self._current

    def status(self) -> dict[str, Any]:
        with self._lock:
            current, last_check, last_error = self._current, self._last_check, self._last_error
        state = "no_model" if current is None else "degraded" if last_error else "ok"
        return {
            "status": state,
            "version": current.version if current else None,
            "promoted_at": current.promoted_at if current else None,
            "loaded_at": current.loaded_at if current else None,
            "last_check": last_check,
            "last_error": dict(last_error) if last_error else None,
            "series": {name: kind for name, (kind, _, _) in current.series.items()} if current else {},
        }

    def _fail(self, message: str, etag: str | None = None, *, load: bool = False) -> None:
        with self._lock:
            repeated = self._last_error is not None and self._last_error["message"] == message
            self._last_error = {"message": message, "at": _utc_now()}
            current = self._current
        if etag is not None:
            self._failed_etag, self._failed_message, self._failed_at = etag, message, time.monotonic()
        # Loads are retried at most every retry_seconds, so each is logged; a store that stays
        # unreachable is logged once, not on every poll.
        if load or not repeated:
            serving = f"still serving {current.version}" if current else "no model served"
            log.warning("%s; %s", message, serving)

    def _succeed(self, loaded: ModelSet | None = None) -> None:
        with self._lock:
            recovered = self._last_error is not None
            if loaded is not None:
                self._current = loaded
            self._last_error = None
        self._failed_etag = None
        if recovered and loaded is None:
            current = self.current
            serving = f"serving {current.version}" if current else "nothing promoted yet"
            log.info("%s readable again; %s", PRODUCTION_KEY, serving)

    def check_once(self) -> None:
        """One poll: load the production models if the pointer changed. Never raises."""
        with self._lock:
            self._last_check = _utc_now()
            current = self._current
        try:
            etag = self.store.etag(PRODUCTION_KEY)
        except Exception as error:
            self._fail(f"cannot check {PRODUCTION_KEY}: {type(error).__name__}: {error}")
            return
        if current is not None and etag == current.etag:
            self._succeed()
            return
        if etag is None:
            if current is None:
                self._succeed()
            else:
                self._fail(f"{PRODUCTION_KEY} has disappeared")
            return
        if etag == self._failed_etag and time.monotonic() - self._failed_at < self.retry_seconds:
            # Not yet time to retry; the pointer's load error stands (a store outage in between
            # may have replaced it).
            with self._lock:
                if self._last_error is None or self._last_error["message"] != self._failed_message:
                    self._last_error = {"message": self._failed_message, "at": _utc_now()}
            return
        try:
            loaded = load_model_set(self.store, etag)
        except Exception as error:
            detail = str(error) if isinstance(error, RegistryError) else f"{type(error).__name__}: {error}"
            self._fail(f"cannot load the production models: {detail}", etag, load=True)
            return
        if loaded is None:  # the pointer vanished between the two reads
            self._succeed()
            return
        self._succeed(loaded)
        kinds = ", ".join(f"{name}: {kind}" for name, (kind, _, _) in sorted(loaded.series.items()))
        log.info("loaded production %s (%s), promoted at %s", loaded.version, kinds, loaded.promoted_at)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception:  # a bug here must not end the polling: requests would go stale
                log.exception("checking %s failed", PRODUCTION_KEY)
            self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="production-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


# --- forecasts -----------------------------------------------------------------------------------


class ForecastCache:
    """Forecast rows per (version, series, days); computes each at most once while it is cached."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._cached: OrderedDict[tuple[str, str, int], list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def _lookup(self, key: tuple[str, str, int]) -> list[dict[str, Any]] | None:
        with self._lock:
            rows = self._cached.get(key)
            if rows is not None:
                self._cached.move_to_end(key)
            return rows

    def rows(self, version: str, series: str, kind: str, model: Any, days: int) -> list[dict[str, Any]]:
        key = (version, series, days)
        rows = self._lookup(key)
        if rows is not None:
            return rows
        # Under the lock a repeated request waits for the first one's result instead of computing it.
        with _FORECAST_LOCK:
            rows = self._lookup(key)
            if rows is not None:
                return rows
            frame = forecast_model(kind, model, days)
            rows = [
                {"ds": day.strftime("%Y-%m-%d"), "yhat": float(value)}
                for day, value in zip(frame["ds"], frame["yhat"], strict=True)
            ]
            with self._lock:
                self._cached[key] = rows
                while len(self._cached) > self.entries:
                    self._cached.popitem(last=False)
        return rows


# --- HTTP ----------------------------------------------------------------------------------------


class BadRequest(ValueError):
    """A request parameter is missing, unknown or invalid; the message names it."""


class ForecastServer(ThreadingHTTPServer):
    """The HTTP server; request handlers reach the holder and the cache through it."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], holder: ModelHolder, *, max_days: int = DEFAULT_MAX_DAYS
    ) -> None:
        self.holder = holder
        self.cache = ForecastCache()
        self.max_days = max_days
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ForecastHandler)


def _one_value(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise BadRequest(f"parameter {name!r} is given {len(values)} times")
    return values[0]


class ForecastHandler(BaseHTTPRequestHandler):
    server: ForecastServer
    server_version = "r3e-forecast/1"

    def do_GET(self) -> None:
        try:
            url = urlsplit(self.path)
            if url.path == "/health":
                self._send(HTTPStatus.OK, self.server.holder.status())
            elif url.path == "/forecast":
                self._forecast(url.query)
            else:
                message = f"unknown path {url.path!r}; try /forecast or /health"
                self._send(HTTPStatus.NOT_FOUND, {"error": message})
        except BadRequest as error:
            self._send(HTTPStatus.BAD_REQUEST, {"error": str(error)})
        except ConnectionError:  # the client went away
            pass
        except Exception:
            log.exception("request %s failed", self.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the service log"})

    def _refuse_method(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"method {self.command} not allowed; use GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method

    def _forecast(self, query_string: str) -> None:
        try:
            query = parse_qs(query_string, keep_blank_values=True, strict_parsing=bool(query_string))
        except ValueError as error:
            raise BadRequest(f"malformed query string: {error}") from None
        unknown = sorted(set(query) - {"series", "days"})
        if unknown:
            raise BadRequest(f"unknown parameter(s) {unknown}; expected series, days")
        days_text = _one_value(query, "days")
        days = DEFAULT_DAYS if days_text is None else self._days(days_text)
        wanted = _one_value(query, "series")
        current = self.server.holder.current  # one model set for the whole request
        if current is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no production model yet"})
            return
        if wanted is None:
            forecasts = {name: self._document(current, name, days) for name in sorted(current.series)}
            self._send(HTTPStatus.OK, {"version": current.version, "days": days, "forecasts": forecasts})
            return
        if wanted not in current.series:
            raise BadRequest(f"unknown series {wanted!r}; expected one of {sorted(current.series)}")
        self._send(HTTPStatus.OK, self._document(current, wanted, days))

    def _days(self, text: str) -> int:
        maximum = self.server.max_days
        if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= maximum:
            raise BadRequest(f"parameter 'days' must be an integer from 1 to {maximum}; got {text!r}")
        return int(text)

    def _document(self, current: ModelSet, name: str, days: int) -> dict[str, Any]:
        kind, model, start = current.series[name]
        return {
            "version": current.version,
            "series": name,
            "kind": kind,
            "start": start.isoformat(),
            "days": days,
            "forecast": self.server.cache.rows(current.version, name, kind, model, days),
        }

    def _send(self, status: HTTPStatus, document: Mapping[str, Any]) -> None:
        body = json.dumps(document, allow_nan=False).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, message_format: str, *args: Any) -> None:
        # Access lines only at debug level: the journal keeps the model loads and failures.
        log.debug("%s %s", self.address_string(), message_format % args)


# --- the service ---------------------------------------------------------------------------------


class ForecastService:
    """The poller and the HTTP server together: ``start``/``shutdown`` or ``serve_forever``."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        bind: str = DEFAULT_BIND,
        port: int = DEFAULT_PORT,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        max_days: int = DEFAULT_MAX_DAYS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.holder = ModelHolder(store, poll_seconds=poll_seconds, retry_seconds=retry_seconds)
        self.server = ForecastServer((bind, port), self.holder, max_days=max_days)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` is called from another thread."""
        self.holder.start()
        try:
            # A short select timeout so that shutdown() returns quickly (its default is 0.5 s).
            self.server.serve_forever(poll_interval=0.1)
        finally:
            self.holder.stop()
            self.server.server_close()

    def start(self) -> None:
        """Serve from a background thread."""
        self._thread = threading.Thread(target=self.serve_forever, name="forecast-http", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop what :meth:`start` started."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(10)
            self._thread = None


def main(environ: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load_config(os.environ if environ is None else environ)
    except ConfigError as error:
        # Straight to stderr: the one line systemd's status shows must say what to fix.
        print(f"forecast service: configuration error: {error}", file=sys.stderr)
        return 2
    try:
        service = ForecastService(
            config.store,
            bind=config.bind,
            port=config.port,
            poll_seconds=config.poll_seconds,
            max_days=config.max_days,
        )
    except OSError as error:
        log.error("cannot listen on %s:%s: %s", config.bind, config.port, error)
        return 1

    def stop(signum: int, _frame: Any) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        # shutdown() waits for serve_forever, which runs in this (the main) thread: call it elsewhere.
        threading.Thread(target=service.server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "serving forecasts on %s from %s; checking %s every %g s",
        service.url,
        config.store_description,
        PRODUCTION_KEY,
        config.poll_seconds,
    )
    service.serve_forever()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

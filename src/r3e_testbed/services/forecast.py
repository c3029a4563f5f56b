"""The forecast service: answers forecasts over HTTP from the production model in the object store.

Run it with ``python -m r3e_testbed.services.forecast`` (a FastAPI app on uvicorn, through
:mod:`r3e_testbed.services.skeleton`). It serves JSON:

``GET /health``
    Always 200: ``{"status", "version", "promoted_at", "loaded_at", "last_check", "last_error",
    "series"}``. ``status`` is ``ok``, ``no_model`` (nothing promoted or loaded yet) or
    ``degraded`` (a model is served, but the last check or load failed: ``last_error`` says why).
``GET /forecast?series=In&days=30``
    ``{"version", "series", "kind", "start", "days", "forecast": [{"ds": "YYYY-MM-DD", "yhat"}]}``
    for the ``days`` days after the model's last training day. Without ``series``:
    ``{"version", "days", "forecasts": {series: <the document above>}}`` for every series.
    ``days`` defaults to 30. 400 names a bad, repeated or unknown parameter; 503 before the first
    promotion.

and also ``GET /metrics`` (Prometheus' text format: requests, model loads, forecasts computed),
``GET /docs`` and ``GET /openapi.json`` (the API described, parameters and documents).

A background thread polls the ETag of the production pointer (``registry.PRODUCTION_KEY``). When it
changes, the pointer and every model it names are loaded and checked off to the side, then swapped
in with one assignment: requests in flight finish on the set they started with, and loading never
blocks a request. If the new pointer or a model cannot be loaded, the service keeps serving the
models it has, reports ``degraded`` with the error, and tries the same pointer again only after
``RETRY_SECONDS``. Forecasts are cached per (version, series, days). The thread starts and stops
with the app (its lifespan); uvicorn turns SIGTERM into a graceful stop, exit status 0.

Configuration (environment variables; an empty one takes the default):

``R3E_FORECAST_BIND``          address to listen on (default ``127.0.0.1``)
``R3E_FORECAST_PORT``          TCP port (default ``8090``)
``R3E_FORECAST_POLL_SECONDS``  seconds between checks of the production pointer (default ``5``)
``R3E_FORECAST_MAX_DAYS``      largest ``days`` a request may ask for (default ``365``)

and the model store, one of:

``R3E_MODELS_DIR``             a local folder laid out like the models bucket (local use, tests)
``R3E_S3_ENDPOINT_URL``, ``R3E_S3_ACCESS_KEY``, ``R3E_S3_SECRET_KEY``, ``R3E_MODELS_BUCKET``
                               the S3 models bucket; ``R3E_S3_REGION`` is optional (``us-east-1``);
                               ``R3E_S3_SECRET_KEY_FILE`` may name a file holding the secret instead

A missing or invalid setting stops the service at start (exit status 2) with a message naming the
variable. Logs (one line per model load or failure) go to stderr, which systemd hands to the journal.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at runtime,
# and those of /forecast use max_days, a variable of create_app.
import datetime as dt
import logging
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticUseDefault
from starlette.exceptions import HTTPException as StarletteHTTPException

from r3e_testbed.pipeline.registry import PRODUCTION_KEY, RegistryError, production_models, read_production
from r3e_testbed.pipeline.train import forecast_model, model_last_day
from r3e_testbed.services import skeleton
from r3e_testbed.storage import DirectoryStore, ObjectStore, s3_store

log = logging.getLogger("r3e_testbed.forecast_service")

SERVICE = "forecast-service"
DEFAULT_POLL_SECONDS = 5.0
DEFAULT_MAX_DAYS = 365
DEFAULT_DAYS = 30
#: A pointer that failed to load is tried again after this long, not on every poll.
RETRY_SECONDS = 60.0
#: Cached forecasts kept, least recently used dropped first.
CACHE_ENTRIES = 512
#: The query parameters of /forecast; anything else is refused, not silently ignored.
FORECAST_PARAMETERS = ("series", "days")

_DIGITS = re.compile(r"[0-9]{1,9}")

# Prophet's predict seeds and restores numpy's global random state, which two threads at once would
# mix up: every forecast in this process (requests and the check of a new model) holds this lock.
_FORECAST_LOCK = threading.Lock()


def _utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _whole_number(value: Any) -> Any:
    """Digits only: pydantic alone would also take ``5.0``, ``+5`` or ``5_0`` for an integer."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("must be a whole number (digits only)")
    return value


WholeNumber = BeforeValidator(_whole_number)


# --- configuration -------------------------------------------------------------------------------

_URL = r"^https?://"
_S3_VARIABLES = ("R3E_S3_ENDPOINT_URL", "R3E_S3_ACCESS_KEY", "R3E_S3_SECRET_KEY", "R3E_MODELS_BUCKET")


class ForecastSettings(skeleton.ServiceSettings):
    """The service's environment (``/etc/r3e/r3e-forecast.env`` on the testbed)."""

    secret_files: ClassVar[tuple[str, ...]] = ("R3E_S3_SECRET_KEY",)

    bind: str = Field("127.0.0.1", validation_alias="R3E_FORECAST_BIND")
    port: Annotated[int, WholeNumber] = Field(8090, ge=1, le=65535, validation_alias="R3E_FORECAST_PORT")
    poll_seconds: float = Field(
        DEFAULT_POLL_SECONDS, gt=0, le=3600, allow_inf_nan=False, validation_alias="R3E_FORECAST_POLL_SECONDS"
    )
    max_days: Annotated[int, WholeNumber] = Field(
        DEFAULT_MAX_DAYS, ge=1, le=100_000, validation_alias="R3E_FORECAST_MAX_DAYS"
    )

    models_dir: Path | None = Field(None, validation_alias="R3E_MODELS_DIR")
    s3_endpoint_url: str | None = Field(None, pattern=_URL, validation_alias="R3E_S3_ENDPOINT_URL")
    s3_access_key: str | None = Field(None, validation_alias="R3E_S3_ACCESS_KEY")
    s3_secret_key: SecretStr | None = Field(None, validation_alias="R3E_S3_SECRET_KEY")
    models_bucket: str | None = Field(None, validation_alias="R3E_MODELS_BUCKET")
    s3_region: str = Field("us-east-1", validation_alias="R3E_S3_REGION")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any) -> Any:
        # As systemd's environment files make it easy to write NAME= for "not set".
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise PydanticUseDefault()
        return value

    @field_validator("models_dir")
    @classmethod
    def _is_directory(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError("is not a directory")
        return value

    @model_validator(mode="after")
    def _one_store(self) -> Self:
        given = {
            name: value is not None for name, value in zip(_S3_VARIABLES, self._s3_values(), strict=True)
        }
        if self.models_dir is not None:
            if any(given.values()):
                names = ", ".join(name for name, set_ in given.items() if set_)
                raise ValueError(f"R3E_MODELS_DIR is set together with {names}: set either the folder or S3")
            return self
        missing = [name for name, set_ in given.items() if not set_]
        if missing:
            raise ValueError(
                f"{', '.join(missing)} not set: the S3 models bucket needs {', '.join(_S3_VARIABLES)} "
                "(or set R3E_MODELS_DIR to serve from a local folder)"
            )
        return self

    def _s3_values(self) -> tuple[Any, ...]:
        return (self.s3_endpoint_url, self.s3_access_key, self.s3_secret_key, self.models_bucket)

    @cached_property
    def store(self) -> ObjectStore:
        """The models store these settings name (built once)."""
        if self.models_dir is not None:
            return DirectoryStore(self.models_dir)
        assert self.s3_endpoint_url and self.s3_access_key and self.s3_secret_key and self.models_bucket
        return s3_store(
            self.models_bucket,
            endpoint_url=self.s3_endpoint_url,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key.get_secret_value(),
            region=self.s3_region,
        )

    @property
    def store_description(self) -> str:
        if self.models_dir is not None:
            return f"directory {self.models_dir}"
        return f"s3 bucket {self.models_bucket} at {self.s3_endpoint_url}"


def load_config(environ: Mapping[str, str] | None = None) -> ForecastSettings:
    """The settings from the environment (or ``environ``); ``skeleton.ConfigError`` names the variables."""
    return skeleton.load_settings(ForecastSettings, environ)


# --- the API's documents -------------------------------------------------------------------------


class LastError(BaseModel):
    message: str
    at: str = Field(description="When it happened (UTC, ISO 8601).")


class Health(BaseModel):
    status: Literal["ok", "no_model", "degraded"] = Field(
        description="no_model: nothing promoted or loaded yet; degraded: a model is served, but the "
        "last check or load failed (last_error says why)."
    )
    version: str | None = Field(description="The production version served.")
    promoted_at: str | None
    loaded_at: str | None = Field(description="When this service loaded the version (UTC).")
    last_check: str | None = Field(description="The last check of the production pointer (UTC).")
    last_error: LastError | None
    series: dict[str, str] = Field(description="Series served -> model kind.")


class ForecastRow(BaseModel):
    ds: dt.date
    yhat: float


class SeriesForecast(BaseModel):
    version: str
    series: str
    kind: str = Field(description="The model kind serving the series (baseline, prophet, ...).")
    start: dt.date = Field(description="The first day forecast: the day after the model's last training day.")
    days: int
    forecast: list[ForecastRow]


class AllForecasts(BaseModel):
    version: str
    days: int
    forecasts: dict[str, SeriesForecast]


class ErrorResponse(BaseModel):
    error: str


# --- metrics -------------------------------------------------------------------------------------


class ForecastMetrics:
    """The service's own metrics, on the registry ``/metrics`` serves."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.loads = Counter(
            "r3e_forecast_model_loads", "Production pointers loaded and swapped in.", registry=registry
        )
        self.load_failures = Counter(
            "r3e_forecast_model_load_failures",
            "Loads of a production pointer (or of a model it names) that failed; the old models stay.",
            registry=registry,
        )
        self.check_failures = Counter(
            "r3e_forecast_check_failures",
            "Checks of the production pointer that failed (store unreachable, pointer gone).",
            registry=registry,
        )
        self.cache_lookups = Counter(
            "r3e_forecast_cache_lookups",
            "Forecast lookups, by result (hit, miss).",
            ["result"],
            registry=registry,
        )
        for result in ("hit", "miss"):
            self.cache_lookups.labels(result)
        self.compute_seconds = Histogram(
            "r3e_forecast_compute_seconds",
            "Seconds to compute a forecast missing from the cache (with the wait for the forecast lock), "
            "by model kind.",
            ["kind"],
            registry=registry,
        )


class ServedModelCollector(Collector):
    """What ``/health`` says, read from the holder at each scrape."""

    def __init__(self, holder: "ModelHolder") -> None:
        self.holder = holder

    def collect(self) -> Iterator[Metric]:
        served, last_check, last_error = self.holder.snapshot()
        status = _status(served, last_error)
        yield StateSetMetricFamily(
            "r3e_forecast_status",
            "The service's status, as /health reports it.",
            {state: state == status for state in ("ok", "no_model", "degraded")},
        )
        model = InfoMetricFamily("r3e_forecast_model", "The production version served.")
        series = InfoMetricFamily(
            "r3e_forecast_series", "The series served and their model kinds.", labels=["series", "kind"]
        )
        loaded = GaugeMetricFamily(
            "r3e_forecast_model_loaded_timestamp_seconds", "When the version served was loaded."
        )
        if served is not None:
            model.add_metric([], {"version": served.version, "promoted_at": served.promoted_at or ""})
            for name, (kind, _, _) in sorted(served.series.items()):
                series.add_metric([name, kind], {})
            loaded.add_metric([], served.loaded_at)
        yield model
        yield series
        yield loaded
        last_check_family = GaugeMetricFamily(
            "r3e_forecast_last_check_timestamp_seconds", "When the production pointer was last checked."
        )
        if last_check is not None:
            last_check_family.add_metric([], last_check)
        yield last_check_family


# --- the production models -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSet:
    """The models of one production pointer, loaded and checked; never changed once built."""

    version: str
    promoted_at: str | None
    #: seconds since the epoch
    loaded_at: float
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
    promoted_at = pointer.get("promoted_at")
    return ModelSet(version, promoted_at if isinstance(promoted_at, str) else None, time.time(), etag, series)


def _status(current: ModelSet | None, last_error: LastError | None) -> str:
    return "no_model" if current is None else "degraded" if last_error else "ok"


class ModelHolder:
    """The served :class:`ModelSet`, replaced by a background thread when production changes."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        metrics: ForecastMetrics | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.metrics = metrics or ForecastMetrics(CollectorRegistry())
        self._lock = threading.Lock()
        self._current: ModelSet | None = None
        self._last_check: float | None = None
        self._last_error: LastError | None = None
        self._failed_etag: str | None = None
        self._failed_message = ""
        self._failed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> ModelSet | None:
        with self._lock:
            return self._current

    def snapshot(self) -> tuple[ModelSet | None, float | None, LastError | None]:
        """The models served, the last check (seconds since the epoch) and the last error, together."""
        with self._lock:
            return self._current, self._last_check, self._last_error

    def status(self) -> Health:
        current, last_check, last_error = self.snapshot()
        return Health(
            status=_status(current, last_error),
            version=current.version if current else None,
            promoted_at=current.promoted_at if current else None,
            loaded_at=_utc(current.loaded_at) if current else None,
            last_check=_utc(last_check) if last_check is not None else None,
            last_error=last_error,
            series={name: kind for name, (kind, _, _) in current.series.items()} if current else {},
        )

    def _fail(self, message: str, etag: str | None = None, *, load: bool = False) -> None:
        with self._lock:
            repeated = self._last_error is not None and self._last_error.message == message
            self._last_error = LastError(message=message, at=_utc(time.time()))
            current = self._current
        if load:
            self.metrics.load_failures.inc()
        else:
            self.metrics.check_failures.inc()
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
            self._last_check = time.time()
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
                if self._last_error is None or self._last_error.message != self._failed_message:
                    self._last_error = LastError(message=self._failed_message, at=_utc(time.time()))
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
        self.metrics.loads.inc()
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

    def __init__(self, entries: int = CACHE_ENTRIES, metrics: ForecastMetrics | None = None) -> None:
        self.entries = entries
        self.metrics = metrics or ForecastMetrics(CollectorRegistry())
        self._cached: OrderedDict[tuple[str, str, int], list[ForecastRow]] = OrderedDict()
        self._lock = threading.Lock()

    def _lookup(self, key: tuple[str, str, int]) -> list[ForecastRow] | None:
        with self._lock:
            rows = self._cached.get(key)
            if rows is not None:
                self._cached.move_to_end(key)
            return rows

    def rows(self, version: str, series: str, kind: str, model: Any, days: int) -> list[ForecastRow]:
        key = (version, series, days)
        rows = self._lookup(key)
        if rows is not None:
            self.metrics.cache_lookups.labels("hit").inc()
            return rows
        started = time.perf_counter()
        # Under the lock a repeated request waits for the first one's result instead of computing it.
        with _FORECAST_LOCK:
            rows = self._lookup(key)
            if rows is not None:
                self.metrics.cache_lookups.labels("hit").inc()
                return rows
            self.metrics.cache_lookups.labels("miss").inc()
            frame = forecast_model(kind, model, days)
            rows = [
                ForecastRow(ds=day.date(), yhat=float(value))
                for day, value in zip(frame["ds"], frame["yhat"], strict=True)
            ]
            with self._lock:
                self._cached[key] = rows
                while len(self._cached) > self.entries:
                    self._cached.popitem(last=False)
        self.metrics.compute_seconds.labels(kind).observe(time.perf_counter() - started)
        return rows


# --- the API -------------------------------------------------------------------------------------


def _plain_query(request: Request) -> None:
    """Refuse parameters /forecast does not know, and any given twice (FastAPI would take the last)."""
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted(set(names) - set(FORECAST_PARAMETERS))
    if unknown:
        raise HTTPException(400, f"unknown parameter(s) {unknown}; expected {', '.join(FORECAST_PARAMETERS)}")
    for name in FORECAST_PARAMETERS:
        if names.count(name) > 1:
            raise HTTPException(400, f"parameter {name!r} is given {names.count(name)} times")


def _parameter_problem(problem: Mapping[str, Any]) -> str:
    _where, *path = problem["loc"]
    name = ".".join(map(str, path))
    message = problem["msg"].removeprefix("Value error, ")
    return f"parameter {name!r}: {message[:1].lower()}{message[1:]}; got {problem.get('input')!r}"


def _document_400_not_422(app: FastAPI) -> None:
    """Drop FastAPI's 422 from the OpenAPI document: bad parameters are answered 400 here."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    store: ObjectStore,
    *,
    max_days: int = DEFAULT_MAX_DAYS,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    retry_seconds: float = RETRY_SECONDS,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The service: the model holder (started and stopped with the app), the cache and the routes."""
    registry = registry or CollectorRegistry()
    metrics = ForecastMetrics(registry)
    holder = ModelHolder(store, poll_seconds=poll_seconds, retry_seconds=retry_seconds, metrics=metrics)
    cache = ForecastCache(metrics=metrics)
    registry.register(ServedModelCollector(holder))

    app = skeleton.service_app(
        service=SERVICE,
        title="r3e forecast service",
        summary="Temperature forecasts from the production model of the model registry.",
        registry=registry,
        start=holder.start,
        stop=holder.stop,
    )
    _document_400_not_422(app)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "; ".join(map(_parameter_problem, error.errors()))}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = str(error.detail)
        if error.status_code == 404:
            message = f"unknown path {request.url.path!r}; try /forecast, /health, /metrics or /docs"
        elif error.status_code == 405:
            message = f"method {request.method} not allowed; use GET"
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, _error: Exception) -> JSONResponse:
        # uvicorn logs the traceback once this answer is sent.
        log.error("request %s failed", request.url.path)
        return JSONResponse({"error": "internal error; see the service log"}, status_code=500)

    def document(current: ModelSet, name: str, days: int) -> SeriesForecast:
        kind, model, start = current.series[name]
        rows = cache.rows(current.version, name, kind, model, days)
        return SeriesForecast(
            version=current.version, series=name, kind=kind, start=start, days=days, forecast=rows
        )

    @app.get("/health", response_model=Health)
    def health() -> Health:
        """Always 200: the version served and whether the last check of production worked."""
        return holder.status()

    @app.get(
        "/forecast",
        response_model=SeriesForecast | AllForecasts,
        dependencies=[Depends(_plain_query)],
        responses={
            400: {"model": ErrorResponse, "description": "A bad, repeated or unknown parameter (named)."},
            503: {"model": ErrorResponse, "description": "Nothing promoted to production yet."},
        },
    )
    def forecast(
        days: Annotated[
            int, Query(ge=1, le=max_days, description="Days to forecast, from the start day on."), WholeNumber
        ] = DEFAULT_DAYS,
        series: Annotated[
            str | None, Query(description="The series (In, Out); without it, every series.")
        ] = None,
    ) -> Any:
        """The forecast of ``series`` (or of every series) for the ``days`` days after the model's
        last training day."""
        current = holder.current  # one model set for the whole request
        if current is None:
            return JSONResponse({"error": "no production model yet"}, status_code=503)
        if series is None:
            forecasts = {name: document(current, name, days) for name in sorted(current.series)}
            return AllForecasts(version=current.version, days=days, forecasts=forecasts)
        if series not in current.series:
            raise HTTPException(400, f"unknown series {series!r}; expected one of {sorted(current.series)}")
        return document(current, series, days)

    return app


# --- the process ---------------------------------------------------------------------------------


def build(environ: Mapping[str, str] | None = None) -> tuple[FastAPI, str, int]:
    settings = load_config(environ)
    app = create_app(settings.store, max_days=settings.max_days, poll_seconds=settings.poll_seconds)
    log.info(
        "serving forecasts from %s; checking %s every %g s",
        settings.store_description,
        PRODUCTION_KEY,
        settings.poll_seconds,
    )
    return app, settings.bind, settings.port


def main(environ: Mapping[str, str] | None = None) -> int:
    return skeleton.run(SERVICE, lambda: build(environ))


if __name__ == "__main__":
    sys.exit(main())

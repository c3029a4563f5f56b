"""The event bridge service: settings, the bridge itself (sources, reconcile, delivery) and its API."""

from __future__ import annotations

import hmac
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from fastapi import Body, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from r3e_testbed.clients.airflow import Airflow
from r3e_testbed.services import skeleton
from r3e_testbed.services.event_bridge import filer_log
from r3e_testbed.services.event_bridge.delivery import Delivery
from r3e_testbed.services.event_bridge.events import (
    Ignored,
    ObjectEvent,
    PayloadError,
    counts_as_object,
    parse_minio,
)
from r3e_testbed.services.event_bridge.store import EventStore
from r3e_testbed.storage import DirectoryStore, ObjectStore, s3_store

log = logging.getLogger("r3e_testbed.event_bridge")

STATE_FILE = "seen.sqlite"
#: Largest webhook body accepted; real notifications are a few kB.
MAX_BODY_BYTES = 1024 * 1024
#: The reconcile and the baseline leave alone objects changed this close to the moment they
#: compare against (listings give whole seconds): those still arrive through the source.
RECENT_SECONDS = 2.0
#: Seconds between attempts to follow the filer's log again after it ended, growing to the max.
FOLLOW_RETRY_SECONDS, FOLLOW_RETRY_MAX_SECONDS = 1.0, 30.0
#: The checkpoint that records the bridge's first start (its baseline).
FIRST_START = "first_start"

_URL = r"^https?://[^/\s]+"


class BridgeSettings(skeleton.ServiceSettings):
    """The bridge's environment (``/etc/r3e/r3e-event-bridge.env`` on the testbed)."""

    secret_files: ClassVar[tuple[str, ...]] = ("R3E_AIRFLOW_PASSWORD", "R3E_EVENT_TOKEN", "R3E_S3_SECRET_KEY")

    source: Literal["seaweedfs", "minio"] = Field("seaweedfs", validation_alias="R3E_EVENT_SOURCE")
    buckets: Annotated[list[str], NoDecode] = Field(min_length=1, validation_alias="R3E_EVENT_BUCKETS")
    prefixes: Annotated[list[str], NoDecode] = Field([""], validation_alias="R3E_EVENT_PREFIXES")
    asset_name: str = Field("iot_data_changes", min_length=1, validation_alias="R3E_EVENT_ASSET_NAME")
    bind: str = Field("127.0.0.1", validation_alias="R3E_EVENT_BIND")
    port: int = Field(8091, ge=0, le=65535, validation_alias="R3E_EVENT_PORT")
    state_dir: Path = Field(Path("/var/lib/r3e-event-bridge"), validation_alias="R3E_EVENT_STATE_DIR")
    token: SecretStr | None = Field(None, validation_alias="R3E_EVENT_TOKEN")
    retry_initial_seconds: float = Field(1.0, ge=0.01, validation_alias="R3E_EVENT_RETRY_INITIAL_SECONDS")
    retry_max_seconds: float = Field(60.0, ge=0.01, validation_alias="R3E_EVENT_RETRY_MAX_SECONDS")
    reconcile_seconds: float = Field(600.0, ge=0, validation_alias="R3E_EVENT_RECONCILE_SECONDS")

    airflow_url: str = Field(pattern=_URL, validation_alias="R3E_AIRFLOW_URL")
    airflow_user: str = Field(min_length=1, validation_alias="R3E_AIRFLOW_USER")
    airflow_password: SecretStr = Field(validation_alias="R3E_AIRFLOW_PASSWORD")
    airflow_timeout_seconds: float = Field(10.0, ge=0.1, validation_alias="R3E_AIRFLOW_TIMEOUT_SECONDS")

    filer: str = Field("127.0.0.1:8888", min_length=3, validation_alias="R3E_SEAWEEDFS_FILER")
    weed: str = Field("weed", min_length=1, validation_alias="R3E_WEED_COMMAND")
    log_margin_seconds: float = Field(60.0, ge=0, validation_alias="R3E_EVENT_LOG_MARGIN_SECONDS")

    # The buckets, listed for the reconcile: an S3 endpoint, or a local folder (tests, offline).
    s3_endpoint_url: str | None = Field(None, pattern=_URL, validation_alias="R3E_S3_ENDPOINT_URL")
    s3_access_key: str | None = Field(None, validation_alias="R3E_S3_ACCESS_KEY")
    s3_secret_key: SecretStr | None = Field(None, validation_alias="R3E_S3_SECRET_KEY")
    s3_region: str = Field("us-east-1", validation_alias="R3E_S3_REGION")
    objects_dir: Path | None = Field(None, validation_alias="R3E_EVENT_OBJECTS_DIR")

    _split = field_validator("buckets", "prefixes", mode="before")(lambda cls, v: skeleton.split_commas(v))

    @field_validator("airflow_password")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @field_validator("prefixes")
    @classmethod
    def _all_keys_when_empty(cls, value: list[str]) -> list[str]:
        return value or [""]

    @model_validator(mode="after")
    def _consistent(self) -> BridgeSettings:
        if self.retry_max_seconds < self.retry_initial_seconds:
            raise ValueError("R3E_EVENT_RETRY_MAX_SECONDS must be at least R3E_EVENT_RETRY_INITIAL_SECONDS")
        if self.objects_dir is None and not (
            self.s3_endpoint_url and self.s3_access_key and self.s3_secret_key
        ):
            raise ValueError(
                "R3E_S3_ENDPOINT_URL, R3E_S3_ACCESS_KEY and R3E_S3_SECRET_KEY (or R3E_EVENT_OBJECTS_DIR)"
                " are needed to reconcile the buckets"
            )
        return self


# --- the API's models ---------------------------------------------------------------------------


class WebhookResult(BaseModel):
    stored: int = Field(description="New events stored for delivery.")
    duplicates: int = Field(description="Events whose (bucket, key, ETag) was stored already.")
    ignored: int = Field(description="Deletes, folders, other buckets or prefixes.")


class BridgeHealth(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: the last delivery or log read failed.")
    source: str
    received: int
    ignored: int
    duplicates: int
    stored: int
    reconciled: int
    delivered: int
    failed_attempts: int
    pending: int = Field(description="Stored events not delivered yet.")
    asset_id: int | None
    checkpoint_ns: int | None = Field(description="tsNs of the last filer log message handled.")
    last_error: str | None


class ErrorResponse(BaseModel):
    error: str


# --- the bridge -----------------------------------------------------------------------------------


class EventBridge:
    """Sources (the filer's log, or MinIO's webhook), the reconcile, and delivery to Airflow."""

    COUNTS = ("received", "ignored", "duplicates", "stored", "reconciled", "delivered", "failed_attempts")

    def __init__(self, settings: BridgeSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        try:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            self.store = EventStore(settings.state_dir / STATE_FILE)
        except (OSError, sqlite3.Error) as error:
            raise skeleton.ConfigError(
                f"R3E_EVENT_STATE_DIR: cannot use {settings.state_dir}: {error}"
            ) from None
        self.registry = registry or CollectorRegistry()
        self._events = Counter(
            "r3e_event_bridge_events", "Object events by outcome.", ["outcome"], registry=self.registry
        )
        Gauge(
            "r3e_event_bridge_pending", "Stored events not delivered yet.", registry=self.registry
        ).set_function(self.store.pending)
        Gauge(
            "r3e_event_bridge_checkpoint_seconds",
            "Time of the last filer log message handled (seconds since the epoch).",
            registry=self.registry,
        ).set_function(lambda: (self.store.checkpoint(filer_log.SOURCE) or 0) / 1e9)
        self._counts = dict.fromkeys(self.COUNTS, 0)
        self._counts_lock = threading.Lock()
        self.airflow = Airflow(
            settings.airflow_url,
            settings.airflow_user,
            settings.airflow_password.get_secret_value(),
            timeout_s=settings.airflow_timeout_seconds,
        )
        self.delivery = Delivery(
            self.store,
            self.airflow,
            settings.asset_name,
            retry_initial_seconds=settings.retry_initial_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            on_outcome=self.count,
        )
        self.filer_log = filer_log.FilerLog(
            settings.weed,
            settings.filer,
            self._filer_path_prefix(),
            lambda: self.store.checkpoint(filer_log.SOURCE),
            self._accept_logged,
            margin_s=settings.log_margin_seconds,
        )
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- counting -----------------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        if n:
            with self._counts_lock:
                self._counts[name] += n
            self._events.labels(name).inc(n)

    def health(self) -> BridgeHealth:
        with self._counts_lock:
            counts = dict(self._counts)
        last_error = self.delivery.last_error or (
            self.filer_log.last_error if self.settings.source == "seaweedfs" else None
        )
        return BridgeHealth(
            status="degraded" if last_error else "ok",
            source=self.settings.source,
            **counts,
            pending=self.store.pending(),
            asset_id=self.delivery.asset_id,
            checkpoint_ns=self.store.checkpoint(filer_log.SOURCE),
            last_error=last_error,
        )

    # --- what counts --------------------------------------------------------------------------

    def _filer_path_prefix(self) -> str:
        buckets = self.settings.buckets
        return f"/buckets/{buckets[0]}/" if len(buckets) == 1 else "/buckets/"

    def _wanted(self, event: ObjectEvent) -> str | None:
        """Why an event does not count, or None when it does."""
        if event.bucket not in self.settings.buckets:
            return f"bucket {event.bucket!r} not configured"
        if not any(event.key.startswith(prefix) for prefix in self.settings.prefixes):
            return "no configured prefix"
        return None

    def accept(
        self, parsed: list[ObjectEvent | Ignored], checkpoint: tuple[str, int] | None = None
    ) -> WebhookResult:
        """Store what is new (moving ``checkpoint`` with the last of it); returns the counts."""
        result = {"stored": 0, "duplicates": 0, "ignored": 0}
        wanted: list[ObjectEvent] = []
        for item in parsed:
            reason = item.reason if isinstance(item, Ignored) else self._wanted(item)
            if reason is not None:
                where = item.path if isinstance(item, Ignored) else f"{item.bucket}/{item.key}"
                log.info("ignored %s: %s", where, reason)
                result["ignored"] += 1
            else:
                wanted.append(item)
        if not wanted and checkpoint is not None:
            self.store.add(None, checkpoint)
        for index, event in enumerate(wanted):
            self.count("received")
            last = index == len(wanted) - 1
            stored = self.store.add(event, checkpoint if last else None)
            where = f"{event.bucket}/{event.key}"
            if stored is None:
                log.info(
                    "duplicate %s etag %s (%s %s): already seen",
                    where,
                    event.etag,
                    event.source,
                    event.event_type,
                )
                result["duplicates"] += 1
                continue
            log.info(
                "received %s etag %s size %d (%s %s), queued as #%d",
                where,
                event.etag,
                event.size,
                event.source,
                event.event_type,
                stored.id,
            )
            result["stored"] += 1
        for name, n in result.items():
            self.count(name, n)
        if result["stored"]:
            self.delivery.wake.set()
        return WebhookResult(**result)

    def _accept_logged(self, ts_ns: int, parsed: ObjectEvent | Ignored) -> None:
        self.accept([parsed], (filer_log.SOURCE, ts_ns))

    # --- reconcile ----------------------------------------------------------------------------

    def bucket_store(self, bucket: str) -> ObjectStore:
        s = self.settings
        if s.objects_dir is not None:
            return DirectoryStore(s.objects_dir / bucket)
        assert s.s3_endpoint_url and s.s3_access_key and s.s3_secret_key
        return s3_store(
            bucket,
            endpoint_url=s.s3_endpoint_url,
            access_key=s.s3_access_key,
            secret_key=s.s3_secret_key.get_secret_value(),
            region=s.s3_region,
        )

    def _listed(self, before: float) -> list[ObjectEvent]:
        """The objects of the buckets under the prefixes, changed before ``before``."""
        found = []
        for bucket in self.settings.buckets:
            store = self.bucket_store(bucket)
            for prefix in self.settings.prefixes:
                for info in store.objects(prefix):
                    if counts_as_object(info.key) and info.modified < before:
                        found.append(
                            ObjectEvent(bucket, info.key, info.etag, info.size, "reconcile", "reconcile")
                        )
        return found

    def reconcile(self, before: float) -> int:
        """Store every object changed before ``before`` whose content the bridge has not seen (the
        safety net for events the source lost); returns how many were stored."""
        latest = {bucket: self.store.latest_etags(bucket) for bucket in self.settings.buckets}
        missed = [e for e in self._listed(before) if latest[e.bucket].get(e.key) != e.etag]
        stored = self.accept(missed).stored if missed else 0
        self.count("reconciled", stored)
        if stored:
            log.warning("reconcile: %d object(s) changed without an event reaching the bridge", stored)
        return stored

    def record_baseline(self) -> None:
        """On the first start: the objects already there are known, not new."""
        started = time.time()
        checkpoints = {FIRST_START: time.time_ns()}
        if self.settings.source == "seaweedfs":
            checkpoints[filer_log.SOURCE] = int((started - RECENT_SECONDS) * 1e9)
        existing = self._listed(started - RECENT_SECONDS)
        recorded = self.store.record_baseline(
            [ObjectEvent(e.bucket, e.key, e.etag, e.size, "baseline", "baseline") for e in existing],
            checkpoints,
        )
        log.info(
            "first start: %d object(s) already in the buckets are the baseline (not delivered)", recorded
        )

    # --- threads ------------------------------------------------------------------------------

    def _safely(self, what: str, work: Any, *args: Any) -> bool:
        try:
            work(*args)
            return True
        except Exception:  # the store or the object store failing must not end the thread
            log.exception("%s failed", what)
            return False

    def _follow_filer_log(self) -> None:
        failures = 0
        next_reconcile = 0.0
        while not self._stopping.is_set():
            caught_up_at = time.time()
            if self.filer_log.run(until_now=True) and not self._stopping.is_set():
                if self._safely("reconcile", self.reconcile, caught_up_at - RECENT_SECONDS):
                    next_reconcile = time.monotonic() + self.settings.reconcile_seconds
                self._follow_until_periodic_reconcile(next_reconcile)
            if self._stopping.is_set():
                return
            failures += 1
            delay = min(FOLLOW_RETRY_SECONDS * 2 ** min(failures - 1, 10), FOLLOW_RETRY_MAX_SECONDS)
            log.warning(
                "the filer log ended (%s); following it again in %.0f s", self.filer_log.last_error, delay
            )
            self._stopping.wait(delay)

    def _follow_until_periodic_reconcile(self, next_reconcile: float) -> None:
        """Follow live; a timer ends the run when the periodic reconcile is due (the loop then
        catches up and reconciles, and follows again)."""
        timer = None
        if self.settings.reconcile_seconds > 0:
            timer = threading.Timer(max(next_reconcile - time.monotonic(), 0), self.filer_log.stop)
            timer.daemon = True
            timer.start()
        try:
            self.filer_log.run(until_now=False)
        finally:
            if timer is not None:
                timer.cancel()

    def _reconcile_periodically(self) -> None:
        """MinIO: its queue resends what the bridge missed; the reconcile covers a lost queue."""
        while True:
            self._safely("reconcile", self.reconcile, time.time() - RECENT_SECONDS)
            if self.settings.reconcile_seconds <= 0 or self._stopping.wait(self.settings.reconcile_seconds):
                return

    def start(self) -> None:
        if self.store.is_new():
            self.record_baseline()
        pending = self.store.pending()
        if pending:
            log.info("%d event(s) from before the restart still to deliver", pending)
        source = (
            self._follow_filer_log if self.settings.source == "seaweedfs" else self._reconcile_periodically
        )
        for name, target in (
            ("event-bridge-source", source),
            ("event-bridge-delivery", lambda: self.delivery.run(self._stopping)),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop reading the source, let the delivery in progress finish, close the store."""
        self._stopping.set()
        self.delivery.wake.set()
        self.filer_log.stop()
        for thread in self._threads:
            thread.join(self.settings.airflow_timeout_seconds * 3)
        self._threads.clear()
        self.store.close()
        self.airflow.close()


# --- the API --------------------------------------------------------------------------------------


def create_app(bridge: EventBridge) -> FastAPI:
    def start() -> None:
        bridge.start()
        log.info(
            "bridging %s events of buckets %s (prefixes %s) to asset %r at %s",
            bridge.settings.source,
            ",".join(bridge.settings.buckets),
            ",".join(p or "(all)" for p in bridge.settings.prefixes),
            bridge.settings.asset_name,
            bridge.settings.airflow_url,
        )

    app = skeleton.service_app(
        service="event-bridge",
        title="r3e event bridge",
        summary="Object uploads to Airflow asset events, each exactly once.",
        registry=bridge.registry,
        start=start,
        stop=bridge.stop,
    )

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            "the body is not JSON"
            if e["type"] == "json_invalid"
            else f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in error.errors()
        )
        return JSONResponse({"error": problems}, status_code=400)

    @app.get("/health", response_model=BridgeHealth)
    def health() -> BridgeHealth:
        """What the bridge has seen and delivered; ``degraded`` while delivery or the log fails."""
        return bridge.health()

    @app.post(
        "/events/minio",
        response_model=WebhookResult,
        status_code=202,
        responses={
            200: {"model": WebhookResult, "description": "Nothing new (ignored or duplicate)."},
            400: {"model": ErrorResponse},
            401: {"model": ErrorResponse},
            413: {"model": ErrorResponse},
            503: {"model": ErrorResponse},
        },
    )
    def minio_notification(
        notification: Annotated[dict[str, Any], Body(description="A MinIO (S3-style) bucket notification.")],
        authorization: Annotated[str, Header()] = "",
        content_length: Annotated[int, Header(ge=0)] = 0,
    ) -> Any:
        """A MinIO bucket notification: 202 once stored (200 if nothing new), 400 naming the problem."""
        token = bridge.settings.token
        if token is not None and not hmac.compare_digest(
            authorization.encode(), f"Bearer {token.get_secret_value()}".encode()
        ):
            log.warning("refused a webhook: wrong or missing bearer token")
            return JSONResponse({"error": "wrong or missing bearer token"}, status_code=401)
        if content_length > MAX_BODY_BYTES:
            return JSONResponse({"error": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            parsed = parse_minio(notification)
        except PayloadError as error:
            log.warning("refused a webhook: %s", error)
            return JSONResponse({"error": str(error)}, status_code=400)
        try:
            result = bridge.accept(parsed)
        except sqlite3.Error as error:
            log.error("cannot store an event: %s", error)
            return JSONResponse({"error": f"cannot store the event: {error}"}, status_code=503)
        return JSONResponse(result.model_dump(), status_code=202 if result.stored else 200)

    return app


def build(environ: Mapping[str, str] | None = None) -> tuple[FastAPI, str, int]:
    settings = skeleton.load_settings(BridgeSettings, environ)
    return create_app(EventBridge(settings)), settings.bind, settings.port


def main(environ: Mapping[str, str] | None = None) -> int:
    return skeleton.run("event-bridge", lambda: build(environ))

"""The object-store event bridge: an upload to the data bucket becomes one Airflow asset event.

Run it with ``python -m r3e_testbed.services.event_bridge``. It serves:

``POST /events/seaweedfs``
    A SeaweedFS filer webhook notification (``notification.toml`` ``[notification.webhook]``):
    ``{"event_type": "create"|"update"|..., "key": "/buckets/<bucket>/<key>", "message": {...}}``.
``POST /events/minio``
    A MinIO (S3-style) bucket notification: ``{"EventName", "Key", "Records": [{"s3": ...}]}``.
``GET /health``
    ``{"status", "received", "ignored", "duplicates", "stored", "delivered", "failed_attempts",
    "pending", "asset_id", "last_error"}``; ``status`` is ``ok`` or ``degraded`` (the last delivery
    attempt failed).

Only object create/update events of the configured buckets are kept; deletes, renames,
directories (S3 "folder" markers included) and multipart-upload parts are ignored. Each kept event
is stored in SQLite (``seen.sqlite`` in the state directory) under the unique key
``(bucket, key, etag)``: an event whose key and content are already stored is a duplicate and is
dropped, so the same content uploaded twice gives one asset event, and changed content a new one.
Delivered rows of contents an object no longer holds are forgotten, so going back to earlier
content (A, B, A) counts as a change again. The webhook answers 202 once the event is stored
(200 for an ignored or duplicate one, 400 naming the problem for a malformed payload, with
nothing stored).

A background thread delivers stored events in order, as
``POST /api/v2/assets/events {"asset_id", "extra": {"bucket", "key", "etag", "size",
"event_type", "source", "received_at"}}``, with a token from ``POST /auth/token`` (fetched again
on a 401). The asset id is looked up by name once and cached; while the asset does not exist (its
DAG not parsed yet) or Airflow is unreachable, delivery is retried with exponential backoff, and
the rows wait in SQLite across restarts. An attempt whose outcome is unknown (timeout, dropped
connection, 5xx) is followed by a look at the asset's recent events before posting again, so an
event Airflow did record is not posted twice.

Configuration (environment variables):

``R3E_EVENT_BUCKETS``               comma-separated buckets whose objects count (required)
``R3E_AIRFLOW_URL``                 Airflow api-server base URL, e.g. ``http://10.0.0.3:8080`` (required)
``R3E_AIRFLOW_USER``                API user (required)
``R3E_AIRFLOW_PASSWORD``            its password, or ``R3E_AIRFLOW_PASSWORD_FILE`` naming a file with it
``R3E_EVENT_ASSET_NAME``            name of the asset events are created for (default ``iot_data_changes``)
``R3E_EVENT_BIND``                  address to listen on (default ``127.0.0.1``)
``R3E_EVENT_PORT``                  TCP port (default ``8091``)
``R3E_EVENT_STATE_DIR``             folder of ``seen.sqlite`` (default ``/var/lib/r3e-event-bridge``)
``R3E_EVENT_TOKEN``                 when set (or ``R3E_EVENT_TOKEN_FILE``), webhooks must send
                                    ``Authorization: Bearer <token>``
``R3E_EVENT_RETRY_INITIAL_SECONDS`` first delivery retry delay (default ``1``), doubled per failure
``R3E_EVENT_RETRY_MAX_SECONDS``     longest delivery retry delay (default ``60``)
``R3E_AIRFLOW_TIMEOUT_SECONDS``     timeout of each Airflow request (default ``10``)

A missing or invalid setting stops the service at start with a message naming the variable.
Logs go to stderr (the journal): one line per event decision (received, ignored, duplicate,
delivered, failed).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from r3e_testbed.services.airflow_api import AirflowApi, AirflowRequestError, HTTPStatusError

log = logging.getLogger("r3e_testbed.event_bridge")

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 8091
DEFAULT_STATE_DIR = "/var/lib/r3e-event-bridge"
DEFAULT_ASSET_NAME = "iot_data_changes"
DEFAULT_RETRY_INITIAL_SECONDS = 1.0
DEFAULT_RETRY_MAX_SECONDS = 60.0
DEFAULT_AIRFLOW_TIMEOUT_SECONDS = 10.0
STATE_FILE = "seen.sqlite"
#: Largest webhook body accepted; real notifications are a few kB (a multipart object's ~3 kB).
MAX_BODY_BYTES = 1024 * 1024
#: The filer keeps S3 buckets under this folder.
SEAWEEDFS_BUCKETS_DIR = "/buckets"
#: Folder inside a bucket where SeaweedFS keeps multipart-upload parts until they are combined.
SEAWEEDFS_UPLOADS_DIR = ".uploads"
#: Extended attribute holding the S3 ETag (base64 in the event, like every bytes field).
SEAWEEDFS_ETAG_ATTRIBUTE = "Seaweed-X-Amz-ETag"
#: Delivered rows waiting for the next round are fetched this many at a time.
BATCH = 50
#: Even with nothing to do, the delivery thread looks at the queue this often.
IDLE_SECONDS = 30.0
#: An uncertain attempt is looked for among the asset's events since its first attempt minus this
#: margin (the clocks of bridge and api-server may differ a little).
LOOKBACK_MARGIN_SECONDS = 120.0


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class PayloadError(ValueError):
    """A webhook body that is not a notification of the expected kind; the message says why."""


# Creating an asset event failed. ``blocking``: every event would fail the same way now (Airflow
# down, credentials refused, asset missing), so the round stops and the whole queue backs off.
# ``uncertain``: the request may have reached Airflow and been recorded although it failed.
DeliveryError = AirflowRequestError


# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectEvent:
    """An object was created or replaced: what the asset event's extra carries."""

    bucket: str
    key: str
    etag: str
    size: int
    event_type: str
    source: str


@dataclass(frozen=True)
class Ignored:
    """A well-formed notification that is not an object create/update (a delete, a folder, ...)."""

    reason: str
    path: str


def _field(obj: Any, name: str, kind: type | tuple[type, ...], where: str, *, required: bool = True) -> Any:
    value = obj.get(name) if isinstance(obj, dict) else None
    if value is None:
        if required:
            raise PayloadError(f"{where}{name} is missing")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PayloadError(f"{where}{name} has the wrong type ({type(value).__name__})")
    return value


def _size(value: Any, where: str) -> int:
    if value is None:
        return 0  # protobuf JSON leaves out zero values: an empty object has no file_size
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(f"{where} is not a non-negative integer")
    return value


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise PayloadError(f"{where} is not base64: {error}") from None


def _seaweedfs_etag(entry: dict[str, Any], where: str) -> str:
    """The ETag S3 reports for the entry (measured equal to HEAD's for plain, multipart, copy)."""
    extended = _field(entry, "extended", dict, where, required=False) or {}
    encoded = extended.get(SEAWEEDFS_ETAG_ATTRIBUTE)
    if isinstance(encoded, str) and encoded:
        raw = _b64(encoded, f"{where}extended.{SEAWEEDFS_ETAG_ATTRIBUTE}")
        try:
            return raw.decode("ascii").strip('"')
        except UnicodeDecodeError:
            raise PayloadError(f"{where}extended.{SEAWEEDFS_ETAG_ATTRIBUTE} is not ASCII") from None
    attributes = _field(entry, "attributes", dict, where, required=False) or {}
    md5 = attributes.get("md5")
    if isinstance(md5, str) and md5:
        # Files written through the filer rather than S3 have no S3 ETag, only the MD5.
        return _b64(md5, f"{where}attributes.md5").hex()
    # Neither: a stable stand-in, so that a redelivered event still dedupes and a rewrite does not.
    mtime = attributes.get("mtime_ns") or attributes.get("mtime") or 0
    return f"mtime-{mtime}-{_size(attributes.get('file_size'), f'{where}attributes.file_size')}"


def parse_seaweedfs(payload: Any) -> list[ObjectEvent | Ignored]:
    """One SeaweedFS filer webhook notification (one entry per request)."""
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    path = _field(payload, "key", str, "")
    event_type = _field(payload, "event_type", str, "")
    message = _field(payload, "message", dict, "")
    if not path.startswith("/"):
        raise PayloadError(f"key {path!r} is not an absolute filer path")
    if event_type not in ("create", "update"):
        return [Ignored(f"{event_type} event", path)]
    entry = _field(message, "new_entry", dict, "message.")
    if entry.get("is_directory"):
        return [Ignored("directory", path)]
    prefix = SEAWEEDFS_BUCKETS_DIR + "/"
    if not path.startswith(prefix):
        return [Ignored(f"not under {SEAWEEDFS_BUCKETS_DIR}", path)]
    bucket, _, key = path[len(prefix) :].partition("/")
    if not key:
        return [Ignored("not an object", path)]
    if bucket.startswith("."):
        return [Ignored("SeaweedFS system folder", path)]
    if key.split("/", 1)[0] == SEAWEEDFS_UPLOADS_DIR:
        return [Ignored("multipart-upload part", path)]
    attributes = _field(entry, "attributes", dict, "message.new_entry.", required=False) or {}
    size = _size(attributes.get("file_size"), "message.new_entry.attributes.file_size")
    etag = _seaweedfs_etag(entry, "message.new_entry.")
    return [ObjectEvent(bucket, key, etag, size, event_type, "seaweedfs")]


def parse_minio(payload: Any) -> list[ObjectEvent | Ignored]:
    """One MinIO (or AWS S3 style) bucket notification, with one or more records."""
    if not isinstance(payload, dict):
        raise PayloadError("the body is not a JSON object")
    records = _field(payload, "Records", list, "")
    if not records:
        raise PayloadError("Records is empty")
    results: list[ObjectEvent | Ignored] = []
    for index, record in enumerate(records):
        where = f"Records[{index}]."
        if not isinstance(record, dict):
            raise PayloadError(f"Records[{index}] is not an object")
        name = _field(record, "eventName", str, where)
        s3 = _field(record, "s3", dict, where)
        bucket = _field(_field(s3, "bucket", dict, f"{where}s3."), "name", str, f"{where}s3.bucket.")
        obj = _field(s3, "object", dict, f"{where}s3.")
        # Keys arrive URL-encoded ("raw%2Fa+b.csv"), as in AWS's notifications.
        key = urllib.parse.unquote_plus(_field(obj, "key", str, f"{where}s3.object."))
        path = f"{bucket}/{key}"
        if "ObjectCreated:" not in name:
            results.append(Ignored(f"{name} event", path))
            continue
        if not key or key.endswith("/"):
            results.append(Ignored("directory", path))
            continue
        etag = _field(obj, "eTag", str, f"{where}s3.object.").strip('"')
        if not etag:
            raise PayloadError(f"{where}s3.object.eTag is empty")
        size = _size(obj.get("size"), f"{where}s3.object.size")
        results.append(ObjectEvent(bucket, key, etag, size, name, "minio"))
    return results


PARSERS = {"/events/seaweedfs": parse_seaweedfs, "/events/minio": parse_minio}


# --- state --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    id: int
    event: ObjectEvent
    received_at: str
    attempts: int
    uncertain: bool
    attempted_at: float | None

    def extra(self) -> dict[str, Any]:
        e = self.event
        return {
            "bucket": e.bucket,
            "key": e.key,
            "etag": e.etag,
            "size": e.size,
            "event_type": e.event_type,
            "source": e.source,
            "received_at": self.received_at,
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket           TEXT    NOT NULL,
    key              TEXT    NOT NULL,
    etag             TEXT    NOT NULL,
    size             INTEGER NOT NULL,
    event_type       TEXT    NOT NULL,
    source           TEXT    NOT NULL,
    received_at      TEXT    NOT NULL,
    delivered        INTEGER NOT NULL DEFAULT 0,
    delivered_at     TEXT,
    asset_event_id   INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    attempted_at     REAL,
    next_attempt_at  REAL    NOT NULL DEFAULT 0,
    uncertain        INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    UNIQUE (bucket, key, etag)
);
CREATE INDEX IF NOT EXISTS events_pending ON events (delivered, next_attempt_at, id);
"""
_COLUMNS = "id, bucket, key, etag, size, event_type, source, received_at, attempts, uncertain, attempted_at"


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class EventStore:
    """The seen events and the delivery queue, in one SQLite table.

    ``UNIQUE (bucket, key, etag)`` with ``INSERT OR IGNORE`` decides new-or-duplicate in one
    statement, so concurrent webhooks (the filer sends with 5 workers) and restarts cannot let the
    same event in twice. Writes are synchronous (``synchronous=FULL``): the 202 promises the event
    survives a crash, and the filer never sends it again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, event: ObjectEvent) -> StoredEvent | None:
        """Store a new event for delivery; None when (bucket, key, etag) is already stored."""
        received_at = _utcnow()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Forget what the object held before its latest content, once delivered: that content
                # may come back (A, B, A) and must then count as a change. The latest row and rows
                # still owed to Airflow stay, and INSERT OR IGNORE treats them as duplicates.
                self._db.execute(
                    "DELETE FROM events WHERE bucket = ? AND key = ? AND delivered = 1"
                    " AND id <> (SELECT MAX(id) FROM events WHERE bucket = ? AND key = ?)",
                    (event.bucket, event.key, event.bucket, event.key),
                )
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO events (bucket, key, etag, size, event_type, source, received_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.bucket,
                        event.key,
                        event.etag,
                        event.size,
                        event.event_type,
                        event.source,
                        received_at,
                    ),
                )
                row_id = cursor.lastrowid if cursor.rowcount == 1 else None
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if row_id is None:
            return None
        return StoredEvent(row_id, event, received_at, 0, False, None)

    def due(self, now: float, limit: int = BATCH) -> list[StoredEvent]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE delivered = 0 AND next_attempt_at <= ?"
                " ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [StoredEvent(r[0], ObjectEvent(*r[1:7]), r[7], r[8], bool(r[9]), r[10]) for r in rows]

    def next_attempt_at(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM events WHERE delivered = 0").fetchone()
        return row[0]

    def mark_attempt(self, row_id: int, now: float) -> None:
        """Record that a POST starts. Until it is known to have failed cleanly, it may have reached
        Airflow (also if the bridge dies now): the row is uncertain from here on."""
        with self._lock:
            self._db.execute("UPDATE events SET attempted_at = ?, uncertain = 1 WHERE id = ?", (now, row_id))

    def mark_delivered(self, row_id: int, asset_event_id: int | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE events SET delivered = 1, delivered_at = ?, asset_event_id = ?,"
                " attempts = attempts + 1, last_error = NULL WHERE id = ?",
                (_utcnow(), asset_event_id, row_id),
            )

    def mark_failed(self, row_id: int, error: str, next_attempt_at: float, *, uncertain: bool) -> int:
        """Record a failed attempt; returns the row's attempt count."""
        with self._lock:
            self._db.execute(
                "UPDATE events SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " uncertain = ? WHERE id = ?",
                (error, next_attempt_at, int(uncertain), row_id),
            )
            row = self._db.execute("SELECT attempts FROM events WHERE id = ?", (row_id,)).fetchone()
        return row[0] if row else 0

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events WHERE delivered = 0").fetchone()[0]


# --- Airflow ------------------------------------------------------------------------------------


class AirflowClient(AirflowApi):
    """The asset calls the bridge needs, on top of the token handling, with the asset id cached."""

    def __init__(self, base_url: str, user: str, password: str, asset_name: str, timeout: float) -> None:
        super().__init__(base_url, user, password, timeout)
        self.asset_name = asset_name
        self.asset_id: int | None = None

    def lookup_asset(self) -> int:
        """The asset's id, cached; DeliveryError while Airflow does not know the asset."""
        if self.asset_id is not None:
            return self.asset_id
        query = urllib.parse.urlencode({"name_pattern": self.asset_name, "limit": 100})
        try:
            answer = self.request("GET", f"/api/v2/assets?{query}")
        except HTTPStatusError as error:
            raise DeliveryError(str(error), uncertain=False) from None
        # name_pattern is a substring match ("_" even a wildcard): pick the exact name.
        for asset in (answer or {}).get("assets", []):
            if asset.get("name") == self.asset_name and isinstance(asset.get("id"), int):
                self.asset_id = asset["id"]
                log.info("asset %r has id %d", self.asset_name, self.asset_id)
                return self.asset_id
        raise DeliveryError(f"asset {self.asset_name!r} not found in Airflow (its DAG not parsed yet?)")

    def find_event(self, asset_id: int, extra: dict[str, Any], since: float) -> int | None:
        """The id of an asset event carrying this extra, created since ``since`` (minus a margin)."""
        start = dt.datetime.fromtimestamp(since - LOOKBACK_MARGIN_SECONDS, dt.UTC).isoformat()
        offset = 0
        while True:
            query = urllib.parse.urlencode(
                {
                    "asset_id": asset_id,
                    "timestamp_gte": start,
                    "order_by": "timestamp",
                    "limit": 100,
                    "offset": offset,
                }
            )
            try:
                answer = self.request("GET", f"/api/v2/assets/events?{query}") or {}
            except HTTPStatusError as error:
                raise DeliveryError(str(error), uncertain=True) from None
            events = answer.get("asset_events", [])
            for event in events:
                found = event.get("extra") or {}
                if all(found.get(name) == value for name, value in extra.items()):
                    return event.get("id")
            offset += len(events)
            if not events or offset >= answer.get("total_entries", 0):
                return None

    def create_event(self, asset_id: int, extra: dict[str, Any]) -> int | None:
        try:
            answer = self.request("POST", "/api/v2/assets/events", {"asset_id": asset_id, "extra": extra})
        except HTTPStatusError as error:
            if error.status == HTTPStatus.NOT_FOUND:
                self.asset_id = None  # the asset is gone (or renamed): look it up again
                raise DeliveryError(str(error)) from None
            if error.status >= 500:
                raise DeliveryError(str(error), uncertain=True) from None
            if error.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, HTTPStatus.TOO_MANY_REQUESTS):
                raise DeliveryError(str(error)) from None
            # Any other 4xx is about this event's body: back off this row only.
            raise DeliveryError(str(error), blocking=False) from None
        return answer.get("id") if isinstance(answer, dict) else None


# --- the bridge -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    buckets: frozenset[str]
    airflow_url: str
    airflow_user: str
    airflow_password: str
    asset_name: str = DEFAULT_ASSET_NAME
    bind: str = DEFAULT_BIND
    port: int = DEFAULT_PORT
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    token: str | None = None
    retry_initial_seconds: float = DEFAULT_RETRY_INITIAL_SECONDS
    retry_max_seconds: float = DEFAULT_RETRY_MAX_SECONDS
    airflow_timeout_seconds: float = DEFAULT_AIRFLOW_TIMEOUT_SECONDS


def _secret(env: Mapping[str, str], name: str, *, required: bool) -> str | None:
    value = env.get(name, "")
    file_name = env.get(f"{name}_FILE", "")
    if value and file_name:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if file_name:
        try:
            value = Path(file_name).read_text().strip()
        except OSError as error:
            raise ConfigError(f"{name}_FILE: cannot read {file_name}: {error.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE: {file_name} is empty")
    if required and not value:
        raise ConfigError(f"{name} (or {name}_FILE) is not set")
    return value or None


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value >= minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def load_config(env: Mapping[str, str]) -> Config:
    buckets = frozenset(b.strip() for b in env.get("R3E_EVENT_BUCKETS", "").split(",") if b.strip())
    if not buckets:
        raise ConfigError("R3E_EVENT_BUCKETS is not set (comma-separated bucket names)")
    url = env.get("R3E_AIRFLOW_URL", "").strip()
    if not url:
        raise ConfigError("R3E_AIRFLOW_URL is not set")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"R3E_AIRFLOW_URL={url!r} is not an http(s):// URL")
    user = env.get("R3E_AIRFLOW_USER", "").strip()
    if not user:
        raise ConfigError("R3E_AIRFLOW_USER is not set")
    password = _secret(env, "R3E_AIRFLOW_PASSWORD", required=True)
    raw_port = env.get("R3E_EVENT_PORT", "") or str(DEFAULT_PORT)
    if not raw_port.isdigit() or not 0 <= int(raw_port) <= 65535:
        raise ConfigError(f"R3E_EVENT_PORT={raw_port!r} is not a TCP port")
    asset_name = env.get("R3E_EVENT_ASSET_NAME", "").strip() or DEFAULT_ASSET_NAME
    retry_initial = _number(
        env, "R3E_EVENT_RETRY_INITIAL_SECONDS", DEFAULT_RETRY_INITIAL_SECONDS, minimum=0.01
    )
    retry_max = _number(env, "R3E_EVENT_RETRY_MAX_SECONDS", DEFAULT_RETRY_MAX_SECONDS, minimum=retry_initial)
    return Config(
        buckets=buckets,
        airflow_url=url,
        airflow_user=user,
        airflow_password=password or "",
        asset_name=asset_name,
        bind=env.get("R3E_EVENT_BIND", "").strip() or DEFAULT_BIND,
        port=int(raw_port),
        state_dir=Path(env.get("R3E_EVENT_STATE_DIR", "") or DEFAULT_STATE_DIR),
        token=_secret(env, "R3E_EVENT_TOKEN", required=False),
        retry_initial_seconds=retry_initial,
        retry_max_seconds=retry_max,
        airflow_timeout_seconds=_number(
            env, "R3E_AIRFLOW_TIMEOUT_SECONDS", DEFAULT_AIRFLOW_TIMEOUT_SECONDS, minimum=0.1
        ),
    )


class EventBridge:
    """Webhook server, SQLite store and delivery thread; ``start()``/``stop()`` or ``main()``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
            self.store = EventStore(config.state_dir / STATE_FILE)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"R3E_EVENT_STATE_DIR: cannot use {config.state_dir}: {error}") from None
        self.airflow = AirflowClient(
            config.airflow_url,
            config.airflow_user,
            config.airflow_password,
            config.asset_name,
            config.airflow_timeout_seconds,
        )
        self.server = ThreadingHTTPServer((config.bind, config.port), _Handler)
        self.server.daemon_threads = True
        self.server.bridge = self  # type: ignore[attr-defined]
        self._counts = dict.fromkeys(
            ("received", "ignored", "duplicates", "stored", "delivered", "failed_attempts"), 0
        )
        self._counts_lock = threading.Lock()
        self.last_error: str | None = None
        self._failures = 0  # consecutive blocking failures: the queue's backoff exponent
        self._blocked_until = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, name: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += n

    def health(self) -> dict[str, Any]:
        with self._counts_lock:
            counts = dict(self._counts)
        return {
            "status": "degraded" if self.last_error else "ok",
            **counts,
            "pending": self.store.pending(),
            "asset_id": self.airflow.asset_id,
            "last_error": self.last_error,
        }

    # The webhook side.

    def accept(self, parsed: list[ObjectEvent | Ignored]) -> dict[str, int]:
        """Store what is new; returns counts of stored, duplicate and ignored events."""
        result = {"stored": 0, "duplicates": 0, "ignored": 0}
        for item in parsed:
            if isinstance(item, Ignored):
                log.info("ignored %s: %s", item.path, item.reason)
                result["ignored"] += 1
                continue
            where = f"{item.bucket}/{item.key}"
            if item.bucket not in self.config.buckets:
                log.info("ignored %s: bucket %r not configured", where, item.bucket)
                result["ignored"] += 1
                continue
            self.count("received")
            stored = self.store.add(item)
            if stored is None:
                log.info(
                    "duplicate %s etag %s (%s %s): already seen",
                    where,
                    item.etag,
                    item.source,
                    item.event_type,
                )
                result["duplicates"] += 1
                continue
            log.info(
                "received %s etag %s size %d (%s %s), queued as #%d",
                where,
                item.etag,
                item.size,
                item.source,
                item.event_type,
                stored.id,
            )
            result["stored"] += 1
        self.count("ignored", result["ignored"])
        self.count("duplicates", result["duplicates"])
        self.count("stored", result["stored"])
        if result["stored"]:
            self._wake.set()
        return result

    # The delivery side.

    def _backoff(self, failures: int) -> float:
        return min(
            self.config.retry_initial_seconds * 2 ** max(failures - 1, 0), self.config.retry_max_seconds
        )

    def _deliver(self, row: StoredEvent) -> None:
        """Create the row's asset event; DeliveryError.uncertain tells whether the row is uncertain now."""
        extra = row.extra()
        try:
            asset_id = self.airflow.lookup_asset()
            if row.uncertain and row.attempted_at is not None:
                found = self.airflow.find_event(asset_id, extra, row.attempted_at)
                if found is not None:
                    self.store.mark_delivered(row.id, found)
                    self.count("delivered")
                    log.info(
                        "delivered #%d as asset event %s (an earlier attempt had reached Airflow)",
                        row.id,
                        found,
                    )
                    return
        except DeliveryError as error:
            error.uncertain = row.uncertain  # nothing was posted in this attempt
            raise
        self.store.mark_attempt(row.id, time.time())
        try:
            event_id = self.airflow.create_event(asset_id, extra)
        except DeliveryError as error:
            # Posted now: uncertain if this POST may have got through, or an earlier one may have.
            error.uncertain = error.uncertain or row.uncertain
            raise
        self.store.mark_delivered(row.id, event_id)
        self.count("delivered")
        e = row.event
        log.info(
            "delivered #%d %s/%s etag %s as asset event %s of %r",
            row.id,
            e.bucket,
            e.key,
            e.etag,
            event_id,
            self.config.asset_name,
        )

    def deliver_due(self) -> float:
        """One delivery round; returns the seconds until the next one is due."""
        now = time.time()
        if now < self._blocked_until:
            return self._blocked_until - now
        rows = self.store.due(now)
        for row in rows:
            if self._stopping.is_set():
                return 0.0
            try:
                self._deliver(row)
            except DeliveryError as error:
                self.count("failed_attempts")
                self.last_error = str(error)
                if error.blocking:
                    self._failures += 1
                    delay = self._backoff(self._failures)
                    self._blocked_until = time.time() + delay
                else:
                    delay = self._backoff(row.attempts + 1)
                attempts = self.store.mark_failed(
                    row.id, str(error), time.time() + delay, uncertain=error.uncertain
                )
                log.warning(
                    "failed #%d %s/%s (attempt %d): %s; retry in %.1f s",
                    row.id,
                    row.event.bucket,
                    row.event.key,
                    attempts,
                    error,
                    delay,
                )
                if error.blocking:
                    return delay
                continue
            except Exception as error:  # a bug must not kill the delivery thread
                log.exception("delivery of #%d failed unexpectedly", row.id)
                self.last_error = f"unexpected: {error!r}"
                self._blocked_until = time.time() + self.config.retry_max_seconds
                return self.config.retry_max_seconds
            self._failures = 0
            self.last_error = None
        if len(rows) == BATCH:
            return 0.0
        next_at = self.store.next_attempt_at()
        if next_at is None:
            return IDLE_SECONDS
        return min(max(next_at - time.time(), 0.0), IDLE_SECONDS)

    def _delivery_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            delay = self.deliver_due()
            self._wake.wait(delay)

    def start(self) -> None:
        pending = self.store.pending()
        if pending:
            log.info("%d event(s) from before the restart still to deliver", pending)
        for name, target in (
            ("event-bridge-http", self._serve),
            ("event-bridge-delivery", self._delivery_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        self.server.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        """Stop taking webhooks, let the delivery in progress finish, close the store."""
        self._stopping.set()
        self._wake.set()
        if self._threads:  # shutdown() waits for serve_forever, which must have been started
            self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(self.config.airflow_timeout_seconds * 3)
        self._threads.clear()
        self.store.close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "r3e-event-bridge"
    # Slow or stuck clients must not hold a thread for ever.
    timeout = 30

    @property
    def bridge(self) -> EventBridge:
        return self.server.bridge  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if urllib.parse.urlsplit(self.path).path == "/health":
            self._send(HTTPStatus.OK, self.bridge.health())
        else:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path: {self.path}"})

    def _authorized(self) -> bool:
        token = self.bridge.config.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def do_POST(self) -> None:
        parser = PARSERS.get(urllib.parse.urlsplit(self.path).path)
        if parser is None:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path: {self.path}"})
            return
        if not self._authorized():
            log.warning("refused a webhook from %s: wrong or missing bearer token", self.address_string())
            self._send(HTTPStatus.UNAUTHORIZED, {"error": "wrong or missing bearer token"})
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return
        if int(length) > MAX_BODY_BYTES:
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        raw = self.rfile.read(int(length))
        try:
            parsed = parser(json.loads(raw))
        except ValueError as error:  # PayloadError, and json's JSONDecodeError
            message = str(error) if isinstance(error, PayloadError) else f"the body is not JSON: {error}"
            log.warning("refused a webhook on %s: %s", self.path, message)
            self._send(HTTPStatus.BAD_REQUEST, {"error": message})
            return
        try:
            result = self.bridge.accept(parsed)
        except sqlite3.Error as error:
            log.error("cannot store an event: %s", error)
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"cannot store the event: {error}"})
            return
        self._send(HTTPStatus.ACCEPTED if result["stored"] else HTTPStatus.OK, result)

    def do_HEAD(self) -> None:
        # Some senders probe their endpoint before the first event.
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main(environ: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load_config(os.environ if environ is None else environ)
        bridge = EventBridge(config)
    except ConfigError as error:
        # Straight to stderr: the one line systemd's status shows must say what to fix.
        print(f"event bridge: configuration error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"event bridge: cannot listen on {config.bind}:{config.port}: {error}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bridge.start()
    log.info(
        "listening on %s for buckets %s; asset %r at %s",
        bridge.url,
        ",".join(sorted(config.buckets)),
        config.asset_name,
        config.airflow_url,
    )
    while not stopping.wait(1.0):
        pass
    bridge.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The bridge's state in SQLite: seen events, the delivery queue, and each source's checkpoint.

``UNIQUE (bucket, key, etag)`` with ``INSERT OR IGNORE`` decides new-or-duplicate in one
statement, so concurrent webhooks, a replayed log and the reconcile cannot let the same content
in twice. An event and its source's checkpoint (the ``tsNs`` of the last filer log message
handled) are written in one transaction: a bridge killed at any point resumes from a checkpoint
that matches exactly what it stored, so it neither loses nor doubles a message. Writes are
synchronous (``synchronous=FULL``): what was stored survives a crash.

Delivered rows of contents an object no longer holds are forgotten, so going back to earlier
content (A, B, A) counts as a change again. Objects that were in the buckets before the bridge
first started are recorded as the ``baseline``: known, never delivered.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r3e_testbed.services.event_bridge.events import ObjectEvent

#: Delivered rows waiting for the next round are fetched this many at a time.
BATCH = 50

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
    uncertain        INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    UNIQUE (bucket, key, etag)
);
CREATE INDEX IF NOT EXISTS events_pending ON events (delivered, id);
CREATE INDEX IF NOT EXISTS events_by_key ON events (bucket, key, id);
CREATE TABLE IF NOT EXISTS checkpoints (
    source  TEXT    PRIMARY KEY,
    ts_ns   INTEGER NOT NULL
);
"""
_COLUMNS = "id, bucket, key, etag, size, event_type, source, received_at, attempts, uncertain, attempted_at"
#: The source name of rows recorded as already there when the bridge first started.
BASELINE = "baseline"


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


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


class EventStore:
    """Seen events, the delivery queue and the checkpoints, in one SQLite file."""

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

    def _transaction(self, work: Any) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return result

    def _insert(self, event: ObjectEvent, received_at: str, *, delivered: bool = False) -> int | None:
        # Forget what the object held before its latest content, once delivered: that content
        # may come back (A, B, A) and must then count as a change. The latest row and rows still
        # owed to Airflow stay, and INSERT OR IGNORE treats them as duplicates.
        self._db.execute(
            "DELETE FROM events WHERE bucket = ? AND key = ? AND delivered = 1"
            " AND id <> (SELECT MAX(id) FROM events WHERE bucket = ? AND key = ?)",
            (event.bucket, event.key, event.bucket, event.key),
        )
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO events"
            " (bucket, key, etag, size, event_type, source, received_at, delivered, delivered_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.bucket,
                event.key,
                event.etag,
                event.size,
                event.event_type,
                event.source,
                received_at,
                int(delivered),
                received_at if delivered else None,
            ),
        )
        return cursor.lastrowid if cursor.rowcount == 1 else None

    def _advance(self, source: str, ts_ns: int) -> None:
        self._db.execute(
            "INSERT INTO checkpoints (source, ts_ns) VALUES (?, ?)"
            " ON CONFLICT (source) DO UPDATE SET ts_ns = MAX(ts_ns, excluded.ts_ns)",
            (source, ts_ns),
        )

    def add(self, event: ObjectEvent | None, checkpoint: tuple[str, int] | None = None) -> StoredEvent | None:
        """Store a new event for delivery (None: only the checkpoint moves) and move the
        checkpoint, in one transaction; returns None when (bucket, key, etag) is already stored."""
        received_at = utcnow()

        def work() -> int | None:
            row_id = self._insert(event, received_at) if event is not None else None
            if checkpoint is not None:
                self._advance(*checkpoint)
            return row_id

        row_id = self._transaction(work)
        if row_id is None or event is None:
            return None
        return StoredEvent(row_id, event, received_at, 0, False, None)

    def record_baseline(self, events: list[ObjectEvent], checkpoints: dict[str, int]) -> int:
        """The objects there before the bridge's first start, known but never delivered, and the
        checkpoints to start from; returns how many objects were recorded."""
        received_at = utcnow()

        def work() -> int:
            recorded = sum(self._insert(e, received_at, delivered=True) is not None for e in events)
            for source, ts_ns in checkpoints.items():
                self._advance(source, ts_ns)
            return recorded

        return self._transaction(work)

    def checkpoint(self, source: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT ts_ns FROM checkpoints WHERE source = ?", (source,)).fetchone()
        return row[0] if row else None

    def is_new(self) -> bool:
        """Nothing recorded yet: the bridge's first start on this state directory."""
        with self._lock:
            events = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            checkpoints = self._db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
        return events == 0 and checkpoints == 0

    def latest_etags(self, bucket: str) -> dict[str, str]:
        """Each key's latest known content (the last row stored for it)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, etag FROM events WHERE id IN"
                " (SELECT MAX(id) FROM events WHERE bucket = ? GROUP BY key)",
                (bucket,),
            ).fetchall()
        return dict(rows)

    def due(self, limit: int = BATCH) -> list[StoredEvent]:
        """The oldest undelivered rows, in the order they were stored."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE delivered = 0 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [StoredEvent(r[0], ObjectEvent(*r[1:7]), r[7], r[8], bool(r[9]), r[10]) for r in rows]

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
                (utcnow(), asset_event_id, row_id),
            )

    def mark_failed(self, row_id: int, error: str, *, uncertain: bool) -> int:
        """Record a failed attempt; returns the row's attempt count."""
        with self._lock:
            self._db.execute(
                "UPDATE events SET attempts = attempts + 1, last_error = ?, uncertain = ? WHERE id = ?",
                (error, int(uncertain), row_id),
            )
            row = self._db.execute("SELECT attempts FROM events WHERE id = ?", (row_id,)).fetchone()
        return row[0] if row else 0

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events WHERE delivered = 0").fetchone()[0]

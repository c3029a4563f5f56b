"""Delivery of stored events to Airflow, in order, each exactly once.

Each event becomes ``create_asset_event(asset_id, extra={"bucket", "key", "etag", "size",
"event_type", "source", "received_at"})`` through the official client. The asset id is looked up
by name once and cached; while the asset does not exist (its DAG not parsed yet) or Airflow is
unreachable, the whole queue backs off exponentially, and rows wait in SQLite across restarts. An
attempt whose outcome is unknown (timeout, dropped connection, 5xx, or the bridge killed while
posting) makes the row *uncertain*: before posting it again the bridge looks for it among the
asset's recent events, so an event Airflow did record is never posted twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from airflow_client.client.models.create_asset_events_body import CreateAssetEventsBody

from r3e_testbed.clients.airflow import Airflow, AirflowError
from r3e_testbed.services.event_bridge.store import BATCH, EventStore, StoredEvent

log = logging.getLogger("r3e_testbed.event_bridge")

#: Even with nothing to do, the delivery thread looks at the queue this often.
IDLE_SECONDS = 30.0
#: An uncertain attempt is looked for among the asset's events since its first attempt minus this
#: margin (the clocks of bridge and api-server may differ a little).
LOOKBACK_MARGIN_SECONDS = 120.0
#: Asset events fetched per page while looking for an uncertain attempt.
PAGE = 100


class DeliveryError(Exception):
    """Creating an asset event failed.

    ``blocking``: every event would fail the same way now (Airflow down, credentials refused,
    asset missing), so the round stops and the whole queue backs off.
    ``uncertain``: the request may have reached Airflow and been recorded although it failed.
    """

    def __init__(self, message: str, *, blocking: bool = True, uncertain: bool = False) -> None:
        super().__init__(message)
        self.blocking = blocking
        self.uncertain = uncertain


class Delivery:
    """Delivers what the store holds; ``run`` is the delivery thread's loop."""

    def __init__(
        self,
        store: EventStore,
        airflow: Airflow,
        asset_name: str,
        *,
        retry_initial_seconds: float,
        retry_max_seconds: float,
        on_outcome: Callable[[str, int], None] = lambda outcome, n: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.airflow = airflow
        self.asset_name = asset_name
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.on_outcome = on_outcome
        self.clock = clock
        self.asset_id: int | None = None
        self.last_error: str | None = None
        self._failures = 0  # consecutive blocking failures: the queue's backoff exponent
        self._blocked_until = 0.0
        self._not_before: dict[int, float] = {}  # row id -> when a row-only failure may retry
        self.wake = threading.Event()

    # --- Airflow --------------------------------------------------------------------------------

    def lookup_asset(self) -> int:
        """The asset's id, cached; DeliveryError while Airflow does not know the asset."""
        if self.asset_id is not None:
            return self.asset_id
        try:
            answer = self.airflow.call(
                self.airflow.assets.get_assets, name_pattern=self.asset_name, limit=100
            )
        except AirflowError as error:
            raise DeliveryError(str(error), uncertain=False) from None
        # name_pattern is a substring match ("_" even a wildcard): pick the exact name.
        for asset in answer.assets:
            if asset.name == self.asset_name:
                self.asset_id = asset.id
                log.info("asset %r has id %d", self.asset_name, asset.id)
                return asset.id
        raise DeliveryError(f"asset {self.asset_name!r} not found in Airflow (its DAG not parsed yet?)")

    def find_event(self, asset_id: int, extra: dict[str, Any], since: float) -> int | None:
        """The id of an asset event carrying this extra, created since ``since`` (minus a margin)."""
        start = dt.datetime.fromtimestamp(since - LOOKBACK_MARGIN_SECONDS, dt.UTC)
        offset = 0
        while True:
            try:
                page = self.airflow.call(
                    self.airflow.assets.get_asset_events,
                    asset_id=asset_id,
                    timestamp_gte=start,
                    order_by=["timestamp"],
                    limit=PAGE,
                    offset=offset,
                )
            except AirflowError as error:
                raise DeliveryError(str(error), uncertain=True) from None
            for event in page.asset_events:
                found = event.extra or {}
                if all(found.get(name) == value for name, value in extra.items()):
                    return event.id
            offset += len(page.asset_events)
            if not page.asset_events or offset >= page.total_entries:
                return None

    def create_event(self, asset_id: int, extra: dict[str, Any]) -> int:
        body = CreateAssetEventsBody(asset_id=asset_id, extra=extra)
        try:
            return self.airflow.call(self.airflow.assets.create_asset_event, body).id
        except AirflowError as error:
            if error.status is None:
                raise DeliveryError(str(error), uncertain=error.uncertain) from None
            if error.status == 404:
                self.asset_id = None  # the asset is gone (or renamed): look it up again
                raise DeliveryError(str(error)) from None
            if error.status >= 500:
                raise DeliveryError(str(error), uncertain=True) from None
            if error.status in (401, 403, 429):
                raise DeliveryError(str(error)) from None
            # Any other 4xx is about this event's body: back off this row only.
            raise DeliveryError(str(error), blocking=False) from None

    # --- the queue ------------------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        return min(self.retry_initial_seconds * 2 ** max(failures - 1, 0), self.retry_max_seconds)

    def deliver(self, row: StoredEvent) -> None:
        """Create the row's asset event; DeliveryError.uncertain tells whether the row is uncertain now."""
        extra = row.extra()
        try:
            asset_id = self.lookup_asset()
            if row.uncertain and row.attempted_at is not None:
                found = self.find_event(asset_id, extra, row.attempted_at)
                if found is not None:
                    self.store.mark_delivered(row.id, found)
                    self.on_outcome("delivered", 1)
                    log.info(
                        "delivered #%d as asset event %s (an earlier attempt had reached Airflow)",
                        row.id,
                        found,
                    )
                    return
        except DeliveryError as error:
            error.uncertain = row.uncertain  # nothing was posted in this attempt
            raise
        self.store.mark_attempt(row.id, time.time())  # a timestamp to look up by, not a timer
        try:
            event_id = self.create_event(asset_id, extra)
        except DeliveryError as error:
            # Posted now: uncertain if this POST may have got through, or an earlier one may have.
            error.uncertain = error.uncertain or row.uncertain
            raise
        self.store.mark_delivered(row.id, event_id)
        self.on_outcome("delivered", 1)
        e = row.event
        log.info(
            "delivered #%d %s/%s etag %s as asset event %s of %r",
            row.id,
            e.bucket,
            e.key,
            e.etag,
            event_id,
            self.asset_name,
        )

    def deliver_due(self, stopping: threading.Event | None = None) -> float:
        """One delivery round; returns the seconds until the next one is due."""
        now = self.clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        rows = [row for row in self.store.due(BATCH) if self._not_before.get(row.id, 0.0) <= now]
        for row in rows:
            if stopping is not None and stopping.is_set():
                return 0.0
            try:
                self.deliver(row)
            except DeliveryError as error:
                self.on_outcome("failed_attempts", 1)
                self.last_error = str(error)
                if error.blocking:
                    self._failures += 1
                    delay = self._backoff(self._failures)
                    self._blocked_until = self.clock() + delay
                else:
                    delay = self._backoff(row.attempts + 1)
                    self._not_before[row.id] = self.clock() + delay
                attempts = self.store.mark_failed(row.id, str(error), uncertain=error.uncertain)
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
                self._blocked_until = self.clock() + self.retry_max_seconds
                return self.retry_max_seconds
            self._not_before.pop(row.id, None)
            self._failures = 0
            self.last_error = None
        if len(rows) == BATCH:
            return 0.0
        waiting = [at for row_id, at in self._not_before.items() if at > now]
        return min([max(at - self.clock(), 0.0) for at in waiting] + [IDLE_SECONDS])

    def run(self, stopping: threading.Event) -> None:
        """The delivery thread: a round, then wait until the next is due or an event arrives."""
        while not stopping.is_set():
            self.wake.clear()
            delay = self.deliver_due(stopping)
            self.wake.wait(delay)

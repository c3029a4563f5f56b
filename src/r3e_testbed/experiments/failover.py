"""Failover times and exactly-once accounting of a host-loss experiment.

While the fault runs, the failover probes (:mod:`.probes`) write to PostgreSQL, the broker, the
object store and the execution API from a host the fault spares, the harness uploads a few
files through the object store (each must start exactly one run), and, where PostgreSQL is
replicated, counts the members that call themselves primary once a second. Afterwards:

- **failover time per component**: from the injection until the probe's writes were accepted
  again (the end of its first outage; 0 when it saw none), and for scheduling, until the first
  task instance the scheduler queued after the injection;
- **accounting**: every acknowledged ledger row is in the table, every acknowledged object
  reads back whole, every upload gave one asset event and one run (:func:`.runner.delivery_check`),
  no task instance succeeded in two tries, and never two primaries at once.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .background import Periodic
from .ledger import LedgerLog, missing, read_log
from .probes import COMPONENTS, object_body, object_key
from .results import Check, TaskInterval

#: How many files the harness uploads during a host-loss fault (each must start one run).
ACCOUNTING_UPLOADS = 3
#: How many lost items a check names before it only counts them.
NAMED = 10


def read_probe_logs(folder: str | Path) -> dict[str, LedgerLog | None]:
    """The probes' logs fetched to ``folder``, per component; None where a probe wrote none."""
    logs: dict[str, LedgerLog | None] = {}
    for component in COMPONENTS:
        path = Path(folder) / f"{component}.log"
        logs[component] = read_log(path.read_text().splitlines()) if path.is_file() else None
    return logs


def read_found(folder: str | Path) -> list[int] | None:
    path = Path(folder) / "found.json"
    return json.loads(path.read_text()) if path.is_file() else None


def component_failover(
    logs: Mapping[str, LedgerLog | None], injected_at: float, reverted_at: float | None
) -> dict[str, dict[str, Any]]:
    """Per component: failover_s (see :meth:`LedgerLog.failover_s`), how many outages the probe
    saw from the injection on, and the acknowledged count."""
    figures: dict[str, dict[str, Any]] = {}
    for component, log in logs.items():
        if log is None:
            figures[component] = {"failover_s": None, "outages": None, "acknowledged": 0, "probed": False}
            continue
        after = [(start, end) for start, end in log.outages if end is None or end > injected_at]
        figures[component] = {
            "failover_s": log.failover_s(injected_at, reverted_at),
            "outages": len(after),
            "acknowledged": len(log.acknowledged),
            "probed": True,
        }
    return figures


def scheduling_failover_s(task_instances: Iterable[Mapping[str, Any]], injected_at: float) -> float | None:
    """Seconds from the injection to the first task instance queued after it (None: none was)."""
    from .runner import epoch

    queued = [
        at for ti in task_instances if (at := epoch(ti.get("queued_when"))) is not None and at > injected_at
    ]
    return round(min(queued) - injected_at, 2) if queued else None


def completed_twice(intervals: Iterable[TaskInterval]) -> list[str]:
    """Task instances with more than one successful try: work done twice."""
    successes = Counter(f"{i['task_id']}[{i['map_index']}]" for i in intervals if i["state"] == "success")
    return sorted(name for name, count in successes.items() if count > 1)


def ledger_check(log: LedgerLog | None, found: list[int] | None) -> tuple[Check, dict[str, Any]]:
    if log is None or found is None:
        what = "no ledger log" if log is None else "no count of the table's rows"
        return Check(name="acknowledged rows kept", passed=False, detail=what), {}
    lost = missing(log.acknowledged, found)
    figures = {"acknowledged": len(log.acknowledged), "found": len(set(found)), "lost": lost[:NAMED]}
    return (
        Check(
            name="acknowledged rows kept",
            passed=bool(log.acknowledged) and not lost,
            detail=f"{len(log.acknowledged)} rows acknowledged, {len(found)} in the table, {len(lost)} lost"
            + (f" ({', '.join(map(str, lost[:NAMED]))})" if lost else ""),
        ),
        figures,
    )


def objects_check(store, tag: str, log: LedgerLog | None) -> tuple[Check, dict[str, Any]]:
    """Every object the probe was told was stored reads back with its bytes."""
    if log is None:
        return Check(name="acknowledged objects readable", passed=False, detail="no object-store log"), {}
    unreadable = []
    for number in log.acknowledged:
        try:
            if store.get(object_key(tag, number)) != object_body(tag, number):
                unreadable.append(number)
        except (KeyError, OSError):
            unreadable.append(number)
    readable = len(log.acknowledged) - len(unreadable)
    return (
        Check(
            name="acknowledged objects readable",
            passed=bool(log.acknowledged) and not unreadable,
            detail=f"{len(log.acknowledged)} objects acknowledged, {readable} read back whole",
        ),
        {"acknowledged": len(log.acknowledged), "readable": readable, "unreadable": unreadable[:NAMED]},
    )


def twice_check(doubled: list[str]) -> Check:
    return Check(
        name="no task completed twice",
        passed=not doubled,
        detail=", ".join(doubled[:NAMED]) or "every task instance succeeded in one try at most",
    )


def primaries_check(most: int | None) -> Check | None:
    if most is None:
        return None
    return Check(
        name="one primary at most",
        passed=most <= 1,
        detail=f"at most {most} PostgreSQL member(s) called themselves primary at once",
    )


class PrimaryCounter(Periodic):
    """Once a second, in a thread: how many PostgreSQL members say they are primary."""

    def __init__(self, replication) -> None:
        super().__init__()
        self.replication = replication
        self.most = 0
        self.samples = 0

    def tick(self) -> None:
        self.most = max(self.most, len(self.replication.primaries()))
        self.samples += 1


def probe_tag() -> str:
    """A fresh tag for one experiment's rows, messages and objects."""
    return f"f{int(time.time() * 1000):x}"

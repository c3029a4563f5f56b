"""The autoscaler service: poll Airflow, apply the KEDA rule per queue, resize each queue's pool.

Run it with ``python -m r3e_testbed.autoscaler.service --config /etc/r3e/autoscaler.json``. Standard
library only, like the event bridge: it is installed without dependencies on any host.

Every poll, for each pool: the queue's task instances in state ``queued`` and ``running`` are
counted through Airflow's REST API, the pool's workers taking tasks are counted, and
:class:`~r3e_testbed.autoscaler.rule.Autoscaler` decides. Workers of the queue outside the pool
(``fixed_workers``, e.g. each worker host's first worker) count towards the rule's total; the pool
supplies the rest. When Airflow cannot be asked, nothing changes.

Decisions are written as JSON lines to ``decision_log`` (and to the journal): every scale out and
scale in with what was done, and every hold whose inputs differ from the previous logged one (an
unchanged hold every few seconds would drown the log).

Configuration (JSON)::

    {"airflow": {"url": "http://10.0.0.3:8080", "user": "admin", "password_file": "/etc/r3e/pw"},
     "poll_interval_s": 5,
     "decision_log": "/var/lib/r3e-autoscaler/decisions.jsonl",
     "pools": [{"queue": "default", "concurrency": 4, "minimum": 2, "maximum": 5,
                "fixed_workers": 2, "scale_out_cooldown_s": 0, "scale_in_cooldown_s": 60,
                "backend": "systemd", "unit_template": "airflow-worker@", "instances": [2, 3, 4]}]}

``backend`` ``podman`` takes ``"containers": [...]`` and ``"stop_timeout_s"`` instead of the unit
settings. A bad setting stops the service at start with a message naming it.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r3e_testbed.autoscaler.pools import PodmanPool, Pool, PoolError, SystemdPool
from r3e_testbed.autoscaler.rule import Autoscaler, Policy
from r3e_testbed.services.airflow_api import AirflowApi, AirflowRequestError, HTTPStatusError

log = logging.getLogger("r3e_testbed.autoscaler")

#: The states the KEDA rule counts.
COUNTED_STATES = ("queued", "running")


class ConfigError(ValueError):
    """The configuration cannot work; the message names the setting."""


@dataclass
class ManagedPool:
    """One queue's policy, its decision state and the pool it resizes."""

    autoscaler: Autoscaler
    pool: Pool
    fixed_workers: int

    @property
    def queue(self) -> str:
        return self.autoscaler.policy.queue


@dataclass(frozen=True)
class Settings:
    airflow_url: str
    airflow_user: str
    airflow_password: str
    poll_interval_s: float
    decision_log: Path
    pools: list[ManagedPool]


def _get(
    mapping: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...
) -> Any:
    if key not in mapping:
        if default is ...:
            raise ConfigError(f"{where}{key}: missing")
        return default
    value = mapping[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _pool(entry: dict[str, Any], where: str) -> Pool:
    backend = _get(entry, "backend", str, where)
    try:
        if backend == "systemd":
            return SystemdPool(
                _get(entry, "unit_template", str, where, "airflow-worker@"),
                _get(entry, "instances", list, where),
            )
        if backend == "podman":
            return PodmanPool(
                _get(entry, "containers", list, where), _get(entry, "stop_timeout_s", int, where, 660)
            )
    except ValueError as error:
        raise ConfigError(f"{where}{error}") from None
    raise ConfigError(f"{where}backend: expected 'systemd' or 'podman', got {backend!r}")


def load_settings(path: Path) -> Settings:
    """Read and check the configuration file; ConfigError names the first bad setting."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except ValueError as error:
        raise ConfigError(f"{path}: not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    airflow = _get(raw, "airflow", dict, "")
    password = airflow.get("password")
    if password is None:
        password_file = _get(airflow, "password_file", str, "airflow.")
        try:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"airflow.password_file: {password_file}: {error.strerror}") from None
    poll_interval_s = _get(raw, "poll_interval_s", (int, float), "", 5)
    entries = _get(raw, "pools", list, "")
    if not entries:
        raise ConfigError("pools: at least one pool is needed")
    pools: list[ManagedPool] = []
    for index, entry in enumerate(entries):
        where = f"pools[{index}]."
        if not isinstance(entry, dict):
            raise ConfigError(f"pools[{index}]: expected an object")
        try:
            policy = Policy(
                queue=_get(entry, "queue", str, where),
                concurrency=_get(entry, "concurrency", int, where),
                minimum=_get(entry, "minimum", int, where),
                maximum=_get(entry, "maximum", int, where),
                poll_interval_s=poll_interval_s,
                scale_out_cooldown_s=_get(entry, "scale_out_cooldown_s", (int, float), where, 0),
                scale_in_cooldown_s=_get(entry, "scale_in_cooldown_s", (int, float), where, 120),
            )
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}{error}") from None
        fixed = _get(entry, "fixed_workers", int, where, 0)
        pool = _pool(entry, where)
        if fixed < 0:
            raise ConfigError(f"{where}fixed_workers: must be >= 0, got {fixed}")
        if policy.maximum > fixed + len(pool.members()):
            raise ConfigError(
                f"{where}maximum: {policy.maximum} workers need more than the {fixed} fixed workers "
                f"and the pool's {len(pool.members())} members"
            )
        if any(other.queue == policy.queue for other in pools):
            raise ConfigError(f"{where}queue: {policy.queue!r} has a pool already")
        pools.append(ManagedPool(Autoscaler(policy), pool, fixed))
    return Settings(
        airflow_url=_get(airflow, "url", str, "airflow."),
        airflow_user=_get(airflow, "user", str, "airflow."),
        airflow_password=password,
        poll_interval_s=poll_interval_s,
        decision_log=Path(_get(raw, "decision_log", str, "", "/var/lib/r3e-autoscaler/decisions.jsonl")),
        pools=pools,
    )


class QueueDemand:
    """Queued and running task instances of a queue, from Airflow's REST API."""

    def __init__(self, api: AirflowApi) -> None:
        self.api = api

    def count(self, queue: str, state: str) -> int:
        query = urllib.parse.urlencode({"queue": queue, "state": state, "limit": 1})
        answer = self.api.request("GET", f"/api/v2/dags/~/dagRuns/~/taskInstances?{query}")
        total = answer.get("total_entries") if isinstance(answer, dict) else None
        if not isinstance(total, int):
            raise AirflowRequestError("GET /api/v2/dags/~/dagRuns/~/taskInstances: no total_entries")
        return total

    def __call__(self, queue: str) -> tuple[int, int]:
        queued, running = (self.count(queue, state) for state in COUNTED_STATES)
        return queued, running


class DecisionLog:
    """JSON lines: every change, and every hold whose inputs differ from the last one logged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_inputs: dict[str, tuple[Any, ...]] = {}

    def write(self, record: dict[str, Any]) -> bool:
        inputs = tuple(record[name] for name in ("queued", "running", "current", "desired", "action"))
        if record["action"] == "hold" and self._last_inputs.get(record["queue"]) == inputs:
            return False
        self._last_inputs[record["queue"]] = inputs
        line = json.dumps(record, sort_keys=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        log.info("%s", line)
        return True


def poll_once(
    pools: list[ManagedPool],
    demand: Callable[[str], tuple[int, int]],
    decisions: DecisionLog,
    now: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> list[dict[str, Any]]:
    """One round over the pools; returns the records of the decisions taken."""
    records = []
    for managed in pools:
        try:
            queued, running = demand(managed.queue)
        except (AirflowRequestError, HTTPStatusError) as error:
            log.warning(
                "queue %s: cannot count its tasks, leaving the pool as it is: %s", managed.queue, error
            )
            continue
        try:
            in_pool = len(managed.pool.taking_tasks())
            decision = managed.autoscaler.decide(now(), queued, running, managed.fixed_workers + in_pool)
            record = decision.as_dict() | {
                "time": wall_clock(),
                "pool": managed.pool.name,
                "in_pool": in_pool,
            }
            if decision.action != "hold":
                record["done"] = managed.pool.resize(max(0, decision.target - managed.fixed_workers))
        except PoolError as error:
            log.error("queue %s: %s", managed.queue, error)
            continue
        decisions.write(record)
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", type=Path, default=Path("/etc/r3e/autoscaler.json"))
    parser.add_argument("--once", action="store_true", help="one poll, then exit")
    parser.add_argument(
        "--check", action="store_true", help="check the configuration and the pools, then exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        log.error("configuration: %s", error)
        return 2
    if args.check:
        try:
            for managed in settings.pools:
                print(
                    f"{managed.queue}: {managed.pool.name}, {len(managed.pool.taking_tasks())} taking tasks"
                )
        except PoolError as error:
            log.error("pool: %s", error)
            return 2
        return 0
    settings.decision_log.parent.mkdir(parents=True, exist_ok=True)
    api = AirflowApi(settings.airflow_url, settings.airflow_user, settings.airflow_password, timeout=10)
    demand, decisions = QueueDemand(api), DecisionLog(settings.decision_log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info(
        "scaling %s every %s s",
        ", ".join(f"{m.queue} ({m.pool.name})" for m in settings.pools),
        settings.poll_interval_s,
    )
    while True:
        poll_once(settings.pools, demand, decisions)
        if args.once or stop.wait(settings.poll_interval_s):
            return 0


if __name__ == "__main__":
    sys.exit(main())

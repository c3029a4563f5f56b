"""The autoscaler service: poll Airflow, apply the KEDA rule per queue, resize each queue's pool.

Run it with ``python -m r3e_testbed.autoscaler.service --config /etc/r3e/autoscaler.json``. It is
installed with the package's ``services`` extra (pinned by the Airflow lock): Airflow's REST API
through the official client (:mod:`r3e_testbed.clients.airflow`), its configuration checked by
pydantic.

Every poll, for each pool: the queue's task instances in state ``queued`` and ``running`` are
counted through Airflow's REST API, the pool's workers taking tasks are counted, and
:class:`~r3e_testbed.autoscaler.rule.Autoscaler` decides. Workers of the queue outside the pool
(``fixed_workers``, e.g. each worker host's first worker) count towards the rule's total; the pool
supplies the rest. When Airflow cannot be asked, nothing changes: the next poll asks again.

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
settings. Types are strict (``"4"`` or ``true`` is not a count) and unknown settings are refused.
A bad setting stops the service at start (exit status 2) with a message naming it, e.g.
``pools[0].maximum``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from r3e_testbed.autoscaler.pools import PodmanPool, Pool, PoolError, SystemdPool
from r3e_testbed.autoscaler.rule import Autoscaler, Policy
from r3e_testbed.clients.airflow import Airflow, AirflowError
from r3e_testbed.services.skeleton import CONFIG_ERROR_EXIT, configure_logging

log = logging.getLogger("r3e_testbed.autoscaler")

#: The states the KEDA rule counts.
COUNTED_STATES = ("queued", "running")
DEFAULT_DECISION_LOG = Path("/var/lib/r3e-autoscaler/decisions.jsonl")
#: Seconds to wait for one answer of Airflow's API.
AIRFLOW_TIMEOUT_S = 10.0


class ConfigError(ValueError):
    """The configuration cannot work; the message names the setting."""


# --- the configuration file's shape -----------------------------------------------------------
# The models check types and shape; what needs several settings at once (a policy's bounds, a
# pool's size against the maximum) is checked where it is used, by Policy and the pools.


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class AirflowConfig(_Section):
    url: str
    user: str
    # One of the two; the file keeps the password out of the configuration.
    password: SecretStr | None = None
    password_file: Path | None = None


class _PoolConfig(_Section):
    queue: str
    concurrency: int
    minimum: int
    maximum: int
    fixed_workers: Annotated[int, Field(ge=0)] = 0
    scale_out_cooldown_s: float = 0.0
    scale_in_cooldown_s: float = 120.0


class SystemdPoolConfig(_PoolConfig):
    backend: Literal["systemd"]
    unit_template: str = "airflow-worker@"
    instances: list[int]


class PodmanPoolConfig(_PoolConfig):
    backend: Literal["podman"]
    containers: list[str]
    stop_timeout_s: int = 660


BACKENDS = ("systemd", "podman")
PoolConfig = Annotated[SystemdPoolConfig | PodmanPoolConfig, Field(discriminator="backend")]


class AutoscalerConfig(_Section):
    airflow: AirflowConfig
    poll_interval_s: float = 5.0
    decision_log: Path = DEFAULT_DECISION_LOG
    pools: list[PoolConfig]


def _setting(location: tuple[int | str, ...]) -> str:
    """``("pools", 0, "systemd", "instances")`` -> ``pools[0].instances`` (the backend tag that
    pydantic adds to the location of a pool's errors is not a setting)."""
    name = ""
    for index, part in enumerate(location):
        if isinstance(part, int):
            name += f"[{part}]"
        elif not (part in BACKENDS and index > 0 and isinstance(location[index - 1], int)):
            name += f".{part}" if name else part
    return name


def _problem(problem: dict[str, Any]) -> str:
    """One pydantic error as ``<setting>: <what is wrong>``; a password's value is never shown."""
    setting, kind, context = _setting(problem["loc"]), problem["type"], problem.get("ctx", {})
    given = "" if "password" in setting else f", got {problem['input']!r}"
    expected = {
        "int_type": "int",
        "float_type": "a number",
        "string_type": "str",
        "list_type": "list",
        "bool_type": "bool",
        "dict_type": "an object",
        "model_type": "an object",
    }
    if kind in expected:
        what = f"expected {expected[kind]}{given}"
    elif kind == "missing":
        what = "missing"
    elif kind == "extra_forbidden":
        what = "not a setting of the autoscaler"
    elif kind == "greater_than_equal":
        what = f"must be >= {context['ge']}{given}"
    elif kind == "union_tag_not_found":
        setting, what = f"{setting}.{context['discriminator'].strip(chr(39))}", "missing"
    elif kind == "union_tag_invalid":
        setting = f"{setting}.{context['discriminator'].strip(chr(39))}"
        what = f"expected {context['expected_tags'].replace(', ', ' or ')}, got {context['tag']!r}"
    else:
        what = problem["msg"]
    return f"{setting}: {what}" if setting else what


def _read_config(path: Path) -> AutoscalerConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    try:
        return AutoscalerConfig.model_validate_json(text)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        if problems[0]["type"] == "json_invalid":
            raise ConfigError(f"{path}: not JSON: {problems[0]['ctx']['error']}") from None
        if problems[0]["loc"] == () and problems[0]["type"] == "model_type":
            raise ConfigError(f"{path}: expected a JSON object") from None
        raise ConfigError("; ".join(_problem(problem) for problem in problems)) from None


# --- what the service runs with ---------------------------------------------------------------


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


def _pool(entry: SystemdPoolConfig | PodmanPoolConfig) -> Pool:
    if isinstance(entry, SystemdPoolConfig):
        return SystemdPool(entry.unit_template, entry.instances)
    return PodmanPool(entry.containers, entry.stop_timeout_s)


def _password(airflow: AirflowConfig) -> str:
    if airflow.password is not None:
        return airflow.password.get_secret_value()
    if airflow.password_file is None:
        raise ConfigError("airflow.password_file: missing (or give airflow.password)")
    try:
        return airflow.password_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"airflow.password_file: {airflow.password_file}: {error.strerror}") from None


def load_settings(path: Path) -> Settings:
    """Read and check the configuration file; ConfigError names the bad settings."""
    config = _read_config(path)
    password = _password(config.airflow)
    if not config.pools:
        raise ConfigError("pools: at least one pool is needed")
    pools: list[ManagedPool] = []
    for index, entry in enumerate(config.pools):
        where = f"pools[{index}]."
        try:
            policy = Policy(
                queue=entry.queue,
                concurrency=entry.concurrency,
                minimum=entry.minimum,
                maximum=entry.maximum,
                poll_interval_s=config.poll_interval_s,
                scale_out_cooldown_s=entry.scale_out_cooldown_s,
                scale_in_cooldown_s=entry.scale_in_cooldown_s,
            )
            pool = _pool(entry)
        except (TypeError, ValueError) as error:
            # The policy's errors start with the setting's name; poll_interval_s is not the pool's.
            raise ConfigError(f"{'' if str(error).startswith('poll_interval_s') else where}{error}") from None
        if policy.maximum > entry.fixed_workers + len(pool.members()):
            raise ConfigError(
                f"{where}maximum: {policy.maximum} workers need more than the {entry.fixed_workers} fixed "
                f"workers and the pool's {len(pool.members())} members"
            )
        if any(other.queue == policy.queue for other in pools):
            raise ConfigError(f"{where}queue: {policy.queue!r} has a pool already")
        pools.append(ManagedPool(Autoscaler(policy), pool, entry.fixed_workers))
    return Settings(
        airflow_url=config.airflow.url,
        airflow_user=config.airflow.user,
        airflow_password=password,
        poll_interval_s=config.poll_interval_s,
        decision_log=config.decision_log,
        pools=pools,
    )


class QueueDemand:
    """Queued and running task instances of a queue, from Airflow's REST API."""

    def __init__(self, airflow: Airflow) -> None:
        self.airflow = airflow

    def count(self, queue: str, state: str) -> int:
        # "~" for the DAG and the run: every DAG's every run. One row is enough: the answer's
        # total counts them all.
        answer = self.airflow.call(
            self.airflow.task_instances.get_task_instances,
            dag_id="~",
            dag_run_id="~",
            queue=[queue],
            state=[state],
            limit=1,
        )
        if answer.total_entries is None:
            raise AirflowError("get_task_instances: no total_entries in the answer", status=200)
        return answer.total_entries

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
        except AirflowError as error:
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
    configure_logging()
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        log.error("configuration: %s", error)
        return CONFIG_ERROR_EXIT
    if args.check:
        try:
            for managed in settings.pools:
                print(
                    f"{managed.queue}: {managed.pool.name}, {len(managed.pool.taking_tasks())} taking tasks"
                )
        except PoolError as error:
            log.error("pool: %s", error)
            return CONFIG_ERROR_EXIT
        return 0
    settings.decision_log.parent.mkdir(parents=True, exist_ok=True)
    decisions = DecisionLog(settings.decision_log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info(
        "scaling %s every %g s",
        ", ".join(f"{m.queue} ({m.pool.name})" for m in settings.pools),
        settings.poll_interval_s,
    )
    # No retries within a poll (patience 0): the next poll is the retry, with fresh counts.
    with Airflow(
        settings.airflow_url, settings.airflow_user, settings.airflow_password, timeout_s=AIRFLOW_TIMEOUT_S
    ) as airflow:
        demand = QueueDemand(airflow)
        while True:
            poll_once(settings.pools, demand, decisions)
            if args.once or stop.wait(settings.poll_interval_s):
                return 0


if __name__ == "__main__":
    sys.exit(main())

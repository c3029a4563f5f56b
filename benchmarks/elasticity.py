"""Elasticity benchmark for the issue "Elasticity and out-of-core scale": prints figures, asserts nothing.

Against a running testbed (any inventory: Molecule's containers, Vagrant's machines, real hosts), it
measures and prints each figure next to its goal:

1. ``training``:   one ``iot_training`` run (triggered like the harness's baseline): its wall time
   (DAG run start to end) / the sum of task durations along its critical path (the longest path of
   the task graph, a mapped task counting as its longest instance). Goal <= 1.5.
2. ``workers``:    ``r3e_probe`` (``--tasks`` mapped I/O-bound tasks of ``--seconds`` each) with 1, 2
   and 4 Celery workers taking the ``default`` queue: throughput = tasks / (last ``work`` end - first
   ``work`` start). Goal: 2 workers >= 1.8 x one worker's throughput (4 shown too). The autoscaler is
   stopped meanwhile; every unit is put back as it was afterwards.
3. ``autoscaler``: with the autoscaler running and its pool empty, a backlog (``--backlog-tasks``,
   more than the fixed workers' slots): seconds from the backlog appearing (the moment the work
   task that exceeded the fixed workers' slots was queued, its ``queued_when``) to the first task a
   pool instance received (its journal). Goal <= 30 s. Then waits for the scale in.
4. ``reconverge``: ``playbooks/site.yml`` run again, timed, its changed results counted (from
   ansible-runner's stats and events: which task changed on which host, the slowest tasks).
   Goal <= 120 s with changed = 0.
5. bare machine -> green pipeline (``make up`` from scratch), goal <= 20 min: not measured here;
   ``--bare-seconds N`` reports a value measured with ``/usr/bin/time -v make up``.

Usage::

    python benchmarks/elasticity.py -i INVENTORY [--only training,workers,autoscaler,reconverge]
        [--json out.json] [--bare-seconds N] [--tasks 16] [--seconds 30] [--workers 1,2,4]
        [--backlog-tasks 24] [--backlog-seconds 20] [--pool-instances 2,3] [--playbooks DIR]

Playbooks run through ansible-runner (the harness's ``Playbooks``); every wait is ``wait_until``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import graphlib
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from r3e_testbed.clients.airflow import AirflowError
from r3e_testbed.clients.wait import WaitTimeout, wait_until
from r3e_testbed.experiments import runner
from r3e_testbed.experiments.runner import RUN_TIMEOUT_S, epoch, now_stamp, run_seconds, wait_for_run
from r3e_testbed.experiments.scenario import Workload
from r3e_testbed.experiments.stack import (
    PLAYBOOKS_ENV,
    PlaybookRun,
    Playbooks,
    Stack,
    StackError,
    find_playbooks,
    read_endpoints,
)

GOAL_TRAINING_RATIO = 1.5  # training wall time / critical path: at most
GOAL_SPEEDUP_TWO = 1.8  # 2 workers' throughput / 1 worker's: at least
GOAL_NEW_WORKER_S = 30.0  # backlog -> a new worker running tasks: at most
GOAL_RECONVERGE_S = 120.0  # site.yml again, changed=0: at most
GOAL_BARE_S = 1200.0  # bare machine -> green pipeline (make up): at most

PARTS = ("training", "workers", "autoscaler", "reconverge")
TRAINING_DAG = "iot_training"
PROBE_DAG, WORK_TASK = "r3e_probe", "work"
FIRST_WORKER_UNIT, INSTANCE_TEMPLATE = "airflow-worker", "airflow-worker@"
AUTOSCALER_UNIT = "r3e-autoscaler"
DECISION_LOG = "/var/lib/r3e-autoscaler/decisions.jsonl"
TAKING_TASKS = ("active", "activating", "reloading")  # systemctl is-active states of a running unit
BENCH_PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
IDLE_TIMEOUT_S = 900.0

# Celery's log line for a message a worker took: "Task <name>[<id>] received".
RECEIVED = re.compile(r"Task \S+\[[^\]]+\] received")


Progress = Callable[[str], None]


# --- pure helpers (unit-tested) -------------------------------------------------------------------


def instance_seconds(ti: Mapping[str, Any]) -> float:
    """A task instance's duration: end - start when both are known, else Airflow's ``duration``, else 0."""
    start, end = epoch(ti.get("start_date")), epoch(ti.get("end_date"))
    if start is not None and end is not None:
        return max(0.0, end - start)
    return float(ti.get("duration") or 0.0)


def task_durations(task_instances: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per task id; a mapped task's instances run in parallel, so it counts as its longest one."""
    durations: dict[str, float] = {}
    for ti in task_instances:
        durations[ti["task_id"]] = max(durations.get(ti["task_id"], 0.0), instance_seconds(ti))
    return durations


def critical_path(
    downstream: Mapping[str, Iterable[str]], durations: Mapping[str, float]
) -> tuple[float, list[str]]:
    """The longest path of the task graph by summed durations (a task without one counts 0).

    ``downstream`` maps each task id to its downstream task ids (Airflow's ``downstream_task_ids``).
    Returns (its seconds, its task ids in order); graphlib.CycleError for a graph with a cycle.
    """
    upstream: dict[str, set[str]] = {task: set() for task in downstream}
    for task, children in downstream.items():
        for child in children:
            upstream.setdefault(child, set()).add(task)
    longest: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for task in graphlib.TopologicalSorter(upstream).static_order():
        before = max(sorted(upstream[task]), key=lambda t: longest[t], default=None)
        longest[task] = durations.get(task, 0.0) + (longest[before] if before is not None else 0.0)
        via[task] = before
    if not longest:
        return 0.0, []
    end: str | None = max(sorted(longest), key=lambda t: longest[t])
    total, path = longest[end], []
    while end is not None:
        path.append(end)
        end = via[end]
    return total, path[::-1]


def training_figures(
    run: Mapping[str, Any], tasks: Iterable[Mapping[str, Any]], task_instances: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Wall time, critical path and their ratio of one DAG run, from Airflow's documents."""
    downstream = {task["task_id"]: list(task.get("downstream_task_ids") or []) for task in tasks}
    durations = task_durations(task_instances)
    path_s, path = critical_path(downstream, durations)
    wall_s = run_seconds(run)
    return {
        "run_id": run.get("dag_run_id"),
        "state": run.get("state"),
        "wall_s": wall_s,
        "critical_path_s": round(path_s, 2),
        "critical_path": path,
        "durations_s": {task: round(seconds, 2) for task, seconds in durations.items()},
        "ratio": None if wall_s is None or path_s <= 0 else round(wall_s / path_s, 3),
    }


def throughput(task_instances: Iterable[Mapping[str, Any]], task_id: str = WORK_TASK) -> dict[str, Any]:
    """Tasks of ``task_id`` per second from the first one's start to the last one's end."""
    work = [ti for ti in task_instances if ti["task_id"] == task_id]
    starts = [epoch(ti.get("start_date")) for ti in work]
    ends = [epoch(ti.get("end_date")) for ti in work]
    if not work or None in starts or None in ends:
        raise ValueError(f"{task_id}: {len(work)} instances, some without a start or an end")
    span = max(ends) - min(starts)  # type: ignore[type-var]
    if span <= 0:
        raise ValueError(f"{task_id}: the instances span {span} s")
    return {
        "tasks": len(work),
        "span_s": round(span, 2),
        "per_s": len(work) / span,
        "mean_task_s": round(sum(map(instance_seconds, work)) / len(work), 2),
        "states": dict(Counter(ti.get("state") or "none" for ti in work)),
        "hosts": dict(Counter(ti.get("hostname") or "?" for ti in work)),
    }


def backlog_moment(
    task_instances: Iterable[Mapping[str, Any]], slots: int, task_id: str = WORK_TASK
) -> float | None:
    """When the run's work first exceeded ``slots``: the ``queued_when`` of its (slots + 1)-th task."""
    queued = sorted(
        at for ti in task_instances if ti["task_id"] == task_id if (at := epoch(ti.get("queued_when")))
    )
    return queued[slots] if len(queued) > slots else None


def json_lines(text: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines text; other lines (a cut last line, a warning) are skipped."""
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


@dataclass(frozen=True)
class JournalEntry:
    at: float
    unit: str
    message: str


def journal_entries(text: str) -> list[JournalEntry]:
    """``journalctl -o json`` lines, oldest first (a MESSAGE given as bytes is decoded)."""
    entries = []
    for entry in json_lines(text):
        message = entry.get("MESSAGE") or ""
        if isinstance(message, list):
            message = bytes(message).decode("utf-8", errors="replace")
        # systemd's own messages about a unit ("Started ...") name it in UNIT.
        unit = entry.get("UNIT") or entry.get("_SYSTEMD_UNIT") or ""
        entries.append(JournalEntry(int(entry["__REALTIME_TIMESTAMP"]) / 1e6, unit, message))
    return sorted(entries, key=lambda e: e.at)


def first_entry(
    entries: Iterable[JournalEntry], pattern: str | re.Pattern, after: float
) -> JournalEntry | None:
    """The first entry at or after ``after`` whose message matches ``pattern``."""
    return next((e for e in entries if e.at >= after and re.search(pattern, e.message)), None)


def decisions(text: str, action: str, after: float) -> list[dict[str, Any]]:
    """The records of the decision log (JSON lines) with ``action`` logged at or after ``after``."""
    return [
        record
        for record in json_lines(text)
        if record.get("action") == action and float(record.get("time") or 0) >= after
    ]


# --- figures --------------------------------------------------------------------------------------


@dataclass
class Figure:
    part: str
    name: str
    value: str
    goal: str
    met: bool | None  # None: no goal, or not measured
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


# --- the stack, through Ansible and Airflow's API ---------------------------------------------------


class Bench:
    def __init__(self, stack: Stack, progress: Progress) -> None:
        self.stack, self.airflow, self.say = stack, stack.airflow, progress
        self.endpoints = stack.endpoints

    # Ansible ------------------------------------------------------------------------------------

    def playbook(self, name: str, extra_vars: Mapping[str, Any]) -> PlaybookRun:
        return self.stack.run_playbook(BENCH_PLAYBOOKS / name, extra_vars)

    def command(self, hosts: Sequence[str], argv: Sequence[str]) -> dict[str, dict[str, Any]]:
        """rc, stdout and stderr of a command on each host."""
        with tempfile.TemporaryDirectory(prefix="r3e-bench-") as folder:
            out = Path(folder) / "out.json"
            self.playbook(
                "command.yml",
                {"bench_hosts": ",".join(hosts), "bench_argv": list(argv), "bench_out": str(out)},
            )
            results = json.loads(out.read_text())
        missing = sorted(set(hosts) - set(results))
        if missing:
            raise StackError(f"{' '.join(argv)}: no result from {', '.join(missing)}")
        return results

    def unit_states(self, hosts: Sequence[str], units: Sequence[str]) -> dict[str, dict[str, str]]:
        """host -> unit -> ``systemctl is-active`` state."""
        results = self.command(hosts, ["systemctl", "is-active", *units])
        states = {}
        for host in hosts:
            words = results[host]["stdout"].split()
            if len(words) != len(units):
                raise StackError(f"systemctl is-active on {host}: {results[host]['stdout']!r}")
            states[host] = dict(zip(units, words, strict=True))
        return states

    def set_units(self, plan: Mapping[str, list[dict[str, Any]]]) -> None:
        self.say(
            "units: "
            + "; ".join(
                f"{h}: " + ", ".join(f"{u['unit']} {u['state']}" for u in us) for h, us in plan.items()
            )
        )
        self.playbook("workers.yml", {"bench_units": plan})

    # Airflow ------------------------------------------------------------------------------------

    def active_runs(self) -> int:
        """DAG runs queued or running, of every DAG."""
        api = self.airflow.dag_runs
        answer = self.airflow.call(api.get_dag_runs, "~", state=["queued", "running"], limit=1)
        return answer.total_entries if answer.total_entries is not None else len(answer.dag_runs)

    def wait_idle(self, quiet_s: float = 15.0, timeout_s: float = IDLE_TIMEOUT_S) -> None:
        """Until no DAG run is queued or running for ``quiet_s`` (runs started by assets included)."""
        quiet_since: float | None = None
        said = False

        def quiet_long_enough() -> bool:
            nonlocal quiet_since, said
            if self.active_runs():
                quiet_since = None
                if not said:
                    self.say("waiting for the DAG runs in progress to end")
                    said = True
                return False
            quiet_since = quiet_since if quiet_since is not None else time.monotonic()
            return time.monotonic() - quiet_since >= quiet_s

        try:
            wait_until(quiet_long_enough, timeout_s=timeout_s, every_s=3.0, what="no DAG run in progress")
        except WaitTimeout:
            raise StackError(f"DAG runs still in progress after {timeout_s:.0f} s") from None

    def probe(self, label: str, tasks: int, seconds: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Trigger r3e_probe and wait for it: (its run, its task instances)."""
        run_id = f"bench__{label}__{now_stamp()}"
        self.stack.trigger(PROBE_DAG, run_id, {"tasks": tasks, "seconds": seconds})
        self.say(f"{PROBE_DAG} {run_id}: {tasks} tasks of {seconds:g} s")
        run = wait_for_run(self.stack, PROBE_DAG, run_id, RUN_TIMEOUT_S)
        return run, self.stack.task_instances(PROBE_DAG, run_id)

    # Topology -----------------------------------------------------------------------------------

    def default_workers(self) -> list[tuple[str, int]]:
        """(host, concurrency) of the worker hosts whose first worker takes ``default``, in order."""
        workers = []
        for host in self.endpoints.groups.get("airflow_workers", []):
            settings = self.endpoints.settings.get(host, {})
            queues = settings.get("worker_queues", [])
            if isinstance(queues, str):
                queues = re.findall(r"[\w.-]+", queues)
            if "default" in queues:
                workers.append((host, int(settings.get("worker_concurrency") or 0)))
        if not workers:
            raise StackError("no worker host takes the default queue")
        return workers

    def autoscaler_host(self) -> str | None:
        hosts = self.endpoints.groups.get("autoscalers", [])
        return hosts[0] if hosts else None


# --- 1. training ----------------------------------------------------------------------------------


def measure_training(bench: Bench, seed: int) -> list[Figure]:
    bench.wait_idle()
    run = runner.baseline(bench.stack, Workload(seed=seed), bench.say)
    run_id = run["dag_run_id"]
    tasks = bench.stack.tasks(TRAINING_DAG)
    figures = training_figures(run, tasks, bench.stack.task_instances(TRAINING_DAG, run_id))
    ratio = figures["ratio"]
    path = " > ".join(f"{t} {figures['durations_s'].get(t, 0):.1f} s" for t in figures["critical_path"])
    value = "-" if ratio is None else f"{ratio:.2f}"
    detail = (
        f"run {run_id} {run['state']}: wall {_seconds(figures['wall_s'])} / critical path "
        f"{figures['critical_path_s']:.1f} s ({path}; a mapped task counts as its longest instance)"
    )
    met = None if ratio is None or run["state"] != "success" else ratio <= GOAL_TRAINING_RATIO
    bench.say(f"training: {value}; {detail}")
    bench.wait_idle()  # the deploy run the new model version starts
    name = "iot_training wall time / critical path"
    return [Figure("training", name, value, f"<= {GOAL_TRAINING_RATIO}", met, detail, figures)]


# --- 2. workers -----------------------------------------------------------------------------------


def _state(active: str) -> str:
    return "started" if active in TAKING_TASKS else "stopped"


def worker_ladder(
    default_workers: Sequence[str], pool_host: str | None, pool_instances: Sequence[int]
) -> list[dict[str, Any]]:
    """The workers in the order they are added: each host's first worker, then the pool's instances."""
    ladder = [{"host": h, "unit": FIRST_WORKER_UNIT, "instance": 0} for h in default_workers]
    if pool_host:
        ladder += [
            {"host": pool_host, "unit": f"{INSTANCE_TEMPLATE}{n}", "instance": n} for n in pool_instances
        ]
    return ladder


def worker_plan(
    ladder: Sequence[Mapping[str, Any]], count: int, autoscaler: str | None
) -> dict[str, list[dict[str, Any]]]:
    """Units per host for ``count`` workers: the autoscaler stopped first, then stops, then starts."""
    plan: dict[str, list[dict[str, Any]]] = {}
    if autoscaler:
        plan[autoscaler] = [{"unit": AUTOSCALER_UNIT, "state": "stopped"}]
    for position, rung in reversed(list(enumerate(ladder))):
        if position >= count:
            plan.setdefault(rung["host"], []).append({"unit": rung["unit"], "state": "stopped"})
    for rung in ladder[:count]:
        entry = {"unit": rung["unit"], "state": "started", "worker": True, "instance": rung["instance"]}
        plan.setdefault(rung["host"], []).append(entry)
    return plan


def restore_plan(
    ladder: Sequence[Mapping[str, Any]], before: Mapping[str, Mapping[str, str]], autoscaler: str | None
) -> dict[str, list[dict[str, Any]]]:
    """Units per host as ``before`` found them; the autoscaler last, so it finds the workers in place."""
    plan: dict[str, list[dict[str, Any]]] = {}
    for rung in ladder:
        state = _state(before[rung["host"]][rung["unit"]])
        entry = {"unit": rung["unit"], "state": state, "worker": True, "instance": rung["instance"]}
        plan.setdefault(rung["host"], []).append(entry)
    if autoscaler:
        state = _state(before[autoscaler][AUTOSCALER_UNIT])
        plan.setdefault(autoscaler, []).append({"unit": AUTOSCALER_UNIT, "state": state})
    return plan


def measure_workers(
    bench: Bench, counts: Sequence[int], tasks: int, seconds: float, pool_instances: Sequence[int]
) -> list[Figure]:
    autoscaler = bench.autoscaler_host()
    ladder = worker_ladder([h for h, _ in bench.default_workers()], autoscaler, pool_instances)
    hosts = list(dict.fromkeys([r["host"] for r in ladder] + ([autoscaler] if autoscaler else [])))
    units = list(dict.fromkeys([r["unit"] for r in ladder] + ([AUTOSCALER_UNIT] if autoscaler else [])))
    before = bench.unit_states(hosts, units)
    bench.say(f"units before: {before}")
    if autoscaler and before[autoscaler][AUTOSCALER_UNIT] not in TAKING_TASKS:
        bench.say(f"[yellow]{AUTOSCALER_UNIT} on {autoscaler} was not running before[/yellow]")
    results: dict[int, dict[str, Any]] = {}
    try:
        for count in counts:
            if count > len(ladder):
                results[count] = {"error": f"only {len(ladder)} workers can take the default queue"}
                continue
            bench.set_units(worker_plan(ladder, count, autoscaler))
            bench.wait_idle()
            run, instances = bench.probe(f"workers{count}", tasks, seconds)
            measured = throughput(instances)
            measured |= {
                "workers": [f"{r['host']}:{r['unit']}" for r in ladder[:count]],
                "run_id": run["dag_run_id"],
                "run_state": run["state"],
                "run_s": run_seconds(run),
            }
            results[count] = measured
            bench.say(
                f"{count} worker(s): {measured['per_s']:.3f} tasks/s ({measured['tasks']} in "
                f"{measured['span_s']} s), run {run['state']} in {measured['run_s']} s, "
                f"hosts {measured['hosts']}"
            )
    finally:
        bench.say("putting the units back as they were")
        bench.set_units(restore_plan(ladder, before, autoscaler))
    return worker_figures(results, tasks, seconds)


def worker_figures(results: Mapping[int, Mapping[str, Any]], tasks: int, seconds: float) -> list[Figure]:
    """One row per worker count; the speed-up against one worker's throughput, the goal on 2 workers."""
    one = results.get(1, {}).get("per_s")
    figures = []
    for count, measured in results.items():
        name = f"r3e_probe throughput, {count} worker{'s' if count > 1 else ''} ({tasks} x {seconds:g} s)"
        if "error" in measured:
            figures.append(Figure("workers", name, "error", "-", None, measured["error"], dict(measured)))
            continue
        speedup = measured["per_s"] / one if one else None
        value = f"{measured['per_s']:.3f} tasks/s"
        if count != 1 and speedup is not None:
            value += f" = {speedup:.2f}x"
        detail = (
            f"{measured['tasks']} tasks in {measured['span_s']:.1f} s (first start to last end), "
            f"the run {measured['run_state']} in {_seconds(measured['run_s'])}; a task took "
            f"{measured['mean_task_s']:.1f} s on average for its {seconds:g} s wait; "
            f"tasks per host {measured['hosts']}; workers: {', '.join(measured['workers'])}"
        )
        goal, met = "reference", None
        if count == 2:
            goal = f">= {GOAL_SPEEDUP_TWO}x 1 worker"
            met = None if speedup is None else speedup >= GOAL_SPEEDUP_TWO
        elif count != 1:
            goal = "shown (no goal)"
        figures.append(
            Figure("workers", name, value, goal, met, detail, dict(measured) | {"speedup": speedup})
        )
    return figures


# --- 3. autoscaler --------------------------------------------------------------------------------


def wait_for_pool(
    bench: Bench, host: str, units: Sequence[str], active: bool, timeout_s: float
) -> float | None:
    """When every unit of the pool was seen (in)active (a timestamp); None after ``timeout_s``."""

    def seen() -> float | None:
        states = bench.unit_states([host], units)[host]
        return time.time() if all((state in TAKING_TASKS) == active for state in states.values()) else None

    try:
        return wait_until(seen, timeout_s=timeout_s, every_s=5.0, what=f"the pool on {host}")
    except WaitTimeout:
        return None


def measure_autoscaler(
    bench: Bench, tasks: int, seconds: float, pool_instances: Sequence[int]
) -> list[Figure]:
    host = bench.autoscaler_host()
    if host is None:
        raise StackError("the inventory has no autoscalers group")
    pool = [f"{INSTANCE_TEMPLATE}{n}" for n in pool_instances]
    states = bench.unit_states([host], [AUTOSCALER_UNIT, *pool])[host]
    if states[AUTOSCALER_UNIT] not in TAKING_TASKS:
        raise StackError(f"{AUTOSCALER_UNIT} is {states[AUTOSCALER_UNIT]} on {host}")
    slots = sum(concurrency for _, concurrency in bench.default_workers())
    if tasks <= slots:
        raise StackError(f"--backlog-tasks {tasks} does not exceed the fixed workers' {slots} slots")
    bench.wait_idle()
    bench.say(f"waiting for the pool ({', '.join(pool)}) to be empty")
    if wait_for_pool(bench, host, pool, active=False, timeout_s=IDLE_TIMEOUT_S) is None:
        raise StackError(f"the pool on {host} did not empty within {IDLE_TIMEOUT_S:.0f} s")
    triggered = time.time()
    run, instances = bench.probe("backlog", tasks, seconds)
    ended = epoch(run.get("end_date")) or time.time()
    backlog = backlog_moment(instances, slots)
    argv = ["journalctl", "--no-pager", "-o", "json", "--since", f"@{int(triggered) - 1}"]
    for unit in pool:
        argv += ["-u", unit]
    entries = journal_entries(bench.command([host], argv)[host]["stdout"])
    bench.say("waiting for the scale in")
    drained = wait_for_pool(bench, host, pool, active=False, timeout_s=IDLE_TIMEOUT_S)
    log = bench.command([host], ["tail", "-n", "2000", DECISION_LOG])[host]["stdout"]
    scale_out = next(iter(decisions(log, "scale_out", triggered)), None)
    scale_ins = decisions(log, "scale_in", ended)
    received = first_entry(entries, RECEIVED, backlog if backlog is not None else triggered)
    started = first_entry(entries, r"^Started ", triggered)
    ready = first_entry(entries, r" ready\.", triggered)

    def rel(at: float | None) -> float | None:
        return None if at is None or backlog is None else round(at - backlog, 2)

    data = {
        "run_id": run["dag_run_id"],
        "run_state": run["state"],
        "run_s": run_seconds(run),
        "slots": slots,
        "backlog_definition": f"queued_when of the run's work task number {slots + 1}",
        "backlog_at": backlog,
        "first_work_queued_s": rel(backlog_moment(instances, 0)),
        "scale_out_decision_s": rel(float(scale_out["time"])) if scale_out else None,
        "scale_out": scale_out,
        "unit_started_s": rel(started.at) if started else None,
        "unit_started": asdict(started) if started else None,
        "worker_ready_s": rel(ready.at) if ready else None,
        "first_received_s": rel(received.at) if received else None,
        "first_received": asdict(received) if received else None,
        "hosts": dict(Counter(ti.get("hostname") or "?" for ti in instances if ti["task_id"] == WORK_TASK)),
        "scale_ins": scale_ins,
        "scale_in_decisions_after_run_s": [round(float(r["time"]) - ended, 2) for r in scale_ins],
        "pool_empty_after_run_s": None if drained is None else round(drained - ended, 2),
    }
    bench.say(f"autoscaler: {json.dumps(data, default=str)}")
    to_worker = data["first_received_s"]
    if backlog is None:
        value, detail = "-", f"no backlog: at most {slots} work tasks were ever queued"
    elif received is None:
        value, detail = "-", "no pool instance received a task"
    else:
        value = f"{to_worker:.1f} s"
        detail = (
            f"backlog = the moment the {slots + 1}th work task was queued (TaskInstance.queued_when), "
            f"demand beyond the fixed workers' {slots} slots; then scale_out logged "
            f"+{_seconds(data['scale_out_decision_s'])}, unit started +{_seconds(data['unit_started_s'])}, "
            f"Celery ready +{_seconds(data['worker_ready_s'])}, first task received by {received.unit} "
            f"+{to_worker:.1f} s (run {run['state']} in {_seconds(data['run_s'])}, tasks per host "
            f"{data['hosts']})"
        )
    met = None if to_worker is None else to_worker <= GOAL_NEW_WORKER_S
    name = "backlog -> new worker running tasks"
    rows = [Figure("autoscaler", name, value, f"<= {GOAL_NEW_WORKER_S:.0f} s", met, detail, data)]
    steps = ", ".join(
        f"to {r['target']} at +{at:.0f} s"
        for r, at in zip(scale_ins, data["scale_in_decisions_after_run_s"], strict=True)
    )
    empty = data["pool_empty_after_run_s"]
    rows.append(
        Figure(
            "autoscaler",
            "run end -> pool empty again (scale in)",
            "-" if empty is None else f"{empty:.0f} s",
            "shown (no goal)",
            None,
            f"scale_in decisions after the run ended: {steps or 'none'} (polled every ~10 s)",
        )
    )
    return rows


# --- 4. re-converge -------------------------------------------------------------------------------


def measure_reconverge(bench: Bench) -> list[Figure]:
    bench.say("playbooks/site.yml again (re-converge)")
    started = time.monotonic()
    run = bench.stack.run_playbook("site.yml", {})
    figure = reconverge_figure(run, time.monotonic() - started)
    bench.say(f"re-converge: {figure.value}; {figure.detail}")
    return [figure]


def reconverge_figure(run: PlaybookRun, took: float, slowest: int = 5) -> Figure:
    """The re-converge figure of one site.yml run: its changed count (ansible-runner's stats),
    which task changed on which host, and the slowest tasks (from the run's events)."""
    counts = run.recap()
    changed = sum(host["changed"] for host in counts.values())
    which = [(result.name, result.host) for result in run.changed()]
    timed = run.task_seconds()
    tasks, top = len(timed), sorted(timed, key=lambda item: -item[1])[:slowest]
    value = f"{took:.0f} s, changed={changed}"
    detail = f"{tasks} tasks, {took / max(tasks, 1):.1f} s each on average; slowest: " + "; ".join(
        f"{task} {seconds:.0f} s" for task, seconds in top
    )
    if changed:
        detail = "changed: " + "; ".join(f"{host}: {task}" for task, host in which) + ". " + detail
    data = {
        "seconds": round(took, 2),
        "changed": changed,
        "recap": counts,
        "changed_tasks": which,
        "tasks": tasks,
        "slowest_tasks": top,
    }
    met = changed == 0 and took <= GOAL_RECONVERGE_S
    name = "re-converge (site.yml again)"
    return Figure("reconverge", name, value, f"<= {GOAL_RECONVERGE_S:.0f} s, changed=0", met, detail, data)


def bare_figure(bare_seconds: float | None) -> Figure:
    name, goal = "bare machine -> green pipeline (make up)", f"<= {GOAL_BARE_S / 60:.0f} min"
    if bare_seconds is None:
        detail = "measure with /usr/bin/time -v make up on a fresh machine, then pass --bare-seconds"
        return Figure("bare", name, "not measured here", goal, None, detail)
    value = f"{bare_seconds:.0f} s = {bare_seconds / 60:.1f} min"
    return Figure("bare", name, value, goal, bare_seconds <= GOAL_BARE_S, "given by --bare-seconds")


# --- command line ---------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}"
        )
    return parts


def table(figures: Sequence[Figure]) -> Table:
    result = Table("figure", "value", "goal", "met?", title="Elasticity")
    marks = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}
    for figure in figures:
        result.add_row(figure.name, figure.value, figure.goal, marks[figure.met])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "-i", "--inventory", action="append", required=True, help="Ansible inventory (repeatable)"
    )
    parser.add_argument(
        "--only", type=_parts, default=list(PARTS), help=f"comma-separated: {','.join(PARTS)}"
    )
    parser.add_argument("--json", type=Path, help="write the figures and their data here")
    parser.add_argument("--bare-seconds", type=float, help="a measured `make up` from scratch, in seconds")
    parser.add_argument("--tasks", type=int, default=16, help="r3e_probe tasks of the workers part")
    parser.add_argument("--seconds", type=float, default=30, help="each task's wait in the workers part")
    parser.add_argument("--workers", type=_ints, default=[1, 2, 4], help="worker counts (comma-separated)")
    parser.add_argument(
        "--backlog-tasks", type=int, default=24, help="r3e_probe tasks of the autoscaler part"
    )
    parser.add_argument("--backlog-seconds", type=float, default=20, help="their wait")
    parser.add_argument(
        "--pool-instances", type=_ints, default=[2, 3], help="the autoscaler's airflow-worker@<n>"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the training data")
    parser.add_argument(
        "--playbooks",
        type=Path,
        help=f"the playbooks folder (default: ${PLAYBOOKS_ENV}, else playbooks/ here or of the checkout)",
    )
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    out = Console(width=None if sys.stdout.isatty() else 120)
    started, begun = time.monotonic(), dt.datetime.now(dt.UTC)

    def say(message: str) -> None:
        console.log(message)

    try:
        playbooks = Playbooks(find_playbooks(args.playbooks), args.inventory)
        stack = Stack(read_endpoints(playbooks), playbooks)
    except StackError as error:
        console.print(f"[red]cannot read the deployment's endpoints: {error}[/red]")
        return 1
    bench = Bench(stack, say)
    measures: dict[str, Callable[[], list[Figure]]] = {
        "training": lambda: measure_training(bench, args.seed),
        "workers": lambda: measure_workers(
            bench, args.workers, args.tasks, args.seconds, args.pool_instances
        ),
        "autoscaler": lambda: measure_autoscaler(
            bench, args.backlog_tasks, args.backlog_seconds, args.pool_instances
        ),
        "reconverge": lambda: measure_reconverge(bench),
    }
    figures: list[Figure] = []
    errors = 0
    for part in PARTS:
        if part not in args.only:
            continue
        say(f"[bold]{part}[/bold]")
        part_started = time.monotonic()
        try:
            figures += measures[part]()
        except (StackError, AirflowError, ValueError, KeyError, graphlib.CycleError) as error:
            errors += 1
            say(f"[red]{part}: {error}[/red]")
            figures.append(Figure(part, part, "error", "-", None, str(error), {"error": str(error)}))
        say(f"{part} took {time.monotonic() - part_started:.0f} s")
    figures.append(bare_figure(args.bare_seconds))
    took = time.monotonic() - started
    out.print(table(figures))
    for figure in figures:
        if figure.detail:
            out.print(f"- {figure.name}: {figure.detail}", markup=False, highlight=False)
    out.print(f"benchmark took {took:.0f} s", highlight=False)
    if args.json:
        document = {
            "started": begun.isoformat(timespec="seconds"),
            "inventory": args.inventory,
            "seconds": round(took, 1),
            "options": {k: v for k, v in vars(args).items() if k not in ("json", "inventory", "playbooks")},
            "figures": [asdict(figure) for figure in figures],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

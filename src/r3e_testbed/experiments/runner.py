"""Run scenarios against a live deployment and measure them.

A fault experiment starts one run of its workload DAG, watches it once a second (task
instances, Airflow's health, the forecast service), injects the fault through Ansible when
its condition holds, reverts it after ``duration_s``, and waits for the run to end:

- *injected at*: the fault is in place (the playbook returned);
- *detected at*: the first observation after that in which Airflow shows the fault: a task
  try of the run failed or is up for retry, a task started another try, or a component is
  not healthy (or the api-server does not answer);
- *recovered at*: the first observation, not before the revert, in which every component is
  healthy again and every task instance that was running at the injection has succeeded
  (when none was, some task has succeeded since, or the run is over).

Times are seconds from the run's start. A bad-input experiment uploads its file under
``raw/``, follows the training run the upload starts (through the object store's event,
the bridge and data_listener), and reads the ingest's report.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from r3e_testbed.pipeline.config import run_id_for
from r3e_testbed.pipeline.ingest import output_prefix
from r3e_testbed.pipeline.registry import S3Store, read_production

from .integrity import artifacts_intact, promotion_records, promotions_sound
from .results import Check, Event, FaultResult, InputResult, TaskInterval
from .scenario import FaultScenario, InputScenario, Workload
from .stack import Stack, StackError, healthy

TERMINAL = {"success", "failed"}
DISTURBED = {"failed", "up_for_retry", "restarting", "upstream_failed"}
POLL_S = 1.0
RUN_TIMEOUT_S = 1500.0
WORKLOAD_PREFIX = "r3e/workloads"
INPUT_PREFIX = "raw/r3e-inputs"

Progress = Callable[[str], None]


def now_stamp() -> str:
    """Now, UTC, as a compact stamp for run ids and file names."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


def epoch(timestamp: str | None) -> float | None:
    """An ISO timestamp as Airflow writes it, in epoch seconds; None stays None."""
    if not timestamp:
        return None
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _rel(at: float | None, origin: float) -> float | None:
    return None if at is None else round(at - origin, 2)


# --- workloads -----------------------------------------------------------------------------------


def workload_conf(stack: Stack, workload: Workload) -> dict[str, Any]:
    """The run conf of a workload; iot_training's data is generated and uploaded once per (scale, seed)."""
    if workload.dag_id != "iot_training":
        return dict(workload.params)
    from r3e_testbed.pipeline.generate import write_csv

    bucket = stack.endpoints.data_bucket
    key = f"{WORKLOAD_PREFIX}/iot-scale{workload.scale:g}-seed{workload.seed}.csv"
    try:
        etag = stack.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    except stack.s3.exceptions.ClientError:
        buffer = io.BytesIO()
        write_csv(buffer, workload.scale, seed=workload.seed)
        data = buffer.getvalue()
        stack.s3.put_object(Bucket=bucket, Key=key, Body=data)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
    return {"bucket": bucket, "key": key, "etag": etag, **workload.params}


# --- watching a run ------------------------------------------------------------------------------


@dataclass
class Tick:
    at: float
    run_state: str | None
    task_instances: list[dict[str, Any]]
    healthy: bool
    served: bool


@dataclass
class Watch:
    stack: Stack
    dag_id: str
    run_id: str
    ticks: list[Tick] = field(default_factory=list)
    last_run: dict[str, Any] = field(default_factory=dict)  # the run as last seen

    def observe(self) -> Tick:
        """One observation; a call the api-server does not answer is not retried (that is data)."""
        airflow, at = self.stack.airflow, time.time()
        is_healthy = healthy(airflow.health())
        try:
            run = airflow.run(self.dag_id, self.run_id, patience_s=0)
            task_instances = airflow.task_instances(self.dag_id, self.run_id, patience_s=0)
            self.last_run, run_state = run, run["state"]
        except StackError:
            run_state, task_instances = None, []
        tick = Tick(
            at=at,
            run_state=run_state,
            task_instances=task_instances,
            healthy=is_healthy and run_state is not None,
            served=self.stack.forecast() is not None,
        )
        self.ticks.append(tick)
        return tick


def timeline(stack: Stack, dag_id: str, run_id: str, origin: float) -> list[TaskInterval]:
    intervals: list[TaskInterval] = []
    for instance in stack.airflow.task_instances(dag_id, run_id):
        for attempt in stack.airflow.tries(dag_id, run_id, instance["task_id"], instance["map_index"]):
            intervals.append(
                TaskInterval(
                    task_id=attempt["task_id"],
                    map_index=attempt["map_index"],
                    try_number=attempt["try_number"],
                    state=attempt.get("state") or "none",
                    start_s=_rel(epoch(attempt.get("start_date")), origin),
                    end_s=_rel(epoch(attempt.get("end_date")), origin),
                    hostname=attempt.get("hostname") or "",
                )
            )
    return sorted(intervals, key=lambda i: (i["start_s"] is None, i["start_s"] or 0, i["task_id"]))


# --- fault experiments ---------------------------------------------------------------------------


class Injector:
    """Injects a scenario's fault once its condition holds, reverts it after its duration."""

    def __init__(self, stack: Stack, scenario: FaultScenario, progress: Progress) -> None:
        self.stack, self.scenario, self.progress = stack, scenario, progress
        self.started_at: float | None = None
        self.injected_at: float | None = None
        self.reverted_at: float | None = None
        self.hosts: list[str] = []
        self.error: str | None = None
        self.affected: set[tuple[str, int]] = set()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()

    @property
    def done(self) -> bool:
        return self.started_at is not None and (self._thread is None or not self._thread.is_alive())

    def consider(self, tick: Tick, run_started: float | None) -> None:
        """Start the injection when this tick meets the scenario's condition."""
        if self.started_at is not None or run_started is None:
            return
        inject = self.scenario.fault.inject
        running = [ti for ti in tick.task_instances if ti["state"] == "running"]
        if inject.when_task_running:
            matching = [ti for ti in running if ti["task_id"] == inject.when_task_running]
            if not matching:
                return
            target = self._target(matching[0].get("hostname") or "")
        elif inject.when_tasks_queued:
            if sum(ti["state"] == "queued" for ti in tick.task_instances) < inject.when_tasks_queued:
                return
            target = self._target("")
        else:
            if tick.at - run_started < inject.after_s:
                return
            target = self._target("")
        self.hosts = target
        self.started_at = time.time()
        delay = inject.after_s if (inject.when_task_running or inject.when_tasks_queued) else 0.0
        self._thread = threading.Thread(target=self._inject_then_revert, args=(delay,), daemon=True)
        self._thread.start()

    def _target(self, task_hostname: str) -> list[str]:
        """The task's own host when the fault targets workers and a task is named; else the group's first."""
        fault = self.scenario.fault
        hosts = self.stack.endpoints.hosts(fault.target)
        own = self.stack.endpoints.host_named(task_hostname) if task_hostname else None
        return [own] if own in hosts else hosts[:1]

    @property
    def params(self) -> dict[str, Any]:
        """The scenario's parameters, plus what only the inventory knows."""
        params = dict(self.scenario.fault.params)
        if self.scenario.fault.type == "isolate_worker":  # cut off from every other host
            addresses = self.stack.endpoints.addresses
            params["isolate_from"] = sorted({a for h, a in addresses.items() if h not in self.hosts})
        return params

    def _inject_then_revert(self, delay: float) -> None:
        fault = self.scenario.fault
        try:
            if delay and self._cancel.wait(delay):
                return
            self.progress(f"inject {fault.type} on {', '.join(self.hosts)}")
            self.stack.fault(fault.type, "inject", self.hosts, fault.duration_s, self.params)
            self.injected_at = time.time()
            if fault.duration_s > 0:
                self._cancel.wait(fault.duration_s)
                self.revert()
        except StackError as error:
            self.error = str(error)

    def mark_affected(self, tick: Tick) -> None:
        """Remember the task instances running when the fault landed (first tick after it)."""
        if self.injected_at is not None and not self.affected and tick.at >= self.injected_at:
            self.affected = {
                (ti["task_id"], ti["map_index"]) for ti in tick.task_instances if ti["state"] == "running"
            }

    def revert(self) -> None:
        fault = self.scenario.fault
        if fault.duration_s <= 0 or self.reverted_at is not None or self.injected_at is None:
            return
        self.progress(f"revert {fault.type} on {', '.join(self.hosts)}")
        self.stack.fault(fault.type, "revert", self.hosts, fault.duration_s, self.params)
        self.reverted_at = time.time()

    def finish(self) -> None:
        """Revert now if the fault is still in place (the run ended or the experiment broke)."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
        try:
            self.revert()
        except StackError as error:
            self.error = self.error or str(error)


def detect_and_recover(
    ticks: list[Tick], injected_at: float, settled_at: float, affected: set[tuple[str, int]]
) -> tuple[float | None, float | None]:
    """(detected_at, recovered_at) from the observations; see the module's docstring."""
    detected = recovered = None
    baseline_tries: dict[tuple[str, int], int] = {}
    for tick in ticks:
        if tick.at < injected_at:
            baseline_tries = {
                (ti["task_id"], ti["map_index"]): ti.get("try_number", 0) for ti in tick.task_instances
            }
            continue
        if detected is None:
            retried = any(
                ti.get("try_number", 0)
                > baseline_tries.get((ti["task_id"], ti["map_index"]), ti.get("try_number", 0))
                for ti in tick.task_instances
            )
            if retried or not tick.healthy or any(ti["state"] in DISTURBED for ti in tick.task_instances):
                detected = tick.at
        if recovered is None and tick.at >= settled_at and tick.healthy:
            states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tick.task_instances}
            if affected:
                done = all(states.get(key) == "success" for key in affected)
            else:
                done = tick.run_state in TERMINAL or any(
                    ti["state"] == "success" and (epoch(ti.get("end_date")) or 0) > injected_at
                    for ti in tick.task_instances
                )
            if done:
                recovered = tick.at
    if detected is not None and recovered is not None and detected > recovered:
        detected = None  # a later hiccup, not this fault: it was never noticed before recovery
    return detected, recovered


def run_fault(
    stack: Stack, scenario: FaultScenario, baseline_s: float | None, progress: Progress
) -> FaultResult:
    fault, workload = scenario.fault, scenario.workload
    models = S3Store(stack.s3, stack.endpoints.models_bucket)
    promotions_before = promotion_records(models)
    run_id = f"r3e__{scenario.name}__{now_stamp()}"
    stack.airflow.trigger(workload.dag_id, run_id, workload_conf(stack, workload))
    progress(f"{workload.dag_id} {run_id} started")
    watch, injector = Watch(stack, workload.dag_id, run_id), Injector(stack, scenario, progress)
    deadline = time.time() + RUN_TIMEOUT_S + fault.duration_s
    try:
        while time.time() < deadline:
            tick = watch.observe()
            injector.consider(tick, epoch(watch.last_run.get("start_date")))
            injector.mark_affected(tick)
            if tick.run_state in TERMINAL and (injector.done or injector.started_at is None):
                break
            time.sleep(POLL_S)
    finally:
        injector.finish()
    run = stack.airflow.run(workload.dag_id, run_id)
    origin = epoch(run.get("start_date")) or watch.ticks[0].at
    end = epoch(run.get("end_date"))
    duration = None if end is None else round(end - origin, 2)
    events: list[Event] = []
    detected = recovered = None
    if injector.injected_at is not None:
        events.append(Event(at_s=_rel(injector.injected_at, origin), what="inject"))
        if injector.reverted_at is not None:
            events.append(Event(at_s=_rel(injector.reverted_at, origin), what="revert"))
        settled = injector.reverted_at or injector.injected_at
        detected, recovered = detect_and_recover(
            watch.ticks, injector.injected_at, settled, injector.affected
        )
        for at, what in ((detected, "detected"), (recovered, "recovered")):
            if at is not None:
                events.append(Event(at_s=_rel(at, origin), what=what))
    intervals = timeline(stack, workload.dag_id, run_id, origin)
    instances = stack.airflow.task_instances(workload.dag_id, run_id)
    retries = sum(max(ti.get("try_number", 1) - 1, 0) for ti in instances)
    checks = [
        Check(
            name=f"run {scenario.steady_state.run_state}",
            passed=run["state"] == scenario.steady_state.run_state,
            detail=f"the run ended {run['state']}",
        )
    ]
    if scenario.steady_state.artifacts_intact:
        checks += [artifacts_intact(models), promotions_sound(models, promotions_before)]
    if scenario.steady_state.production_served:
        missed = sum(not tick.served for tick in watch.ticks)
        checks.append(
            Check(
                name="production served throughout",
                passed=missed == 0,
                detail=f"{missed} of {len(watch.ticks)} probes of the forecast service unanswered",
            )
        )
    error = injector.error or (
        None if injector.injected_at else "the run ended before the fault was injected"
    )
    result = FaultResult(
        name=scenario.name,
        fault=fault.type,
        target=",".join(injector.hosts) or fault.target,
        description=scenario.description,
        outcome="error" if error else ("passed" if all(c["passed"] for c in checks) else "failed"),
        checks=checks,
        dag_id=workload.dag_id,
        run_id=run_id,
        run_state=run["state"],
        duration_s=duration,
        baseline_duration_s=baseline_s,
        extra_wall_s=None if duration is None or baseline_s is None else round(duration - baseline_s, 2),
        injected_at_s=_rel(injector.injected_at, origin),
        detected_at_s=_rel(detected, origin),
        recovered_at_s=_rel(recovered, origin),
        detection_s=None if detected is None else round(detected - injector.injected_at, 2),
        recovery_s=None if recovered is None else round(recovered - injector.injected_at, 2),
        retries_used=retries,
        timeline=intervals,
        events=events,
    )
    if error:
        result["error"] = error
    return result


def baseline(stack: Stack, workload: Workload, progress: Progress) -> dict[str, Any]:
    """One fault-free run of the workload: its final run document."""
    run_id = f"r3e__baseline__{now_stamp()}"
    stack.airflow.trigger(workload.dag_id, run_id, workload_conf(stack, workload))
    progress(f"baseline {workload.dag_id} {run_id}")
    return wait_for_run(stack, workload.dag_id, run_id, RUN_TIMEOUT_S)


def wait_for_run(stack: Stack, dag_id: str, run_id: str, timeout_s: float, appear_s: float = 0) -> dict:
    """The run once it ended; waits ``appear_s`` for it to exist first (started by an event)."""
    deadline = time.time() + appear_s + timeout_s
    while time.time() < deadline:
        try:
            run = stack.airflow.run(dag_id, run_id)
        except StackError:
            run = {}
        if run.get("state") in TERMINAL:
            return run
        time.sleep(2)
    raise StackError(f"{dag_id} run {run_id} did not end within {timeout_s + appear_s:.0f} s")


def run_seconds(run: Mapping[str, Any]) -> float | None:
    start, end = epoch(run.get("start_date")), epoch(run.get("end_date"))
    return None if start is None or end is None else round(end - start, 2)


# --- bad-input experiments -----------------------------------------------------------------------


def run_input(stack: Stack, scenario: InputScenario, progress: Progress) -> InputResult:
    from .inputs import make_input

    bucket = stack.endpoints.data_bucket
    models = S3Store(stack.s3, stack.endpoints.models_bucket)
    data = make_input(scenario.input)
    key = f"{INPUT_PREFIX}/{scenario.name}-{now_stamp()}.csv"
    pointer_before = read_production(models)
    stack.s3.put_object(Bucket=bucket, Key=key, Body=data)
    etag = stack.s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    run_id = run_id_for(key, etag)
    progress(f"uploaded {key} ({len(data)} bytes); waiting for {run_id}")
    result = InputResult(
        name=scenario.name,
        corruption=scenario.input.corruption,
        description=scenario.description,
        expected=scenario.expected,
        outcome="error",
        checks=[],
        verdict="not started",
        rows=None,
        clean_rows=None,
        quarantined_rows=None,
        reason="",
        promoted=False,
        run_state=None,
    )
    try:
        run = wait_for_run(stack, "iot_training", run_id, RUN_TIMEOUT_S, appear_s=120)
    except StackError as error:
        result["error"] = str(error)
        return result
    result["run_state"] = run["state"]
    if scenario.expected == "duplicate":
        since = dt.datetime.now(dt.UTC).isoformat()
        stack.s3.put_object(Bucket=bucket, Key=key, Body=data)
        time.sleep(30)
        again = stack.airflow.get("/api/v2/dags/data_listener/dagRuns", run_after_gte=since)["dag_runs"]
        result["verdict"] = "duplicate" if not again else f"{len(again)} more listener run(s)"
    report = _ingest_report(stack, bucket, key, etag)
    if report is not None and scenario.expected != "duplicate":
        refused = report.get("verdict") == "refused"
        quarantined = report.get("quarantined_rows") or 0
        result["verdict"] = "refused" if refused else ("quarantined" if quarantined else "accepted")
    if report is not None:
        result.update(
            rows=report.get("rows"),
            clean_rows=report.get("clean_rows"),
            quarantined_rows=report.get("quarantined_rows"),
            reason=report.get("error")
            or ", ".join(
                f"{reason}: {count}" for reason, count in (report.get("reason_counts") or {}).items()
            ),
        )
    if run["state"] == "success":
        _wait_for_deploy(stack, run)
    pointer_after = read_production(models)
    result["promoted"] = bool(pointer_after and pointer_after.get("data", {}).get("key") == key)
    checks = [
        Check(
            name=f"verdict {scenario.expected}",
            passed=result["verdict"] == scenario.expected,
            detail=f"the pipeline's verdict: {result['verdict']}",
        )
    ]
    if scenario.reason_contains:
        checks.append(
            Check(
                name=f"reason names {scenario.reason_contains!r}",
                passed=scenario.reason_contains.lower() in result["reason"].lower(),
                detail=result["reason"][:300] or "no reason given",
            )
        )
    if result["verdict"] == "refused":  # accepted rows may earn a promotion; a refused file never
        was, now = (pointer_before or {}).get("version"), (pointer_after or {}).get("version")
        checks.append(
            Check(
                name="production unchanged",
                passed=was == now and not result["promoted"],
                detail=f"production: {was} -> {now}",
            )
        )
    checks.append(promotions_sound(models, []))
    result["checks"] = checks
    result["outcome"] = "passed" if all(c["passed"] for c in checks) else "failed"
    return result


def _ingest_report(stack: Stack, bucket: str, key: str, etag: str) -> dict[str, Any] | None:
    report_key = f"quarantine/{output_prefix(key, etag)}/report.json"
    try:
        return json.loads(stack.s3.get_object(Bucket=bucket, Key=report_key)["Body"].read())
    except stack.s3.exceptions.NoSuchKey:
        return None


def _wait_for_deploy(stack: Stack, training: Mapping[str, Any], timeout_s: float = 600) -> None:
    """Until the iot_deploy runs since the training's start have ended (none within a minute: none)."""
    started, deadline = time.time(), time.time() + timeout_s
    while time.time() < deadline:
        runs = stack.airflow.get("/api/v2/dags/iot_deploy/dagRuns", run_after_gte=training["start_date"])[
            "dag_runs"
        ]
        if all(r["state"] in TERMINAL for r in runs) and (runs or time.time() - started > 60):
            return
        time.sleep(3)

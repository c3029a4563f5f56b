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

Times are seconds from the run's start. A fault experiment whose workload is uploads (a fault
of the event path: the bridge, the filer it follows) triggers nothing: it uploads distinct
files under ``raw/`` around the fault and checks that each started exactly one training run
(:func:`run_upload_fault`). A bad-input experiment uploads its file under ``raw/``, follows
the training run the upload starts (through the object store's event, the bridge and
data_listener), and reads the ingest's report.

Every wait is :func:`r3e_testbed.clients.wait.wait_until` (tenacity, on the monotonic clock);
``time.time()`` only stamps observations and events. The two plain pauses are part of a
method: a reversible fault's duration, and the quiet after a duplicate upload.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import tenacity

from r3e_testbed.clients.airflow import AirflowError
from r3e_testbed.clients.wait import WaitTimeout, wait_until
from r3e_testbed.pipeline.config import run_id_for
from r3e_testbed.pipeline.ingest import output_prefix
from r3e_testbed.pipeline.registry import read_production
from r3e_testbed.storage import ObjectStore

from .background import Periodic
from .integrity import artifacts_intact, promotion_records, promotions_sound
from .results import Check, Event, FailoverRecord, FaultResult, InputResult, TaskInterval, UploadRecord
from .scenario import UPLOAD_DAG, FaultScenario, InputScenario, InputSpec, Workload
from .stack import Stack, StackError, healthy

TERMINAL = {"success", "failed"}
DISTURBED = {"failed", "up_for_retry", "restarting", "upstream_failed"}
POLL_S = 1.0
#: How long an experiment waits for the forecast services to serve production before its fault.
SERVED_BEFORE_S = 90.0
RUN_TIMEOUT_S = 1500.0
#: An upload's run appearing and ending, after the fault's revert (or its one shot).
DELIVERY_TIMEOUT_S = 900.0
#: Upload retries while the object store refuses (its filer restarting).
UPLOAD_PATIENCE_S = 120.0
#: Runs and asset events are listed from this long before the experiment began: the controller's
#: and Airflow's clocks may differ a little (the experiment's keys are its own, nothing else matches).
CLOCK_MARGIN_S = 60.0
#: After a duplicate upload, how long a second listener run would take to appear at the latest.
DUPLICATE_QUIET_S = 30.0
#: With no iot_deploy run this long after a training run ended, there is none to wait for.
DEPLOY_APPEAR_S = 60.0
WORKLOAD_PREFIX = "r3e/workloads"
INPUT_PREFIX = "raw/r3e-inputs"
UPLOAD_PREFIX = "raw/r3e-faults"

Progress = Callable[[str], None]


def now_stamp() -> str:
    """Now, UTC, as a compact stamp for run ids and file names."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


def moment(timestamp: str) -> dt.datetime:
    """An ISO timestamp as Airflow writes it (``...Z`` or ``...+00:00``)."""
    return dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def epoch(timestamp: str | None) -> float | None:
    """An ISO timestamp as Airflow writes it, in epoch seconds; None stays None."""
    return None if not timestamp else moment(timestamp).timestamp()


def _rel(at: float | None, origin: float) -> float | None:
    return None if at is None else round(at - origin, 2)


# --- workloads -----------------------------------------------------------------------------------


def workload_conf(stack: Stack, workload: Workload) -> dict[str, Any]:
    """The run conf of a workload; iot_training's data is generated and uploaded once per (scale, seed)."""
    if workload.dag_id != "iot_training":
        return dict(workload.params)
    from r3e_testbed.pipeline.generate import write_csv

    bucket = stack.endpoints.data_bucket
    store = stack.store(bucket)
    key = f"{WORKLOAD_PREFIX}/iot-scale{workload.scale:g}-seed{workload.seed}.csv"
    etag = store.etag(key)
    if etag is None:
        buffer = io.BytesIO()
        write_csv(buffer, workload.scale, seed=workload.seed)
        store.put(key, buffer.getvalue())
        etag = store.etag(key)
        if etag is None:
            raise StackError(f"s3://{bucket}/{key} is not there after its upload")
    return {"bucket": bucket, "key": key, "etag": etag, **workload.params}


# --- watching a run ------------------------------------------------------------------------------


@dataclass
class Tick:
    at: float
    run_state: str | None
    task_instances: list[dict[str, Any]]
    healthy: bool
    served: bool


def served_throughout(ticks: list[Tick]) -> Check:
    """The steady-state check that the forecast service answered every probe."""
    missed = [tick.at for tick in ticks if not tick.served]
    when = ""
    if missed:  # seconds from the first probe: when the service was not answering
        first = ticks[0].at
        when = f" (from {missed[0] - first:.0f} s to {missed[-1] - first:.0f} s after the first probe)"
    return Check(
        name="production served throughout",
        passed=not missed,
        detail=f"{len(missed)} of {len(ticks)} probes of the forecast service unanswered{when}",
    )


@dataclass
class Watch:
    stack: Stack
    dag_id: str
    run_id: str
    ticks: list[Tick] = field(default_factory=list)
    last_run: dict[str, Any] = field(default_factory=dict)  # the run as last seen

    def observe(self) -> Tick:
        """One observation; a call the api-server does not answer is not retried (that is data)."""
        stack, at = self.stack, time.time()
        is_healthy = healthy(stack.airflow.health())
        try:
            run = stack.dag_run(self.dag_id, self.run_id, patience_s=0)
            task_instances = stack.task_instances(self.dag_id, self.run_id, patience_s=0)
            self.last_run, run_state = run, run["state"]
        except AirflowError:
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
    for instance in stack.task_instances(dag_id, run_id):
        for attempt in stack.tries(dag_id, run_id, instance["task_id"], instance["map_index"]):
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

    def __init__(
        self,
        stack: Stack,
        scenario: FaultScenario,
        progress: Progress,
        victims: list[str] | None = None,
        accounting: Accounting | None = None,
    ) -> None:
        self.stack, self.scenario, self.progress = stack, scenario, progress
        self.victims, self.accounting = victims, accounting
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
        self.hosts = self.victims or target
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
        if self.scenario.fault.type in ("isolate_worker", "partition_host"):  # cut off from every other host
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
            if self.accounting is not None:
                self.accounting.during()
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


def production_served_before(stack: Stack, progress: Progress, timeout_s: float = SERVED_BEFORE_S) -> None:
    """The steady-state hypothesis holds before the method (Chaos Toolkit's order): wait until every
    host's forecast service answers. A model the baseline run promoted first reaches the services
    at their next poll; a fault injected before that would be blamed for the wait. Past
    ``timeout_s`` the experiment goes on and its check says what was not served."""
    services = stack.forecast_services
    try:
        wait_until(
            lambda: all(stack.forecast(urls=[url]) is not None for url in services),
            timeout_s=timeout_s,
            every_s=POLL_S,
            what="every forecast service to serve production",
        )
    except WaitTimeout as error:
        progress(f"{error}: the steady state does not hold before the fault")


def run_fault(
    stack: Stack, scenario: FaultScenario, baseline_s: float | None, progress: Progress
) -> FaultResult:
    if scenario.steady_state.production_served:
        production_served_before(stack, progress)
    if scenario.workload.uploads:
        return run_upload_fault(stack, scenario, progress)
    fault, workload = scenario.fault, scenario.workload
    models = stack.store(stack.endpoints.models_bucket)
    promotions_before = promotion_records(models)
    run_id = f"r3e__{scenario.name}__{now_stamp()}"
    victims = pick_victims(stack, scenario, progress)
    accounting = Accounting(stack, scenario, progress) if scenario.steady_state.accounting else None
    if accounting is not None:
        accounting.start()  # before the run: the injection must not wait for the probes
    stack.trigger(workload.dag_id, run_id, workload_conf(stack, workload))
    progress(f"{workload.dag_id} {run_id} started")
    watch = Watch(stack, workload.dag_id, run_id)
    injector = Injector(stack, scenario, progress, victims, accounting)

    def observed_to_the_end() -> bool:
        """One observation a second: inject when the condition holds; done once the run ended
        and the fault is over (or was never injected)."""
        tick = watch.observe()
        injector.consider(tick, epoch(watch.last_run.get("start_date")))
        injector.mark_affected(tick)
        return tick.run_state in TERMINAL and (injector.done or injector.started_at is None)

    timeout_s = RUN_TIMEOUT_S + fault.duration_s
    try:
        wait_until(observed_to_the_end, timeout_s=timeout_s, every_s=POLL_S, what=f"{run_id} to end")
    except WaitTimeout as error:
        progress(f"{error}; judging the run as it is")  # its checks fail: it did not end as required
    finally:
        injector.finish()
    run = stack.dag_run(workload.dag_id, run_id)
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
    retries = retries_used(stack.task_instances(workload.dag_id, run_id))
    checks = [
        Check(
            name=f"run {scenario.steady_state.run_state}",
            passed=run["state"] == scenario.steady_state.run_state,
            detail=f"the run ended {run['state']}",
        )
    ]
    if scenario.steady_state.artifacts_intact:
        # Opened again: the gateway the experiment began with may be on the host the fault took.
        models = stack.store(stack.endpoints.models_bucket)
        checks += [artifacts_intact(models), promotions_sound(models, promotions_before)]
    if scenario.steady_state.production_served:
        checks.append(served_throughout(watch.ticks))
    error = injector.error or (
        None if injector.injected_at else "the run ended before the fault was injected"
    )
    if not error and end is not None and injector.injected_at is not None and injector.injected_at > end:
        error = "the run had ended when the fault was in place: it measured nothing"
    record: FailoverRecord | None = None
    if accounting is not None and injector.injected_at is None:
        accounting.abandon()
    if accounting is not None and injector.injected_at is not None:
        try:
            more, record = accounting.finish(
                injector.injected_at, injector.reverted_at, watch.ticks[-1].task_instances, intervals
            )
            checks += more
        except (StackError, AirflowError, OSError) as failure:
            error = error or f"accounting: {type(failure).__name__}: {failure}"
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
    if record is not None:
        result["failover"] = record
    if error:
        result["error"] = error
    return result


def baseline(stack: Stack, workload: Workload, progress: Progress) -> dict[str, Any]:
    """One fault-free run of the workload: its final run document."""
    run_id = f"r3e__baseline__{now_stamp()}"
    stack.trigger(workload.dag_id, run_id, workload_conf(stack, workload))
    progress(f"baseline {workload.dag_id} {run_id}")
    return wait_for_run(stack, workload.dag_id, run_id, RUN_TIMEOUT_S)


def retries_used(task_instances: list[dict[str, Any]]) -> int:
    return sum(max((ti.get("try_number") or 1) - 1, 0) for ti in task_instances)


def run_now(stack: Stack, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The run as it is now; None while it does not exist (yet) or Airflow does not answer."""
    try:
        return stack.dag_run(dag_id, run_id, patience_s=0)
    except AirflowError as error:
        if error.status == 404 or error.transient:
            return None
        raise StackError(f"{dag_id} run {run_id}: {error}") from None


def wait_for_run(stack: Stack, dag_id: str, run_id: str, timeout_s: float, appear_s: float = 0) -> dict:
    """The run once it ended; waits ``appear_s`` for it to exist first (started by an event)."""

    def ended() -> dict[str, Any] | None:
        run = run_now(stack, dag_id, run_id)
        return run if run is not None and run["state"] in TERMINAL else None

    try:
        return wait_until(
            ended, timeout_s=appear_s + timeout_s, every_s=2.0, what=f"{dag_id} run {run_id} to end"
        )
    except WaitTimeout as error:
        raise StackError(str(error)) from None


def run_seconds(run: Mapping[str, Any]) -> float | None:
    start, end = epoch(run.get("start_date")), epoch(run.get("end_date"))
    return None if start is None or end is None else round(end - start, 2)


# --- bad-input experiments -----------------------------------------------------------------------


def run_input(stack: Stack, scenario: InputScenario, progress: Progress) -> InputResult:
    from .inputs import make_input

    bucket = stack.endpoints.data_bucket
    store, models = stack.store(bucket), stack.store(stack.endpoints.models_bucket)
    data = make_input(scenario.input)
    key = f"{INPUT_PREFIX}/{scenario.name}-{now_stamp()}.csv"
    pointer_before = read_production(models)
    promotions_before = promotion_records(models)  # this scenario judges only the promotions after
    etag = put_object(store, key, data)
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
        since = dt.datetime.now(dt.UTC)
        put_object(store, key, data)
        # The method, not a poll: a second listener run would have appeared within this pause.
        time.sleep(DUPLICATE_QUIET_S)
        again = stack.dag_runs("data_listener", run_after_gte=since)
        result["verdict"] = "duplicate" if not again else f"{len(again)} more listener run(s)"
    report = _ingest_report(store, key, etag)
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
    checks.append(promotions_sound(models, promotions_before))
    result["checks"] = checks
    result["outcome"] = "passed" if all(c["passed"] for c in checks) else "failed"
    return result


def _ingest_report(store: ObjectStore, key: str, etag: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get(f"quarantine/{output_prefix(key, etag)}/report.json"))
    except KeyError:
        return None


def _wait_for_deploy(stack: Stack, training: Mapping[str, Any], timeout_s: float = 600) -> None:
    """Until the iot_deploy runs since the training's start have ended (none within a minute: none)."""
    since, began = moment(training["start_date"]), time.monotonic()

    def deploys_over() -> bool:
        runs = stack.dag_runs("iot_deploy", run_after_gte=since)
        waited = time.monotonic() - began > DEPLOY_APPEAR_S
        return all(r["state"] in TERMINAL for r in runs) and bool(runs or waited)

    try:
        wait_until(deploys_over, timeout_s=timeout_s, every_s=3.0, what="the iot_deploy runs to end")
    except WaitTimeout:
        return  # production is read as it is then


# --- uploads through a fault ---------------------------------------------------------------------


def put_object(store: ObjectStore, key: str, data: bytes) -> str:
    """Upload ``data`` and return its ETag, retried while the store refuses (its filer restarting).

    A retried put writes the same bytes again: the same (key, ETag), which the event bridge
    delivers once, so retrying cannot add a run.
    """
    import aiohttp
    from botocore.exceptions import BotoCoreError

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(UPLOAD_PATIENCE_S),
        wait=tenacity.wait_fixed(2.0),
        retry=tenacity.retry_if_exception_type((OSError, BotoCoreError, aiohttp.ClientError)),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            store.put(key, data)
            etag = store.etag(key)
            if etag is None:
                raise FileNotFoundError(f"{key} is not there after its upload")
    return etag


def upload_phases(count: int, reversible: bool) -> list[str]:
    """When each upload goes, relative to the fault: every one during a fault with a duration
    (after the injection, before the revert); half before a one-shot fault, the rest after."""
    if reversible:
        return ["during"] * count
    return ["before"] * (count // 2) + ["after"] * (count - count // 2)


def upload_data(count: int) -> list[bytes]:
    """The files an upload workload sends: the header-only input (the ingest refuses it at once,
    "no data rows", so it never trains, promotes or changes production), each made distinct by
    its number of blank lines after the header, which the reader skips."""
    from .inputs import make_input

    header_only = make_input(InputSpec(corruption="header_only", scale=0.05))
    return [header_only + b"\n" * number for number in range(1, count + 1)]


class Sampler(Periodic):
    """Airflow's health and the forecast service once a second, in a thread, until stopped: the
    observations of an experiment whose fault runs in the foreground."""

    period_s = POLL_S

    def __init__(self, stack: Stack) -> None:
        super().__init__()
        self.stack = stack
        self.ticks: list[Tick] = []

    def tick(self) -> None:
        at, is_healthy = time.time(), healthy(self.stack.airflow.health())
        served = self.stack.forecast() is not None
        self.ticks.append(Tick(at=at, run_state=None, task_instances=[], healthy=is_healthy, served=served))


@dataclass
class Upload:
    number: int
    key: str
    etag: str
    phase: str  # before, during or after the fault
    at: float
    run_id: str
    seen_at: float | None = None  # when its run was first seen
    run: dict[str, Any] | None = None


def follow_uploads(stack: Stack, uploads: list[Upload], timeout_s: float) -> bool:
    """Watch the runs the uploads start (by the run id data_listener derives from key and ETag)
    until each has ended; False if some did not appear or end within ``timeout_s``."""

    def all_ended() -> bool:
        for upload in uploads:
            if upload.run is not None and upload.run["state"] in TERMINAL:
                continue
            run = run_now(stack, UPLOAD_DAG, upload.run_id)
            if run is not None:
                upload.seen_at = upload.seen_at or time.time()
                upload.run = run
        return all(u.run is not None and u.run["state"] in TERMINAL for u in uploads)

    try:
        return wait_until(all_ended, timeout_s=timeout_s, every_s=2.0, what="the uploads' runs to end")
    except WaitTimeout:
        return False


def delivery_check(uploads: list[Upload], runs: Counter, events: Counter, bridges: int = 1) -> Check:
    """Every upload started exactly one run and was delivered as at least one and at most
    ``bridges`` asset events: with several event bridges (one per object-store host of a highly
    available deployment) each may report an upload, and the run id from key and ETag must
    still make it one run."""
    problems = []
    for upload in uploads:
        if runs[upload.key] != 1:
            problems.append(f"{upload.key}: {runs[upload.key]} {UPLOAD_DAG} runs")
        if not 1 <= events[upload.key] <= bridges:
            problems.append(f"{upload.key}: {events[upload.key]} asset events from {bridges} bridge(s)")
    counts = " or ".join(map(str, sorted({events[u.key] for u in uploads})))
    detail = "; ".join(problems) or (
        f"each of the {len(uploads)} uploads: {counts} asset event(s), one {UPLOAD_DAG} run"
    )
    return Check(name="uploads delivered once", passed=bool(uploads) and not problems, detail=detail)


def deliveries(stack: Stack, since: dt.datetime) -> tuple[Counter, Counter]:
    """Per uploaded key since ``since``: the iot_training runs whose conf names it, and the asset
    events whose extra names it."""
    runs: Counter = Counter()
    events: Counter = Counter()
    runs.update((run.get("conf") or {}).get("key") for run in stack.dag_runs(UPLOAD_DAG, run_after_gte=since))
    asset = stack.endpoints.data_changes_asset
    events.update((event.get("extra") or {}).get("key") for event in stack.asset_events(asset, since))
    return runs, events


def run_upload_fault(stack: Stack, scenario: FaultScenario, progress: Progress) -> FaultResult:
    """Uploads through a fault of the event path (the bridge, the filer it follows): a fault with
    a duration gets every upload after the injection and before the revert; a one-shot fault half
    of them before it, the rest after. Then the runs they start are followed to their end.

    Times are seconds from the experiment's start (its first upload or injection): there is no
    one run to measure from. Nothing in Airflow is expected to notice the fault (no detection);
    *recovered* is the moment the last upload's run appeared.
    """
    fault, workload, steady = scenario.fault, scenario.workload, scenario.steady_state
    store, models = stack.store(stack.endpoints.data_bucket), stack.store(stack.endpoints.models_bucket)
    promotions_before = promotion_records(models)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=CLOCK_MARGIN_S)
    hosts, stamp, origin = stack.endpoints.hosts(fault.target)[:1], now_stamp(), time.time()
    reversible = fault.duration_s > 0
    plan, files = upload_phases(workload.uploads, reversible), upload_data(workload.uploads)
    uploads: list[Upload] = []
    injected_at = reverted_at = None
    error: str | None = None

    def upload(*phases: str) -> None:
        for number, (phase, data) in enumerate(zip(plan, files, strict=True), start=1):
            if phase in phases:
                key = f"{UPLOAD_PREFIX}/{scenario.name}-{stamp}-{number}.csv"
                etag = put_object(store, key, data)
                uploads.append(Upload(number, key, etag, phase, time.time(), run_id_for(key, etag)))
                progress(f"uploaded {key} ({phase} the fault)")

    def revert() -> None:
        nonlocal reverted_at
        progress(f"revert {fault.type} on {', '.join(hosts)}")
        stack.fault(fault.type, "revert", hosts, fault.duration_s, fault.params)
        reverted_at = time.time()

    with Sampler(stack) as sampler:
        try:
            try:
                upload("before")
                progress(f"inject {fault.type} on {', '.join(hosts)}")
                stack.fault(fault.type, "inject", hosts, fault.duration_s, fault.params)
                injected_at, injected_clock = time.time(), time.monotonic()
                upload("during", "after")
                if reversible:
                    # The fault's duration is the method: a pause, not a poll.
                    time.sleep(max(0.0, fault.duration_s - (time.monotonic() - injected_clock)))
                    revert()
            finally:
                if reversible and injected_at is not None and reverted_at is None:
                    revert()  # rollback: the experiment broke off with the fault in place
            progress(f"waiting for the {len(uploads)} uploads' {UPLOAD_DAG} runs")
            if not follow_uploads(stack, uploads, DELIVERY_TIMEOUT_S):
                progress(f"not every upload's run ended within {DELIVERY_TIMEOUT_S:.0f} s")
        except (StackError, AirflowError, OSError) as failure:
            error = f"{type(failure).__name__}: {failure}"
    runs: Counter = Counter()
    events: Counter = Counter()
    checks: list[Check] = []
    intervals: list[TaskInterval] = []
    retries = 0
    try:
        if error is None:
            runs, events = deliveries(stack, since)
            for followed in (u for u in uploads if u.run is not None):
                for interval in timeline(stack, UPLOAD_DAG, followed.run_id, origin):
                    intervals.append({**interval, "task_id": f"#{followed.number} {interval['task_id']}"})
                retries += retries_used(stack.task_instances(UPLOAD_DAG, followed.run_id))
    except (StackError, AirflowError) as failure:
        error = f"reading the outcome: {type(failure).__name__}: {failure}"
    if error is None:
        ended_in = Counter(u.run["state"] if u.run else "missing" for u in uploads)
        checks.append(
            Check(
                name=f"run {steady.run_state}",
                passed=ended_in == Counter({steady.run_state: len(uploads)}),
                detail="the uploads' runs ended: "
                + ", ".join(f"{count} {state}" for state, count in sorted(ended_in.items())),
            )
        )
        if steady.uploads_delivered_once:
            checks.append(delivery_check(uploads, runs, events))
        if steady.artifacts_intact:
            # Opened again: the gateway the experiment began with may be on the host the fault took.
            models = stack.store(stack.endpoints.models_bucket)
            checks += [artifacts_intact(models), promotions_sound(models, promotions_before)]
        if steady.production_served:
            checks.append(served_throughout(sampler.ticks))
    seen = [u.seen_at for u in uploads if u.seen_at is not None]
    recovered = max(seen) if uploads and len(seen) == len(uploads) else None  # every run appeared
    ends = [epoch(u.run.get("end_date")) for u in uploads if u.run is not None]
    last_end = max((end for end in ends if end is not None), default=None)
    events_seen = [Event(at_s=_rel(u.at, origin), what=f"upload {u.number}") for u in uploads]
    for at, what in ((injected_at, "inject"), (reverted_at, "revert"), (recovered, "recovered")):
        if at is not None:
            events_seen.append(Event(at_s=_rel(at, origin), what=what))
    states = sorted({u.run["state"] if u.run else "missing" for u in uploads})
    result = FaultResult(
        name=scenario.name,
        fault=fault.type,
        target=",".join(hosts) or fault.target,
        description=scenario.description,
        outcome="error" if error else ("passed" if checks and all(c["passed"] for c in checks) else "failed"),
        checks=checks,
        dag_id=UPLOAD_DAG,
        run_id=", ".join(u.run_id for u in uploads),
        run_state=", ".join(states),
        duration_s=_rel(last_end, origin),
        baseline_duration_s=None,
        extra_wall_s=None,
        injected_at_s=_rel(injected_at, origin),
        detected_at_s=None,
        recovered_at_s=_rel(recovered, origin),
        detection_s=None,
        recovery_s=None if recovered is None or injected_at is None else round(recovered - injected_at, 2),
        retries_used=retries,
        timeline=sorted(intervals, key=lambda i: (i["start_s"] is None, i["start_s"] or 0, i["task_id"])),
        events=sorted(events_seen, key=lambda e: e["at_s"]),
        uploads=[
            UploadRecord(
                key=u.key,
                etag=u.etag,
                phase=u.phase,
                run_id=u.run_id,
                run_state=u.run["state"] if u.run else None,
                uploaded_at_s=round(u.at - origin, 2),
                run_seen_at_s=_rel(u.seen_at, origin),
                runs=runs[u.key],
                asset_events=events[u.key],
            )
            for u in uploads
        ],
    )
    if error:
        result["error"] = error
    return result


# --- host loss: the victim, the failover probes and the accounting --------------------------------

#: Acknowledged probe writes before the fault (the method: a pause, not a poll).
PROBES_WARMUP_S = 5.0


def host_without_a_leader(hosts: list[str], replication: Any, progress: Progress) -> str | None:
    """A host of ``hosts`` that leads nothing. Where each leads something (three leaders on three
    hosts), PostgreSQL's primary and the Redis master are moved to the SeaweedFS master leader's
    host first (its leader is elected, not chosen), which frees the others."""
    leaders = set(replication.leaders().values())
    host = next((h for h in hosts if h not in leaders), None)
    if host is None:
        progress("every host leads something: moving PostgreSQL's primary and the Redis master away")
        gathered = replication.gather_leaders()
        host = next((h for h in hosts if h != gathered), None)
    return host


def pick_victims(stack: Stack, scenario: FaultScenario, progress: Progress) -> list[str] | None:
    """The host ``fault.pick`` names, chosen (and, for every_leader, prepared) before the run
    starts; None leaves the choice to the injection (the task's host or the group's first).
    Where PostgreSQL has one member there is nothing to choose between: the group's first."""
    fault = scenario.fault
    if fault.pick is None:
        return None
    from .leaders import NotReplicated

    hosts = stack.endpoints.hosts(fault.target)
    if len(stack.endpoints.groups.get("databases", [])) < 2:
        return hosts[:1]
    replication = stack.replication()
    try:
        if fault.pick == "every_leader":
            progress("moving PostgreSQL's primary and the Redis master to the SeaweedFS leader's host")
            host = replication.gather_leaders()
        elif fault.pick == "postgresql_primary":
            host = replication.postgresql_primary()
        else:
            host = host_without_a_leader(hosts, replication, progress)
    except NotReplicated as error:
        raise StackError(f"{scenario.name}: cannot pick the {fault.pick} host: {error}") from None
    if host not in hosts:
        raise StackError(f"{scenario.name}: the {fault.pick} host {host!r} is not in {fault.target}")
    progress(f"{fault.pick}: {host} ({replication.leaders()})")
    return [host]


class Accounting:
    """The failover probes on a host the fault spares, uploads during the fault, a count of
    primaries; :meth:`finish` turns them into checks and a :class:`FailoverRecord`."""

    def __init__(self, stack: Stack, scenario: FaultScenario, progress: Progress) -> None:
        from .failover import PrimaryCounter, probe_tag

        self.stack, self.scenario, self.progress = stack, scenario, progress
        self.tag, self.stamp = probe_tag(), now_stamp()
        self.since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=CLOCK_MARGIN_S)
        self.probe_host: str | None = None
        self.uploads: list[Upload] = []
        self.upload_error: str | None = None
        replicated = len(stack.endpoints.groups.get("databases", [])) > 1
        self.primaries = PrimaryCounter(stack.replication()) if replicated else None
        self._uploader: threading.Thread | None = None

    def start(self) -> None:
        """Before the run: the probes on the first Airflow host (they need Airflow's environment)
        outside the fault's target group, which the fault cannot hit whichever host it picks."""
        targets = set(self.stack.endpoints.hosts(self.scenario.fault.target))
        spared = [h for h in self.stack.endpoints.hosts("airflow") if h not in targets]
        if not spared:
            raise StackError(
                f"every Airflow host is in {self.scenario.fault.target}: none to run the probes on"
            )
        self.probe_host = spared[0]
        params = {"probes_tag": self.tag, "probes_bucket": self.stack.endpoints.data_bucket}
        self.progress(f"failover probes on {self.probe_host} (tag {self.tag})")
        self.stack.fault("failover_probes", "inject", [self.probe_host], 0, params)
        if self.primaries is not None:
            self.primaries.__enter__()
        time.sleep(PROBES_WARMUP_S)

    def abandon(self) -> None:
        """No fault to account for: stop the probes and the counting, measure nothing."""
        import tempfile

        if self.primaries is not None:
            self.primaries.__exit__(None, None, None)
        if self.probe_host is not None:
            with tempfile.TemporaryDirectory(prefix="r3e-probes-") as folder, contextlib.suppress(StackError):
                params = {"probes_tag": self.tag, "probes_fetch_dir": folder}
                self.stack.fault("failover_probes", "revert", [self.probe_host], 0, params)

    def during(self) -> None:
        """Right after the injection: the uploads, in a thread (each retried while the store refuses)."""
        from .failover import ACCOUNTING_UPLOADS

        def upload() -> None:
            try:
                for number, data in enumerate(upload_data(ACCOUNTING_UPLOADS), start=1):
                    key = f"{UPLOAD_PREFIX}/{self.scenario.name}-{self.stamp}-{number}.csv"
                    etag = put_object(self.stack.store(self.stack.endpoints.data_bucket), key, data)
                    self.uploads.append(
                        Upload(number, key, etag, "during", time.time(), run_id_for(key, etag))
                    )
                    self.progress(f"uploaded {key} (during the fault)")
            except Exception as failure:  # the check names it; the experiment goes on
                self.upload_error = f"{type(failure).__name__}: {failure}"

        self._uploader = threading.Thread(target=upload, daemon=True)
        self._uploader.start()

    def finish(
        self,
        injected_at: float,
        reverted_at: float | None,
        task_instances: list[dict[str, Any]],
        intervals: list[TaskInterval],
    ) -> tuple[list[Check], FailoverRecord]:
        import tempfile

        from . import failover

        if self.primaries is not None:
            self.primaries.__exit__(None, None, None)
        if self._uploader is not None:
            self._uploader.join(timeout=UPLOAD_PATIENCE_S * failover.ACCOUNTING_UPLOADS)
        if self.probe_host is None:
            raise StackError("the failover probes never started")
        with tempfile.TemporaryDirectory(prefix="r3e-probes-") as folder:
            params = {"probes_tag": self.tag, "probes_fetch_dir": folder}
            self.stack.fault("failover_probes", "revert", [self.probe_host], 0, params)
            logs, found = failover.read_probe_logs(folder), failover.read_found(folder)
        components = failover.component_failover(logs, injected_at, reverted_at)
        self.progress(f"waiting for the {len(self.uploads)} uploads' {UPLOAD_DAG} runs")
        follow_uploads(self.stack, self.uploads, DELIVERY_TIMEOUT_S)
        # Scheduling: the first task queued after the injection, of the run or of the uploads' runs.
        queued = list(task_instances)
        for upload in (u for u in self.uploads if u.run is not None):
            queued += self.stack.task_instances(UPLOAD_DAG, upload.run_id)
        components["scheduling"] = {
            "failover_s": failover.scheduling_failover_s(queued, injected_at),
            "probed": True,
        }
        ledger_check, ledger = failover.ledger_check(logs["postgresql"], found)
        store = self.stack.store(self.stack.endpoints.data_bucket)
        objects_check, objects = failover.objects_check(store, self.tag, logs["object_store"])
        runs, events = deliveries(self.stack, self.since)
        bridges = len(self.stack.endpoints.groups.get("object_stores", [])) or 1  # one bridge per store host
        delivered = delivery_check(self.uploads, runs, events, bridges)
        if self.upload_error:
            delivered = Check(
                name=delivered["name"],
                passed=False,
                detail=f"{delivered['detail']}; upload: {self.upload_error}",
            )
        doubled = failover.completed_twice(intervals)
        checks = [ledger_check, objects_check, delivered, failover.twice_check(doubled)]
        most = self.primaries.most if self.primaries is not None else None
        if (primaries := failover.primaries_check(most)) is not None:
            checks.append(primaries)
        record = FailoverRecord(
            probe_host=self.probe_host,
            components=components,
            ledger=ledger,
            objects=objects,
            uploads=[
                {"key": u.key, "runs": runs[u.key], "asset_events": events[u.key]} for u in self.uploads
            ],
            tasks_completed_twice=doubled,
            primaries_at_once=most,
        )
        return checks, record

"""Experiments are data: one YAML file per scenario, checked here before anything runs.

A fault scenario (``experiments/faults/*.yml``)::

    name: kill-worker
    description: kill -9 of the Celery worker running a training task
    fault:
      type: kill_worker          # one of FAULT_TYPES
      target: airflow_workers    # inventory group or host the fault is injected on
      pick: every_leader         # optional, which host of the group (PICKS)
      inject:
        when_task_running: train # once a try of this task runs (on the host that runs it),
        # when_tasks_queued: 4   # or once this many of the run's tasks wait in the queue,
        after_s: 0               # ... plus this delay; alone: seconds after the run starts
      duration_s: 0              # 0: one-shot; else the fault is reverted after this long
      params: {}                 # fault-specific, e.g. {delay_ms: 200, loss_percent: 5}
    workload: {dag_id: iot_training, scale: 1, seed: 0}   # or {dag_id: r3e_probe, params: {...}}
    # or {dag_id: iot_training, uploads: 3}: no run triggered; the harness uploads 3 distinct
    # files under raw/ of the data bucket (a fault with a duration: all after the injection,
    # before the revert; a one-shot fault: half before it, the rest after), and follows the
    # runs the uploads start through the event bridge and data_listener
    steady_state:
      run_state: success         # the DAG run (each upload's run) must end so
      artifacts_intact: true     # every registered file present, checksums right
      production_served: true    # the forecast service answers throughout
      uploads_delivered_once: false  # upload workloads: each upload started exactly one run
      accounting: false          # host loss: failover times, nothing lost, nothing done twice

A bad-input scenario (``experiments/inputs/*.yml``)::

    name: month-first-dates
    description: the file re-saved by a US-locale tool
    input: {corruption: month_first, fraction: 1.0, seed: 0, scale: 0.2}
    expected: refused            # refused | quarantined | accepted | duplicate
    reason_contains: month-first
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The fault matrix of issue 4; each is a tasks file of playbooks/fault.yml.
FAULT_TYPES = (
    "kill_worker",  # kill -9 of the Celery worker's main process mid-task
    "stop_worker_host",  # the whole worker host stopped mid-run, started again after duration_s
    "kill_scheduler",  # kill -9 of the scheduler (systemd restarts it)
    "kill_api_server",  # kill -9 of the api-server (systemd restarts it)
    "restart_postgresql",  # PostgreSQL restarted
    "restart_redis",  # the Celery broker restarted with tasks queued
    "stop_object_store",  # the S3 object store stopped for duration_s
    "isolate_worker",  # one worker cut off the network for duration_s
    "netem_object_store",  # latency and loss towards the object store for duration_s
    "memory_pressure",  # a task's memory capped until it is OOM-killed
    "stop_event_bridge",  # the object-store event bridge stopped for duration_s
    "restart_filer",  # the SeaweedFS filer restarted (its metadata log is what the bridge follows)
    "power_off_host",  # a whole host lost (power off) for duration_s, then powered on
    "partition_host",  # a host cut off from every other host for duration_s
)
#: Which host of the target group a fault hits (``fault.pick``). Default: the host running the
#: task ``inject.when_task_running`` names, where it is in the group; else the group's first.
#: The leaders are PostgreSQL's primary, the Redis master and the SeaweedFS master leader.
PICKS = (
    "every_leader",  # the host of the SeaweedFS leader, with the primary and the master moved there
    "no_leader",  # a host that holds none of the three
    "postgresql_primary",  # the host of PostgreSQL's primary
)

EXPECTED_INPUT_OUTCOMES = ("refused", "quarantined", "accepted", "duplicate")


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Injection(_Strict):
    when_task_running: str | None = None  # a task id of the workload's DAG
    when_tasks_queued: int | None = Field(default=None, ge=1)  # at least this many queued
    after_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_condition(self) -> Injection:
        if self.when_task_running and self.when_tasks_queued:
            raise ValueError("use when_task_running or when_tasks_queued, not both")
        return self


class Fault(_Strict):
    type: Literal[FAULT_TYPES]  # type: ignore[valid-type]
    target: str = Field(min_length=1)
    pick: Literal[PICKS] | None = None  # type: ignore[valid-type]
    inject: Injection = Injection()
    duration_s: float = Field(default=0.0, ge=0, le=3600)
    params: dict[str, Any] = {}


#: The DAG an upload under raw/ starts (data_listener's route).
UPLOAD_DAG = "iot_training"


class Workload(_Strict):
    """iot_training on generated data of ``scale`` and ``seed``, or another DAG with ``params``;
    or, with ``uploads``, that many uploads under ``raw/`` instead of a triggered run."""

    dag_id: str = "iot_training"
    scale: float = Field(default=1.0, gt=0, le=100)
    seed: int = 0
    params: dict[str, Any] = {}
    uploads: int = Field(default=0, ge=0, le=20)

    @model_validator(mode="after")
    def _uploads_start_training(self) -> Workload:
        if self.uploads and (self.dag_id != UPLOAD_DAG or self.params):
            raise ValueError(f"uploads start {UPLOAD_DAG} runs: use dag_id {UPLOAD_DAG} and no params")
        return self


class SteadyState(_Strict):
    run_state: Literal["success", "failed"] = "success"
    artifacts_intact: bool = True
    production_served: bool = True
    uploads_delivered_once: bool = False
    #: A host-loss experiment's exactly-once accounting and failover times (see failover.py):
    #: probes on a spared host, uploads during the fault, no task completed twice, one primary.
    accounting: bool = False


class FaultScenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    fault: Fault
    workload: Workload = Workload()
    steady_state: SteadyState = SteadyState()

    @property
    def kind(self) -> str:
        return "fault"

    @model_validator(mode="after")
    def _uploads_fit(self) -> FaultScenario:
        if self.steady_state.uploads_delivered_once and not self.workload.uploads:
            raise ValueError("steady_state.uploads_delivered_once needs a workload with uploads")
        if self.workload.uploads and self.fault.inject != Injection():
            raise ValueError("an upload workload injects at once: fault.inject takes no condition")
        if self.steady_state.accounting and (self.workload.uploads or self.workload.dag_id != UPLOAD_DAG):
            raise ValueError(
                f"steady_state.accounting follows a triggered {UPLOAD_DAG} run: no uploads workload"
            )
        return self


class InputSpec(_Strict):
    corruption: str = Field(min_length=1)
    fraction: float = Field(default=1.0, ge=0, le=1)
    seed: int = 0
    scale: float = Field(default=0.2, gt=0, le=100)


class InputScenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    input: InputSpec
    expected: Literal[EXPECTED_INPUT_OUTCOMES]  # type: ignore[valid-type]
    reason_contains: str = ""

    @property
    def kind(self) -> str:
        return "input"

    @model_validator(mode="after")
    def _reason_only_for_refusals(self) -> InputScenario:
        if self.reason_contains and self.expected not in ("refused", "quarantined"):
            raise ValueError("reason_contains only applies when expected is refused or quarantined")
        return self


Scenario = FaultScenario | InputScenario


def parse_scenario(document: Any, source: str = "<scenario>") -> Scenario:
    """A scenario from its parsed YAML; ScenarioError names ``source`` and every problem."""
    if not isinstance(document, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping, got {type(document).__name__}")
    kinds = [kind for kind in ("fault", "input") if kind in document]
    if len(kinds) != 1:
        raise ScenarioError(f"{source}: a scenario has exactly one of 'fault' or 'input'")
    model = FaultScenario if kinds[0] == "fault" else InputScenario
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'scenario'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise ScenarioError(f"{source}: {problems}") from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ScenarioError(f"{path}: cannot read it ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"{path}: not valid YAML ({error})") from None
    scenario = parse_scenario(document, str(path))
    if scenario.name != path.stem:
        raise ScenarioError(f"{path}: name {scenario.name!r} must match the file name {path.stem!r}")
    return scenario


def load_scenarios(paths: list[str | Path]) -> list[Scenario]:
    """Scenarios from files and folders (every *.yml inside, sorted); names must be unique."""
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob("*.yml")) if path.is_dir() else [path])
    if not files:
        raise ScenarioError(f"no scenario files in {', '.join(map(str, paths))}")
    scenarios = [load_scenario(file) for file in files]
    names = [scenario.name for scenario in scenarios]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ScenarioError(f"scenario names used twice: {', '.join(duplicates)}")
    return scenarios

"""The shape of ``results.json``: what the harness measures and the report renders.

Times are seconds. ``*_at_s`` values are offsets from the start of the experiment's DAG run
(its ``start_date``), or for an upload workload from the experiment's first action (its first
upload or the injection); ``None`` where something did not happen (no detection, no recovery).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

Outcome = Literal["passed", "failed", "error"]


class Check(TypedDict):
    """One assertion about the steady state, e.g. "dag run success" or "artifacts intact"."""

    name: str
    passed: bool
    detail: str


class TaskInterval(TypedDict):
    """One try of one task instance, for the timeline figure."""

    task_id: str
    map_index: int
    try_number: int
    state: str  # success, failed, up_for_retry, running (unfinished at the end), ...
    start_s: float | None
    end_s: float | None
    hostname: str


class Event(TypedDict):
    at_s: float
    what: str  # "inject", "revert", "detected", "recovered", ...


class UploadRecord(TypedDict):
    """One upload of an upload workload and what became of it."""

    key: str
    etag: str
    phase: Literal["before", "during", "after"]  # relative to the fault
    run_id: str  # the run data_listener derives from key and ETag
    run_state: str | None  # None: the run never appeared
    uploaded_at_s: float
    run_seen_at_s: float | None  # when the harness first saw its run
    runs: int  # iot_training runs whose conf names the key
    asset_events: int  # asset events whose extra names the key


class FailoverRecord(TypedDict):
    """A host-loss experiment's failover times and accounting (failover.py)."""

    probe_host: str  # the spared host the probes ran on
    #: postgresql, broker, object_store, execution_api (from the probes), scheduling: each with
    #: failover_s (injection -> accepted again; 0: no outage; None: never), outages, acknowledged
    components: dict[str, dict]
    ledger: dict  # acknowledged, found, lost (the first few numbers)
    objects: dict  # acknowledged, readable, unreadable
    uploads: list[dict]  # key, runs, asset_events
    tasks_completed_twice: list[str]
    primaries_at_once: int | None  # the most PostgreSQL members calling themselves primary; None: one member


class FaultResult(TypedDict):
    name: str
    fault: str  # the fault type, e.g. "kill_worker"
    target: str  # inventory group or host
    description: str
    outcome: Outcome
    checks: list[Check]
    dag_id: str
    run_id: str
    run_state: str
    duration_s: float | None
    baseline_duration_s: float | None
    extra_wall_s: float | None
    injected_at_s: float | None
    detected_at_s: float | None
    recovered_at_s: float | None
    detection_s: float | None  # detected_at_s - injected_at_s
    recovery_s: float | None  # recovered_at_s - injected_at_s
    retries_used: int
    timeline: list[TaskInterval]
    events: list[Event]
    uploads: NotRequired[list[UploadRecord]]  # an upload workload's uploads
    failover: NotRequired[FailoverRecord]  # a host-loss experiment's (steady_state.accounting)
    error: NotRequired[str]  # when outcome == "error": what broke the experiment itself


class InputResult(TypedDict):
    name: str
    corruption: str  # e.g. "month_first"
    description: str
    expected: str  # "refused" | "quarantined" | "accepted" | "duplicate"
    outcome: Outcome
    checks: list[Check]
    verdict: str  # what the pipeline did: refused | quarantined | accepted | duplicate
    rows: int | None
    clean_rows: int | None
    quarantined_rows: int | None
    reason: str  # the refusal message, or the quarantine reasons with their counts
    promoted: bool  # did a model trained on it reach production
    run_state: str | None
    error: NotRequired[str]


class CurvePoint(TypedDict):
    fraction: float  # share of rows corrupted, 0..1
    series: str  # "In" | "Out"
    quarantined_rows: int
    mae_prophet: float
    mae_baseline: float
    mae_selected: float


class ReliabilityRun(TypedDict):
    run_id: str
    state: str
    duration_s: float | None
    metrics: dict[str, dict[str, float]]  # series -> {"prophet_mae", "baseline_mae", ...}


class Reliability(TypedDict):
    runs: list[ReliabilityRun]
    success_rate: float
    duration_s: dict[str, float]  # min, p50, p90, max, mean
    metric_variance: dict[str, float]  # "<series>.<metric>" -> variance across runs


class TuningResult(TypedDict):
    profile: Literal["defaults", "tuned"]
    settings: dict[str, str]
    detection_s: float | None
    recovery_s: float | None
    run_state: str
    duration_s: float | None


class ComparedRun(TypedDict):
    """Another deployment's host-loss experiments, shown beside this run's (``--compare``)."""

    deployment: str
    created_at: str
    hosts: int
    faults: list[FaultResult]


class Results(TypedDict):
    created_at: str  # when the run started
    finished_at: NotRequired[str]  # when its last measurement ended
    fingerprint: dict  # versions, topology, settings, seeds (see fingerprint.py)
    faults: list[FaultResult]
    inputs: list[InputResult]
    robustness_curve: list[CurvePoint]
    reliability: Reliability | None
    tuning: list[TuningResult]
    elasticity: NotRequired[dict]  # issue 5's benchmark figures, when present
    compared: NotRequired[list[ComparedRun]]  # other deployments' host-loss runs, side by side


def empty_results(created_at: str) -> Results:
    """Results with nothing measured yet: what a run starts from and fills in."""
    return Results(
        created_at=created_at,
        fingerprint={},
        faults=[],
        inputs=[],
        robustness_curve=[],
        reliability=None,
        tuning=[],
    )

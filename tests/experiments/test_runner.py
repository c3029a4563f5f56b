"""How detection and recovery are read from the observations of a run (no stack needed)."""

from __future__ import annotations

import pytest

from r3e_testbed.experiments.runner import Tick, detect_and_recover


def ti(task_id, state, try_number=1, map_index=-1, end_date=None):
    return {
        "task_id": task_id,
        "map_index": map_index,
        "state": state,
        "try_number": try_number,
        "end_date": end_date,
    }


def tick(at, *instances, healthy=True, run_state="running"):
    return Tick(at=at, run_state=run_state, task_instances=list(instances), healthy=healthy, served=True)


def test_a_killed_task_is_detected_when_it_goes_up_for_retry_and_recovered_when_its_retry_succeeds():
    ticks = [
        tick(100, ti("train", "running")),
        tick(101, ti("train", "running")),  # injected at 101: nothing visible yet
        tick(140, ti("train", "up_for_retry")),  # heartbeat timed out
        tick(150, ti("train", "running", try_number=2)),
        tick(160, ti("train", "success", try_number=2)),
    ]
    detected, recovered = detect_and_recover(ticks, 101, 101, {("train", -1)})
    assert (detected, recovered) == (140, 160)


def test_a_new_try_counts_as_detection_even_if_the_failed_state_was_never_observed():
    ticks = [
        tick(10, ti("a", "running")),
        tick(20, ti("a", "running", try_number=2)),
        tick(30, ti("a", "success", 2)),
    ]
    assert detect_and_recover(ticks, 15, 15, {("a", -1)})[0] == 20


def test_an_unhealthy_component_is_detection_and_recovery_waits_for_health_and_the_revert():
    ticks = [
        tick(0, ti("a", "running")),
        tick(5, ti("a", "running"), healthy=False),
        tick(10, ti("a", "success"), healthy=False),
        tick(15, ti("a", "success")),  # healthy but before the revert at 20
        tick(25, ti("a", "success")),
    ]
    assert detect_and_recover(ticks, 1, 20, {("a", -1)}) == (5, 25)


def test_without_affected_tasks_recovery_needs_progress_after_the_injection():
    before = "2026-01-01T00:00:10+00:00"  # epoch 1767225610
    after = "2026-01-01T00:01:40+00:00"  # epoch 1767225700
    injected = 1767225650.0
    ticks = [
        tick(injected + 1, ti("a", "success", end_date=before), ti("b", "queued")),
        tick(injected + 60, ti("a", "success", end_date=before), ti("b", "success", end_date=after)),
    ]
    assert detect_and_recover(ticks, injected, injected, set()) == (None, injected + 60)


def test_nothing_recovered_when_the_affected_task_never_succeeds():
    ticks = [tick(0, ti("a", "running")), tick(5, ti("a", "failed"), run_state="failed")]
    assert detect_and_recover(ticks, 1, 1, {("a", -1)}) == (5, None)


@pytest.mark.parametrize("state", ["failed", "up_for_retry", "restarting", "upstream_failed"])
def test_every_disturbed_state_is_a_detection(state):
    ticks = [tick(0, ti("a", "running")), tick(3, ti("a", state))]
    assert detect_and_recover(ticks, 1, 1, {("a", -1)})[0] == 3


def test_a_disturbance_after_recovery_is_not_the_faults_detection():
    ticks = [
        tick(0, ti("a", "running")),
        tick(5, ti("a", "success")),
        tick(9, ti("a", "success"), healthy=False),
    ]
    assert detect_and_recover(ticks, 1, 1, {("a", -1)}) == (None, 5)

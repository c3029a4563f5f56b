"""Elasticity on the running stack: the autoscaler grows and shrinks the worker pool while a DAG
runs, and a stopped worker drains (its running tasks finish, nothing is retried or lost).

Checks outcomes, not times: the decisions logged with their inputs, the instances started and
stopped, every task of the run successful on its first try.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from airflow_client.client.models import TaskInstanceResponse, TriggerDAGRunPostBody

REPO = Path(__file__).resolve().parents[3]
PROBE = "r3e_probe"
DECISION_LOG = "/var/lib/r3e-autoscaler/decisions.jsonl"
AUTOSCALER_CONFIG = "/etc/r3e/r3e-autoscaler.json"


@pytest.fixture(scope="module")
def autoscaler(first_of, connect):
    return connect(first_of("autoscalers"))


def _decisions(host) -> list[dict]:
    if not host.file(DECISION_LOG).exists:
        return []
    return [json.loads(line) for line in host.check_output(f"cat {DECISION_LOG}").splitlines() if line]


def _fixed_workers(host) -> int:
    """The autoscaler's count of workers outside its pool for the default queue."""
    pools = json.loads(host.check_output(f"cat {AUTOSCALER_CONFIG}"))["pools"]
    return next(pool["fixed_workers"] for pool in pools if pool["queue"] == "default")


def _trigger(airflow, tasks: int, seconds: float) -> str:
    """A run of the probe DAG (an AirflowError names the status if Airflow refuses it). patience 0:
    a trigger retried after an uncertain failure could start a second run."""
    body = TriggerDAGRunPostBody(conf={"tasks": tasks, "seconds": seconds})
    return airflow.call(airflow.dag_runs.trigger_dag_run, PROBE, body, patience_s=0).dag_run_id


def _task_instances(airflow, run_id: str) -> list[TaskInstanceResponse]:
    answer = airflow.call(airflow.task_instances.get_task_instances, PROBE, run_id, limit=1000)
    return answer.task_instances


def _finished(airflow, run_id: str) -> str | None:
    state = airflow.call(airflow.dag_runs.get_dag_run, PROBE, run_id).state.value
    return state if state in ("success", "failed") else None


def _assert_nothing_lost(airflow, run_id: str, tasks: int) -> None:
    instances = _task_instances(airflow, run_id)
    work = [ti for ti in instances if ti.task_id == "work"]
    assert len(work) == tasks
    not_clean = [
        (ti.map_index, ti.state, ti.try_number)
        for ti in instances
        if ti.state != "success" or ti.try_number != 1
    ]
    assert not not_clean, f"tasks not successful on their first try: {not_clean}"


def test_the_autoscaler_grows_the_pool_for_a_backlog_and_shrinks_it_after(autoscaler, airflow, wait_for):
    pool = ["airflow-worker@2", "airflow-worker@3"]
    # Earlier tests' runs may have grown the pool; it shrinks back once their tasks are gone.
    wait_for(
        "an empty pool to start from", lambda: not any(autoscaler.service(u).is_running for u in pool), 400, 5
    )
    logged_before = len(_decisions(autoscaler))
    # 24 tasks on 2 fixed workers of 4 slots: the rule asks for ceil(24 / 4) = 6, capped at 4.
    run_id = _trigger(airflow, tasks=24, seconds=20)

    def scale_out():
        return next((d for d in _decisions(autoscaler)[logged_before:] if d["action"] == "scale_out"), None)

    decision = wait_for("a scale out decision", scale_out, timeout=90, every=2)
    assert decision["queue"] == "default" and decision["target"] == 4, decision
    assert decision["queued"] + decision["running"] > 8, decision  # its inputs: more than 2 workers' slots
    assert decision["done"] == [f"start {unit}.service" for unit in pool], decision
    wait_for("the pool's instances running", lambda: all(autoscaler.service(u).is_running for u in pool), 60)
    # The new instances take tasks of the run (Celery logs each task it receives).
    wait_for(
        "an extra instance taking a task",
        lambda: (
            "received" in autoscaler.check_output("journalctl -u airflow-worker@2 -u airflow-worker@3 -o cat")
        ),
        timeout=120,
    )
    assert wait_for("the run to finish", lambda: _finished(airflow, run_id), timeout=600) == "success"
    _assert_nothing_lost(airflow, run_id, tasks=24)

    # The rule keeps the highest demand seen during the cooldown, so the pool may come down in
    # steps (4 -> 3 -> 2) as the last tasks end.
    wait_for(
        "the pool drained", lambda: not any(autoscaler.service(u).is_running for u in pool), 400, every=5
    )
    scale_ins = [d for d in _decisions(autoscaler)[logged_before:] if d["action"] == "scale_in"]
    assert scale_ins and scale_ins[-1]["target"] == 2, scale_ins
    assert all(d["desired"] < d["current"] for d in scale_ins), scale_ins


def test_a_stopped_worker_lets_its_running_tasks_finish(first_of, connect, airflow, wait_for):
    name = first_of("airflow_workers")
    worker = connect(name)
    run_id = _trigger(airflow, tasks=8, seconds=30)

    def running_here():
        return [
            ti
            for ti in _task_instances(airflow, run_id)
            if ti.task_id == "work" and ti.state == "running" and ti.hostname == name
        ]

    draining = wait_for(f"tasks running on {name}", running_here, timeout=120, every=1)
    started = time.monotonic()
    try:
        # Celery's warm shutdown: the stop returns once the running tasks have finished.
        worker.check_output("systemctl stop airflow-worker")
        stop_took = time.monotonic() - started
        states = {ti.map_index: ti for ti in _task_instances(airflow, run_id)}
        for ti in draining:
            after = states[ti.map_index]
            assert (after.state, after.try_number) == ("success", 1), (after.state, stop_took)
    finally:
        worker.check_output("systemctl start airflow-worker")
    assert wait_for("the run to finish", lambda: _finished(airflow, run_id), timeout=300) == "success"
    _assert_nothing_lost(airflow, run_id, tasks=8)


def _scale(inventory: str, workers: int) -> None:
    playbook = Path(sys.executable).parent / "ansible-playbook"
    command = [
        str(playbook),
        "-i",
        inventory,
        str(REPO / "playbooks/scale.yml"),
        "-e",
        f"scale_workers={workers}",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800, cwd=REPO)
    assert finished.returncode == 0, finished.stdout[-3000:]


@pytest.mark.skipif(
    not shutil.which("podman"), reason="the container testbed's scale playbook needs podman on the controller"
)
def test_the_scale_playbook_adds_a_worker_host_and_drains_it_during_a_run(
    pytestconfig, autoscaler, airflow, wait_for
):
    inventory = pytestconfig.getoption("ansible_inventory")
    try:
        _scale(inventory, 3)
        # The added host's first worker takes the default queue: the autoscaler counts it.
        assert _fixed_workers(autoscaler) == 3
        # Four waves on 3 workers' 12 slots: the scale in below starts while tasks still run.
        run_id = _trigger(airflow, tasks=48, seconds=30)

        def running_on_the_new_host():
            return [ti for ti in _task_instances(airflow, run_id) if ti.hostname == "worker-3"]

        wait_for("tasks on the added host worker-3", running_on_the_new_host, timeout=180, every=2)
        # Scale in while its tasks run: the drain lets them finish before the container goes.
        _scale(inventory, 2)
        assert wait_for("the run to finish", lambda: _finished(airflow, run_id), timeout=600) == "success"
        _assert_nothing_lost(airflow, run_id, tasks=48)
        done_there = [ti for ti in _task_instances(airflow, run_id) if ti.hostname == "worker-3"]
        assert done_there and all(ti.state == "success" for ti in done_there)
        names = subprocess.run(
            ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
        )
        assert "worker-3" not in names.stdout.split()
        assert _fixed_workers(autoscaler) == 2
    finally:
        _scale(inventory, 2)

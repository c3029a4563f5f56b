"""Each DAG's tasks and edges, and the robustness settings the README promises for its tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest

#: Every DAG's edges (upstream, downstream): the chains of the README's pipeline diagram and the
#: DAG files' docstrings, plus the edges the tasks' data adds (a task gets an earlier task's result).
EXPECTED_EDGES = {
    "data_listener": {("route", "start_pipeline")},
    "iot_training": {
        ("fetch", "validate"),
        ("validate", "preprocess"),
        ("preprocess", "train"),
        ("train", "evaluate"),
        ("evaluate", "register"),
        ("train", "register"),
        ("validate", "register"),
    },
    "iot_deploy": {
        ("candidate", "compare"),
        ("compare", "approved"),
        ("approved", "publish_forecasts"),
        ("publish_forecasts", "switch_production"),
        ("candidate", "publish_forecasts"),
        ("candidate", "switch_production"),
        ("compare", "switch_production"),
    },
    "iot_batch_forecast": {("read_request", "forecast")},
    "r3e_probe": {("plan", "work"), ("work", "verify")},
    "testbed_smoke": {("build_frame", "check_frame")},
}

#: Tasks that run once per item of an upstream result.
MAPPED_TASKS = {
    "data_listener": {"start_pipeline"},
    "iot_training": {"train"},
    "r3e_probe": {"work"},
}

#: "Every task has retries with exponential backoff and an execution timeout" (README, the IoT
#: pipeline); the probe workload of the R3E faults has them too. The smoke DAG has none: its
#: tasks must succeed on the first try.
ROBUST_DAGS = ["data_listener", "iot_training", "iot_deploy", "iot_batch_forecast", "r3e_probe"]

#: Tasks pinned to a worker queue (topology.yml: worker-1 serves compute, worker-2 io).
QUEUES = {
    ("iot_training", "train"): "compute",
    ("testbed_smoke", "build_frame"): "compute",
    ("testbed_smoke", "check_frame"): "io",
}


def edges(dag) -> set[tuple[str, str]]:
    return {(task.task_id, downstream) for task in dag.tasks for downstream in task.downstream_task_ids}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_EDGES))
def test_tasks_and_edges(dags, dag_id):
    dag = dags[dag_id]
    expected = EXPECTED_EDGES[dag_id]
    assert set(dag.task_ids) == {task_id for edge in expected for task_id in edge}
    assert edges(dag) == expected


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_EDGES))
def test_mapped_tasks(dags, dag_id):
    mapped = {task.task_id for task in dags[dag_id].tasks if task.is_mapped}
    assert mapped == MAPPED_TASKS.get(dag_id, set())


def test_training_trains_one_task_per_series(dags):
    from r3e_testbed.pipeline.schema import LOCATIONS

    train = dags["iot_training"].get_task("train")
    assert list(train.op_kwargs_expand_input.value["series"]) == list(LOCATIONS)


@pytest.mark.parametrize("dag_id, task_id", sorted(QUEUES))
def test_queues(dags, dag_id, task_id):
    assert dags[dag_id].get_task(task_id).queue == QUEUES[dag_id, task_id]


def test_production_is_switched_last_and_only_after_approval(dags):
    """No promotion skips the decision: switch_production needs approved's path, and ends the run."""
    deploy = dags["iot_deploy"]
    switch = deploy.get_task("switch_production")
    assert "approved" in switch.get_flat_relative_ids(upstream=True)
    assert switch.trigger_rule == "all_success"
    assert switch.downstream_task_ids == set()
    assert deploy.get_task("approved").ignore_downstream_trigger_rules


@pytest.mark.parametrize("dag_id", ROBUST_DAGS)
def test_every_task_has_retries_with_backoff_and_a_timeout(dags, dag_id):
    for task in dags[dag_id].tasks:
        where = f"{dag_id}.{task.task_id}"
        assert task.retries >= 1, where
        assert task.retry_delay > timedelta(0), where
        assert task.retry_exponential_backoff, where
        assert task.max_retry_delay is not None and task.max_retry_delay >= task.retry_delay, where
        assert task.execution_timeout is not None and task.execution_timeout > timedelta(0), where


def test_deploy_promotes_one_version_at_a_time(dags):
    """switch_production may retry only because no other promotion runs meanwhile."""
    assert dags["iot_deploy"].max_active_runs == 1

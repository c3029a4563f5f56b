"""The pure helpers of benchmarks/elasticity.py (the benchmark itself needs a running testbed)."""

from __future__ import annotations

import graphlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from experiments.ansible_project import make_inventory, make_project

from r3e_testbed.experiments.stack import Playbooks

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "elasticity.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_elasticity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _ti(task_id, start, end, map_index=-1, **more):
    """A task instance document; times are seconds after 12:00:00 UTC."""

    def stamp(seconds):
        return None if seconds is None else f"2025-01-01T12:{seconds // 60:02d}:{seconds % 60:02d}Z"

    return {
        "task_id": task_id,
        "map_index": map_index,
        "start_date": stamp(start),
        "end_date": stamp(end),
        "state": "success",
        **more,
    }


# --- critical path ------------------------------------------------------------------------------

#   a -> b (mapped, 3 instances) -> d
#   a -> c ----------------------> d
GRAPH = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
INSTANCES = [
    _ti("a", 0, 10),
    _ti("b", 10, 20, 0),
    _ti("b", 10, 50, 1),  # the longest instance: 40 s
    _ti("b", 12, 30, 2),
    _ti("c", 10, 45),  # 35 s: shorter than b's longest instance, longer than any other of b's
    _ti("d", 50, 55),
]


def test_a_mapped_task_counts_as_its_longest_instance(bench):
    assert bench.task_durations(INSTANCES) == {"a": 10, "b": 40, "c": 35, "d": 5}


def test_the_critical_path_follows_the_mapped_task_through_its_longest_instance(bench):
    total, path = bench.critical_path(GRAPH, bench.task_durations(INSTANCES))
    assert (total, path) == (55, ["a", "b", "d"])


def test_the_critical_path_takes_the_other_branch_when_it_is_longer(bench):
    durations = bench.task_durations(INSTANCES) | {"c": 41}
    assert bench.critical_path(GRAPH, durations) == (56, ["a", "c", "d"])


def test_a_task_without_instances_counts_zero_and_tasks_only_named_downstream_count(bench):
    # "e" is only someone's downstream; "x" never ran (skipped): both are nodes worth 0 s.
    graph = {"a": ["e"], "x": ["e"]}
    assert bench.critical_path(graph, {"a": 3, "e": 4}) == (7, ["a", "e"])
    assert bench.critical_path({}, {}) == (0.0, [])


def test_a_cycle_is_refused(bench):
    with pytest.raises(graphlib.CycleError):
        bench.critical_path({"a": ["b"], "b": ["a"]}, {"a": 1, "b": 1})


def test_training_figures_divide_the_run_wall_time_by_the_critical_path(bench):
    run = {
        "dag_run_id": "r1",
        "state": "success",
        "start_date": "2025-01-01T11:59:55Z",
        "end_date": "2025-01-01T12:01:17.500000Z",  # 82.5 s
    }
    tasks = [{"task_id": task, "downstream_task_ids": children} for task, children in GRAPH.items()]
    figures = bench.training_figures(run, tasks, INSTANCES)
    assert figures["wall_s"] == 82.5
    assert figures["critical_path_s"] == 55
    assert figures["critical_path"] == ["a", "b", "d"]
    assert figures["ratio"] == 1.5


def test_instance_seconds_falls_back_on_airflows_duration(bench):
    assert bench.instance_seconds({"start_date": None, "end_date": None, "duration": 7.5}) == 7.5
    assert bench.instance_seconds({"start_date": "2025-01-01T12:00:00Z", "end_date": None}) == 0.0


# --- throughput ---------------------------------------------------------------------------------


def test_throughput_is_tasks_over_first_start_to_last_end_of_the_work_task_only(bench):
    instances = [
        _ti("plan", 0, 5),  # not work: ignored
        _ti("work", 10, 40, 0, hostname="worker-1"),
        _ti("work", 11, 41, 1, hostname="worker-1"),
        _ti("work", 40, 70, 2, hostname="worker-2"),
        _ti("work", 42, 60, 3, hostname="worker-2"),
        _ti("verify", 71, 75),
    ]
    measured = bench.throughput(instances)
    assert measured["tasks"] == 4
    assert measured["span_s"] == 60
    assert measured["per_s"] == pytest.approx(4 / 60)
    assert measured["hosts"] == {"worker-1": 2, "worker-2": 2}


def test_throughput_refuses_a_work_task_that_never_ran(bench):
    with pytest.raises(ValueError, match="without a start or an end"):
        bench.throughput([_ti("work", 0, 30, 0), _ti("work", None, None, 1)])
    with pytest.raises(ValueError):
        bench.throughput([_ti("plan", 0, 1)])


def test_worker_figures_give_the_speed_up_and_judge_two_workers_only(bench):
    def measured(per_s):
        return {
            "per_s": per_s,
            "tasks": 16,
            "span_s": 16 / per_s,
            "run_s": 99.0,
            "run_state": "success",
            "mean_task_s": 33.0,
            "hosts": {"worker-1": 16},
            "workers": ["worker-1:airflow-worker"],
        }

    rows = bench.worker_figures({1: measured(0.1), 2: measured(0.17), 4: measured(0.39)}, 16, 30)
    assert [row.met for row in rows] == [None, False, None]
    assert rows[1].data["speedup"] == pytest.approx(1.7)
    assert rows[2].value == "0.390 tasks/s = 3.90x"
    assert "33.0 s on average for its 30 s wait" in rows[0].detail
    rows = bench.worker_figures({1: measured(0.1), 2: measured(0.19)}, 16, 30)
    assert rows[1].met is True


# --- re-converge ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playbooks(tmp_path_factory):
    """A small project whose playbook runs for real (ansible-runner, on this machine)."""
    folder = make_project(tmp_path_factory.mktemp("project"))
    return Playbooks(folder, [str(make_inventory(tmp_path_factory.mktemp("inventory")))])


@pytest.fixture(scope="module")
def converged(playbooks, tmp_path_factory):
    """A run that changes things: both hosts write a file, beta's loop and handler change."""
    return playbooks.run("demo.yml", {"out_dir": str(tmp_path_factory.mktemp("out"))})


def test_the_reconverge_figure_counts_and_names_what_changed(bench, converged):
    figure = bench.reconverge_figure(converged, took=42.0)
    data = figure.data
    assert data["changed"] == 4 == sum(host["changed"] for host in data["recap"].values())
    assert sorted(data["changed_tasks"]) == [
        ("Write the extra variable", "alpha"),
        ("Write the extra variable", "beta"),
        ("demo : Loop over items", "beta"),
        ("demo : Say hello", "beta"),
    ]
    assert figure.met is False and figure.value == "42 s, changed=4"
    assert figure.detail.startswith("changed: ") and "beta: demo : Say hello" in figure.detail


def test_the_reconverge_figure_names_the_slowest_tasks_and_counts_every_task(bench, converged):
    figure = bench.reconverge_figure(converged, took=42.0, slowest=2)
    assert figure.data["tasks"] == len(converged.task_seconds()) >= 6
    (first, seconds), _ = figure.data["slowest_tasks"]
    assert first == "Take a while" and seconds >= 2.0
    assert f"slowest: Take a while {seconds:.0f} s" in figure.detail


def test_a_reconverge_that_changes_nothing_within_the_goal_meets_it(bench, playbooks):
    unchanged = playbooks.run("demo.yml", {"quiet": True})
    figure = bench.reconverge_figure(unchanged, took=bench.GOAL_RECONVERGE_S - 1)
    assert (figure.data["changed"], figure.data["changed_tasks"]) == (0, [])
    assert figure.met is True and not figure.detail.startswith("changed")
    assert bench.reconverge_figure(unchanged, took=bench.GOAL_RECONVERGE_S + 1).met is False


# --- autoscaler ---------------------------------------------------------------------------------


def test_the_backlog_appears_when_the_task_beyond_the_slots_is_queued(bench):
    instances = [_ti("work", 30, 50, i, queued_when=f"2025-01-01T12:00:{10 + i:02d}Z") for i in range(10)]
    instances.append(_ti("plan", 0, 5, queued_when="2025-01-01T12:00:00Z"))  # not work
    at = bench.backlog_moment(instances, slots=8)
    assert at == bench.epoch("2025-01-01T12:00:18Z")  # the 9th work task
    assert bench.backlog_moment(instances, slots=10) is None


def _journal(seconds, unit, message, systemd=False):
    entry = {"__REALTIME_TIMESTAMP": str(int((1_700_000_000 + seconds) * 1e6)), "MESSAGE": message}
    if systemd:
        entry |= {"_SYSTEMD_UNIT": "init.scope", "UNIT": unit}
    else:
        entry["_SYSTEMD_UNIT"] = unit
    return json.dumps(entry)


def test_the_first_received_task_after_the_backlog_is_found_in_the_journal(bench):
    received = "Task airflow.providers.celery.executors.celery_executor_utils.execute_workload[ab-1] received"
    text = "\n".join(
        [
            _journal(5, "airflow-worker@3.service", received),  # before the backlog: an older run
            _journal(12, "airflow-worker@2.service", "Started airflow-worker@2.service.", systemd=True),
            _journal(25, "airflow-worker@2.service", "celery@worker-2-2 ready."),
            _journal(28, "airflow-worker@3.service", list(received.encode())),  # MESSAGE as bytes
            _journal(27, "airflow-worker@2.service", received),  # out of order in the text
            "not json",
        ]
    )
    entries = bench.journal_entries(text)
    found = bench.first_entry(entries, bench.RECEIVED, 1_700_000_010)
    assert (found.at, found.unit) == (1_700_000_027, "airflow-worker@2.service")
    started = bench.first_entry(entries, r"^Started ", 1_700_000_010)
    assert started.unit == "airflow-worker@2.service" and started.at == 1_700_000_012
    assert bench.first_entry(entries, bench.RECEIVED, 1_700_000_029) is None


def test_decisions_skip_other_actions_and_older_records(bench):
    log = "\n".join(
        json.dumps({"action": action, "time": at, "target": target})
        for action, at, target in [("scale_out", 90, 3), ("hold", 101, 2), ("scale_out", 105, 4)]
    )
    assert [r["target"] for r in bench.decisions(log, "scale_out", 100)] == [4]
    assert [r["target"] for r in bench.decisions(log, "scale_out", 0)] == [3, 4]
    assert bench.decisions(log + "\ngarbage", "scale_in", 0) == []


# --- unit plans ---------------------------------------------------------------------------------


def test_worker_plans_stop_the_autoscaler_first_and_start_the_first_n_workers(bench):
    ladder = bench.worker_ladder(["worker-1", "worker-2"], "worker-2", [2, 3])
    plan = bench.worker_plan(ladder, 1, "worker-2")
    assert plan["worker-1"] == [{"unit": "airflow-worker", "state": "started", "worker": True, "instance": 0}]
    assert [(u["unit"], u["state"]) for u in plan["worker-2"]] == [
        ("r3e-autoscaler", "stopped"),
        ("airflow-worker@3", "stopped"),
        ("airflow-worker@2", "stopped"),
        ("airflow-worker", "stopped"),
    ]
    plan = bench.worker_plan(ladder, 4, "worker-2")
    assert [(u["unit"], u["state"]) for u in plan["worker-2"]] == [
        ("r3e-autoscaler", "stopped"),
        ("airflow-worker", "started"),
        ("airflow-worker@2", "started"),
        ("airflow-worker@3", "started"),
    ]


def test_the_restore_plan_puts_back_what_was_found_and_starts_the_autoscaler_last(bench):
    ladder = bench.worker_ladder(["worker-1", "worker-2"], "worker-2", [2, 3])
    before = {
        "worker-1": {"airflow-worker": "active"},
        "worker-2": {
            "airflow-worker": "active",
            "airflow-worker@2": "activating",
            "airflow-worker@3": "failed",
            "r3e-autoscaler": "active",
        },
    }
    plan = bench.restore_plan(ladder, before, "worker-2")
    assert [(u["unit"], u["state"]) for u in plan["worker-2"]] == [
        ("airflow-worker", "started"),
        ("airflow-worker@2", "started"),
        ("airflow-worker@3", "stopped"),
        ("r3e-autoscaler", "started"),
    ]

"""A probe workload for the R3E harness and the elasticity benchmarks: N mapped, I/O-bound tasks.

    plan -> work [0 .. tasks-1] (each waits `seconds`, then writes one object) -> verify

More tasks than worker slots keep some queued (the broker-restart fault needs that); every
task writes its own object, so `verify` can tell whether any task was lost.
"""

from __future__ import annotations

import json
import time

import pendulum
from airflow.sdk import Param, dag, task
from airflow.sdk.exceptions import AirflowFailException
from iot_common import CONFIG, DEFAULT_ARGS, store

PREFIX = "r3e/probe"


@dag(
    dag_id="r3e_probe",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    params={
        "tasks": Param(16, type="integer", minimum=1, maximum=1000, description="mapped tasks"),
        "seconds": Param(10, type="number", minimum=0, maximum=3600, description="each task's wait"),
    },
    tags=["r3e"],
)
def r3e_probe():
    @task
    def plan(params=None) -> list[int]:
        return list(range(params["tasks"]))

    @task
    def work(index: int, params=None, run_id=None) -> str:
        """Wait like an I/O-bound task, then write this task's object (the same bytes on every try)."""
        time.sleep(params["seconds"])
        key = f"{PREFIX}/{run_id}/{index:05d}.json"
        store(CONFIG.data_bucket).put(key, json.dumps({"run_id": run_id, "index": index}).encode())
        return key

    @task
    def verify(keys, params=None, run_id=None) -> int:
        """Every task's object is there, once: nothing was lost."""
        written = set(store(CONFIG.data_bucket).keys(f"{PREFIX}/{run_id}/"))
        missing = sorted(set(keys) - written)
        if len(set(keys)) != params["tasks"] or missing:
            raise AirflowFailException(f"{len(missing)} task objects missing, e.g. {missing[:3]}")
        return len(written)

    verify(work.expand(index=plan()))


r3e_probe()

"""Smoke test of the testbed: a pandas DataFrame built on one worker host ("compute")
is handed through the object-storage XCom backend to a task on the other ("io").

Triggered through the REST API by playbooks/smoke.yml; each task reports its host.
"""

from __future__ import annotations

import socket

import pendulum
from airflow.sdk import dag, task

ROWS = 24


@dag(
    dag_id="testbed_smoke",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["testbed", "smoke"],
)
def testbed_smoke():
    @task(queue="compute")
    def build_frame():
        """Build a small sensor-like DataFrame, stamped with this host's name."""
        import pandas as pd

        frame = pd.DataFrame(
            {
                "timestamp": pd.date_range("2025-01-01", periods=ROWS, freq="h", tz="UTC"),
                "sensor": [f"s{i % 3}" for i in range(ROWS)],
                "value": [float(i) for i in range(ROWS)],
            }
        )
        frame["built_on"] = socket.gethostname()
        return frame

    @task(queue="io")
    def check_frame(frame) -> dict:
        """Check the DataFrame that crossed hosts; return both hosts' names."""
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"expected a DataFrame through XCom, got {type(frame).__name__}")
        if len(frame) != ROWS or frame["value"].sum() != sum(range(ROWS)):
            raise ValueError(f"DataFrame changed on the way: {len(frame)} rows, sum {frame['value'].sum()}")
        return {
            "rows": len(frame),
            "built_on": str(frame["built_on"].iloc[0]),
            "checked_on": socket.gethostname(),
        }

    check_frame(build_frame())


testbed_smoke()

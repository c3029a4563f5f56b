"""Start the pipeline that a data change calls for (the seed's "data listener", Figure 5).

    route -> start_pipeline [one per routed object]

Scheduled on the data-change asset: the event bridge turns each new or changed object of the
data bucket (object-store notification, duplicates dropped by ETag) into an asset event, so this
DAG runs on events, not on a polling schedule. Each event is routed by its key prefix
(R3E_DATA_ROUTES, e.g. raw/ -> iot_training, forecast-requests/ -> iot_batch_forecast). The
triggered run's id is derived from key and ETag: a repeated event is skipped, never run twice.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task
from iot_common import CONFIG, DATA_CHANGES, DEFAULT_ARGS

log = logging.getLogger(__name__)


@dag(
    dag_id="data_listener",
    schedule=[DATA_CHANGES],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    default_args=DEFAULT_ARGS,
    tags=["iot", "listener"],
)
def data_listener():
    @task(inlets=[DATA_CHANGES])
    def route(triggering_asset_events=None, inlet_events=None) -> list[dict]:
        """One trigger per routed object event; unrouted keys are logged and left alone.

        Besides the events Airflow handed to this run, every later event no run has consumed:
        events created while the scheduler creates a run can be left out of it and wait for the
        next event (measured with Airflow 3.3.2: three events in 10 ms gave one run with one of
        them; apache/airflow#54659). A run id per key and ETag makes a second trigger a no-op.
        """
        from r3e_testbed.pipeline.config import route_event

        events = [event for batch in (triggering_asset_events or {}).values() for event in batch]
        if events:
            since = min(event.timestamp for event in events).isoformat()
            left_over = [e for e in inlet_events[DATA_CHANGES].after(since) if not e.created_dagruns]
            if left_over:
                log.info("%d event(s) no run consumed, routed here too", len(left_over))
            events += left_over
        routes: dict[str, dict] = {}
        for event in events:
            target = route_event(event.extra or {}, CONFIG)
            key = (event.extra or {}).get("key")
            if target is None:
                log.info("no route for %s", key)
                continue
            if target["trigger_run_id"] not in routes:
                log.info("%s -> %s (run %s)", key, target["trigger_dag_id"], target["trigger_run_id"])
            routes.setdefault(target["trigger_run_id"], target)
        return list(routes.values())

    TriggerDagRunOperator.partial(
        task_id="start_pipeline",
        wait_for_completion=False,
        skip_when_already_exists=True,
    ).expand_kwargs(route())


data_listener()

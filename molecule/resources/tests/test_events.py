"""No object event is ever lost or doubled: uploads made while the event bridge is stopped, across a
restart of the filer, and around a kill -9 of the bridge each start exactly one training run.

The uploads are header-only CSV files under raw/: real uploads the pipeline refuses at once
(no model is trained or promoted, so the pipeline tests that follow see production untouched),
each under its own key, so each must start its own iot_training run (run id = key + ETag).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest

from r3e_testbed.clients.airflow import AirflowError
from r3e_testbed.pipeline.config import run_id_for
from r3e_testbed.pipeline.schema import RAW_COLUMNS

BRIDGE_UNIT = "r3e-event-bridge"
FILER_UNIT = "seaweedfs-filer"
ASSET = "iot_data_changes"
#: An upload's run appears within seconds once the bridge delivers; a filer restart takes 20-30 s.
DELIVERY_TIMEOUT_S = 240
#: After the last expected run, a doubled event would show within this long.
QUIET_S = 20


@pytest.fixture(scope="module")
def storage(first_of, connect):
    return connect(first_of("object_stores"))


@pytest.fixture(scope="module")
def control(first_of, connect):
    return connect(first_of("airflow_control"))


@pytest.fixture(scope="module")
def pipeline_ready(dag_parsed, wait_for) -> None:
    for dag_id in ("data_listener", "iot_training"):
        wait_for(f"{dag_id} to be parsed", lambda d=dag_id: dag_parsed(d), 240)


@pytest.fixture(scope="module")
def asset_id(airflow, wait_for, pipeline_ready) -> int:
    def lookup() -> int | None:
        assets = airflow.call(airflow.assets.get_assets, name_pattern=ASSET, limit=100).assets
        return next((a.id for a in assets if a.name == ASSET), None)

    return wait_for(f"the asset {ASSET}", lookup, 120)


#: A file the pipeline refuses at once: the header and no rows.
HEADER_ONLY = (",".join(RAW_COLUMNS) + "\n").encode()


def upload(s3, wiring, key: str) -> str:
    bucket = wiring["object_store_data_bucket"]
    s3.put_object(Bucket=bucket, Key=key, Body=HEADER_ONLY)
    return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def bridge_health(storage, wiring) -> dict:
    return json.loads(
        storage.check_output("curl -sf http://127.0.0.1:%s/health", str(wiring["event_bridge_port"]))
    )


def asset_events_by_key(airflow, asset_id: int, keys: list[str]) -> Counter:
    events = airflow.call(
        airflow.assets.get_asset_events, asset_id=asset_id, order_by=["-timestamp"], limit=200
    ).asset_events
    return Counter(e.extra["key"] for e in events if (e.extra or {}).get("key") in keys)


def training_runs_by_key(airflow, keys: list[str]) -> Counter:
    runs = airflow.call(
        airflow.dag_runs.get_dag_runs, "iot_training", order_by=["-run_after"], limit=200
    ).dag_runs
    return Counter(r.conf["key"] for r in runs if (r.conf or {}).get("key") in keys)


def assert_each_exactly_once(airflow, asset_id, uploads: dict[str, str], wait_for) -> None:
    """Every upload's run exists (its id: key + ETag); after a quiet spell, one event and one run each."""
    keys = list(uploads)

    def every_run_started() -> bool:
        for key, etag in uploads.items():
            try:
                airflow.call(airflow.dag_runs.get_dag_run, "iot_training", run_id_for(key, etag))
            except AirflowError as error:
                if error.status != 404:
                    raise
                return False
        return True

    wait_for(f"a training run for each of {keys}", every_run_started, DELIVERY_TIMEOUT_S, 3)
    time.sleep(QUIET_S)  # the method: give a doubled event the time to show
    assert asset_events_by_key(airflow, asset_id, keys) == Counter(keys), "one asset event per upload"
    assert training_runs_by_key(airflow, keys) == Counter(keys), "one training run per upload"


def test_uploads_while_the_bridge_is_stopped_start_one_run_each(
    storage, s3, wiring, airflow, asset_id, wait_for
):
    tag = uuid.uuid4().hex[:8]
    storage.check_output("systemctl stop %s", BRIDGE_UNIT)
    try:
        uploads = {
            key: upload(s3, wiring, key) for key in (f"raw/events/{tag}-stopped-{n}.csv" for n in range(3))
        }
    finally:
        storage.check_output("systemctl start %s", BRIDGE_UNIT)
    assert_each_exactly_once(airflow, asset_id, uploads, wait_for)


def test_a_filer_restart_between_two_uploads_delivers_both_once(
    storage, s3, wiring, airflow, asset_id, wait_for
):
    tag = uuid.uuid4().hex[:8]
    before = f"raw/events/{tag}-before-filer-restart.csv"
    uploads = {before: upload(s3, wiring, before)}
    storage.check_output("systemctl restart %s", FILER_UNIT)
    after = f"raw/events/{tag}-after-filer-restart.csv"
    # The S3 gateway refuses writes until the filer is back.
    uploads[after] = wait_for(
        "the object store taking uploads again",
        lambda: upload(s3, wiring, after),
        120,
        3,
        ignore=(Exception,),
    )
    assert_each_exactly_once(airflow, asset_id, uploads, wait_for)
    health = wait_for(
        "the bridge following the filer again",
        lambda: (h := bridge_health(storage, wiring))["status"] == "ok" and h,
        120,
    )
    assert health["pending"] == 0


def test_a_bridge_killed_between_storing_and_delivering_delivers_once(
    storage, control, s3, wiring, airflow, asset_id, wait_for
):
    """The api-server frozen (SIGSTOP): the bridge stores the event and its POST hangs; kill -9 of
    the bridge then, systemd starts it again, the api-server thaws: one event, whether the frozen
    POST was carried out or not."""
    key = f"raw/events/{uuid.uuid4().hex[:8]}-killed.csv"
    stored_before = bridge_health(storage, wiring)["stored"]
    control.check_output("systemctl kill --signal=SIGSTOP airflow-api-server")
    try:
        uploads = {key: upload(s3, wiring, key)}
        wait_for(
            "the bridge storing the upload",
            lambda: (h := bridge_health(storage, wiring))["stored"] > stored_before and h["pending"] >= 1,
            60,
            0.5,
        )
        time.sleep(2)  # its POST is on the wire now, waiting for the frozen api-server
        storage.check_output("systemctl kill --signal=SIGKILL %s", BRIDGE_UNIT)
    finally:
        control.check_output("systemctl kill --signal=SIGCONT airflow-api-server")
    wait_for("systemd starting the bridge again", lambda: storage.service(BRIDGE_UNIT).is_running, 60)
    assert_each_exactly_once(airflow, asset_id, uploads, wait_for)

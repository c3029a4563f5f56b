"""The deployment description the harness reads from playbooks/endpoints.yml, and its reads of
Airflow through the official client (against the api-server stand-in of the clients' tests)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from airflow_client.client.models.asset_collection_response import AssetCollectionResponse
from airflow_client.client.models.asset_event_collection_response import AssetEventCollectionResponse
from airflow_client.client.models.dag_run_response import DAGRunResponse
from airflow_client.client.models.task_instance_collection_response import TaskInstanceCollectionResponse
from airflow_client.client.models.task_instance_history_collection_response import (
    TaskInstanceHistoryCollectionResponse,
)
from airflow_client.client.models.task_instance_history_response import TaskInstanceHistoryResponse
from clients.airflow_stand_in import RUN_ID, AirflowStandIn, Answer, dag_run, task_instance, task_instances

from r3e_testbed.clients.airflow import AirflowError
from r3e_testbed.experiments.runner import TERMINAL, run_now, run_seconds
from r3e_testbed.experiments.stack import Endpoints, Playbooks, Stack, StackError, healthy

DOCUMENT = {
    "deployment_name": "testbed",
    "airflow_url": "http://10.0.0.3:8080",
    "airflow_user": "admin",
    "airflow_password": "secret",
    "s3_endpoint": "http://10.0.0.2:8333",
    "s3_access_key": "a",
    "s3_secret_key": "b",
    "object_store_backend": "seaweedfs",
    "data_bucket": "iot-data",
    "models_bucket": "models",
    "forecast_url": "http://10.0.0.3:8090",
    "groups": {"airflow_workers": ["worker-1", "worker-2"], "airflow_control": ["control"]},
    "addresses": {"worker-1": "10.0.0.4", "worker-2": "10.0.0.5", "control": "10.0.0.3"},
    "settings": {"control": {"task_instance_heartbeat_timeout": "30"}},
}


def test_hosts_of_a_group_or_a_single_host():
    endpoints = Endpoints.from_mapping(DOCUMENT)
    assert endpoints.hosts("airflow_workers") == ["worker-1", "worker-2"]
    assert endpoints.hosts("control") == ["control"]
    with pytest.raises(StackError, match="'nowhere' is neither a group nor a host"):
        endpoints.hosts("nowhere")


@pytest.mark.parametrize(
    ("hostname", "host"),
    [
        ("worker-2", "worker-2"),
        ("worker-2.example.org", "worker-2"),
        ("10.0.0.4", "worker-1"),
        ("other", None),
    ],
)
def test_the_inventory_host_of_a_task_hostname(hostname, host):
    assert Endpoints.from_mapping(DOCUMENT).host_named(hostname) == host


def test_a_document_missing_fields_names_them():
    document = {k: v for k, v in DOCUMENT.items() if k not in ("forecast_url", "groups")}
    with pytest.raises(StackError, match="lacks forecast_url, groups"):
        Endpoints.from_mapping(document)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy", "x": 1}}, True),
        ({"metadatabase": {"status": "healthy"}, "scheduler": {"status": "unhealthy"}}, False),
        (None, False),
        ({}, False),
    ],
)
def test_healthy_means_every_component_healthy(document, expected):
    assert healthy(document) is expected


# --- the harness's reads of Airflow, through the official client, against a stand-in api-server ---


@pytest.fixture
def stand_in():
    server = AirflowStandIn()
    yield server
    server.close()
    assert not server.errors, "the stand-in sent answers Airflow would not send:\n" + "\n".join(server.errors)


@pytest.fixture
def stack(stand_in, tmp_path):
    document = {**DOCUMENT, "airflow_url": stand_in.url, "airflow_user": stand_in.user}
    document["airflow_password"] = stand_in.password
    built = Stack(Endpoints.from_mapping(document), Playbooks(tmp_path / "playbooks", ["hosts.yml"]))
    yield built
    built.close()


RUNS = "/api/v2/dags/iot_training/dagRuns"


def test_the_endpoints_name_the_event_bridges_asset_or_take_the_default():
    assert Endpoints.from_mapping(DOCUMENT).data_changes_asset == "iot_data_changes"
    named = Endpoints.from_mapping({**DOCUMENT, "data_changes_asset": "uploads"})
    assert named.data_changes_asset == "uploads"


def test_a_dag_run_is_a_plain_document_as_airflow_sent_it(stand_in, stack):
    stand_in.route(
        "GET", f"{RUNS}/{RUN_ID}", Answer(200, dag_run("iot_training", state="success")), DAGRunResponse
    )
    run = stack.dag_run("iot_training", RUN_ID)
    assert type(run["state"]) is str and run["state"] in TERMINAL  # not the client's enum
    assert run_seconds(run) == 99.49  # ISO strings, as epoch() reads them (10:00:00.514 to 10:01:40.000)
    assert run["logical_date"] is None  # absent values stay, as None
    assert json.loads(json.dumps(run)) == run


def test_a_run_that_is_not_there_yet_is_none_and_a_refusal_is_an_error(stand_in, stack):
    assert run_now(stack, "iot_training", "upload__nothing") is None  # 404: not (yet) there
    stand_in.route("GET", f"{RUNS}/forbidden", Answer(403, {"detail": "Forbidden"}))
    with pytest.raises(StackError, match=r"iot_training run forbidden: .*403"):
        run_now(stack, "iot_training", "forbidden")


def test_task_instances_are_read_page_by_page(stand_in, stack):
    instances = [task_instance("work", map_index=i, state="success") for i in range(130)]

    def page(request):
        offset, limit = int(request.query["offset"][0]), int(request.query["limit"][0])
        return Answer(200, task_instances(instances[offset : offset + limit], len(instances)))

    stand_in.route(
        "GET", f"/api/v2/dags/r3e_probe/dagRuns/{RUN_ID}/taskInstances", page, TaskInstanceCollectionResponse
    )
    found = stack.task_instances("r3e_probe", RUN_ID)
    assert [ti["map_index"] for ti in found] == list(range(130))
    asked = stand_in.calls("GET", f"/api/v2/dags/r3e_probe/dagRuns/{RUN_ID}/taskInstances")
    assert [(r.query["offset"], r.query["limit"]) for r in asked] == [(["0"], ["100"]), (["100"], ["100"])]


def _tries(task_id: str, map_index: int, count: int) -> dict:
    fields = set(TaskInstanceHistoryResponse.model_fields)
    attempts = [
        task_instance(task_id, map_index=map_index, state="success", try_number=n)
        for n in range(1, count + 1)
    ]
    return {
        "task_instances": [{k: v for k, v in a.items() if k in fields} for a in attempts],
        "total_entries": count,
    }


def test_the_tries_of_a_mapped_and_of_a_plain_task_instance(stand_in, stack):
    base = f"/api/v2/dags/r3e_probe/dagRuns/{RUN_ID}/taskInstances"
    model = TaskInstanceHistoryCollectionResponse
    stand_in.route("GET", f"{base}/plan/tries", Answer(200, _tries("plan", -1, 1)), model)
    stand_in.route("GET", f"{base}/work/3/tries", Answer(200, _tries("work", 3, 2)), model)
    assert [t["try_number"] for t in stack.tries("r3e_probe", RUN_ID, "plan", -1)] == [1]
    assert [(t["map_index"], t["try_number"]) for t in stack.tries("r3e_probe", RUN_ID, "work", 3)] == [
        (3, 1),
        (3, 2),
    ]


def test_a_trigger_names_the_run_and_its_conf_and_no_logical_date(stand_in, stack):
    conf = {"bucket": "iot-data", "key": "r3e/workloads/x.csv", "etag": "abc"}
    stand_in.route(
        "POST",
        RUNS,
        lambda request: Answer(200, dag_run("iot_training", "r3e__x", conf=request.body["conf"])),
        DAGRunResponse,
    )
    run = stack.trigger("iot_training", "r3e__x", conf)
    (request,) = stand_in.calls("POST", RUNS)
    assert request.body == {"dag_run_id": "r3e__x", "logical_date": None, "conf": conf}
    assert run["conf"] == conf and run["dag_run_id"] == "r3e__x"


def _asset(asset_id: int, name: str) -> dict:
    return {
        "id": asset_id, "name": name, "uri": f"s3://iot-data/{name}", "group": "asset", "extra": {},
        "created_at": "2026-01-05T09:58:00Z", "updated_at": "2026-01-05T09:58:00Z",
        "scheduled_dags": [], "producing_tasks": [], "consuming_tasks": [], "aliases": [], "watchers": [],
    }  # fmt: skip


def _asset_event(event_id: int, key: str) -> dict:
    return {
        "id": event_id, "asset_id": 7, "extra": {"bucket": "iot-data", "key": key, "etag": "e"},
        "source_map_index": -1, "timestamp": "2026-01-05T10:00:00Z", "created_dagruns": [],
    }  # fmt: skip


def test_asset_events_are_those_of_the_asset_with_exactly_that_name(stand_in, stack):
    assets = [_asset(3, "iot_data_changes_old"), _asset(7, "iot_data_changes")]
    stand_in.route(
        "GET", "/api/v2/assets", Answer(200, {"assets": assets, "total_entries": 2}), AssetCollectionResponse
    )
    events = {
        "asset_events": [_asset_event(1, "raw/a.csv"), _asset_event(2, "raw/b.csv")],
        "total_entries": 2,
    }
    stand_in.route("GET", "/api/v2/assets/events", Answer(200, events), AssetEventCollectionResponse)
    since = dt.datetime(2026, 1, 5, 9, 59, tzinfo=dt.UTC)
    found = stack.asset_events("iot_data_changes", since)
    assert [event["extra"]["key"] for event in found] == ["raw/a.csv", "raw/b.csv"]
    (request,) = stand_in.calls("GET", "/api/v2/assets/events")
    assert request.query["asset_id"] == ["7"]
    assert dt.datetime.fromisoformat(request.query["timestamp_gte"][0]) == since
    with pytest.raises(StackError, match="no asset 'uploads'"):
        stack.asset_events("uploads", since)


def test_a_trigger_that_finds_its_run_there_already_returns_that_run(stand_in, stack):
    stand_in.route("POST", RUNS, Answer(409, {"detail": "DAG run already exists"}))
    existing = dag_run("iot_training", "r3e__x", state="running")
    stand_in.route("GET", f"{RUNS}/r3e__x", Answer(200, existing), DAGRunResponse)
    assert stack.trigger("iot_training", "r3e__x", {})["dag_run_id"] == "r3e__x"
    stand_in.route("POST", RUNS, Answer(400, {"detail": "bad conf"}))
    with pytest.raises(AirflowError) as caught:
        stack.trigger("iot_training", "r3e__y", {})
    assert caught.value.status == 400

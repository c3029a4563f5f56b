"""The stack works end to end, seen from outside as a user or a client sees it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import boto3
import pytest
from airflow_client.client.models import DAGPatchBody, TriggerDAGRunPostBody
from botocore import UNSIGNED
from botocore.client import Config
from botocore.exceptions import ClientError

from r3e_testbed.clients.airflow import Airflow, AirflowError

SMOKE_DAG = "testbed_smoke"


def _login_status(api: str, user: str, password: str) -> int:
    """The status ``POST /auth/token`` answers (201 when the credentials are accepted)."""
    try:
        Airflow(api, user, password, timeout_s=30).login()
    except AirflowError as refused:
        if refused.status is None:
            raise
        return refused.status
    return 201


def test_admin_password_is_generated_and_default_credentials_are_refused(api, secrets):
    assert len(secrets["airflow_admin_password"]) >= 16
    for password in ("admin", "airflow"):
        assert _login_status(api, "admin", password) in (401, 403), f"admin/{password} accepted"


def test_api_server_reports_every_component_healthy(airflow):
    health = airflow.health()
    assert health is not None, f"no answer from {airflow.url}/api/v2/monitor/health"
    for component in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
        assert health[component]["status"] == "healthy", (component, health)


def test_buckets_exist(s3, wiring):
    names = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    expected = {wiring[key] for key in wiring if key.startswith("object_store_") and key.endswith("_bucket")}
    assert len(expected) == 3, expected
    assert expected <= names


def test_s3_put_and_get_with_the_generated_credentials(s3, wiring):
    key = f"verify/{uuid.uuid4()}.txt"
    body = b"r3e-testbed object store round trip"
    bucket = wiring["object_store_data_bucket"]
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    try:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    finally:
        s3.delete_object(Bucket=bucket, Key=key)


def test_anonymous_s3_access_is_refused(s3, s3_endpoint, wiring):
    bucket = wiring["object_store_data_bucket"]
    key = f"verify/{uuid.uuid4()}.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"private")
    anonymous = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", config=Config(signature_version=UNSIGNED)
    )
    try:
        with pytest.raises(ClientError) as refused_get:
            anonymous.get_object(Bucket=bucket, Key=key)
        assert refused_get.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as refused_put:
            anonymous.put_object(Bucket=bucket, Key=f"{key}.anonymous", Body=b"x")
        assert refused_put.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError):
            anonymous.list_objects_v2(Bucket=bucket)
    finally:
        s3.delete_object(Bucket=bucket, Key=key)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{key}.anonymous")
    assert listed.get("KeyCount", 0) == 0


@pytest.fixture(scope="module")
def smoke_run(airflow, dag_parsed, wait_for) -> dict:
    """Trigger the smoke DAG through the REST API and wait for its run to finish."""
    wait_for("the smoke DAG to be parsed", lambda: dag_parsed(SMOKE_DAG), 180)
    airflow.call(airflow.dags.patch_dag, SMOKE_DAG, DAGPatchBody(is_paused=False))
    started = datetime.now(UTC)
    # patience 0: a trigger retried after an uncertain failure could start a second run.
    run_id = airflow.call(
        airflow.dag_runs.trigger_dag_run, SMOKE_DAG, TriggerDAGRunPostBody(), patience_s=0
    ).dag_run_id

    def finished():
        run = airflow.call(airflow.dag_runs.get_dag_run, SMOKE_DAG, run_id)
        return run if run.state in ("success", "failed") else None

    run = wait_for(f"run {run_id} to finish", finished, 600)
    instances = airflow.call(airflow.task_instances.get_task_instances, SMOKE_DAG, run_id)
    return {"run": run, "tasks": instances.task_instances, "started": started}


def test_smoke_dag_succeeds(smoke_run):
    failed = [t.task_id for t in smoke_run["tasks"] if t.state != "success"]
    assert smoke_run["run"].state == "success", f"failed tasks: {failed}"
    assert smoke_run["tasks"], "the smoke run has no task instances"


def test_smoke_dag_ran_on_every_worker_host(smoke_run, inventory, connect):
    worker_hostnames = {connect(w).check_output("hostname") for w in inventory.get_hosts("airflow_workers")}
    ran_on = {t.hostname for t in smoke_run["tasks"]}
    assert worker_hostnames <= ran_on, f"tasks ran on {ran_on}, workers are {worker_hostnames}"


def test_smoke_dataframe_travelled_through_the_object_store(smoke_run, s3, wiring):
    """The XCom between the two worker hosts is an object in the XCom bucket."""
    bucket = wiring["object_store_xcom_bucket"]
    run_id = smoke_run["run"].dag_run_id
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="xcom/"):
        objects.extend(page.get("Contents", []))
    of_this_run = [o for o in objects if SMOKE_DAG in o["Key"] and o["LastModified"] >= smoke_run["started"]]
    assert of_this_run, f"no XCom object of {run_id} in s3://{bucket}/xcom/ ({len(objects)} objects)"

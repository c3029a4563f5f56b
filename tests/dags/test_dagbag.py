"""Every DAG file loads as the dag-processor loads it: no import error, no warning, serializable."""

from __future__ import annotations

import sys

EXPECTED_DAG_IDS = {
    "data_listener",
    "iot_training",
    "iot_deploy",
    "iot_batch_forecast",
    "r3e_probe",
    "testbed_smoke",
}


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_no_warnings_while_loading(dagbag):
    """Deprecations (e.g. imports Airflow moved to airflow.sdk) show up here before they break."""
    assert dagbag.captured_warnings == {}


def test_every_dag_is_there(dagbag):
    assert set(dagbag.dag_ids) == EXPECTED_DAG_IDS


def test_every_dag_file_was_parsed_except_the_shared_module(dagbag, dags_folder):
    ignored = set((dags_folder / ".airflowignore").read_text().split())
    assert ignored == {"iot_common.py"}
    parsed = {path.rsplit("/", 1)[-1] for path in dagbag.file_last_changed}
    assert parsed == {path.name for path in dags_folder.glob("*.py")} - ignored


def test_every_dag_serializes(dags):
    """The dag-processor stores DAGs serialized: what cannot be serialized never reaches the scheduler."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in dags.items():
        restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        assert set(restored.task_ids) == set(dag.task_ids), dag_id


def test_loading_needs_no_metadata_database(dagbag, airflow_home):
    import airflow.configuration

    assert str(airflow_home) == airflow.configuration.AIRFLOW_HOME
    assert not list(airflow_home.rglob("*.db"))


def test_every_route_starts_a_dag_that_exists(dags, deployed_routes):
    assert deployed_routes
    assert set(deployed_routes.values()) <= set(dags)


def test_the_dags_read_their_settings_from_the_environment(dags, pipeline_env, deployed_routes):
    common = sys.modules["iot_common"]
    assert common.CONFIG.conn_id == pipeline_env["R3E_OBJECT_STORE_CONN_ID"]
    assert dict(common.CONFIG.routes) == deployed_routes
    data_bucket = pipeline_env["R3E_DATA_BUCKET"]
    assert dags["iot_training"].params["bucket"] == data_bucket
    assert dags["iot_batch_forecast"].params["bucket"] == data_bucket
    assert common.DATA_CHANGES.uri == f"s3://{data_bucket}/"
    assert common.PRODUCTION_MODEL.uri == f"s3://{pipeline_env['R3E_MODELS_BUCKET']}/iot/production.json"


def scheduling_assets(dag) -> list:
    """The assets a DAG's run waits for (schedule=[...] means all of them)."""
    return list(dag.timetable.asset_condition.objects)


def test_the_listener_hears_the_asset_the_event_bridge_updates(dags, shared_wiring):
    assert [asset.name for asset in scheduling_assets(dags["data_listener"])] == [
        shared_wiring["event_bridge_asset_name"]
    ]


def test_deploy_runs_on_the_asset_that_training_updates(dags):
    assert scheduling_assets(dags["iot_deploy"]) == dags["iot_training"].get_task("register").outlets

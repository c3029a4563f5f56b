"""The deployment description the harness reads from playbooks/endpoints.yml."""

from __future__ import annotations

import pytest

from r3e_testbed.experiments.stack import Endpoints, StackError, healthy

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

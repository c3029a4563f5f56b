"""Shared verification of a provisioned testbed, for every scenario and real inventories.

Run by Molecule's testinfra verifier (it passes --ansible-inventory), or by hand against
any inventory:  pytest molecule/resources/tests --ansible-inventory inventories/<name>

Tests name the topology group they check with @pytest.mark.group("..."); they are
generated once per host of that group, so a bigger topology gets more tests, not edits.
Facts such as ports and buckets are read from the playbooks' wiring, never retyped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import testinfra
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

from r3e_testbed.clients.airflow import Airflow, AirflowError
from r3e_testbed.clients.wait import WaitTimeout, wait_until

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
PODMAN_CONNECTIONS = {"containers.podman.podman", "podman"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "group(name): run the test once per host of that topology group")


@cache
def runner(inventory: str) -> AnsibleRunner:
    return AnsibleRunner(inventory)


def _inventory_option(config: pytest.Config) -> str:
    inventory = config.getoption("ansible_inventory", default=None)
    if not inventory:
        raise pytest.UsageError("pass --ansible-inventory (Molecule does it for you)")
    return inventory


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("group")
    if marker is None or "node" not in metafunc.fixturenames:
        return
    hosts = runner(_inventory_option(metafunc.config)).get_hosts(marker.args[0])
    metafunc.parametrize("node", hosts, indirect=True, ids=hosts)


@pytest.fixture(scope="session")
def inventory(pytestconfig: pytest.Config) -> AnsibleRunner:
    return runner(_inventory_option(pytestconfig))


@cache
def _connect(inventory: str, name: str) -> testinfra.host.Host:
    """A testinfra host. A Molecule scenario's container is reached by podman under its host's
    name: Ansible's way in (SSH to an address its group_vars compute) is templated, which
    testinfra does not do."""
    hostvars = runner(inventory).get_variables(name)
    if "molecule_image" in hostvars or hostvars.get("ansible_connection") in PODMAN_CONNECTIONS:
        return testinfra.get_host(f"podman://{name}")
    return runner(inventory).get_host(name)


@pytest.fixture
def node(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> testinfra.host.Host:
    return _connect(_inventory_option(pytestconfig), request.param)


@pytest.fixture(scope="session")
def connect(pytestconfig: pytest.Config):
    """connect(host_name) -> testinfra host, for tests that span several hosts."""
    return lambda name: _connect(_inventory_option(pytestconfig), name)


def private_address(host: testinfra.host.Host) -> str:
    """The host's address on the hosts' network: the source of its default route, which is
    what Ansible reports as default_ipv4 and the roles bind to."""
    route = host.check_output("ip -4 -o route get 1.1.1.1")
    match = re.search(r"\bsrc (\S+)", route)
    assert match, f"no source address in {route!r}"
    return match.group(1)


@pytest.fixture
def node_address(node) -> str:
    """The private address of the host under test."""
    return private_address(node)


@pytest.fixture(scope="session")
def address_of(connect):
    addresses: dict[str, str] = {}

    def lookup(name: str) -> str:
        if name not in addresses:
            addresses[name] = private_address(connect(name))
        return addresses[name]

    return lookup


@pytest.fixture(scope="session")
def wiring() -> dict[str, Any]:
    """The playbooks' shared wiring (ports, buckets), as the roles receive it."""
    return yaml.safe_load((REPO / "playbooks/group_vars/all/main.yml").read_text())


def role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())


@pytest.fixture(scope="session")
def secrets(inventory: AnsibleRunner) -> dict[str, str]:
    """The deployment's generated secrets, as written by the deployment_secrets role."""
    name = inventory.get_variables(inventory.get_hosts("all")[0])["deployment_name"]
    path = REPO / ".secrets" / name / "secrets.yml"
    assert path.stat().st_mode & 0o077 == 0, f"{path} must be readable by its owner only"
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def first_of(inventory: AnsibleRunner):
    return lambda group: inventory.get_hosts(group)[0]


# --- clients of the stack's public interfaces ------------------------------------------------------


@pytest.fixture(scope="session")
def api(first_of, address_of, wiring) -> str:
    return f"http://{address_of(first_of('airflow_control'))}:{wiring['airflow_api_port']}"


#: Seconds the tests' calls of Airflow's API keep retrying while it does not answer or answers 5xx.
AIRFLOW_PATIENCE_S = 30


@pytest.fixture(scope="session")
def airflow(api, secrets, wiring) -> Iterator[Airflow]:
    """Airflow's REST API as the generated admin user (the official client, through
    r3e_testbed.clients.airflow: ``airflow.call(airflow.dag_runs.get_dag_run, dag_id, run_id)``)."""
    client = Airflow(
        api,
        wiring["airflow_admin_user"],
        secrets["airflow_admin_password"],
        timeout_s=30,
        patience_s=AIRFLOW_PATIENCE_S,
    )
    client.login()  # an AirflowError here names the status and Airflow's answer
    yield client
    client.close()


@pytest.fixture(scope="session")
def dag_parsed(airflow) -> Callable[[str], bool]:
    """``dag_parsed(dag_id)``: whether Airflow knows the DAG (404 until the dag-processor has
    parsed it); no answer at all is an error."""

    def parsed(dag_id: str) -> bool:
        try:
            airflow.call(airflow.dags.get_dag, dag_id)
        except AirflowError as error:
            if error.status is None:
                raise
            return False
        return True

    return parsed


@pytest.fixture(scope="session")
def s3_endpoint(first_of, address_of, wiring) -> str:
    return f"http://{address_of(first_of('object_stores'))}:{wiring['object_store_port']}"


@pytest.fixture(scope="session")
def s3(s3_endpoint, secrets):
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=secrets["object_store_access_key"],
        aws_secret_access_key=secrets["object_store_secret_key"],
        region_name="us-east-1",
    )


@pytest.fixture(scope="session")
def wait_for():
    """``wait_for(what, probe, timeout)``: poll ``probe`` until it returns something truthy, and
    return that; past the timeout the test fails, naming ``what``."""

    def wait(
        what: str,
        probe: Callable[[], T],
        timeout: float,
        every: float = 3.0,
        ignore: tuple[type[BaseException], ...] = (),
    ) -> T:
        try:
            return wait_until(probe, timeout_s=timeout, every_s=every, what=what, ignore=ignore)
        except WaitTimeout as late:
            message = str(late)
        pytest.fail(message)

    return wait

"""Every host runs its services as enabled systemd units, listening only where intended."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]

# What runs where: the units of each topology group.
UNITS = {
    "databases": ["postgresql@15-main"],
    "brokers": ["redis-server"],
    "object_stores": [
        "seaweedfs-master",
        "seaweedfs-volume",
        "seaweedfs-filer",
        "seaweedfs-s3",
        "r3e-event-bridge",
    ],
    "airflow_control": [
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "r3e-forecast",
    ],
    "airflow_workers": ["airflow-worker"],
}

# A highly available topology (high_availability: true) runs these instead: PostgreSQL
# under Patroni with etcd, a sentinel beside each Redis, and the local load balancer on
# every host.
HA_UNITS = {
    **UNITS,
    "all": ["haproxy"],
    "databases": ["etcd", "patroni@15-main"],
    "brokers": ["redis-server", "redis-sentinel"],
}


def highly_available(inventory, host: str) -> bool:
    return bool(inventory.get_variables(host).get("high_availability"))


def units_of(inventory, host: str) -> list[str]:
    variables = inventory.get_variables(host)
    table = HA_UNITS if highly_available(inventory, host) else UNITS
    return [unit for group in ["all", *variables["group_names"]] for unit in table.get(group, [])]


# Ports a host may offer on every interface: sshd everywhere (the way Ansible and Vagrant
# reach real hosts), the UI/API on control hosts, and the log servers the api-server
# reads task logs from (workers 8793, triggerer 8794).
WILDCARD_PORTS = {
    "all": {22},
    "airflow_control": {"airflow_api_port", 8794},
    "airflow_workers": {8793},
}


def listening(host) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket."""
    sockets = set()
    for line in host.check_output("ss -Hltn").splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        sockets.add((address.strip("[]").split("%")[0], int(port)))
    return sockets


def is_wildcard(address: str) -> bool:
    return address in ("*", "0.0.0.0", "::")


@pytest.mark.group("all")
def test_units_of_the_hosts_groups_run_and_are_enabled(node, inventory):
    host = node.backend.get_hostname()
    for unit in units_of(inventory, host):
        service = node.service(unit)
        assert service.is_running, f"{unit} is not running on {host}"
        assert service.is_enabled, f"{unit} is not enabled on {host}"


def test_every_group_with_units_has_hosts(inventory):
    """A group renamed in topology.yml must not silently drop its unit checks."""
    for group in set(UNITS) | set(HA_UNITS):
        assert inventory.get_hosts(group), f"no host in group {group}"


@pytest.mark.group("all")
def test_only_intended_ports_listen_on_every_interface(node, inventory, wiring):
    groups = inventory.get_variables(node.backend.get_hostname())["group_names"]
    allowed = set()
    for group in ["all", *groups]:
        for port in WILDCARD_PORTS.get(group, ()):
            allowed.add(wiring[port] if isinstance(port, str) else port)
    exposed = {port for address, port in listening(node) if is_wildcard(address)}
    assert exposed <= allowed, f"listening on all interfaces without need: {sorted(exposed - allowed)}"


@pytest.mark.group("all")
def test_nothing_listens_on_another_network(node, node_address):
    """Non-wildcard sockets are on loopback or on the hosts' private address only."""
    for address, port in listening(node):
        if is_wildcard(address):
            continue
        assert ipaddress.ip_address(address).is_loopback or address == node_address, (address, port)


@pytest.mark.group("databases")
def test_postgresql_listens_on_loopback_and_the_private_address_only(node, node_address, wiring):
    port = wiring["postgresql_port"]
    addresses = {address for address, p in listening(node) if p == port}
    assert addresses == {"127.0.0.1", node_address}


@pytest.mark.group("brokers")
def test_redis_listens_on_loopback_and_the_private_address_only(node, node_address, wiring):
    port = wiring["redis_port"]
    addresses = {address for address, p in listening(node) if p == port}
    assert addresses == {"127.0.0.1", node_address}


@pytest.mark.group("brokers")
def test_redis_refuses_clients_without_the_password(node, node_address, wiring):
    reply = node.run(f"redis-cli -h {node_address} -p {wiring['redis_port']} PING")
    assert "NOAUTH" in reply.stdout + reply.stderr


@pytest.mark.group("brokers")
def test_redis_persists_queued_messages(node, inventory):
    # Sentinel mode: redis.conf is Redis's own (it rewrites it on failover) and includes the role's.
    sentinel_mode = highly_available(inventory, node.backend.get_hostname())
    managed = "redis-managed.conf" if sentinel_mode else "redis.conf"
    config = node.file(f"/etc/redis/{managed}").content_string
    assert "\nappendonly yes" in config


@pytest.mark.group("object_stores")
def test_only_the_s3_gateway_faces_the_network(node, node_address, wiring, inventory):
    """Master, volume server and filer stay on loopback (they have no authentication);
    the S3 gateway offers its HTTP port and the gRPC port weed puts 10000 above it. A cluster's
    members talk to each other: there every component is on the private address."""
    seaweedfs = yaml.safe_load((REPO / "roles/seaweedfs/defaults/main.yml").read_text())
    internal = {seaweedfs[f"seaweedfs_{c}_port"] for c in ("master", "volume", "filer")}
    s3 = {wiring["object_store_port"]}
    expected = s3 | internal if highly_available(inventory, node.backend.get_hostname()) else s3
    every_weed_port = s3 | internal
    ours = {port for address, port in listening(node) if address == node_address}
    on_network = ours & (every_weed_port | {port + 10000 for port in every_weed_port})
    assert on_network == expected | {port + 10000 for port in expected}


@pytest.mark.group("object_stores")
def test_the_event_bridge_follows_the_filer_log_on_loopback_and_takes_webhooks_only_with_the_token(
    node, wiring
):
    """The bridge reads the filer's log (no webhook from the filer); it listens on loopback only,
    and anything posting a webhook there needs the token."""
    port = wiring["event_bridge_port"]
    assert {address for address, p in listening(node) if p == port} == {"127.0.0.1"}
    health = json.loads(node.check_output("curl -s http://127.0.0.1:%s/health", str(port)))
    assert health["source"] == "seaweedfs" and health["checkpoint_ns"], health
    status = node.check_output(
        "curl -s -o /dev/null -w '%%{http_code}' -X POST -H 'Content-Type: application/json' "
        "-d '{}' http://127.0.0.1:%s/events/minio",
        str(port),
    )
    assert status == "401"


@pytest.mark.group("databases")
def test_pg_hba_admits_only_the_testbed_hosts(node, inventory, address_of):
    hba = node.file("/etc/postgresql/15/main/pg_hba.conf").content_string
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    networks = {rule[3] for rule in rules if rule[0].startswith("host")}
    expected = {f"{address_of(h)}/32" for h in inventory.get_hosts("all")}
    if highly_available(inventory, node.backend.get_hostname()):
        # Patroni reads a replica's timeline over a replication connection on loopback.
        expected |= {"127.0.0.1/32", "::1/128"}
    assert networks == expected
    assert all(rule[-1] in ("scram-sha-256", "peer") for rule in rules), rules


@pytest.mark.group("airflow_workers")
def test_worker_answers_a_celery_ping(node):
    """celery inspect ping through the broker, as the role's health check does it."""
    ping = node.run(
        "airflow-env celery --app airflow.providers.celery.executors.celery_executor.app "
        "inspect ping --timeout 10 --destination celery@%s",
        node.backend.get_hostname(),
    )
    assert ping.rc == 0, ping.stderr
    assert "pong" in ping.stdout

"""The topologies: Ansible YAML inventories that Vagrant, Molecule and the playbooks read as they
are. The HA topology must have no group a single host loss can empty or stop."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TOPOLOGIES = [REPO / "topology.yml", *sorted((REPO / "topologies").glob("*.yml"))]
#: Groups every topology needs: the playbooks and the group_vars name them.
REQUIRED_GROUPS = {"databases", "brokers", "object_stores", "airflow_control", "airflow_workers", "airflow"}


def groups_of(path: Path) -> tuple[dict[str, dict], dict]:
    """Every group (name -> its hosts with their variables, children included) and all.vars."""
    document = yaml.safe_load(path.read_text())
    found: dict[str, dict] = {}

    def walk(name: str, node: dict | None) -> dict:
        node = node or {}
        hosts = dict(node.get("hosts") or {})
        for child, sub in (node.get("children") or {}).items():
            hosts.update(walk(child, sub))
        found[name] = {**found.get(name, {}), **{h: (v or {}) for h, v in hosts.items()}}
        return hosts

    walk("all", document["all"])
    return found, document["all"].get("vars") or {}


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_every_topology_has_the_groups_the_playbooks_use(path):
    groups, variables = groups_of(path)
    assert set(groups) >= REQUIRED_GROUPS, f"{path.name} lacks {sorted(REQUIRED_GROUPS - set(groups))}"
    assert variables.get("deployment_name"), f"{path.name}: all.vars.deployment_name names its secrets"


def test_each_topology_keeps_its_own_secrets():
    names = [groups_of(path)[1]["deployment_name"] for path in TOPOLOGIES]
    assert len(names) == len(set(names)), f"two topologies share a deployment_name: {names}"


HA = [p for p in TOPOLOGIES if groups_of(p)[1].get("high_availability")]


def test_there_is_a_highly_available_topology():
    assert [p.name for p in HA] == ["ha.yml"]


@pytest.mark.parametrize("path", HA, ids=lambda p: p.name)
def test_ha_quorum_groups_survive_the_loss_of_any_one_host(path):
    groups, _ = groups_of(path)
    # Patroni's etcd, the Redis sentinels and the SeaweedFS masters each need a majority.
    for group in ("databases", "brokers", "object_stores"):
        size = len(groups[group])
        assert size >= 3 and size % 2 == 1, f"{group} has {size} hosts: a quorum needs an odd number >= 3"
    for group in ("airflow_control", "airflow_workers"):
        assert len(groups[group]) >= 2, f"{group}: one host is a single point of failure"


@pytest.mark.parametrize("path", HA, ids=lambda p: p.name)
def test_ha_every_worker_serves_every_queue(path):
    """A queue only one worker serves stops with that worker."""
    workers = groups_of(path)[0]["airflow_workers"]
    queues = {host: set(v.get("airflow_worker_queues", ["default"])) for host, v in workers.items()}
    every = set().union(*queues.values())
    assert all(served == every for served in queues.values()), queues

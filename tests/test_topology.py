"""topology.yml is read the same way Ansible reads it, and bad topologies are refused."""

import re
from pathlib import Path

import pytest
import yaml

from r3e_testbed.topology import TopologyError, load_topology, parse_topology


def minimal() -> dict:
    return {
        "all": {
            "vars": {"deployment_name": "t"},
            "children": {
                "databases": {"hosts": {"db": None}},
                "brokers": {"hosts": {"db": None}},
                "object_stores": {"hosts": {"s3": None}},
                "airflow_control": {"hosts": {"ctl": None}},
                "airflow_workers": {
                    "hosts": {"w1": {"airflow_worker_queues": ["default"], "airflow_worker_concurrency": 2}}
                },
                "airflow": {"children": {"airflow_control": None, "airflow_workers": None}},
            },
        }
    }


def test_repository_topology_describes_the_default_testbed(repo: Path) -> None:
    topology = load_topology(repo / "topology.yml")
    assert topology.hosts == ["db", "storage", "control", "worker-1", "worker-2"]
    assert topology.hosts_in("airflow") == ["control", "worker-1", "worker-2"]
    assert topology.groups_of("db") == ["all", "brokers", "databases"]
    assert topology.host_vars["worker-2"]["airflow_worker_queues"] == ["default", "io"]


def test_children_groups_collect_their_members_once() -> None:
    data = minimal()
    data["all"]["children"]["airflow_workers"]["hosts"]["w2"] = {
        "airflow_worker_queues": ["io"],
        "airflow_worker_concurrency": 1,
    }
    topology = parse_topology(data, Path("t.yml"))
    assert topology.hosts_in("airflow") == ["ctl", "w1", "w2"]
    assert topology.hosts_in("all") == ["db", "s3", "ctl", "w1", "w2"]


def test_ansible_reads_the_same_groups(repo: Path) -> None:
    """The file stays a valid Ansible YAML inventory (the shape Ansible documents)."""
    data = yaml.safe_load((repo / "topology.yml").read_text())
    assert set(data) == {"all"}
    assert set(data["all"]) <= {"vars", "children", "hosts"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["all"]["children"].pop("brokers"), "group 'brokers' has no hosts; it runs Redis"),
        (lambda d: d["all"]["children"]["object_stores"].update(hosts={}), "'object_stores' has no hosts"),
        (lambda d: d["all"].pop("vars"), "deployment_name is missing"),
        (
            lambda d: d["all"]["children"]["airflow_workers"]["hosts"]["w1"].pop("airflow_worker_queues"),
            "worker 'w1' needs airflow_worker_queues",
        ),
        (
            lambda d: d["all"]["children"]["airflow_workers"]["hosts"]["w1"].update(
                airflow_worker_concurrency=0
            ),
            "needs airflow_worker_concurrency, a positive integer (got 0)",
        ),
        (
            lambda d: d["all"]["children"]["airflow_workers"]["hosts"]["w1"].update(
                airflow_worker_queues=["io"]
            ),
            "no worker consumes the 'default' queue",
        ),
        (lambda d: d["all"]["children"]["databases"].update(host={"x": None}), "unknown keys ['host']"),
        (lambda d: d["all"]["children"].update(databases=["db"]), "group 'databases' must be a mapping"),
    ],
)
def test_bad_topology_is_refused_with_a_clear_message(mutate, message: str) -> None:
    data = minimal()
    mutate(data)
    with pytest.raises(TopologyError, match=re.escape(message)):
        parse_topology(data, Path("t.yml"))


def test_unreadable_or_invalid_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load_topology(tmp_path / "missing.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("all: [unclosed\n")
    with pytest.raises(TopologyError, match=r"broken\.yml: not valid YAML"):
        load_topology(broken)
    not_inventory = tmp_path / "list.yml"
    not_inventory.write_text("- db\n")
    with pytest.raises(TopologyError, match="top-level 'all' group"):
        load_topology(not_inventory)


def test_unknown_group_lookup_names_the_group(repo: Path) -> None:
    with pytest.raises(TopologyError, match="no group named 'gpu'"):
        load_topology(repo / "topology.yml").hosts_in("gpu")


def test_a_group_that_contains_itself_is_refused() -> None:
    data = minimal()
    data["all"]["children"]["airflow_control"]["children"] = {"airflow": None}
    with pytest.raises(
        TopologyError,
        match="group 'airflow_control' contains itself through all -> airflow_control -> airflow",
    ):
        parse_topology(data, Path("t.yml"))

"""Read and check topology.yml, the testbed's single truth for hosts and groups.

topology.yml is an Ansible YAML inventory, so Ansible, Molecule and Vagrant read it as
it is; this module gives Python code (tests, the experiment harness, the autoscaler)
the same view, and refuses a topology the roles could not provision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Groups every testbed needs, with what runs there.
REQUIRED_GROUPS = {
    "databases": "PostgreSQL",
    "brokers": "Redis",
    "object_stores": "the S3 object store",
    "airflow_control": "the Airflow control components",
    "airflow_workers": "the Celery workers",
}


class TopologyError(ValueError):
    """The topology file cannot describe a working testbed."""


@dataclass(frozen=True)
class Topology:
    """Hosts, their variables and the (flattened) members of every group."""

    source: Path
    groups: dict[str, list[str]]
    host_vars: dict[str, dict[str, Any]]
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def hosts(self) -> list[str]:
        return list(self.host_vars)

    def hosts_in(self, group: str) -> list[str]:
        try:
            return self.groups[group]
        except KeyError:
            raise TopologyError(f"{self.source}: no group named {group!r}") from None

    def groups_of(self, host: str) -> list[str]:
        return sorted(name for name, members in self.groups.items() if host in members)


def _collect(
    name: str,
    node: Any,
    source: Path,
    direct: dict[str, list[str]],
    children: dict[str, list[str]],
    host_vars: dict[str, dict[str, Any]],
    variables: dict[str, Any],
) -> None:
    """Record group `name`'s own hosts and child group names, recursively.

    As in Ansible, a group may be declared in several places (a child named again under
    another parent, often with no body); its hosts and children are the union of them.
    """
    if node is None:
        node = {}
    if not isinstance(node, dict):
        raise TopologyError(f"{source}: group {name!r} must be a mapping, got {type(node).__name__}")
    unknown = set(node) - {"hosts", "children", "vars"}
    if unknown:
        raise TopologyError(f"{source}: group {name!r} has unknown keys {sorted(unknown)}")
    if name == "all":
        variables.update(node.get("vars") or {})
    own = direct.setdefault(name, [])
    for host, hvars in (node.get("hosts") or {}).items():
        if hvars is not None and not isinstance(hvars, dict):
            raise TopologyError(f"{source}: variables of host {host!r} must be a mapping")
        host_vars.setdefault(str(host), {}).update(hvars or {})
        if str(host) not in own:
            own.append(str(host))
    kids = children.setdefault(name, [])
    for child, child_node in (node.get("children") or {}).items():
        if str(child) not in kids:
            kids.append(str(child))
        _collect(str(child), child_node, source, direct, children, host_vars, variables)


def _members(
    name: str, direct: dict[str, list[str]], children: dict[str, list[str]], seen: tuple[str, ...] = ()
) -> list[str]:
    """All hosts of a group, its children's included, in declaration order."""
    if name in seen:
        raise TopologyError(f"group {name!r} contains itself through {' -> '.join(seen)}")
    members = list(direct.get(name, []))
    for child in children.get(name, []):
        members.extend(h for h in _members(child, direct, children, (*seen, name)) if h not in members)
    return members


def parse_topology(data: Any, source: Path) -> Topology:
    """Build a checked Topology from the parsed YAML document."""
    if not isinstance(data, dict) or "all" not in data:
        raise TopologyError(f"{source}: expected an Ansible YAML inventory with a top-level 'all' group")
    direct: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    host_vars: dict[str, dict[str, Any]] = {}
    variables: dict[str, Any] = {}
    _collect("all", data["all"], source, direct, children, host_vars, variables)
    try:
        groups = {name: _members(name, direct, children) for name in direct}
    except TopologyError as error:
        raise TopologyError(f"{source}: {error}") from None
    topology = Topology(source=source, groups=groups, host_vars=host_vars, variables=variables)
    _check(topology)
    return topology


def load_topology(path: str | Path) -> Topology:
    """Read topology.yml (or any inventory in its format) and check it."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise TopologyError(f"cannot read topology file {source}: {error.strerror}") from error
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TopologyError(f"{source}: not valid YAML: {error}") from error
    return parse_topology(data, source)


def _check(topology: Topology) -> None:
    source = topology.source
    if not topology.variables.get("deployment_name"):
        raise TopologyError(f"{source}: all.vars.deployment_name is missing; secrets are kept per deployment")
    for group, purpose in REQUIRED_GROUPS.items():
        if not topology.groups.get(group):
            raise TopologyError(f"{source}: group {group!r} has no hosts; it runs {purpose}")
    for host in topology.groups["airflow_workers"]:
        hvars = topology.host_vars[host]
        queues = hvars.get("airflow_worker_queues")
        if not queues or not isinstance(queues, list) or not all(isinstance(q, str) and q for q in queues):
            raise TopologyError(
                f"{source}: worker {host!r} needs airflow_worker_queues, a non-empty list of queue names"
            )
        concurrency = hvars.get("airflow_worker_concurrency")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise TopologyError(
                f"{source}: worker {host!r} needs airflow_worker_concurrency, a positive integer"
                f" (got {concurrency!r})"
            )
    if "default" not in {
        q for h in topology.groups["airflow_workers"] for q in topology.host_vars[h]["airflow_worker_queues"]
    }:
        raise TopologyError(f"{source}: no worker consumes the 'default' queue; most tasks would never run")

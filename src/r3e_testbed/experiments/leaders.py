"""Where a highly available deployment's leaders are, and moving them, through the services' own
interfaces: Patroni's REST API (PostgreSQL's primary), the Redis sentinels (the broker's master)
and the SeaweedFS masters' ``/cluster/status`` (their Raft leader).

The host-loss experiments use it to pick their victim (the host that holds every leader, a host
that holds none, PostgreSQL's primary) and to count primaries during a partition; the ha
scenario's tests use the same calls. In the minimal topology there is nothing to move: every
service has one member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Patroni's names for the member that takes writes (3.0 says "leader"; /patroni says "primary"
#: or, before 3.0, "master").
PRIMARY_ROLES = ("leader", "primary", "master")
HTTP_TIMEOUT_S = 5.0


def host_at(address: str, addresses: Mapping[str, str]) -> str | None:
    """The host whose address ``address`` is (``ip`` or ``ip:port``)."""
    ip = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return next((host for host, known in addresses.items() if known == ip), None)


def patroni_leader(cluster: Mapping[str, Any] | None) -> str | None:
    """The leader's name in a Patroni ``/cluster`` document."""
    members = (cluster or {}).get("members", [])
    return next((m["name"] for m in members if m.get("role") in PRIMARY_ROLES), None)


def patroni_role(cluster: Mapping[str, Any] | None, name: str) -> str | None:
    members = (cluster or {}).get("members", [])
    return next((m.get("role") for m in members if m.get("name") == name), None)


def patroni_whole(cluster: Mapping[str, Any] | None, names: Sequence[str]) -> bool:
    """Every member named is in the cluster and running or streaming."""
    members = (cluster or {}).get("members", [])
    return {m.get("name") for m in members} >= set(names) and all(
        m.get("state") in ("running", "streaming") for m in members
    )


class NotReplicated(RuntimeError):
    """A leader was asked for where its service has no replicas, or it could not be moved."""


@dataclass(frozen=True)
class Replication:
    """The replicated services of one deployment as the controller reaches them."""

    addresses: Mapping[str, str]  # host -> address
    databases: Sequence[str]
    brokers: Sequence[str]
    object_stores: Sequence[str]
    patroni_port: int = 8008
    sentinel_port: int = 26379
    sentinel_master: str = "airflow"
    redis_port: int = 6379
    redis_password: str = ""
    sentinel_password: str = ""
    seaweedfs_master_port: int = 9333

    # --- PostgreSQL (Patroni) ---------------------------------------------------------------

    def _patroni(self, host: str, path: str, method: str = "GET", **kwargs: Any) -> Any:
        import httpx

        url = f"http://{self.addresses[host]}:{self.patroni_port}{path}"
        response = httpx.request(
            method, url, timeout=kwargs.pop("timeout", HTTP_TIMEOUT_S), trust_env=False, **kwargs
        )
        response.raise_for_status()
        # /switchover answers in plain text; the other calls in JSON.
        is_json = response.headers.get("content-type", "").startswith("application/json")
        return response.json() if is_json and response.content else response.text

    def patroni_cluster(self) -> dict[str, Any] | None:
        """The ``/cluster`` document of the first member that answers; None if none does."""
        import httpx

        for host in self.databases:
            try:
                return self._patroni(host, "/cluster")
            except (httpx.HTTPError, ValueError):
                continue
        return None

    def postgresql_primary(self) -> str | None:
        return patroni_leader(self.patroni_cluster())

    def primaries(self) -> list[str]:
        """The members that say they are primary, each asked itself (``/patroni``): a member cut
        off from the others still answers the controller, so two primaries would both show."""
        import httpx

        found = []
        for host in self.databases:
            try:
                if (self._patroni(host, "/patroni") or {}).get("role") in PRIMARY_ROLES:
                    found.append(host)
            except (httpx.HTTPError, ValueError):
                continue
        return found

    def move_postgresql_primary(self, to: str, patience_s: float = 120) -> None:
        """A switchover to ``to``. Under synchronous replication Patroni hands over to a
        synchronous standby only, so every replica is made one meanwhile; the configured count is
        written back afterwards."""
        leader = self.postgresql_primary()
        if leader is None:
            raise NotReplicated("PostgreSQL has no leader to move")
        if leader == to:
            return
        configured = self._patroni(leader, "/config")["synchronous_node_count"]
        self._patroni(leader, "/config", "PATCH", json={"synchronous_node_count": len(self.databases) - 1})
        try:
            self._until(
                f"{to} as a synchronous standby",
                lambda: patroni_role(self.patroni_cluster(), to) == "sync_standby",
                patience_s,
            )
            self._patroni(leader, "/switchover", "POST", json={"leader": leader, "candidate": to}, timeout=30)
            self._until(f"PostgreSQL's primary on {to}", lambda: self.postgresql_primary() == to, patience_s)
        finally:
            self._patroni(to, "/config", "PATCH", json={"synchronous_node_count": configured})

    # --- the broker (Redis Sentinel) --------------------------------------------------------

    def _redis(self, host: str, port: int, password: str):
        import redis

        return redis.Redis(
            host=self.addresses[host],
            port=port,
            password=password or None,
            socket_timeout=HTTP_TIMEOUT_S,
            decode_responses=True,  # addresses as text
        )

    def redis_master(self) -> str | None:
        """The master's host as the first sentinel that answers names it."""
        import redis

        for host in self.brokers:
            try:
                sentinel = self._redis(host, self.sentinel_port, self.sentinel_password)
                ip, _port = sentinel.sentinel_get_master_addr_by_name(self.sentinel_master)
            except (redis.RedisError, TypeError):
                continue
            return host_at(str(ip), self.addresses)
        return None

    def move_redis_master(self, to: str, patience_s: float = 60) -> None:
        """A Sentinel failover that can only pick ``to``: the other replicas get priority 0 for
        it (0 = never promoted), then 100 again, rewritten to their redis.conf."""
        current = self.redis_master()
        if current is None:
            raise NotReplicated("the sentinels name no Redis master")
        if current == to:
            return
        others = [h for h in self.brokers if h not in (to, current)]
        for host in others:
            self._redis(host, self.redis_port, self.redis_password).config_set("replica-priority", 0)
        try:
            self._redis(self.brokers[0], self.sentinel_port, self.sentinel_password).execute_command(
                "SENTINEL", "FAILOVER", self.sentinel_master
            )
            self._until(f"the Redis master on {to}", lambda: self.redis_master() == to, patience_s)
        finally:
            for host in others:
                replica = self._redis(host, self.redis_port, self.redis_password)
                replica.config_set("replica-priority", 100)
                replica.config_rewrite()

    # --- the object store (SeaweedFS masters) -----------------------------------------------

    def seaweedfs_leader(self) -> str | None:
        import httpx

        for host in self.object_stores:
            try:
                status = httpx.get(
                    f"http://{self.addresses[host]}:{self.seaweedfs_master_port}/cluster/status",
                    timeout=HTTP_TIMEOUT_S,
                    trust_env=False,
                ).json()
            except (httpx.HTTPError, ValueError):
                continue
            leader = host_at(status.get("Leader", ""), self.addresses)
            if leader is not None:
                return leader
        return None

    # --- every leader -----------------------------------------------------------------------

    def leaders(self) -> dict[str, str | None]:
        return {
            "postgresql": self.postgresql_primary(),
            "broker": self.redis_master(),
            "object_store": self.seaweedfs_leader(),
        }

    def gather_leaders(self, patience_s: float = 120) -> str:
        """Put PostgreSQL's primary and the Redis master on the SeaweedFS master leader's host
        (that one is elected, not chosen) and return that host."""
        host = self._until("a SeaweedFS master leader", self.seaweedfs_leader, patience_s)
        self.move_postgresql_primary(host, patience_s)
        self.move_redis_master(host, patience_s)
        return host

    @staticmethod
    def _until(what: str, condition, timeout_s: float):
        from r3e_testbed.clients.wait import WaitTimeout, wait_until

        try:
            return wait_until(condition, timeout_s=timeout_s, every_s=2.0, what=what)
        except WaitTimeout as error:
            raise NotReplicated(str(error)) from None

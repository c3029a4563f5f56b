"""What only the highly available topology can show: every replicated service has one leader its
members agree on, and losing a whole host during a training run (the infrastructure host that holds
PostgreSQL's primary, the Redis master and the SeaweedFS master leader; then a control host)
leaves the run green without a human, loses no acknowledged row or object, and starts no second
run. Outcomes are asserted, not times: the times are measured by ``make r3e``.

A host is lost the way power goes: ``podman kill`` of its container (systemd and every service in
it die at once); it is started again afterwards, so the next test has its quorum back.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from r3e_testbed.clients.airflow import Airflow, AirflowError
from r3e_testbed.experiments.leaders import Replication, patroni_whole
from r3e_testbed.experiments.ledger import missing, read_log
from r3e_testbed.pipeline.config import run_id_for
from r3e_testbed.pipeline.generate import write_csv

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[3]
#: A training run of scale-0.5 data takes a minute or two here; a failover adds to it.
TRAINING_TIMEOUT_S = 1200
#: Until a lost host's members have rejoined their clusters.
REJOIN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def hosts(inventory) -> dict[str, list[str]]:
    return {
        group: inventory.get_hosts(group) for group in ("databases", "airflow_control", "airflow_workers")
    }


@pytest.fixture(scope="module")
def ha_airflow(inventory, address_of, wiring, secrets):
    """Airflow through every api-server: a lost control host is passed over."""
    urls = [
        f"http://{address_of(h)}:{wiring['airflow_api_port']}" for h in inventory.get_hosts("airflow_control")
    ]
    client = Airflow(
        urls, wiring["airflow_admin_user"], secrets["airflow_admin_password"], timeout_s=10, patience_s=180
    )
    client.login()
    yield client
    client.close()


@pytest.fixture(scope="module")
def gateways(inventory, address_of, wiring, secrets):
    """One boto3 client per S3 gateway, in host order."""
    import boto3
    from botocore.config import Config

    return {
        host: boto3.client(
            "s3",
            endpoint_url=f"http://{address_of(host)}:{wiring['object_store_port']}",
            aws_access_key_id=secrets["object_store_access_key"],
            aws_secret_access_key=secrets["object_store_secret_key"],
            region_name="us-east-1",
            config=Config(connect_timeout=3, read_timeout=20, retries={"max_attempts": 1}),
        )
        for host in inventory.get_hosts("object_stores")
    }


@pytest.fixture(scope="module")
def replication(inventory, address_of, secrets) -> Replication:
    """The replicated services' leaders (the package's calls, as the host-loss experiments use)."""
    ha = yaml.safe_load((REPO / "playbooks/group_vars/all/ha.yml").read_text())
    return Replication(
        addresses={host: address_of(host) for host in inventory.get_hosts("all")},
        databases=inventory.get_hosts("databases"),
        brokers=inventory.get_hosts("brokers"),
        object_stores=inventory.get_hosts("object_stores"),
        patroni_port=ha["postgresql_patroni_restapi_port"],
        sentinel_port=ha["redis_sentinel_port"],
        sentinel_master=ha["redis_sentinel_master_name"],
        redis_password=secrets["redis_password"],
        sentinel_password=secrets["redis_password"],
        seaweedfs_master_port=ha["seaweedfs_master_port"],
    )


@pytest.fixture(scope="module")
def redis_cli(connect, secrets):
    """``redis_cli(host, *args)``: redis-cli on a broker host, with the deployment's password."""

    def cli(host: str, *args: str) -> str:
        command = ["redis-cli", "--no-auth-warning", "-a", secrets["redis_password"], *args]
        return connect(host).check_output(" ".join(f"'{a}'" for a in command)).strip()

    return cli


def state(model) -> str | None:
    """A run's or task instance's state as Airflow names it."""
    return getattr(model.state, "value", model.state)


def power_off(host: str) -> None:
    subprocess.run(["podman", "kill", host], check=True, capture_output=True)


def power_on(host: str) -> None:
    subprocess.run(["podman", "start", host], check=True, capture_output=True)


# --- every replicated service has one leader --------------------------------------------------------


def test_postgresql_has_one_primary_and_a_synchronous_standby(replication, hosts):
    members = (replication.patroni_cluster() or {}).get("members", [])
    roles = Counter(m["role"] for m in members)
    assert roles["leader"] == 1, members
    assert roles["sync_standby"] >= 1, f"no synchronous standby: {members}"
    assert {m["name"] for m in members} == set(hosts["databases"])
    assert all(m["state"] in ("running", "streaming") for m in members), members
    assert replication.primaries() == [replication.postgresql_primary()], "each member asked itself"


def test_redis_sentinels_agree_on_one_master(redis_cli, replication, inventory):
    masters = {
        host: redis_cli(
            host,
            "-p",
            str(replication.sentinel_port),
            "sentinel",
            "get-master-addr-by-name",
            replication.sentinel_master,
        ).splitlines()[0]
        for host in inventory.get_hosts("brokers")
    }
    assert len(set(masters.values())) == 1, masters
    assert replication.addresses[replication.redis_master()] in masters.values()


def test_a_redis_master_without_a_replica_refuses_writes(redis_cli, replication, inventory):
    """min-replicas-to-write on every member: a lost master back before the sentinels demote it
    refuses Celery's sends instead of acknowledging messages it drops on resynchronising."""
    for host in inventory.get_hosts("brokers"):
        setting = redis_cli(host, "config", "get", "min-replicas-to-write").splitlines()
        assert int(setting[-1]) >= 1, f"{host}: min-replicas-to-write {setting}"
    master = replication.redis_master()
    info = dict(
        line.split(":", 1) for line in redis_cli(master, "info", "replication").splitlines() if ":" in line
    )
    assert int(info.get("min_slaves_good_slaves", 0)) >= 1, info


def test_seaweedfs_masters_elect_one_leader(replication, hosts):
    assert replication.seaweedfs_leader() in hosts["databases"]


# --- losing a host during a training run --------------------------------------------------------------


class Ledger:
    """The ledger writer (r3e_testbed.experiments.ledger) as a transient unit on a worker host."""

    def __init__(self, host, tag: str) -> None:
        self.host, self.tag = host, tag
        self.unit, self.log = f"r3e-ledger-{tag}", f"/var/tmp/r3e-ledger-{tag}.log"

    def start(self) -> None:
        self.host.check_output(
            "systemd-run --unit %s /usr/local/bin/airflow-env python -m r3e_testbed.experiments.ledger"
            " --tag %s --log %s",
            self.unit,
            self.tag,
            self.log,
        )

    def stop(self):
        self.host.run("systemctl stop %s", self.unit)
        log = read_log(self.host.file(self.log).content_string.splitlines())
        found = json.loads(
            self.host.check_output(
                "/usr/local/bin/airflow-env python -m r3e_testbed.experiments.ledger --tag %s --found",
                self.tag,
            )
        )
        return log, found


def put_through_any(gateways, bucket: str, key: str, body: bytes, failures: list[str] | None = None):
    """The client of the first gateway that took the object (a dead one, or a host back from a
    loss not serving S3 yet, is passed over); None when none did. Each refusal goes to ``failures``."""
    for host, client in gateways.items():
        try:
            client.put_object(Bucket=bucket, Key=key, Body=body)
        except Exception as error:  # a gateway that is down: the next
            if failures is not None:
                failures.append(f"{host}: {error}")
            continue
        return client
    return None


def put_objects_until(gateways, bucket: str, prefix: str, stop) -> dict[str, bytes]:
    """Write small objects through whichever gateway answers until ``stop()``; the acknowledged ones."""
    acknowledged: dict[str, bytes] = {}
    number = 0
    while not stop():
        number += 1
        key, body = f"{prefix}/{number:05d}", uuid.uuid4().bytes * 64
        if put_through_any(gateways, bucket, key, body) is not None:
            acknowledged[key] = body
        time.sleep(0.2)
    return acknowledged


def upload(gateways, bucket: str, key: str, body: bytes) -> str:
    """Put an object through the first gateway that takes it; its ETag."""
    failures: list[str] = []
    client = put_through_any(gateways, bucket, key, body, failures)
    if client is None:
        raise AssertionError(f"no S3 gateway took s3://{bucket}/{key}: {failures}")
    return client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def unreadable(gateways, bucket: str, objects: dict[str, bytes]) -> list[str]:
    """Acknowledged objects no live gateway returns with their bytes."""
    lost = []
    for key, body in objects.items():
        for client in gateways.values():
            try:
                if client.get_object(Bucket=bucket, Key=key)["Body"].read() == body:
                    break
            except Exception:  # a dead gateway or a missing object: the next
                continue
        else:
            lost.append(key)
    return lost


def training_run(ha_airflow, key, etag):
    try:
        return ha_airflow.call(ha_airflow.dag_runs.get_dag_run, "iot_training", run_id_for(key, etag))
    except AirflowError as error:
        if error.status is None:
            raise
        return None


def tasks_completed_twice(ha_airflow, run_id: str) -> list[str]:
    doubled = []
    instances = ha_airflow.call(
        ha_airflow.task_instances.get_task_instances, "iot_training", run_id, limit=200
    ).task_instances
    for ti in instances:
        tries = ha_airflow.call(
            ha_airflow.task_instances.get_task_instance_tries,
            "iot_training",
            run_id,
            ti.task_id,
            map_index=ti.map_index,
        ).task_instances
        if sum(1 for t in tries if state(t) == "success") > 1:
            doubled.append(f"{ti.task_id}[{ti.map_index}]")
    return doubled


def lose_host_during_training(victim, *, ha_airflow, gateways, connect, hosts, wiring, wait_for) -> dict:
    """Upload data, wait for training to run, power ``victim`` off, follow the run to its end."""
    tag = uuid.uuid4().hex[:8]
    bucket = wiring["object_store_data_bucket"]
    ledger = Ledger(connect(hosts["airflow_workers"][0]), tag)
    ledger.start()
    buffer = io.BytesIO()
    write_csv(buffer, 0.5, seed=7)
    key = f"raw/ha/{tag}.csv"
    etag = upload(gateways, bucket, key, buffer.getvalue())
    wait_for(
        "the training run to be running",
        lambda: (run := training_run(ha_airflow, key, etag)) is not None and state(run) == "running",
        300,
        2,
    )
    time.sleep(10)  # let tasks get going on the workers
    power_off(victim)
    try:
        deadline = time.monotonic() + 60
        during = put_objects_until(gateways, bucket, f"ha-objects/{tag}", lambda: time.monotonic() > deadline)
        run = wait_for(
            "the training run to finish",
            lambda: (
                (r := training_run(ha_airflow, key, etag)) is not None
                and state(r) in ("success", "failed")
                and r
            ),
            TRAINING_TIMEOUT_S,
            5,
        )
        log, found = ledger.stop()
        runs = ha_airflow.call(ha_airflow.dag_runs.get_dag_runs, "iot_training", limit=200).dag_runs
        return {
            "run": run,
            "runs_for_upload": sum(1 for r in runs if (r.conf or {}).get("key") == key),
            "ledger": log,
            "ledger_missing": missing(log.acknowledged, found),
            "objects": during,
            "objects_unreadable": unreadable(gateways, bucket, during),
            "tasks_completed_twice": tasks_completed_twice(ha_airflow, run.dag_run_id),
        }
    finally:
        power_on(victim)


@pytest.fixture
def lose_host(ha_airflow, gateways, connect, hosts, wiring, wait_for, replication):
    """``lose_host(victim)``: :func:`lose_host_during_training` with this deployment's clients,
    once every database member is back from an earlier loss (the steady state before the fault)."""

    def lose(victim: str) -> dict:
        wait_until_whole(replication, hosts, wait_for)
        return lose_host_during_training(
            victim,
            ha_airflow=ha_airflow,
            gateways=gateways,
            connect=connect,
            hosts=hosts,
            wiring=wiring,
            wait_for=wait_for,
        )

    return lose


def assert_nothing_lost_and_nothing_doubled(outcome: dict) -> None:
    assert state(outcome["run"]) == "success", outcome["run"]
    assert outcome["runs_for_upload"] == 1, "one training run per upload"
    assert outcome["ledger"].acknowledged, "the ledger writer acknowledged no row at all"
    assert outcome["ledger_missing"] == [], "acknowledged ledger rows lost"
    assert outcome["objects"], "no object was acknowledged during the fault"
    assert outcome["objects_unreadable"] == [], "acknowledged objects lost"
    assert outcome["tasks_completed_twice"] == [], "tasks that ran to completion twice"


def wait_until_whole(replication, hosts, wait_for) -> None:
    wait_for(
        "every PostgreSQL member back",
        lambda: patroni_whole(replication.patroni_cluster(), hosts["databases"]),
        REJOIN_TIMEOUT_S,
        5,
    )


def test_losing_the_infrastructure_host_with_every_leader_mid_training(
    lose_host, replication, hosts, wait_for
):
    # The host of (a): the SeaweedFS master leader (elected, not chosen), with PostgreSQL's
    # primary and the Redis master moved to it.
    victim = replication.gather_leaders()
    assert set(replication.leaders().values()) == {victim}
    assert_nothing_lost_and_nothing_doubled(lose_host(victim))
    wait_until_whole(replication, hosts, wait_for)
    assert replication.postgresql_primary() != victim, "PostgreSQL's primary stayed on the lost host"


def test_losing_a_control_host_mid_training(lose_host, hosts):
    assert_nothing_lost_and_nothing_doubled(lose_host(hosts["airflow_control"][0]))

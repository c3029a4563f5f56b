"""The autoscaler service's configuration, poll round, decision log and pool backends.

The backends are given a runner that answers like systemctl and podman do, so what they run and
how they read the answers is checked here; the real units and containers are driven in the
Molecule scenario (molecule/resources/tests/test_scaling.py).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from airflow_client.client.models import TaskInstanceCollectionResponse

# tests/ is on the path (the rootdir conftest): the stand-in of Airflow's API the clients' tests use.
from clients.airflow_stand_in import AirflowStandIn, Answer, Request, task_instance, task_instances

from r3e_testbed.autoscaler.pools import PodmanPool, PoolError, SystemdPool
from r3e_testbed.autoscaler.rule import Autoscaler, Policy
from r3e_testbed.autoscaler.service import (
    ConfigError,
    DecisionLog,
    ManagedPool,
    QueueDemand,
    load_settings,
    main,
    poll_once,
)
from r3e_testbed.clients.airflow import Airflow, AirflowError


def _config(**changes) -> dict:
    pool = {
        "queue": "default",
        "concurrency": 4,
        "minimum": 2,
        "maximum": 4,
        "fixed_workers": 2,
        "scale_in_cooldown_s": 60,
        "backend": "systemd",
        "unit_template": "airflow-worker@",
        "instances": [2, 3],
    }
    pool.update(changes.pop("pool", {}))
    config = {
        "airflow": {"url": "http://10.0.0.3:8080", "user": "admin", "password": "pw"},
        "poll_interval_s": 5,
        "decision_log": "/tmp/decisions.jsonl",
        "pools": [pool],
    }
    config.update(changes)
    return config


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "autoscaler.json"
    path.write_text(json.dumps(config))
    return path


def test_settings_are_read(tmp_path):
    settings = load_settings(_write(tmp_path, _config()))
    (managed,) = settings.pools
    assert (managed.queue, managed.fixed_workers) == ("default", 2)
    assert managed.autoscaler.policy.scale_in_cooldown_s == 60
    assert managed.pool.members() == ["airflow-worker@2.service", "airflow-worker@3.service"]
    assert settings.airflow_password == "pw"


def test_password_file_is_read(tmp_path):
    (tmp_path / "pw").write_text("secret\n")
    config = _config(airflow={"url": "http://a:8080", "user": "u", "password_file": str(tmp_path / "pw")})
    assert load_settings(_write(tmp_path, config)).airflow_password == "secret"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pool": {"concurrency": "4"}}, "pools[0].concurrency: expected int"),
        ({"pool": {"concurrency": True}}, "pools[0].concurrency: expected int"),
        ({"pool": {"maximum": 5}}, "pools[0].maximum: 5 workers need more than the 2 fixed workers"),
        ({"pool": {"minimum": 3, "maximum": 2}}, "maximum must be >= minimum"),
        ({"pool": {"backend": "kubernetes"}}, "pools[0].backend: expected 'systemd' or 'podman'"),
        ({"pool": {"unit_template": "airflow-worker"}}, "unit_template must end with '@'"),
        ({"pool": {"instances": [2, 2]}}, "instances must be distinct"),
        ({"pool": {"fixed_workers": -1}}, "fixed_workers: must be >= 0"),
        ({"pools": []}, "pools: at least one pool"),
        ({"airflow": {"url": "http://a", "user": "u"}}, "airflow.password_file: missing"),
        ({"poll_interval_s": 0}, "poll_interval_s must be a finite number of seconds > 0"),
        ({"pool": {"instances": [2, "3"]}}, "pools[0].instances[1]: expected int, got '3'"),
        ({"pool": {"scale_in_cooldown": 60}}, "pools[0].scale_in_cooldown: not a setting"),
        ({"pool": {"backend": "podman"}}, "pools[0].containers: missing"),
        ({"pools": [{"queue": "default"}]}, "pools[0].backend: missing"),
        ({"decision_log": 3}, "decision_log: expected str, got 3"),
    ],
)
def test_bad_settings_are_named(tmp_path, changes, message):
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
    ):
        load_settings(_write(tmp_path, _config(**changes)))


def test_a_podman_pool_is_read(tmp_path):
    pool = {"backend": "podman", "containers": ["worker-3", "worker-4"], "maximum": 4, "fixed_workers": 2}
    config = _config(pool=pool)
    del config["pools"][0]["instances"], config["pools"][0]["unit_template"]
    (managed,) = load_settings(_write(tmp_path, config)).pools
    assert isinstance(managed.pool, PodmanPool)
    assert managed.pool.members() == ["worker-3", "worker-4"]


def test_a_wrong_password_setting_is_named_without_its_value(tmp_path):
    config = _config(airflow={"url": "http://a:8080", "user": "u", "password": 918273645})
    with pytest.raises(ConfigError, match=r"airflow\.password: expected str") as refused:
        load_settings(_write(tmp_path, config))
    assert "918273645" not in str(refused.value)


def test_the_same_queue_twice_is_refused(tmp_path):
    config = _config()
    config["pools"].append(dict(config["pools"][0]))
    with pytest.raises(ConfigError, match=r"pools\[1\]\.queue: 'default' has a pool already"):
        load_settings(_write(tmp_path, config))


def test_main_reports_a_bad_file_and_exits_2(tmp_path, caplog):
    path = tmp_path / "autoscaler.json"
    path.write_text("{not json")
    assert main(["--config", str(path), "--check"]) == 2
    assert "not JSON" in caplog.text


class ListPool:
    """A pool whose members take tasks when listed in ``taking``."""

    name = "list"

    def __init__(self, size: int, taking: int = 0) -> None:
        self._members = [f"m{index}" for index in range(size)]
        self.taking = self._members[:taking]
        self.resized_to: list[int] = []

    def members(self) -> list[str]:
        return list(self._members)

    def taking_tasks(self) -> list[str]:
        return list(self.taking)

    def resize(self, size: int) -> list[str]:
        self.resized_to.append(size)
        self.taking = self._members[:size]
        return [f"size {size}"]


def _managed(pool: ListPool, **policy) -> ManagedPool:
    settings = {"queue": "default", "concurrency": 4, "minimum": 2, "maximum": 4, "poll_interval_s": 5}
    settings |= policy
    return ManagedPool(Autoscaler(Policy(**settings)), pool, fixed_workers=2)


def test_a_backlog_grows_the_pool_beyond_the_fixed_workers(tmp_path):
    pool = ListPool(2)
    log = DecisionLog(tmp_path / "d.jsonl")
    (record,) = poll_once(
        [_managed(pool)], lambda queue: (10, 2), log, now=lambda: 100.0, wall_clock=lambda: 1.0
    )
    # ceil(12 / 4) = 3 workers: the 2 fixed ones and 1 of the pool.
    assert (record["action"], record["target"], record["current"]) == ("scale_out", 3, 2)
    assert pool.resized_to == [1]
    assert record["done"] == ["size 1"]
    logged = json.loads((tmp_path / "d.jsonl").read_text())
    assert logged["queued"] == 10 and logged["running"] == 2 and logged["pool"] == "list"


def test_the_pool_shrinks_after_the_cooldown_and_never_below_zero(tmp_path):
    pool = ListPool(2, taking=2)
    managed = _managed(pool, scale_in_cooldown_s=30)
    log = DecisionLog(tmp_path / "d.jsonl")
    assert poll_once([managed], lambda queue: (0, 0), log, now=lambda: 0.0)[0]["action"] == "hold"
    (record,) = poll_once([managed], lambda queue: (0, 0), log, now=lambda: 31.0)
    assert (record["action"], record["target"]) == ("scale_in", 2)
    assert pool.resized_to == [0]


def test_airflow_unreachable_leaves_the_pool_alone(tmp_path):
    pool = ListPool(2, taking=1)

    def unreachable(queue: str) -> tuple[int, int]:
        raise AirflowError("get_task_instances: no answer (connection refused)")

    assert poll_once([_managed(pool)], unreachable, DecisionLog(tmp_path / "d.jsonl")) == []
    assert pool.resized_to == []
    assert not (tmp_path / "d.jsonl").exists()


@pytest.fixture
def stand_in() -> Iterator[AirflowStandIn]:
    server = AirflowStandIn()
    yield server
    server.close()
    assert not server.errors


def _counted(request: Request) -> Answer:
    """Task instances by queue and state: 10 queued and 2 running in "default", 5 queued in "io"."""
    counts = {("default", "queued"): 10, ("default", "running"): 2, ("io", "queued"): 5}
    (queue,), (state,) = request.query["queue"], request.query["state"]
    total = counts.get((queue, state), 0)
    return Answer(200, task_instances([task_instance(state=state, queue=queue)][:total], total))


def test_the_demand_is_the_queues_queued_and_running_task_instances(stand_in):
    stand_in.route("GET", "/api/v2/dags/~/dagRuns/~/taskInstances", _counted, TaskInstanceCollectionResponse)
    demand = QueueDemand(Airflow(stand_in.url, stand_in.user, stand_in.password))
    assert demand("default") == (10, 2)
    assert demand("io") == (5, 0)
    queries = [request.query for request in stand_in.calls("GET", "/api/v2/dags/~/dagRuns/~/taskInstances")]
    assert queries[:2] == [
        {"queue": ["default"], "state": ["queued"], "limit": ["1"]},
        {"queue": ["default"], "state": ["running"], "limit": ["1"]},
    ]


def test_an_answer_without_a_total_is_an_error(stand_in):
    # The cursor pagination answers without total_entries; the rule cannot count from that.
    stand_in.route("GET", "/api/v2/dags/~/dagRuns/~/taskInstances", Answer(200, {"task_instances": []}))
    demand = QueueDemand(Airflow(stand_in.url, stand_in.user, stand_in.password))
    with pytest.raises(AirflowError, match="no total_entries"):
        demand("default")


def test_airflow_down_is_a_skipped_round(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()[1]
    pool = ListPool(2, taking=1)
    demand = QueueDemand(Airflow(f"http://127.0.0.1:{nobody}", "admin", "pw", timeout_s=2))
    assert poll_once([_managed(pool)], demand, DecisionLog(tmp_path / "d.jsonl")) == []
    assert pool.resized_to == []


def test_unchanged_holds_are_logged_once(tmp_path):
    log = DecisionLog(tmp_path / "d.jsonl")
    record = {"queue": "q", "queued": 0, "running": 0, "current": 2, "desired": 2, "action": "hold"}
    assert log.write(record) is True
    assert log.write(dict(record)) is False
    assert log.write(record | {"queued": 1}) is True
    assert log.write(record | {"queued": 1, "action": "scale_out"}) is True
    assert log.write(record | {"queued": 1, "action": "scale_out"}) is True  # changes always
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 4


class Recorder:
    """Answers commands from a table of outputs and records them."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        self.commands.append(list(argv))
        return self.answers.get(argv[1], "")


def test_systemd_pool_starts_the_lowest_stopped_and_stops_the_highest_running():
    run = Recorder({"is-active": "active\ninactive\nfailed\ndeactivating\n"})
    pool = SystemdPool("airflow-worker@", [2, 3, 4, 5], run=run)
    assert pool.taking_tasks() == ["airflow-worker@2.service"]
    assert pool.resize(3) == ["start airflow-worker@3.service", "start airflow-worker@4.service"]
    assert [
        "systemctl",
        "start",
        "--no-block",
        "airflow-worker@3.service",
        "airflow-worker@4.service",
    ] in run.commands
    run.answers["is-active"] = "active\nactive\nactive\ninactive\n"
    assert pool.resize(1) == [
        "stop airflow-worker@4.service (drain)",
        "stop airflow-worker@3.service (drain)",
    ]


def test_systemd_pool_refuses_a_size_beyond_its_members():
    pool = SystemdPool("airflow-worker@", [2], run=Recorder({"is-active": "inactive\n"}))
    with pytest.raises(PoolError, match="a pool of 1 members cannot have 2"):
        pool.resize(2)


def test_podman_pool_counts_a_stopping_container_as_draining():
    inspect = [
        {"Name": "worker-3", "State": {"Status": "running"}},
        {"Name": "worker-4", "State": {"Status": "running"}},
    ]
    run = Recorder({"container": json.dumps(inspect)})

    class Stopping:
        def poll(self):
            return None

    spawned: list[list[str]] = []
    pool = PodmanPool(
        ["worker-3", "worker-4"], 660, run=run, spawn=lambda argv: spawned.append(list(argv)) or Stopping()
    )
    assert pool.resize(1) == ["stop worker-4 (drain)"]
    assert spawned == [["podman", "stop", "--time", "660", "worker-4"]]
    assert pool.taking_tasks() == ["worker-3"]


def test_podman_pool_names_missing_containers():
    run = Recorder({"container": json.dumps([{"Name": "worker-3", "State": {"Status": "exited"}}])})
    with pytest.raises(PoolError, match="no such containers: worker-4"):
        PodmanPool(["worker-3", "worker-4"], 660, run=run).taking_tasks()

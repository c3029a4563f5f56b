"""The host-loss experiments' pure parts: failover times from the probes' logs, the probes'
settings read from Airflow's environment, the leaders read from the services' documents, the
accounting checks, the minimal-vs-HA table and the scenario fields that ask for all of it."""

from __future__ import annotations

import json
import threading

import pytest

from r3e_testbed.experiments import failover, probes
from r3e_testbed.experiments.leaders import host_at, patroni_leader, patroni_role, patroni_whole
from r3e_testbed.experiments.ledger import probe_loop, read_log
from r3e_testbed.experiments.report import host_loss_rows, write_report
from r3e_testbed.experiments.scenario import ScenarioError, parse_scenario

INJECTED = 1000.0


# --- failover times -------------------------------------------------------------------------------


def test_failover_is_the_end_of_the_first_outage_after_the_injection():
    log = read_log(["ack 1", "down 990", "up 992", "ack 2", "down 1001.5", "ack 3", "up 1012.25"])
    assert log.failover_s(INJECTED) == pytest.approx(12.25)


def test_an_outage_going_on_at_the_injection_counts_from_the_injection():
    log = read_log(["down 998", "ack 1", "up 1004"])
    assert log.failover_s(INJECTED) == pytest.approx(4.0)


def test_no_outage_after_the_injection_is_no_interruption_and_one_never_ended_is_none():
    assert read_log(["ack 1", "ack 2"]).failover_s(INJECTED) == 0.0
    assert read_log(["ack 1", "down 1003"]).failover_s(INJECTED) is None


def test_an_outage_begun_after_the_revert_is_not_this_failover():
    log = read_log(["ack 1", "down 1200", "ack 2", "up 1210"])
    assert log.failover_s(INJECTED, until=1120) == 0.0
    assert log.failover_s(INJECTED) == pytest.approx(210.0)


def test_component_failover_reports_each_probe_and_names_a_silent_one():
    logs = {
        "postgresql": read_log(["ack 1", "down 1001", "ack 2", "up 1009"]),
        "broker": None,
    }
    figures = failover.component_failover(logs, INJECTED, 1120)
    assert figures["postgresql"] == {"failover_s": 9.0, "outages": 1, "acknowledged": 2, "probed": True}
    assert figures["broker"]["probed"] is False and figures["broker"]["failover_s"] is None


def test_scheduling_failover_is_the_first_task_queued_after_the_injection():
    instances = [
        {"queued_when": "1970-01-01T00:16:30+00:00"},  # 990: before
        {"queued_when": "1970-01-01T00:16:57Z"},  # 1017
        {"queued_when": "1970-01-01T00:16:47.5Z"},  # 1007.5
        {"queued_when": None},
    ]
    assert failover.scheduling_failover_s(instances, INJECTED) == pytest.approx(7.5)
    assert failover.scheduling_failover_s(instances[:1], INJECTED) is None


def test_probe_loop_logs_acks_and_one_outage_per_run_of_failures(tmp_path):
    answers = iter([None, RuntimeError("down"), RuntimeError("still down"), None, None])

    def attempt(number: int) -> None:
        answer = next(answers)
        if answer is not None:
            raise answer

    path = tmp_path / "probe.log"
    probe_loop(attempt, str(path), threading.Event(), pause_s=0, rows=3, reset=lambda: None)
    log = read_log(path.read_text().splitlines())
    assert log.acknowledged == (1, 2, 3)
    assert len(log.outages) == 1 and log.outages[0][1] is not None


# --- the probes' settings, from Airflow's environment --------------------------------------------


def test_broker_transport_options_come_typed_from_airflows_environment():
    env = {
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__MASTER_NAME": "airflow",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__SENTINEL_KWARGS": '{"password": "s"}',
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
        "AIRFLOW__CELERY__BROKER_URL": "sentinel://...",
    }
    options = probes.broker_transport_options(env)
    assert options["master_name"] == "airflow"
    assert options["sentinel_kwargs"] == {"password": "s"}
    assert options["visibility_timeout"] == 86400
    assert options["socket_timeout"] == probes.CONNECT_TIMEOUT_S
    assert "broker_url" not in options


def test_the_s3_probe_writes_through_the_connection_of_airflows_xcom_backend():
    connection = {"login": "k", "password": "p", "extra": {"endpoint_url": "http://127.0.0.1:17333"}}
    env = {
        "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": "s3://r3e_s3@airflow-xcom/xcom",
        "AIRFLOW_CONN_R3E_S3": json.dumps(connection),
    }
    assert probes.s3_connection(env) == {
        "endpoint_url": "http://127.0.0.1:17333",
        "region_name": "us-east-1",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "p",
    }
    with pytest.raises(ValueError, match="AIRFLOW_CONN_R3E_S3"):
        probes.s3_connection({"AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": "s3://r3e_s3@b/x"})
    with pytest.raises(ValueError, match="no connection id"):
        probes.s3_connection({})


def test_the_execution_api_probe_asks_its_health_route_at_the_workers_url():
    env = {"AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:17080/execution/"}
    assert probes.execution_health_url(env) == "http://127.0.0.1:17080/execution/health"
    with pytest.raises(ValueError, match="EXECUTION_API_SERVER_URL"):
        probes.execution_health_url({})


def test_objects_are_named_and_filled_by_tag_and_number():
    assert probes.object_key("t1", 7) == "r3e-probes/t1/000007"
    assert probes.object_body("t1", 7) != probes.object_body("t1", 8)


# --- leaders, from the services' own documents ---------------------------------------------------


CLUSTER = {
    "members": [
        {"name": "infra-1", "role": "replica", "state": "streaming"},
        {"name": "infra-2", "role": "leader", "state": "running"},
        {"name": "infra-3", "role": "sync_standby", "state": "streaming"},
    ]
}


def test_patroni_documents_name_the_leader_and_each_role():
    assert patroni_leader(CLUSTER) == "infra-2"
    assert patroni_role(CLUSTER, "infra-3") == "sync_standby"
    assert patroni_leader(None) is None
    assert patroni_whole(CLUSTER, ["infra-1", "infra-2", "infra-3"])
    assert not patroni_whole(CLUSTER, ["infra-1", "infra-4"])


def test_an_address_with_or_without_port_names_its_host():
    addresses = {"infra-1": "10.89.57.11", "infra-2": "10.89.57.12"}
    assert host_at("10.89.57.12:9333", addresses) == "infra-2"
    assert host_at("10.89.57.11", addresses) == "infra-1"
    assert host_at("10.0.0.1:1", addresses) is None


# --- accounting ---------------------------------------------------------------------------------


class Store:
    def __init__(self, objects):
        self.objects = objects

    def get(self, key):
        return self.objects[key]


def test_objects_check_fails_on_a_missing_or_changed_object():
    log = read_log(["ack 1", "ack 2", "ack 3"])
    store = Store(
        {
            probes.object_key("t", 1): probes.object_body("t", 1),
            probes.object_key("t", 2): b"torn",
        }
    )
    check, figures = failover.objects_check(store, "t", log)
    assert not check["passed"]
    assert figures == {"acknowledged": 3, "readable": 1, "unreadable": [2, 3]}
    whole = Store({probes.object_key("t", n): probes.object_body("t", n) for n in (1, 2, 3)})
    assert failover.objects_check(whole, "t", log)[0]["passed"]


def test_ledger_check_names_lost_rows_and_wants_some_rows_at_all():
    check, figures = failover.ledger_check(read_log(["ack 1", "ack 2", "ack 3"]), [1, 3])
    assert not check["passed"] and "1 lost (2)" in check["detail"]
    assert figures["lost"] == [2]
    assert failover.ledger_check(read_log(["ack 1"]), [1])[0]["passed"]
    assert not failover.ledger_check(read_log([]), [])[0]["passed"]
    assert not failover.ledger_check(None, [1])[0]["passed"]


def test_a_task_that_succeeded_in_two_tries_is_work_done_twice():
    def interval(task, try_number, state):
        return {"task_id": task, "map_index": -1, "try_number": try_number, "state": state}

    intervals = [
        interval("train", 1, "success"),
        interval("train", 2, "success"),
        interval("fetch", 1, "failed"),
    ]
    intervals.append(interval("fetch", 2, "success"))
    assert failover.completed_twice(intervals) == ["train[-1]"]
    assert not failover.twice_check(["train[-1]"])["passed"]


def test_two_primaries_at_once_fail_and_one_member_is_not_asked():
    assert not failover.primaries_check(2)["passed"]
    assert failover.primaries_check(1)["passed"]
    assert failover.primaries_check(None) is None


# --- the side-by-side table ----------------------------------------------------------------------


def host_loss_result(outcome: str, postgresql_s: float | None) -> dict:
    return {
        "name": "host-loss-leaders",
        "fault": "power_off_host",
        "target": "infra-1",
        "description": "",
        "outcome": outcome,
        "checks": [{"name": "run success", "passed": outcome == "passed", "detail": "the run ended"}],
        "dag_id": "iot_training",
        "run_id": "r",
        "run_state": "success" if outcome == "passed" else "failed",
        "duration_s": 100.0,
        "baseline_duration_s": 80.0,
        "extra_wall_s": 20.0,
        "injected_at_s": 10.0,
        "detected_at_s": None,
        "recovered_at_s": None,
        "detection_s": None,
        "recovery_s": None,
        "retries_used": 1,
        "timeline": [],
        "events": [],
        "failover": {
            "probe_host": "worker-2",
            "components": {"postgresql": {"failover_s": postgresql_s}},
            "ledger": {"acknowledged": 40, "found": 40},
            "objects": {"acknowledged": 30, "readable": 30},
            "uploads": [{"key": "k", "runs": 1, "asset_events": 1}],
            "tasks_completed_twice": [],
            "primaries_at_once": 1,
        },
    }


def results_of(deployment: str, hosts: list[str], faults: list[dict], memory: dict | None = None) -> dict:
    extra = {"deployment": deployment, "memory_at_rest_bytes": memory}
    return {
        "created_at": "2026-12-04T00:00:00+00:00",
        "fingerprint": {"extra": extra, "topology": {"groups": {"all_of_them": hosts}}},
        "faults": faults,
        "inputs": [],
        "robustness_curve": [],
        "reliability": None,
        "tuning": [],
    }


def test_the_table_puts_each_experiment_of_both_deployments_side_by_side(tmp_path):
    from r3e_testbed.experiments.report import compared_run

    minimal = results_of("testbed", ["db", "control"], [host_loss_result("failed", None)])
    memory = {"infra-1": 2**30, "infra-2": 2**30, "infra-3": 2**29}
    infrastructure = ["infra-1", "infra-2", "infra-3"]
    ha = results_of("testbed-ha", infrastructure, [host_loss_result("passed", 6.5)], memory)
    ha["compared"] = [compared_run(minimal)]
    rows = host_loss_rows(ha)
    assert [(r["deployment"], r["outcome"]) for r in rows] == [
        ("testbed-ha (3 hosts, 2.5 GiB at rest)", "passed"),
        ("testbed (2 hosts)", "failed"),  # its memory was not measured
    ]
    assert rows[0]["failover"]["postgresql"] == 6.5 and rows[1]["failover"]["postgresql"] is None
    assert rows[0]["ledger"] == "40 / 40" and rows[0]["runs_per_upload"] == "1"
    html = write_report(ha, tmp_path).read_text()
    assert "Host loss (minimal vs highly available)" in html and "testbed (2 hosts)" in html


def test_a_run_without_host_loss_experiments_has_no_rows():
    plain = host_loss_result("passed", 1.0)
    del plain["failover"]
    assert host_loss_rows(results_of("testbed", ["db"], [plain])) == []


# --- the scenario fields -------------------------------------------------------------------------


def scenario(**fault) -> dict:
    return {
        "name": "host-loss-x",
        "fault": {"type": "power_off_host", "target": "databases", **fault},
        "steady_state": {"accounting": True},
    }


def test_host_loss_scenarios_parse_with_a_pick_and_accounting():
    parsed = parse_scenario(scenario(pick="every_leader", duration_s=120))
    assert parsed.fault.pick == "every_leader" and parsed.steady_state.accounting


def test_an_unknown_pick_is_refused_by_name():
    with pytest.raises(ScenarioError, match=r"fault\.pick"):
        parse_scenario(scenario(pick="the_big_one"))


def test_accounting_needs_a_triggered_training_run():
    document = scenario() | {"workload": {"uploads": 3}}
    with pytest.raises(ScenarioError, match="accounting"):
        parse_scenario(document)


def test_the_deployment_is_read_where_the_harness_fingerprint_records_it():
    from r3e_testbed.experiments.fingerprint import environment_fingerprint
    from r3e_testbed.experiments.report import deployment_of

    fingerprint = environment_fingerprint(
        topology={"groups": {}}, settings={}, seeds={}, extra={"deployment": "testbed-ha"}
    )
    assert deployment_of({"fingerprint": fingerprint}) == "testbed-ha"
    assert deployment_of({}) == "?"

"""How detection and recovery are read from the observations of a run (no stack needed), and
the parts of an upload experiment that need none or only an Airflow stand-in."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from airflow_client.client.models.dag_run_response import DAGRunResponse
from clients.airflow_stand_in import AirflowStandIn, Answer, dag_run

from r3e_testbed.experiments.inputs import ingest_locally
from r3e_testbed.experiments.runner import (
    Tick,
    Upload,
    delivery_check,
    detect_and_recover,
    follow_uploads,
    host_without_a_leader,
    production_served_before,
    put_object,
    upload_data,
    upload_phases,
)
from r3e_testbed.experiments.stack import Endpoints, Playbooks, Stack
from r3e_testbed.pipeline.config import run_id_for
from r3e_testbed.storage import DirectoryStore

ENDPOINTS = {
    "deployment_name": "testbed",
    "s3_endpoint": "http://127.0.0.1:9",
    "s3_access_key": "a",
    "s3_secret_key": "b",
    "object_store_backend": "seaweedfs",
    "data_bucket": "iot-data",
    "models_bucket": "models",
    "forecast_url": "http://127.0.0.1:9",
    "groups": {},
    "addresses": {},
    "settings": {},
}


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def ti(task_id, state, try_number=1, map_index=-1, end_date=None):
    return {
        "task_id": task_id,
        "map_index": map_index,
        "state": state,
        "try_number": try_number,
        "end_date": end_date,
    }


def tick(at, *instances, healthy=True, run_state="running"):
    return Tick(at=at, run_state=run_state, task_instances=list(instances), healthy=healthy, served=True)


def test_a_killed_task_is_detected_when_it_goes_up_for_retry_and_recovered_when_its_retry_succeeds():
    ticks = [
        tick(100, ti("train", "running")),
        tick(101, ti("train", "running")),  # injected at 101: nothing visible yet
        tick(140, ti("train", "up_for_retry")),  # heartbeat timed out
        tick(150, ti("train", "running", try_number=2)),
        tick(160, ti("train", "success", try_number=2)),
    ]
    detected, recovered = detect_and_recover(ticks, 101, 101, {("train", -1)})
    assert (detected, recovered) == (140, 160)


def test_a_new_try_counts_as_detection_even_if_the_failed_state_was_never_observed():
    ticks = [
        tick(10, ti("a", "running")),
        tick(20, ti("a", "running", try_number=2)),
        tick(30, ti("a", "success", 2)),
    ]
    assert detect_and_recover(ticks, 15, 15, {("a", -1)})[0] == 20


def test_an_unhealthy_component_is_detection_and_recovery_waits_for_health_and_the_revert():
    ticks = [
        tick(0, ti("a", "running")),
        tick(5, ti("a", "running"), healthy=False),
        tick(10, ti("a", "success"), healthy=False),
        tick(15, ti("a", "success")),  # healthy but before the revert at 20
        tick(25, ti("a", "success")),
    ]
    assert detect_and_recover(ticks, 1, 20, {("a", -1)}) == (5, 25)


def test_without_affected_tasks_recovery_needs_progress_after_the_injection():
    before = "2026-01-01T00:00:10+00:00"  # epoch 1767225610
    after = "2026-01-01T00:01:40+00:00"  # epoch 1767225700
    injected = 1767225650.0
    ticks = [
        tick(injected + 1, ti("a", "success", end_date=before), ti("b", "queued")),
        tick(injected + 60, ti("a", "success", end_date=before), ti("b", "success", end_date=after)),
    ]
    assert detect_and_recover(ticks, injected, injected, set()) == (None, injected + 60)


def test_nothing_recovered_when_the_affected_task_never_succeeds():
    ticks = [tick(0, ti("a", "running")), tick(5, ti("a", "failed"), run_state="failed")]
    assert detect_and_recover(ticks, 1, 1, {("a", -1)}) == (5, None)


@pytest.mark.parametrize("state", ["failed", "up_for_retry", "restarting", "upstream_failed"])
def test_every_disturbed_state_is_a_detection(state):
    ticks = [tick(0, ti("a", "running")), tick(3, ti("a", state))]
    assert detect_and_recover(ticks, 1, 1, {("a", -1)})[0] == 3


def test_a_disturbance_after_recovery_is_not_the_faults_detection():
    ticks = [
        tick(0, ti("a", "running")),
        tick(5, ti("a", "success")),
        tick(9, ti("a", "success"), healthy=False),
    ]
    assert detect_and_recover(ticks, 1, 1, {("a", -1)}) == (None, 5)


# --- uploads through a fault ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "reversible", "phases"),
    [
        (3, True, ["during", "during", "during"]),
        (2, False, ["before", "after"]),
        (3, False, ["before", "after", "after"]),
        (1, False, ["after"]),
    ],
)
def test_uploads_go_during_a_lasting_fault_and_around_a_one_shot(count, reversible, phases):
    assert upload_phases(count, reversible) == phases


def test_the_uploaded_files_are_distinct_and_the_ingest_refuses_each_at_once(tmp_path):
    files = upload_data(3)
    assert len(set(files)) == 3
    assert len({run_id_for(f"raw/r3e-faults/x-{n}.csv", md5(data)) for n, data in enumerate(files)}) == 3
    for number, data in enumerate(files):
        done = ingest_locally(data, tmp_path / str(number))
        assert (done["verdict"], done["rows"]) == ("refused", 0)
        assert "no data rows" in done["reason"]


def _upload(number: int) -> Upload:
    key = f"raw/r3e-faults/stop-event-bridge-20260105T100000-{number}.csv"
    return Upload(number, key, f"etag{number}", "during", 0.0, run_id_for(key, f"etag{number}"))


def test_every_upload_must_have_started_one_run_and_been_one_asset_event():
    uploads = [_upload(1), _upload(2), _upload(3)]
    keys = [u.key for u in uploads]
    once = delivery_check(uploads, Counter(keys), Counter(keys))
    assert once["passed"] and "each of the 3 uploads" in once["detail"]
    lost = delivery_check(uploads, Counter(keys[:2]), Counter(keys[:2]))
    assert not lost["passed"] and f"{keys[2]}: 0 iot_training runs" in lost["detail"]
    doubled = delivery_check(uploads, Counter(keys), Counter([*keys, keys[1]]))
    assert not doubled["passed"] and doubled["detail"] == f"{keys[1]}: 2 asset events from 1 bridge(s)"
    assert not delivery_check([], Counter(), Counter())["passed"]  # nothing uploaded proves nothing


def test_with_three_bridges_an_upload_may_be_three_asset_events_but_is_still_one_run():
    uploads = [_upload(1), _upload(2)]
    keys = [u.key for u in uploads]
    reported = delivery_check(uploads, Counter(keys), Counter(keys * 3), bridges=3)
    assert reported["passed"] and "3 asset event(s), one iot_training run" in reported["detail"]
    two_runs = delivery_check(uploads, Counter([*keys, keys[0]]), Counter(keys * 3), bridges=3)
    assert not two_runs["passed"] and f"{keys[0]}: 2 iot_training runs" in two_runs["detail"]
    unseen = delivery_check(uploads, Counter(keys), Counter(keys[:1]), bridges=3)
    assert not unseen["passed"] and f"{keys[1]}: 0 asset events" in unseen["detail"]


def test_put_object_returns_the_etag_the_store_gives(tmp_path):
    store = DirectoryStore(tmp_path)
    data = upload_data(1)[0]
    assert put_object(store, "raw/r3e-faults/a.csv", data) == md5(data)
    assert store.get("raw/r3e-faults/a.csv") == data


def test_the_uploads_runs_are_followed_until_each_ended(tmp_path):
    uploads = [_upload(1), _upload(2)]
    server, seen = AirflowStandIn(), Counter()

    def run_of(upload):
        def answer(request):
            seen[upload.run_id] += 1  # the first look: not there yet; then running; then ended
            if seen[upload.run_id] == 1:
                return Answer(404, {"detail": "DagRun not found"})
            state = "running" if seen[upload.run_id] == 2 else "failed"
            return Answer(200, dag_run("iot_training", upload.run_id, state=state))

        return answer

    for upload in uploads:
        server.route(
            "GET", f"/api/v2/dags/iot_training/dagRuns/{upload.run_id}", run_of(upload), DAGRunResponse
        )
    endpoints = {**ENDPOINTS, "airflow_url": server.url, "airflow_user": server.user}
    stack = Stack(
        Endpoints.from_mapping({**endpoints, "airflow_password": server.password}), Playbooks(tmp_path, [])
    )
    try:
        assert follow_uploads(stack, uploads, timeout_s=30)
        assert [u.run["state"] for u in uploads] == ["failed", "failed"]
        assert all(u.seen_at is not None for u in uploads)
        assert dict(seen) == {u.run_id: 3 for u in uploads}  # an ended run is not asked for again
        assert not follow_uploads(stack, [_upload(3)], timeout_s=0)  # never appears: not followed
    finally:
        stack.close()
        server.close()
    assert not server.errors


class ForecastStandIn:
    """A forecast service on a local port: 503 (nothing in production) for its first ``cold``
    requests, then a forecast."""

    def __init__(self, cold: int) -> None:
        import http.server
        import threading

        self.requests = 0
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                stand_in.requests += 1
                ready = stand_in.requests > cold
                body = b'{"series": "In"}' if ready else b'{"error": "no production model yet"}'
                self.send_response(200 if ready else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _forecast_stack(tmp_path, *services: ForecastStandIn) -> Stack:
    airflow = {"airflow_url": "http://127.0.0.1:9", "airflow_user": "u", "airflow_password": "p"}
    endpoints = {**ENDPOINTS, **airflow, "forecast_urls": [service.url for service in services]}
    return Stack(Endpoints.from_mapping(endpoints), Playbooks(tmp_path, []))


def test_the_fault_waits_until_every_forecast_service_serves_production(tmp_path):
    warm, cold = ForecastStandIn(cold=0), ForecastStandIn(cold=2)
    stack, said = _forecast_stack(tmp_path, warm, cold), []
    try:
        assert stack.forecast() is not None  # one answering service is enough for a client
        production_served_before(stack, said.append, timeout_s=30)
        assert cold.requests == 3, "the wait ends with the first answer of the last service"
        assert said == []
    finally:
        stack.close()
        warm.close()
        cold.close()


def test_a_service_that_never_serves_is_said_and_the_experiment_goes_on(tmp_path):
    never = ForecastStandIn(cold=10**6)
    stack, said = _forecast_stack(tmp_path, never), []
    try:
        production_served_before(stack, said.append, timeout_s=0)
        assert stack.forecast() is None
    finally:
        stack.close()
        never.close()
    assert len(said) == 1 and "steady state does not hold before the fault" in said[0], said


class LeadersStandIn:
    """The leaders of three replicated services, and the one move the harness may make."""

    def __init__(self, leaders: dict[str, str], elected: str) -> None:
        self.where, self.elected = dict(leaders), elected

    def leaders(self) -> dict[str, str]:
        return dict(self.where)

    def gather_leaders(self) -> str:
        self.where = dict.fromkeys(self.where, self.elected)
        return self.elected


def test_a_host_without_a_leader_is_taken_as_it_is():
    replication = LeadersStandIn({"postgresql": "a", "broker": "a", "object_store": "b"}, elected="b")
    said = []
    assert host_without_a_leader(["a", "b", "c"], replication, said.append) == "c"
    assert said == [] and replication.leaders()["postgresql"] == "a", "nothing was moved"


def test_where_every_host_leads_the_movable_leaders_go_to_the_elected_ones_host():
    replication = LeadersStandIn({"postgresql": "a", "broker": "b", "object_store": "c"}, elected="c")
    said = []
    host = host_without_a_leader(["a", "b", "c"], replication, said.append)
    assert host == "a" and host not in replication.leaders().values()
    assert set(replication.leaders().values()) == {"c"} and len(said) == 1

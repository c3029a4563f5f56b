"""Airflow's api-server as far as the tests of its clients need it.

``POST /auth/token`` hands out tokens for one user; every other route answers what the test set,
and refuses a request without a valid token with 401 as Airflow does. Answers are the JSON
Airflow 3 sends: a 2xx answer of a route given a model is validated against the official
client's pydantic model before it leaves, so a stand-in answer is one a real api-server could
give (a test that means to send a wrong answer gives no model). ``errors`` collects answers that
did not validate; the fixture fails the test on any.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel

RUN_ID = "manual__2026-01-05T10:00:00+00:00"
# Routes anyone may call, as on a real api-server.
PUBLIC = {("POST", "/auth/token"), ("GET", "/api/v2/monitor/health")}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Answer:
    status: int
    body: Any = None
    #: Sent as is when set (with this content type), instead of ``body`` as JSON.
    raw: bytes | None = None
    content_type: str = "application/json"


Route = Callable[[Request], Answer]


class AirflowStandIn:
    def __init__(self, user: str = "r3e", password: str = "not-a-real-password") -> None:
        self.user = user
        self.password = password
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self.tokens: set[str] = set()
        #: Seconds every answer waits before it is sent (a slow api-server).
        self.delay_s = 0.0
        self._routes: dict[tuple[str, str], tuple[Route, type[BaseModel] | None]] = {}
        self._issued = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(
        self, method: str, path: str, answer: Answer | Route, model: type[BaseModel] | None = None
    ) -> None:
        """Answer ``method path`` with ``answer`` (or what ``answer(request)`` returns)."""
        self._routes[(method, path)] = (answer if callable(answer) else lambda _: answer, model)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- serving ----------------------------------------------------------------------------------

    def _answer(self, request: Request) -> Answer:
        if (request.method, request.path) == ("POST", "/auth/token"):
            body = request.body if isinstance(request.body, dict) else {}
            if (body.get("username"), body.get("password")) != (self.user, self.password):
                return Answer(401, {"detail": "Invalid credentials"})
            with self._lock:
                self._issued += 1
                token = f"token-{self._issued}"
            self.tokens.add(token)
            return Answer(201, {"access_token": token})
        if (request.method, request.path) not in PUBLIC:
            bearer = request.headers.get("authorization", "")
            if bearer.removeprefix("Bearer ") not in self.tokens:
                return Answer(401, {"detail": "Not authenticated"})
        if (request.method, request.path) not in self._routes:
            return Answer(404, {"detail": "Not Found"})
        route, model = self._routes[(request.method, request.path)]
        answer = route(request)
        if model is not None and 200 <= answer.status < 300:
            try:
                model.model_validate(answer.body)
            except ValueError as error:
                self.errors.append(f"{request.method} {request.path}: {error}")
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command,
                    path=urllib.parse.unquote(url.path),
                    query=urllib.parse.parse_qs(url.query),
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=json.loads(data) if data else None,
                )
                stand_in.requests.append(request)
                answer = stand_in._answer(request)
                if stand_in.delay_s:
                    time.sleep(stand_in.delay_s)
                content = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        return Handler


# --- Airflow 3's answers -----------------------------------------------------------------------


def dag_version(dag_id: str) -> dict[str, Any]:
    """The first version of a DAG, as Airflow 3.3 reports it."""
    return {
        "id": "0199a8f0-0000-7000-8000-000000000001",
        "version_number": 1,
        "dag_id": dag_id,
        "bundle_name": "dags-folder",
        "bundle_version": None,
        "created_at": "2026-01-05T09:58:00.000000Z",
        "dag_display_name": dag_id,
        "bundle_url": None,
    }


def task_instance(
    task_id: str = "work",
    *,
    dag_id: str = "r3e_probe",
    run_id: str = RUN_ID,
    state: str | None = "running",
    queue: str = "default",
    map_index: int = -1,
    hostname: str = "worker-1",
    try_number: int = 1,
) -> dict[str, Any]:
    """One task instance as ``GET .../taskInstances`` lists it."""
    return {
        "id": "0199a8f2-6c1e-7b4e-9d1a-3f2b8c4d5e6f",
        "task_id": task_id,
        "dag_id": dag_id,
        "dag_run_id": run_id,
        "map_index": map_index,
        "logical_date": None,
        "run_after": "2026-01-05T10:00:00.123456Z",
        "start_date": "2026-01-05T10:00:02.514213Z" if state in ("running", "success") else None,
        "end_date": "2026-01-05T10:00:23.001002Z" if state == "success" else None,
        "duration": 20.486789 if state == "success" else None,
        "state": state,
        "try_number": try_number,
        "max_tries": 0,
        "task_display_name": task_id,
        "dag_display_name": dag_id,
        "hostname": hostname if state in ("running", "success") else "",
        "unixname": "airflow",
        "pool": "default_pool",
        "pool_slots": 1,
        "queue": queue,
        "priority_weight": 1,
        "operator": "PythonOperator",
        "operator_name": "@task",
        "queued_when": "2026-01-05T10:00:01.010101Z",
        "scheduled_when": "2026-01-05T10:00:00.900000Z",
        "pid": 4242 if state == "running" else None,
        "executor": None,
        "executor_config": "{}",
        "note": None,
        "rendered_map_index": None,
        "rendered_fields": {},
        "trigger": None,
        "triggerer_job": None,
        "dag_version": dag_version(dag_id),
    }


def task_instances(items: list[dict[str, Any]], total: int) -> dict[str, Any]:
    return {"task_instances": items, "total_entries": total}


def health() -> dict[str, Any]:
    """``GET /api/v2/monitor/health`` of a healthy stack."""
    return {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "healthy", "latest_scheduler_heartbeat": "2026-01-05T10:00:04.1+00:00"},
        "triggerer": {"status": "healthy", "latest_triggerer_heartbeat": "2026-01-05T10:00:03.9+00:00"},
        "dag_processor": {
            "status": "healthy",
            "latest_dag_processor_heartbeat": "2026-01-05T10:00:02.7+00:00",
        },
    }


def dag_run(
    dag_id: str = "r3e_probe",
    run_id: str = RUN_ID,
    *,
    state: str = "running",
    conf: dict[str, Any] | None = None,
    start_date: str | None = "2026-01-05T10:00:00.514213Z",
) -> dict[str, Any]:
    """One DAG run as ``GET .../dagRuns/{run_id}`` and ``POST .../dagRuns`` answer it."""
    return {
        "dag_run_id": run_id,
        "dag_id": dag_id,
        "logical_date": None,
        "queued_at": "2026-01-05T10:00:00.200001Z",
        "start_date": start_date,
        "end_date": "2026-01-05T10:01:40.000002Z" if state in ("success", "failed") else None,
        "duration": 99.49 if state in ("success", "failed") else None,
        "data_interval_start": None,
        "data_interval_end": None,
        "run_after": "2026-01-05T10:00:00.123456Z",
        "last_scheduling_decision": "2026-01-05T10:00:01.000003Z",
        "run_type": "manual",
        "state": state,
        "triggered_by": "rest_api",
        "triggering_user_name": "admin",
        "conf": conf or {},
        "note": None,
        "dag_versions": [dag_version(dag_id)],
        "bundle_version": None,
        "dag_display_name": dag_id,
        "partition_key": None,
        "partition_date": None,
    }


def dag_runs(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dag_runs": items, "total_entries": len(items)}


def dag(dag_id: str = "r3e_probe", *, is_paused: bool = False) -> dict[str, Any]:
    """A DAG as ``GET /api/v2/dags/{dag_id}`` and ``PATCH`` answer it."""
    return {
        "dag_id": dag_id,
        "dag_display_name": dag_id,
        "is_paused": is_paused,
        "is_stale": False,
        "last_parsed_time": "2026-01-05T09:58:00.000000Z",
        "last_parse_duration": 0.41,
        "last_expired": None,
        "bundle_name": "dags-folder",
        "bundle_version": None,
        "relative_fileloc": f"{dag_id}.py",
        "fileloc": f"/opt/airflow/dags/{dag_id}.py",
        "description": None,
        "timetable_summary": None,
        "timetable_description": "Never, external triggers only",
        "timetable_partitioned": False,
        "timetable_periodic": False,
        "tags": [],
        "max_active_tasks": 16,
        "max_active_runs": 16,
        "max_consecutive_failed_dag_runs": 0,
        "has_task_concurrency_limits": False,
        "has_import_errors": False,
        "is_backfillable": False,
        "next_dagrun_logical_date": None,
        "next_dagrun_data_interval_start": None,
        "next_dagrun_data_interval_end": None,
        "next_dagrun_run_after": None,
        "allowed_run_types": None,
        "owners": ["r3e"],
        "file_token": "Ii9vcHQvYWlyZmxvdy9kYWdzL3IzZV9wcm9iZS5weSI.abc",
    }

"""Failover probes: on one testbed host, while a host is lost, each replicated service is used the
way Airflow's processes on that host use it, and every answer is logged; afterwards the harness
reads the logs and says, per component, how long after the injection it accepted writes again.

One thread per component, each in the ledger's log format (``ack N``, ``down T``, ``up T``; see
:mod:`r3e_testbed.experiments.ledger`), one file each in ``--dir``:

- ``postgresql.log``: the ledger writer (numbered rows, through Airflow's connection string);
- ``broker.log``: a message through Celery's broker, put and taken back (kombu with Airflow's
  broker URL and transport options: with sentinels, the master they name);
- ``object_store.log``: object N written through Airflow's S3 connection (the one the XCom
  backend uses) under ``r3e-probes/<tag>/``; the harness reads every acknowledged one back;
- ``execution_api.log``: the execution API's health route, at the URL the workers use.

Run on a host, in Airflow's venv and environment::

    airflow-env python -m r3e_testbed.experiments.probes --tag TAG --dir DIR --bucket BUCKET

It runs until stopped (SIGTERM). Only what Airflow's hosts install is imported (psycopg2, kombu,
boto3, httpx), and only in the threads that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .ledger import CONNECT_TIMEOUT_S, libpq_url, probe_loop
from .ledger import run as ledger_run

COMPONENTS = ("postgresql", "broker", "object_store", "execution_api")
#: Between two probes of one component: a second's resolution is plenty for failovers of seconds.
PROBE_PAUSE_S = 0.5
OBJECT_PREFIX = "r3e-probes"
#: The execution API's liveness route (health/ping would also ping its database), under the workers' URL.
EXECUTION_HEALTH_PATH = "health"
TRANSPORT_OPTION_PREFIX = "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__"


def log_file(folder: str | os.PathLike[str], component: str) -> Path:
    return Path(folder) / f"{component}.log"


def object_key(tag: str, number: int) -> str:
    return f"{OBJECT_PREFIX}/{tag}/{number:06d}"


def object_body(tag: str, number: int) -> bytes:
    """What object ``number`` holds: a read-back proves it is that object, whole."""
    return f"{tag}:{number}\n".encode() * 64


def broker_transport_options(env: Mapping[str, str]) -> dict[str, Any]:
    """Celery's broker transport options from Airflow's environment (the variables
    ``AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__<NAME>``), as kombu takes them: numbers as
    numbers, JSON objects (``sentinel_kwargs``) as dicts; short socket timeouts added, so a
    probe of a dead master fails in seconds instead of hanging."""
    options: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(TRANSPORT_OPTION_PREFIX):
            continue
        key = name.removeprefix(TRANSPORT_OPTION_PREFIX).lower()
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value  # a plain string, e.g. the master's name
    options.setdefault("socket_timeout", CONNECT_TIMEOUT_S)
    options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    return options


def s3_connection(env: Mapping[str, str]) -> dict[str, str]:
    """The S3 endpoint and credentials of the connection Airflow's XCom backend writes through
    (``AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH`` = ``s3://<conn_id>@<bucket>/...``, the
    connection in ``AIRFLOW_CONN_<CONN_ID>`` as JSON)."""
    path = env.get("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", "")
    conn_id = urllib.parse.urlsplit(path).username
    if not conn_id:
        raise ValueError(f"no connection id in AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH={path!r}")
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    if variable not in env:
        raise ValueError(f"{variable} is not in the environment")
    connection = json.loads(env[variable])
    extra = connection.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra)
    return {
        "endpoint_url": extra["endpoint_url"],
        "region_name": extra.get("region_name", "us-east-1"),
        "aws_access_key_id": connection["login"],
        "aws_secret_access_key": connection["password"],
    }


def execution_health_url(env: Mapping[str, str]) -> str:
    base = env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "")
    if not base:
        raise ValueError("AIRFLOW__CORE__EXECUTION_API_SERVER_URL is not in the environment")
    return base.rstrip("/") + "/" + EXECUTION_HEALTH_PATH


# --- the probes (each runs on the host, against the live service) ---------------------------------


Attempt = Callable[[int], None]


def broker_probe(env: Mapping[str, str], tag: str) -> tuple[Attempt, Callable[[], None]]:  # pragma: no cover
    from kombu import Connection

    url, options = env["AIRFLOW__CELERY__BROKER_URL"], broker_transport_options(env)
    state: dict[str, Any] = {}

    def attempt(number: int) -> None:
        if "queue" not in state:
            state["connection"] = Connection(
                url, transport_options=options, connect_timeout=CONNECT_TIMEOUT_S
            )
            state["queue"] = state["connection"].SimpleQueue(f"r3e-probe-{tag}")
        queue = state["queue"]
        queue.put({"n": number}, retry=False)
        message = queue.get(timeout=CONNECT_TIMEOUT_S)
        message.ack()
        if message.payload.get("n") != number:
            raise RuntimeError(f"the broker gave back message {message.payload}, not {number}")

    def reset() -> None:
        connection = state.pop("connection", None)
        state.pop("queue", None)
        if connection is not None:
            with contextlib.suppress(Exception):  # a dead master: nothing to release cleanly
                connection.release()

    return attempt, reset


def object_store_probe(env: Mapping[str, str], tag: str, bucket: str) -> Attempt:  # pragma: no cover
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        **s3_connection(env),
        config=Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=10, retries={"max_attempts": 1}),
    )

    def attempt(number: int) -> None:
        client.put_object(Bucket=bucket, Key=object_key(tag, number), Body=object_body(tag, number))

    return attempt


def execution_api_probe(env: Mapping[str, str]) -> Attempt:  # pragma: no cover
    import httpx

    url = execution_health_url(env)

    def attempt(number: int) -> None:
        httpx.get(url, timeout=CONNECT_TIMEOUT_S, trust_env=False).raise_for_status()

    return attempt


def run(tag: str, folder: str, bucket: str, env: Mapping[str, str]) -> None:  # pragma: no cover
    Path(folder).mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    broker, broker_reset = broker_probe(env, tag)
    loops = {
        "postgresql": lambda: ledger_run(
            libpq_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]),
            tag,
            str(log_file(folder, "postgresql")),
            stop=stop,
        ),
        "broker": lambda: probe_loop(
            broker, str(log_file(folder, "broker")), stop, pause_s=PROBE_PAUSE_S, reset=broker_reset
        ),
        "object_store": lambda: probe_loop(
            object_store_probe(env, tag, bucket),
            str(log_file(folder, "object_store")),
            stop,
            pause_s=PROBE_PAUSE_S,
        ),
        "execution_api": lambda: probe_loop(
            execution_api_probe(env), str(log_file(folder, "execution_api")), stop, pause_s=PROBE_PAUSE_S
        ),
    }
    threads = [threading.Thread(target=loop, name=name, daemon=True) for name, loop in loops.items()]
    for thread in threads:
        thread.start()
    while not stop.wait(1):
        pass
    for thread in threads:
        thread.join(timeout=15)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", required=True, help="names this run's rows, messages and objects")
    parser.add_argument("--dir", required=True, help="where the logs go, one per component")
    parser.add_argument("--bucket", required=True, help="the bucket the object-store probe writes to")
    options = parser.parse_args(argv)
    run(options.tag, options.dir, options.bucket, os.environ)


if __name__ == "__main__":  # pragma: no cover
    main()

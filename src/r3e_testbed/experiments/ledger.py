"""The ledger writer: numbered rows committed to PostgreSQL one by one while a fault runs, each
acknowledged row written to a local file after its commit returned. Afterwards every acknowledged
row must be in the table: a failover that loses a committed transaction shows as a missing number.

It runs on a testbed host, inside Airflow's venv and with Airflow's own connection string (the same
path to the primary Airflow takes: the local load balancer in a highly available topology)::

    airflow-env python -m r3e_testbed.experiments.ledger --tag TAG --log /var/tmp/ledger-TAG
    airflow-env python -m r3e_testbed.experiments.ledger --tag TAG --found   (afterwards)

Only the standard library and psycopg2 (which Airflow's postgres extra installs) are imported.
A row whose commit failed without an answer is tried again under the same number: a unique
violation then proves the first attempt was committed, and the row counts as acknowledged.
The log also records each outage (the first failure and the next success, in epoch seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

TABLE = "r3e_ledger"
CONNECT_TIMEOUT_S = 3
#: Pause between two rows, and after a failure.
ROW_PAUSE_S = 0.1
RETRY_PAUSE_S = 0.5


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg2://...`` (SQLAlchemy's form) as the ``postgresql://...`` libpq reads."""
    scheme, sep, rest = sqlalchemy_url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {scheme or sqlalchemy_url!r}")
    return f"postgresql://{rest}"


@dataclass(frozen=True)
class LedgerLog:
    """What a ledger writer's log says: the acknowledged numbers and the outages it saw."""

    acknowledged: tuple[int, ...]
    outages: tuple[tuple[float, float | None], ...]

    @property
    def longest_outage_s(self) -> float | None:
        closed = [end - start for start, end in self.outages if end is not None]
        return max(closed) if closed else None

    def failover_s(self, injected_at: float, until: float | None = None) -> float | None:
        """Seconds from ``injected_at`` until the service answered again: the end of the first
        outage still going at the injection or begun after it (before ``until``, the fault's
        revert: a later one is not this failover). 0.0: no such outage; None: it never ended."""
        for start, end in self.outages:
            if end is not None and end <= injected_at:
                continue
            if until is not None and start > until:
                break
            return None if end is None else round(end - injected_at, 2)
        return 0.0


def read_log(lines: Iterable[str]) -> LedgerLog:
    """Parse a log: ``ack N``, ``down T`` and ``up T`` lines (anything else is an error)."""
    acknowledged: list[int] = []
    outages: list[tuple[float, float | None]] = []
    for number, line in enumerate(lines, 1):
        word, _, value = line.strip().partition(" ")
        if not word:
            continue
        if word == "ack":
            acknowledged.append(int(value))
        elif word == "down":
            outages.append((float(value), None))
        elif word == "up" and outages and outages[-1][1] is None:
            outages[-1] = (outages[-1][0], float(value))
        else:
            raise ValueError(f"ledger log line {number}: {line.strip()!r}")
    return LedgerLog(tuple(acknowledged), tuple(outages))


def missing(acknowledged: Iterable[int], found: Iterable[int]) -> list[int]:
    """Acknowledged numbers the table does not hold: each one a lost committed transaction."""
    return sorted(set(acknowledged) - set(found))


def probe_loop(
    attempt: Callable[[int], None],
    log_path: str,
    stop: threading.Event,
    *,
    pause_s: float = ROW_PAUSE_S,
    rows: int | None = None,
    reset: Callable[[], None] | None = None,
) -> None:  # pragma: no cover - it runs on the hosts, against the live service
    """Call ``attempt(number)`` for numbers 1, 2, ... until ``stop`` is set: ``ack N`` once
    attempt N returned, ``down T`` at the first failure, ``up T`` at the next success (each line
    on disk before the next attempt). A failed number is tried again; ``reset`` runs after each
    failure (drop a broken connection)."""
    number, down = 1, False
    with Path(log_path).open("a", encoding="utf-8") as log:

        def note(line: str) -> None:
            log.write(line + "\n")
            log.flush()
            os.fsync(log.fileno())

        while not stop.is_set() and (rows is None or number <= rows):
            try:
                attempt(number)
            except Exception:  # any failure of the service is an outage: the log says when
                if not down:
                    note(f"down {time.time():.3f}")
                    down = True
                if reset is not None:
                    reset()
                stop.wait(RETRY_PAUSE_S)
                continue
            note(f"ack {number}")
            if down:
                note(f"up {time.time():.3f}")
                down = False
            number += 1
            stop.wait(pause_s)


def run(
    url: str, tag: str, log_path: str, *, rows: int | None = None, stop: threading.Event | None = None
) -> None:  # pragma: no cover
    import psycopg2  # on the hosts only (Airflow's postgres extra)
    from psycopg2 import errors

    connection = None

    def insert(number: int) -> None:
        nonlocal connection
        if connection is None:
            connection = psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT_S)
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE}"
                    " (tag text, n integer, at timestamptz DEFAULT now(), PRIMARY KEY (tag, n))"
                )
        # A unique violation: an earlier attempt of this number was committed.
        with connection.cursor() as cursor, contextlib.suppress(errors.UniqueViolation):
            cursor.execute(f"INSERT INTO {TABLE} (tag, n) VALUES (%s, %s)", (tag, number))

    def reset() -> None:
        nonlocal connection
        if connection is not None:
            with contextlib.suppress(psycopg2.Error):
                connection.close()
        connection = None

    probe_loop(insert, log_path, stop or threading.Event(), rows=rows, reset=reset)


def found(url: str, tag: str) -> list[int]:  # pragma: no cover
    """The numbers of ``tag`` the table holds now."""
    import psycopg2

    with (
        psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(f"SELECT n FROM {TABLE} WHERE tag = %s ORDER BY n", (tag,))
        return [row[0] for row in cursor.fetchall()]


def main(argv: list[str] | None = None) -> None:  # pragma: no cover
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", required=True, help="names this run's rows")
    parser.add_argument("--log", help="the acknowledgement log, appended to (required unless --found)")
    parser.add_argument(
        "--found", action="store_true", help="print the tag's numbers in the table (JSON), write none"
    )
    parser.add_argument("--rows", type=int, help="stop after this many rows (default: until killed)")
    parser.add_argument(
        "--url",
        default=os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""),
        help="database URL (default: Airflow's, from its environment)",
    )
    options = parser.parse_args(argv)
    if not options.url:
        parser.error("no --url and no AIRFLOW__DATABASE__SQL_ALCHEMY_CONN in the environment")
    if options.found:
        print(json.dumps(found(libpq_url(options.url), options.tag)))
        return
    if not options.log:
        parser.error("--log is required to write rows")
    run(libpq_url(options.url), options.tag, options.log, rows=options.rows)


if __name__ == "__main__":  # pragma: no cover
    main()

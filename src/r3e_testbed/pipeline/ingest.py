"""Ingest one raw object: stream it in chunks, validate, write clean Parquet parts and quarantine.

``ingest_object`` reads the raw CSV from one :class:`~r3e_testbed.pipeline.registry.ObjectStore`
a block at a time (never the whole object), validates each chunk, and writes to another store,
under ``out_prefix``::

    clean/<out_prefix>/part-00000.parquet        the valid rows of chunk 0 (CLEAN_COLUMNS)
    quarantine/<out_prefix>/rows-00000.csv       chunk 0's bad rows, each with its reasons
    quarantine/<out_prefix>/report.json          counts per reason, examples, the verdict

The report is written whatever happens, also when the file as a whole is refused: the
``DataFileError`` is re-raised after it, so a failed run leaves the reason in the store. Its
``verdict`` is ``accepted``, ``refused`` (the file is unusable) or ``failed`` (any other error,
such as a store or disk failure, re-raised too: the file was not judged). Every part
is one object written by one PUT; re-running on the same object rewrites the same parts with the
same content, and the caller hands on the list of parts it wrote, so no stale part is ever read.
A chunk's parts are uploaded on a worker thread while the next chunk is read and validated (one
chunk's parts at most in flight); the report lists the parts written before it.

``daily_from_parts`` reads the clean parts back one at a time into daily means.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd
import pyarrow
import pyarrow.parquet

from r3e_testbed.pipeline.load import DEFAULT_CHUNK_ROWS, DataFileError, iter_raw_chunks
from r3e_testbed.pipeline.preprocess import DailyAccumulator
from r3e_testbed.pipeline.schema import CLEAN_COLUMNS, CLEAN_ID, CLEAN_LOCATION, CLEAN_ROOM
from r3e_testbed.pipeline.validate import DEFAULT_MAX_BAD_FRACTION, ValidationResult, validate_file
from r3e_testbed.storage import ObjectStore

CLEAN_ROOT = "clean"
QUARANTINE_ROOT = "quarantine"


class HashingReader:
    """A binary stream that hashes (SHA-256) and counts everything read through it.

    ``name`` (the object's key) is what error messages call the stream.
    """

    def __init__(self, handle: Any, name: str | None = None) -> None:
        self._handle = handle
        self.name = name or getattr(handle, "name", None)
        self._digest = hashlib.sha256()
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if isinstance(data, str):
            raise TypeError("HashingReader needs a binary stream")
        self._digest.update(data)
        self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        close = getattr(self._handle, "close", None)
        if close is not None:
            close()


def output_prefix(key: str, etag: str) -> str:
    """``<key>/<etag>``: where the outputs of one version of one raw object go."""
    if not key or key.endswith("/") or ".." in key.split("/"):
        raise ValueError(f"bad raw object key {key!r}")
    tag = etag.strip('"')
    if not tag or "/" in tag:
        raise ValueError(f"bad ETag {etag!r}")
    return f"{key}/{tag}"


#: Parquet encoding of the clean parts. The ids are unique: a dictionary of them (tried, then
#: given up on each part) and their min/max statistics are wasted work. Rooms and locations
#: repeat, and their dictionaries are small.
_DICTIONARY_COLUMNS = [CLEAN_ROOM, CLEAN_LOCATION]
_STATISTICS_COLUMNS = [c for c in CLEAN_COLUMNS if c != CLEAN_ID]


def _parquet(frame: pd.DataFrame) -> bytes:
    """``frame`` as Parquet (with pandas' metadata, so that it reads back with the same dtypes)."""
    table = pyarrow.Table.from_pandas(frame, preserve_index=False)
    buffer = io.BytesIO()
    pyarrow.parquet.write_table(
        table, buffer, use_dictionary=_DICTIONARY_COLUMNS, write_statistics=_STATISTICS_COLUMNS
    )
    return buffer.getvalue()


class _PartWriter:
    """Puts each chunk's parts into the store on a worker thread, so that an upload overlaps with
    reading and validating the next chunk. The parts are encoded by the caller: encoding them on
    the worker too would overlap more, but the worker's allocations then add to the peak memory
    of the chunk being validated. One chunk's parts at most are in flight (:meth:`write` waits for
    the previous ones first); ``written`` lists the keys written, in order (read it after
    :meth:`wait` or :meth:`close`); a failed put is raised by the next call."""

    def __init__(self, target: ObjectStore) -> None:
        self._target = target
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-parts")
        self._pending: Future[None] | None = None
        self.written: list[str] = []

    def write(self, parts: list[tuple[str, bytes]]) -> None:
        """Put each ``(key, data)``, on the worker thread."""
        self.wait()
        self._pending = self._pool.submit(self._put, parts)

    def _put(self, parts: list[tuple[str, bytes]]) -> None:
        for key, data in parts:
            self._target.put(key, data)
            self.written.append(key)

    def wait(self) -> None:
        """Until the parts in flight are written (their error raised here, if any)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for the parts in flight, whatever becomes of them; stop the worker."""
        with contextlib.suppress(Exception):  # (the caller is already failing for another reason)
            self.wait()
        self._pool.shutdown()


def ingest_object(
    source: ObjectStore,
    key: str,
    target: ObjectStore,
    out_prefix: str,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> dict[str, Any]:
    """Validate the raw object ``key`` of ``source`` chunk by chunk into ``target``.

    Returns the validation summary plus ``sha256`` and ``bytes`` of the raw object, ``clean_parts``
    and ``quarantine_parts`` (keys in ``target``) and ``report`` (the report's key). Raises
    :class:`DataFileError` (after writing the report) if the file is unusable, ``KeyError`` if
    the object does not exist.
    """
    report_key = f"{QUARANTINE_ROOT}/{out_prefix}/report.json"
    chunks = 0
    # Counted here too: when the file is refused, validate_file raises instead of returning its counts.
    counts: dict[str, Any] = {"rows": 0, "clean_rows": 0, "quarantined_rows": 0, "reason_counts": Counter()}
    writer = _PartWriter(target)

    def write(result: ValidationResult) -> None:
        nonlocal chunks
        number, chunks = chunks, chunks + 1
        counts["rows"] += result.rows
        counts["clean_rows"] += len(result.clean)
        counts["quarantined_rows"] += result.quarantined
        counts["reason_counts"].update(result.reason_counts)
        parts: list[tuple[str, bytes]] = []
        if len(result.clean):
            part = f"{CLEAN_ROOT}/{out_prefix}/part-{number:05d}.parquet"
            parts.append((part, _parquet(result.clean.reset_index(drop=True))))
        if result.quarantined:
            part = f"{QUARANTINE_ROOT}/{out_prefix}/rows-{number:05d}.csv"
            parts.append((part, result.quarantine.to_csv(index=False).encode("utf-8")))
        if parts:
            writer.write(parts)

    stream = HashingReader(source.open(key), name=key)
    report: dict[str, Any] = {"source": key, "verdict": "accepted", "error": None}
    try:
        try:
            # checks the file as a whole first; closed (with any thread of its) before the rest is hashed
            with iter_raw_chunks(stream, chunk_rows) as reader:
                summary = validate_file(
                    reader, max_bad_fraction=max_bad_fraction, on_result=write, name=key
                ).summary()
            writer.wait()
            report.update(summary)
        except DataFileError as error:
            report.update({**counts, "reason_counts": dict(counts["reason_counts"].most_common())})
            report.update({"verdict": "refused", "error": str(error), "chunks": chunks})
            raise
        except Exception as error:  # not the file's fault (a store, the disk): no verdict on it
            report.update({**counts, "reason_counts": dict(counts["reason_counts"].most_common())})
            report.update(
                {"verdict": "failed", "error": f"{type(error).__name__}: {error}", "chunks": chunks}
            )
            raise
        finally:
            writer.close()
            while stream.read(1 << 20):  # hash the whole object, also when refused early
                pass
            report.update(
                {
                    "sha256": stream.sha256,
                    "bytes": stream.bytes_read,
                    "clean_parts": [part for part in writer.written if part.startswith(f"{CLEAN_ROOT}/")],
                    "quarantine_parts": [
                        part for part in writer.written if part.startswith(f"{QUARANTINE_ROOT}/")
                    ],
                }
            )
            target.put(report_key, json.dumps(report, indent=2, sort_keys=True).encode("utf-8"))
    finally:
        stream.close()
    return {**report, "report": report_key}


def daily_from_parts(store: ObjectStore, parts: Iterable[str]) -> pd.DataFrame:
    """Daily means (``preprocess.DailyAccumulator``) of the clean Parquet parts, one part at a time."""
    accumulator = DailyAccumulator()
    for part in parts:
        accumulator.add(pd.read_parquet(io.BytesIO(store.get(part))))
    return accumulator.daily()

"""Streaming ingestion of a raw object into clean Parquet parts and quarantine (pipeline.ingest)."""

from __future__ import annotations

import hashlib
import io
import json

import pandas as pd
import pytest

from r3e_testbed.pipeline import ingest, validate
from r3e_testbed.pipeline.generate import generate_readings, write_csv
from r3e_testbed.pipeline.load import DataFileError, iter_raw_chunks
from r3e_testbed.pipeline.preprocess import daily_series
from r3e_testbed.pipeline.schema import CLEAN_DTYPES
from r3e_testbed.pipeline.validate import validate_chunk
from r3e_testbed.storage import DirectoryStore


@pytest.fixture
def store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "data")


def raw_bytes(days: int = 20, scale: float = 0.3) -> bytes:
    buffer = io.BytesIO()
    write_csv(buffer, scale, 0, days=days)
    return buffer.getvalue()


class CountingStream(io.BytesIO):
    """Records the largest single read, to show the object is never read whole."""

    largest = 0

    def read(self, size=-1):
        data = super().read(size)
        CountingStream.largest = max(CountingStream.largest, len(data))
        return data


def test_hashing_reader_hashes_what_passes_through():
    reader = ingest.HashingReader(io.BytesIO(b"abcdef"))
    assert reader.read(2) + reader.read() == b"abcdef"
    assert reader.sha256 == hashlib.sha256(b"abcdef").hexdigest()
    assert reader.bytes_read == 6
    with pytest.raises(TypeError, match="binary"):
        ingest.HashingReader(io.StringIO("x")).read()


@pytest.mark.parametrize(
    ("key", "etag"), [("raw/", "e"), ("", "e"), ("raw/../x", "e"), ("raw/a.csv", ""), ("raw/a", "a/b")]
)
def test_output_prefix_refuses_bad_names(key, etag):
    with pytest.raises(ValueError, match="bad"):
        ingest.output_prefix(key, etag)


def test_clean_parts_hold_every_valid_row_and_give_the_daily_series(store):
    data = raw_bytes()
    store.put("raw/a.csv", data)
    report = ingest.ingest_object(
        store, "raw/a.csv", store, ingest.output_prefix("raw/a.csv", '"e1"'), chunk_rows=2000
    )
    assert report["verdict"] == "accepted"
    assert report["sha256"] == hashlib.sha256(data).hexdigest() and report["bytes"] == len(data)
    assert len(report["clean_parts"]) == report["chunks"] > 1
    assert report["clean_parts"][0] == "clean/raw/a.csv/e1/part-00000.parquet"
    clean = pd.concat(pd.read_parquet(io.BytesIO(store.get(p))) for p in report["clean_parts"])
    assert len(clean) == report["clean_rows"]
    expected = daily_series(validate_chunk(generate_readings(0.3, 0, days=20)).clean)
    pd.testing.assert_frame_equal(
        ingest.daily_from_parts(store, report["clean_parts"]), expected, check_freq=False
    )
    assert json.loads(store.get(report["report"]))["clean_rows"] == report["clean_rows"]


def test_bad_rows_go_to_quarantine_with_reasons(store):
    lines = raw_bytes().decode().splitlines()
    lines[5] = lines[5].rsplit(",", 2)[0] + ",999,In"
    lines[9] = lines[9].rsplit(",", 2)[0] + ",warm,Out"
    store.put("raw/b.csv", ("\n".join(lines) + "\n").encode())
    report = ingest.ingest_object(store, "raw/b.csv", store, "raw/b.csv/e2")
    assert report["quarantined_rows"] == 2
    rows = pd.read_csv(io.BytesIO(store.get(report["quarantine_parts"][0])), dtype=str)
    assert len(rows) == 2
    assert rows["reason"].str.len().min() > 0


def test_an_unusable_file_fails_and_still_leaves_its_report(store):
    store.put("raw/c.csv", b"id;room_id/id;noted_date;temp;out/in\n1;Room Admin;08-12-2018 09:30;29;In\n")
    with pytest.raises(DataFileError, match="delimiter"):
        ingest.ingest_object(store, "raw/c.csv", store, "raw/c.csv/e3")
    report = json.loads(store.get("quarantine/raw/c.csv/e3/report.json"))
    assert report["verdict"] == "refused"
    assert "delimiter" in report["error"]
    assert report["sha256"] == hashlib.sha256(store.get("raw/c.csv")).hexdigest()
    assert store.keys("clean/") == []


def test_a_mostly_bad_file_is_refused_after_quarantining(store):
    lines = raw_bytes(5).decode().splitlines()
    broken = [lines[0]] + [line.rsplit(",", 2)[0] + ",999,In" for line in lines[1:]]
    store.put("raw/d.csv", ("\n".join(broken) + "\n").encode())
    with pytest.raises(DataFileError, match="quarantined"):
        ingest.ingest_object(store, "raw/d.csv", store, "raw/d.csv/e4")
    report = json.loads(store.get("quarantine/raw/d.csv/e4/report.json"))
    assert report["verdict"] == "refused"
    assert report["quarantined_rows"] == report["rows"] > 0
    assert report["quarantine_parts"] and store.keys("clean/") == []


def test_a_failure_that_is_not_the_files_fault_is_reported_as_failed(store, monkeypatch):
    store.put("raw/f.csv", raw_bytes(5))
    monkeypatch.setattr(validate, "DEFAULT_SEEN_MEMORY_KEYS", 10)  # the duplicate check goes to disk

    def disk_full(self, keys):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(validate.SeenReadings, "_append", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ingest.ingest_object(store, "raw/f.csv", store, "raw/f.csv/e7")
    report = json.loads(store.get("quarantine/raw/f.csv/e7/report.json"))
    assert report["verdict"] == "failed"
    assert report["error"] == "OSError: [Errno 28] No space left on device"
    assert report["sha256"] == hashlib.sha256(store.get("raw/f.csv")).hexdigest()


def test_the_object_is_read_in_blocks_not_whole(store, monkeypatch):
    data = raw_bytes(60, scale=1.0)  # about 3 MB: several 1 MiB blocks
    monkeypatch.setattr(store, "open", lambda key: CountingStream(data))
    CountingStream.largest = 0
    report = ingest.ingest_object(store, "raw/e.csv", store, "raw/e.csv/e5", chunk_rows=1000)
    assert report["bytes"] == len(data) > 2 * CountingStream.largest


def test_a_missing_object_raises_key_error(store):
    with pytest.raises(KeyError):
        ingest.ingest_object(store, "raw/none.csv", store, "raw/none.csv/e6")


def test_a_refused_file_is_named_by_its_key_in_the_message(tmp_path):
    store = DirectoryStore(tmp_path)
    store.put("raw/empty.csv", b"")
    with pytest.raises(DataFileError, match=r"^raw/empty\.csv: the file is empty"):
        ingest.ingest_object(store, "raw/empty.csv", store, "raw/empty.csv/e")


def test_clean_parts_read_back_as_the_clean_frames(store):
    data = raw_bytes(5)
    store.put("raw/g.csv", data)
    report = ingest.ingest_object(store, "raw/g.csv", store, "raw/g.csv/e8", chunk_rows=300)
    expected = validate.validate_file(
        iter_raw_chunks(io.BytesIO(data), chunk_rows=3000), collect=True
    ).clean.reset_index(drop=True)
    parts = [pd.read_parquet(io.BytesIO(store.get(part))) for part in report["clean_parts"]]
    assert len(parts) > 1
    assert all({c: str(t) for c, t in part.dtypes.items()} == CLEAN_DTYPES for part in parts)
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), expected)


def test_a_failed_upload_fails_the_run_and_lists_only_the_parts_written(store, monkeypatch):
    store.put("raw/h.csv", raw_bytes(5))
    put = store.put

    def put_failing_the_second_part(key: str, data: bytes) -> None:
        if key.endswith("part-00001.parquet"):
            raise OSError("the store went away")
        put(key, data)

    monkeypatch.setattr(store, "put", put_failing_the_second_part)
    with pytest.raises(OSError, match="went away"):
        ingest.ingest_object(store, "raw/h.csv", store, "raw/h.csv/e9", chunk_rows=1000)
    report = json.loads(store.get("quarantine/raw/h.csv/e9/report.json"))
    assert report["verdict"] == "failed"
    assert report["error"] == "OSError: the store went away"
    assert report["clean_parts"] == ["clean/raw/h.csv/e9/part-00000.parquet"]
    assert store.keys("clean/") == report["clean_parts"]

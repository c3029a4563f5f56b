"""The synthetic data generator: layout, statistics, determinism, chunking, streaming."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.pipeline import generate
from r3e_testbed.pipeline.generate import BASE_ROWS, generate_readings, iter_readings, write_csv
from r3e_testbed.pipeline.load import read_raw
from r3e_testbed.pipeline.schema import DATE_FORMAT, RAW_COLUMNS

ID_PATTERN = r"__export__\.temp_log_\d+_[0-9a-f]{8}"
DATE_PATTERN = r"\d{2}-\d{2}-\d{4} \d{2}:\d{2}"
KEY = ["room_id/id", "noted_date", "temp", "out/in"]


@pytest.fixture(scope="module")
def scale1() -> pd.DataFrame:
    return generate_readings(1.0, seed=0)


@pytest.fixture(scope="module")
def times(scale1: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(scale1["noted_date"], format=DATE_FORMAT)


def test_scale1_row_count_and_layout(scale1: pd.DataFrame) -> None:
    assert abs(len(scale1) - BASE_ROWS) <= 0.01 * BASE_ROWS
    assert tuple(scale1.columns) == RAW_COLUMNS
    assert scale1["temp"].dtype == np.int64
    assert all(pd.api.types.is_string_dtype(scale1[c]) for c in RAW_COLUMNS if c != "temp")
    assert scale1["id"].str.fullmatch(ID_PATTERN).all()
    assert scale1["noted_date"].str.fullmatch(DATE_PATTERN).all()
    assert set(scale1["out/in"]) == {"In", "Out"}
    assert set(scale1["room_id/id"]) == {"Room Admin"}
    assert list(scale1.index) == list(range(len(scale1)))


def test_scale1_out_fraction_and_temperatures(scale1: pd.DataFrame) -> None:
    out = scale1["out/in"] == "Out"
    assert out.mean() == pytest.approx(0.79, abs=0.02)
    inside, outside = scale1.loc[~out, "temp"], scale1.loc[out, "temp"]
    assert 28 <= inside.mean() <= 31
    assert 34 <= outside.mean() <= 38
    assert outside.std() > 2 * inside.std()
    assert scale1["temp"].min() >= 21
    assert scale1["temp"].max() <= 51


def test_scale1_date_range_gaps_and_newest_first(scale1: pd.DataFrame, times: pd.Series) -> None:
    assert times.min().date() == pd.Timestamp("2018-07-28").date()
    assert times.max().date() == pd.Timestamp("2018-12-08").date()
    assert times.max().hour <= 9  # the last day stops in the morning, like the original
    days_present = times.dt.normalize().nunique()
    assert 120 <= days_present < 134  # a few whole days missing
    # Whole hours without a reading on days that have readings.
    hours = times.dt.floor("h").unique()
    span_hours = (times.max() - times.min()) / pd.Timedelta(hours=1)
    assert len(hours) < 0.97 * span_hours
    # Irregular rate: the busiest day has many times the readings of the quietest one.
    per_day = times.dt.normalize().value_counts()
    assert per_day.max() > 5 * per_day.min()
    # Newest first, as in the original export.
    assert times.is_monotonic_decreasing


def test_scale1_duplicates(scale1: pd.DataFrame) -> None:
    dup = scale1.duplicated(KEY)
    assert 0.005 <= dup.mean() <= 0.02
    # Some exported twice under the same id, some under a new id.
    same_id = scale1.duplicated(["id", *KEY])
    assert 0 < same_id.sum() < dup.sum()
    assert scale1["id"].duplicated().sum() == same_id.sum()


def test_scale1_daily_cycle_and_seasons(scale1: pd.DataFrame, times: pd.Series) -> None:
    out = scale1["out/in"] == "Out"
    by_hour = scale1.loc[out, "temp"].groupby(times[out].dt.hour).mean()
    assert by_hour[14] - by_hour[4] > 4
    by_month = scale1.loc[out, "temp"].groupby(times[out].dt.month).mean()
    assert by_month[10] - by_month[12] > 2.5  # winter cooling after the post-monsoon
    inside = scale1.loc[~out, "temp"].groupby(times[~out].dt.month).mean()
    assert (by_month - inside).min() > 4  # Out warmer than In in every month


def test_ids_grow_with_time(scale1: pd.DataFrame) -> None:
    numbers = scale1["id"].str.extract(r"temp_log_(\d+)_")[0].astype(int)
    assert numbers.iloc[0] > numbers.iloc[-1]
    assert (numbers.diff().dropna() <= 0).mean() > 0.99  # newest (largest) first
    assert 1.5 * len(scale1) < numbers.max() < 2.5 * len(scale1)


def test_same_seed_same_frame_different_seed_different() -> None:
    a = generate_readings(0.5, seed=7, days=12)
    b = generate_readings(0.5, seed=7, days=12)
    c = generate_readings(0.5, seed=8, days=12)
    pd.testing.assert_frame_equal(a, b)
    assert len(c) == len(a)  # the row count depends on the scale only
    assert not a["temp"].equals(c["temp"])
    assert not a["noted_date"].equals(c["noted_date"])


@pytest.mark.parametrize("chunk_rows", [1, 250, 997, 100_000])  # a day has about 590 rows
def test_chunks_concatenate_to_the_whole(chunk_rows: int) -> None:
    scale = 0.01 if chunk_rows == 1 else 0.8
    whole = generate_readings(scale, seed=3, days=20)
    chunks = list(iter_readings(scale, seed=3, days=20, chunk_rows=chunk_rows))
    assert len(chunks) == -(-len(whole) // chunk_rows)
    assert all(len(c) == chunk_rows for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= chunk_rows
    pd.testing.assert_frame_equal(pd.concat(chunks), whole)


def test_start_and_days_are_respected() -> None:
    frame = generate_readings(0.02, seed=1, start="2019-01-10", days=5)
    times = pd.to_datetime(frame["noted_date"], format=DATE_FORMAT)
    assert times.min() >= pd.Timestamp("2019-01-10")
    assert times.max() < pd.Timestamp("2019-01-15 10:00")
    assert len(frame) == round(BASE_ROWS * 0.02 * 5 / 133)  # same density, shorter span


def test_larger_scales_add_rooms() -> None:
    frame = generate_readings(2.5, seed=0, days=3)
    rooms = frame["room_id/id"].value_counts()
    assert sorted(rooms.index) == ["Room 002", "Room 003", "Room Admin"]
    assert rooms.min() > 0.25 * len(frame)
    assert len(frame) == round(BASE_ROWS * 2.5 * 3 / 133)


def test_scale_zero_is_empty_with_header() -> None:
    frame = generate_readings(0.0)
    assert len(frame) == 0
    assert tuple(frame.columns) == RAW_COLUMNS
    buffer = io.BytesIO()
    assert write_csv(buffer, 0.0) == 0
    assert buffer.getvalue() == b"id,room_id/id,noted_date,temp,out/in\n"


@pytest.mark.parametrize("kwargs", [{"scale": -1}, {"scale": float("nan")}, {"days": 0}, {"chunk_rows": 0}])
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        next(iter_readings(**kwargs))


def test_write_csv_path_binary_and_text_agree(tmp_path) -> None:
    path = tmp_path / "gen.csv"
    rows = write_csv(path, 0.3, seed=5, days=10, chunk_rows=700)
    binary, text = io.BytesIO(), io.StringIO()
    assert write_csv(binary, 0.3, seed=5, days=10) == rows
    assert write_csv(text, 0.3, seed=5, days=10, chunk_rows=50) == rows
    data = path.read_bytes()
    assert data == binary.getvalue() == text.getvalue().encode("utf-8")
    lines = data.decode("utf-8").split("\n")
    assert lines[0] == "id,room_id/id,noted_date,temp,out/in"
    assert lines[-1] == ""  # ends with a newline
    assert len(lines) == rows + 2
    assert re.fullmatch(rf"{ID_PATTERN},Room Admin,{DATE_PATTERN},\d+,(In|Out)", lines[1])
    assert "\r" not in data.decode("utf-8")


def test_written_csv_reads_back_as_the_frame(tmp_path) -> None:
    path = tmp_path / "gen.csv"
    write_csv(path, 0.5, seed=2, days=10)
    expected = generate_readings(0.5, seed=2, days=10).astype({"temp": "str"})
    pd.testing.assert_frame_equal(read_raw(path), expected, check_dtype=False)


def test_hex8_formats_32_bit_values() -> None:
    values = np.array([0, 1, 0xBD201015, 2**32 - 1], dtype=np.uint64)
    assert list(generate._hex8(values)) == ["00000000", "00000001", "bd201015", "ffffffff"]


def test_command_line_writes_the_same_file_as_write_csv(tmp_path, capsys):
    from r3e_testbed.pipeline.generate import main

    assert main([str(tmp_path / "cli.csv"), "--scale", "0.05", "--seed", "3", "--days", "10"]) == 0
    rows = write_csv(tmp_path / "api.csv", 0.05, 3, days=10)
    assert (tmp_path / "cli.csv").read_bytes() == (tmp_path / "api.csv").read_bytes()
    assert f"{rows:,} rows" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "bad.csv"), "--scale", "0"])

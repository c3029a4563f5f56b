"""Validation with pandera: clean rows, quarantine reasons, duplicates, file-level verdicts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute
import pytest
from pandera.config import config_context

from r3e_testbed.pipeline import validate
from r3e_testbed.pipeline.generate import generate_readings, write_csv
from r3e_testbed.pipeline.load import DataFileError, iter_raw_chunks, read_raw
from r3e_testbed.pipeline.schema import CLEAN_COLUMNS, CLEAN_DTYPES, DATE_FORMAT, RAW_COLUMNS
from r3e_testbed.pipeline.validate import (
    CLEAN_SCHEMA,
    DATE_CODE,
    FIELDS_CODE,
    LOCATION_CODE,
    MONTH_FIRST_CODE,
    QUARANTINE_COLUMNS,
    TEMP_NUMBER_CODE,
    TEMP_RANGE_CODE,
    YEAR_CODE,
    SeenReadings,
    parse_noted_date,
    validate_chunk,
    validate_file,
)

HEAD = Path(__file__).parent / "data" / "IOT-temp-head.csv"
HEADER = "id,room_id/id,noted_date,temp,out/in\n"


def raw(*rows: tuple[str, str, str, str, str], start: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(RAW_COLUMNS), dtype="str")
    frame.index = pd.RangeIndex(start, start + len(frame))
    return frame


def good(i: int, temp: str = "29", minute: int = 0, room: str = "Room Admin") -> tuple[str, ...]:
    return (f"__export__.temp_log_{i}_0000abcd", room, f"08-12-2018 09:{minute:02d}", temp, "In")


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def test_clean_rows_are_canonical() -> None:
    result = validate_chunk(raw(good(1), ("x2", "Room Admin", "28-07-2018 07:06", "41.5", "Out")))
    clean = result.clean
    assert tuple(clean.columns) == CLEAN_COLUMNS
    assert {c: str(t) for c, t in clean.dtypes.items()} == CLEAN_DTYPES
    assert clean["noted_at"].tolist() == [pd.Timestamp("2018-12-08 09:00"), pd.Timestamp("2018-07-28 07:06")]
    assert clean["temp"].tolist() == [29.0, 41.5]
    assert clean["location"].tolist() == ["In", "Out"]
    assert clean["room_id"].tolist() == ["Room Admin"] * 2
    assert result.quarantined == 0
    assert result.reason_counts == {}
    assert result.rows == 2
    assert result.duplicates == 0
    CLEAN_SCHEMA.validate(clean)  # the contract holds


def test_the_original_head_validates() -> None:
    result = validate_chunk(read_raw(HEAD))
    assert result.quarantined == 0
    assert result.duplicates == 3  # three readings are exported twice under different ids
    assert len(result.clean) == 7
    assert result.clean["id"].iloc[0] == "__export__.temp_log_196134_bd201015"  # first one kept
    assert result.clean["noted_at"].min() == pd.Timestamp("2018-07-28 07:06")
    assert result.clean["noted_at"].max() == pd.Timestamp("2018-12-08 09:30")


@pytest.mark.parametrize(
    ("row", "reason", "code"),
    [
        (("a", "R", "08-12-2018 09:30", "abc", "In"), "temp: 'abc' not a number", TEMP_NUMBER_CODE),
        (("a", "R", "08-12-2018 09:30", "inf", "In"), "temp: 'inf' not a number", TEMP_NUMBER_CODE),
        (("a", "R", "08-12-2018 09:30", "999", "In"), "temp: '999' outside -30..70 °C", TEMP_RANGE_CODE),
        (("a", "R", "08-12-2018 09:30", "85", "Out"), "temp: '85' outside -30..70 °C", TEMP_RANGE_CODE),
        (("a", "R", "08-12-2018 09:30", "-127", "In"), "temp: '-127' outside -30..70 °C", TEMP_RANGE_CODE),
        (
            ("a", "R", "08-13-2018 09:30", "29", "In"),
            "noted_date: '08-13-2018 09:30' is month-first, expected day-first DD-MM-YYYY HH:MM",
            MONTH_FIRST_CODE,
        ),
        (
            ("a", "R", "2018-12-08 09:30", "29", "In"),
            "noted_date: '2018-12-08 09:30' not day-first DD-MM-YYYY HH:MM",
            DATE_CODE,
        ),
        (
            ("a", "R", "32-12-2018 09:30", "29", "In"),
            "noted_date: '32-12-2018 09:30' not day-first DD-MM-YYYY HH:MM",
            DATE_CODE,
        ),
        (
            ("a", "R", "08-12-2018 25:30", "29", "In"),
            "noted_date: '08-12-2018 25:30' not day-first DD-MM-YYYY HH:MM",
            DATE_CODE,
        ),
        (
            ("a", "R", "31-04-2018 09:30", "29", "In"),
            "noted_date: '31-04-2018 09:30' not day-first DD-MM-YYYY HH:MM",
            DATE_CODE,
        ),
        (
            ("a", "R", "08-12-1900 09:30", "29", "In"),
            "noted_date: '08-12-1900 09:30' year outside 1970..2099",
            YEAR_CODE,
        ),
        (("a", "R", "08-12-2018 09:30", "29", "Inside"), "out/in: 'Inside' not In/Out", LOCATION_CODE),
        (("a", "R", "08-12-2018 09:30", "29", "in"), "out/in: 'in' not In/Out", LOCATION_CODE),
        (("", "R", "08-12-2018 09:30", "29", "In"), "id: missing", "id: missing"),
        (("a", "  ", "08-12-2018 09:30", "29", "In"), "room_id/id: missing", "room_id/id: missing"),
        (("a", "R", "", "29", "In"), "noted_date: missing", "noted_date: missing"),
        (("a", "R", "08-12-2018 09:30", "", "In"), "temp: missing", "temp: missing"),
        (("a", "R", "08-12-2018 09:30", "29", ""), "out/in: missing", "out/in: missing"),
    ],
)
def test_bad_rows_are_quarantined_with_their_reason(row: tuple, reason: str, code: str) -> None:
    result = validate_chunk(raw(good(1), row, good(3, minute=5), start=100))
    assert result.clean.index.tolist() == [100, 102]
    assert result.quarantine.columns.tolist() == list(QUARANTINE_COLUMNS)
    assert result.quarantine[list(RAW_COLUMNS)].iloc[0].tolist() == list(row)
    assert result.quarantine["row"].tolist() == [101]
    assert result.quarantine["reason"].tolist() == [reason]
    assert result.reason_counts == {code: 1}
    assert result.examples[code].startswith("data row 101: ")


def test_a_row_with_several_problems_lists_them_all() -> None:
    result = validate_chunk(raw(("", "R", "08-12-2018 09:30", "999", "Inside")))
    assert result.quarantine["reason"].tolist() == [
        "id: missing; temp: '999' outside -30..70 °C; out/in: 'Inside' not In/Out"
    ]
    assert result.quarantined == 1
    assert result.reason_counts == {"id: missing": 1, TEMP_RANGE_CODE: 1, LOCATION_CODE: 1}


def test_limits_and_number_forms_are_accepted() -> None:
    rows = [good(i, temp=t, minute=i) for i, t in enumerate(["-30", "70", "70.0", "29.5", "+21", "1e1"])]
    result = validate_chunk(raw(*rows))
    assert result.quarantined == 0
    assert result.clean["temp"].tolist() == [-30.0, 70.0, 70.0, 29.5, 21.0, 10.0]


def test_day_first_without_zero_padding_is_accepted() -> None:
    result = validate_chunk(raw(("a", "R", "8-7-2018 9:05", "29", "In")))
    assert result.clean["noted_at"].tolist() == [pd.Timestamp("2018-07-08 09:05")]


@pytest.mark.parametrize("dtype", ["str", object])
def test_parse_noted_date_equals_the_strict_pandas_parse(dtype) -> None:
    values = [
        *["08-12-2018 09:30", "8-7-2018 9:05", "29-02-2020 10:00", "01-01-1970 00:00", "31-12-2099 23:59"],
        *["32-12-2018 09:30", "08-13-2018 09:30", "2018-12-08 09:30", "08-12-2018 25:30", "08-12-18 09:30"],
        *[
            "08-12-2018 09:30 x",
            " 08-12-2018 09:30",
            "29-02-2018 10:00",
            "31-04-2018 10:00",
            "00-01-2018 10:00",
        ],
        *[
            "08-12-2018 09:60",
            "08-12-2018 09:30:15",
            "08-12-0000 10:00",
            "31-12-1969 23:59",
            "01-01-2100 00:00",
        ],
        *["", None, "nan", "08-12-02018 09:30"],
    ]
    series = pd.Series(values, dtype=dtype, index=range(10, 10 + len(values)))
    expected = pd.to_datetime(series, format=DATE_FORMAT, errors="coerce")
    expected = expected.where(expected.dt.year.between(1970, 2099)).astype("datetime64[ns]")
    parsed = parse_noted_date(series)
    pd.testing.assert_series_equal(parsed, expected)
    assert parsed.notna().sum() == 5  # the first five


def test_dates_parse_as_pandas_parses_them_strictly() -> None:
    """pyarrow's strptime against pandas on dates near and far from the canonical layout."""
    rng = np.random.default_rng(3)
    n = 20_000
    fields = [
        rng.integers(0, 40, n),  # day
        rng.integers(0, 20, n),  # month
        rng.choice([0, 1900, 1969, 1970, 2000, 2018, 2020, 2099, 2100, 9999], n),
        rng.integers(0, 30, n),  # hour
        rng.integers(0, 70, n),  # minute
    ]
    texts = [f"{d:02d}-{m:02d}-{y:04d} {h:02d}:{mi:02d}" for d, m, y, h, mi in zip(*fields, strict=True)]
    for i in rng.choice(n, n // 10, replace=False):  # a wrong character somewhere
        at = int(rng.integers(0, 16))
        texts[i] = texts[i][:at] + str(rng.choice(list("-: /x9٣"))) + texts[i][at + 1 :]
    texts[:50] = [t.replace("-0", "-", 1) for t in texts[:50]]  # unpadded
    values = pd.Series(texts, dtype="str").mask(rng.random(n) < 0.01)
    times, years, month_first = validate._parse_dates(values)
    day_first = pd.to_datetime(values, format=DATE_FORMAT, errors="coerce")
    expected = day_first.where(day_first.dt.year.between(1970, 2099)).astype("datetime64[ns]")
    np.testing.assert_array_equal(times, expected.to_numpy())
    np.testing.assert_array_equal(years, day_first.dt.year.to_numpy(dtype="float64", na_value=np.nan))
    other = pd.to_datetime(values, format="%m-%d-%Y %H:%M", errors="coerce")
    np.testing.assert_array_equal(month_first, (day_first.isna() & other.notna()).to_numpy())
    assert 0.1 < expected.notna().mean() < 0.9


def test_a_chunk_of_canonical_dates_parses_as_pandas_parses_it() -> None:
    """All in the canonical layout, as the export's are (pyarrow's strptime parses them)."""
    times = pd.date_range("1970-01-01", "2099-12-31 23:59", periods=5000).floor("min")
    times = times.append(pd.DatetimeIndex(["2020-02-29 10:00", "2018-12-31 23:59", "2000-02-29 00:00"]))
    values = pd.Series(times.strftime(DATE_FORMAT), dtype="str")
    parsed, years, month_first = validate._parse_dates(values)
    np.testing.assert_array_equal(parsed, pd.to_datetime(values, format=DATE_FORMAT).to_numpy())
    np.testing.assert_array_equal(years, times.year.to_numpy(dtype="float64"))
    assert not month_first.any()


def test_dates_the_c_library_reads_otherwise_are_left_to_pandas() -> None:
    # strptime skips blanks before numbers, takes 2- and 3-digit years and rolls 31-04 into May
    lenient = [
        " 08-12-2018 09:30",
        "08- 1-2018 09:30",
        "08-12-201809:30",
        "\t8-12-2018 09:30",
        "31-04-2018 10:00",
    ]
    lenient += [
        "29-02-2018 10:00",
        "30-02-2020 10:00",
        "08-12-218  09:30",
        "08-12-18 09:30",
        "01-01-0000 00:00",
    ]
    fine = [
        " 8-12-2018 09:30",
        "08-12-2018  9:30",
        "29-02-2020 10:00",
        "08-12-1900 10:00",
        "08-12-9999 10:00",
    ]
    values = pd.Series(lenient + fine, dtype="str")
    assert (
        pyarrow.compute.strptime(pyarrow.array(lenient), "%d-%m-%Y %H:%M", "s", error_is_null=True).null_count
        == 0
    )
    times, years, month_first = validate._parse_dates(values)
    day_first = pd.to_datetime(values, format=DATE_FORMAT, errors="coerce")
    expected = day_first.where(day_first.dt.year.between(1970, 2099)).astype("datetime64[ns]")
    np.testing.assert_array_equal(times, expected.to_numpy())
    np.testing.assert_array_equal(years, day_first.dt.year.to_numpy(dtype="float64", na_value=np.nan))
    assert np.isnan(years[: len(lenient)]).all()
    assert pd.notna(times[len(lenient) : len(lenient) + 3]).all() and years[-2:].tolist() == [1900, 9999]
    other = pd.to_datetime(values, format="%m-%d-%Y %H:%M", errors="coerce")
    np.testing.assert_array_equal(month_first, (day_first.isna() & other.notna()).to_numpy())


@pytest.mark.parametrize("blank", ["", " ", "\t", "  \t ", "\u00a0", "\u2003", "\u3000 ", "\x1f", "\r"])
def test_blank_fields_of_any_whitespace_are_missing(blank: str) -> None:
    result = validate_chunk(raw(good(1), ("a", blank, "08-12-2018 09:30", "29", "In")))
    assert result.quarantine["reason"].tolist() == ["room_id/id: missing"]
    # not blank: whitespace around a value, or a value of characters that are no whitespace
    for room in (" R", "R ", "\u00e9", "\u200b"):
        assert validate_chunk(raw(good(1, room=room))).quarantined == 0


@pytest.mark.parametrize("dtype", ["str", object])
@pytest.mark.parametrize(
    "values",
    [
        ["29", "-5", "007", "-0", None, "9007199254740993", "99999999999999999999"],  # whole numbers
        ["29", "0x1A", "0X1a"],  # hexadecimal: pyarrow's integer cast would take it
        ["29", "+21", " 29", "29 ", "--5", "-", "1_0", "٢٩", "1e1", "29.5", "inf", "-inf", "nan", ""],
        [None, None],
    ],
)
def test_parse_numbers_equals_pandas_to_numeric(values: list, dtype) -> None:
    series = pd.Series(values, dtype=dtype)
    expected = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    np.testing.assert_array_equal(validate._parse_numbers(series), expected)


def test_each_chunk_parses_its_dates_and_temperatures_once(monkeypatch) -> None:
    calls: list[str] = []
    for name in ("_parse_dates", "_parse_numbers"):
        real = getattr(validate, name)
        monkeypatch.setattr(
            validate, name, lambda values, real=real, name=name: calls.append(name) or real(values)
        )
    rows = [good(1), ("a", "R", "08-13-2018 09:30", "999", "In"), ("b", "R", "x", "hot", "In")]
    chunks = iter_raw_chunks(io.BytesIO(csv_bytes(raw(*rows * 2))), chunk_rows=3)
    report = validate_file(chunks, max_bad_fraction=1, max_month_first_fraction=1)
    assert (report.chunks, report.clean_rows, report.quarantined_rows) == (2, 1, 4)
    assert sorted(calls) == ["_parse_dates"] * 2 + ["_parse_numbers"] * 2


def test_a_month_first_date_with_day_up_to_12_cannot_be_told_apart() -> None:
    # Why month-first files are judged at file level: this row (meant as 12 August) passes.
    result = validate_chunk(raw(("a", "R", "08-12-2018 09:30", "29", "In")))
    assert result.clean["noted_at"].tolist() == [pd.Timestamp("2018-12-08 09:30")]


def test_lines_with_too_many_fields_are_quarantined() -> None:
    data = (HEADER + "a,Room, Admin,08-12-2018 09:30,29,In\n").encode() + csv_bytes(raw(good(1)))[
        len(HEADER) :
    ]
    (chunk,) = list(iter_raw_chunks(io.BytesIO(data)))
    result = validate_chunk(chunk)
    assert result.rows == 2
    assert len(result.clean) == 1
    assert result.quarantine["reason"].tolist() == ["line 2: expected 5 fields, saw 6"]
    assert result.quarantine["row"].isna().all()
    assert result.reason_counts == {FIELDS_CODE: 1}


def test_a_short_row_is_quarantined_naming_each_missing_field() -> None:
    data = (HEADER + ",".join(good(1)) + "\n__export__.temp_log_2_00000000,Room Admin,08-12-20\n").encode()
    result = validate_chunk(read_raw(io.BytesIO(data)))
    assert len(result.clean) == 1
    assert result.quarantine["reason"].tolist() == [
        "noted_date: '08-12-20' not day-first DD-MM-YYYY HH:MM; temp: missing; out/in: missing"
    ]


def test_duplicates_within_a_chunk_are_dropped_and_counted() -> None:
    chunk = raw(good(1), good(2), good(3, temp="30"), good(4, room="Room 002"), good(1))
    result = validate_chunk(chunk)
    assert result.duplicates == 2  # id 2 (new id, same reading) and the second id 1
    assert result.clean["id"].tolist() == [good(i)[0] for i in (1, 3, 4)]
    assert result.quarantined == 0


def test_a_bad_row_is_no_duplicate_of_a_good_one() -> None:
    result = validate_chunk(raw(good(1), (*good(2)[:4], "Inside")))
    assert result.duplicates == 0
    assert result.quarantined == 1


def test_duplicates_across_chunk_boundaries_are_caught() -> None:
    rows = [good(i, minute=i) for i in range(6)] + [good(99, minute=1), good(98, minute=5)]
    data = csv_bytes(raw(*rows))
    report = validate_file(iter_raw_chunks(io.BytesIO(data), chunk_rows=3), collect=True)
    assert report.chunks == 3
    assert report.duplicates == 2
    assert report.clean_rows == 6
    assert report.clean["id"].tolist() == [good(i)[0] for i in range(6)]
    # Chunk by chunk without the shared set, the repeats would go unnoticed.
    assert sum(validate_chunk(c).duplicates for c in iter_raw_chunks(io.BytesIO(data), chunk_rows=3)) == 0


def test_validator_finds_exactly_the_generated_duplicates() -> None:
    frame = generate_readings(0.3, seed=4, days=20)
    expected = int(frame.duplicated(["room_id/id", "noted_date", "temp", "out/in"]).sum())
    assert expected > 10
    report = validate_file(iter_raw_chunks(io.BytesIO(csv_bytes(frame)), chunk_rows=500))
    assert report.duplicates == expected
    assert report.quarantined_rows == 0
    assert report.clean_rows == len(frame) - expected


def damaged_file(seed: int = 9) -> bytes:
    """A generated file with a sprinkling of every kind of bad row."""
    frame = generate_readings(0.4, seed=seed, days=15).astype({"temp": "str"})
    rng = np.random.default_rng(seed)
    bad = rng.choice(len(frame), 60, replace=False)
    frame.loc[bad[:15], "temp"] = "999"
    frame.loc[bad[15:30], "temp"] = "n/a"
    frame.loc[bad[30:45], "out/in"] = "Inside"
    frame.loc[bad[45:], "noted_date"] = "2018-08-01 10:00"
    return csv_bytes(frame)


def test_chunked_and_unchunked_results_are_equal() -> None:
    data = damaged_file()
    small = validate_file(iter_raw_chunks(io.BytesIO(data), chunk_rows=333), collect=True)
    whole = validate_file(iter_raw_chunks(io.BytesIO(data), chunk_rows=10**6), collect=True)
    assert small.chunks > 5
    assert whole.chunks == 1
    pd.testing.assert_frame_equal(small.clean, whole.clean)
    pd.testing.assert_frame_equal(small.quarantine, whole.quarantine)
    for field in ("rows", "clean_rows", "quarantined_rows", "duplicates", "reason_counts", "examples"):
        assert getattr(small, field) == getattr(whole, field), field
    assert whole.quarantined_rows == 60
    assert whole.reason_counts == {
        TEMP_RANGE_CODE: 15,
        TEMP_NUMBER_CODE: 15,
        LOCATION_CODE: 15,
        DATE_CODE: 15,
    }
    assert whole.rows == whole.clean_rows + whole.quarantined_rows + whole.duplicates


def test_file_report_summary_and_callback() -> None:
    data = b"id,room_id/id,noted_date,temp,out/in,battery\n" + b"".join(
        (",".join(good(i, minute=i)) + ",97\n").encode() for i in range(5)
    )
    seen: list[int] = []
    report = validate_file(
        iter_raw_chunks(io.BytesIO(data), chunk_rows=2), on_result=lambda r: seen.append(r.rows)
    )
    assert seen == [2, 2, 1]
    assert report.clean is None  # not collected by default
    assert report.warnings == ["<BytesIO>: ignored extra column(s) 'battery'"]
    summary = json.loads(json.dumps(report.summary()))
    assert summary["rows"] == 5
    assert summary["clean_rows"] == 5
    assert summary["bad_fraction"] == 0.0
    assert summary["name"] == "<BytesIO>"


def test_header_only_file_is_unusable() -> None:
    with pytest.raises(DataFileError, match="no data rows"):
        validate_file(iter_raw_chunks(io.BytesIO(HEADER.encode())))


def test_file_without_valid_rows_is_unusable() -> None:
    data = csv_bytes(raw(*[(f"a{i}", "R", "08-12-2018 09:30", "hot", "In") for i in range(4)]))
    with pytest.raises(DataFileError) as error:
        validate_file(iter_raw_chunks(io.BytesIO(data)))
    text = str(error.value)
    assert "no valid rows: all 4 rows quarantined" in text
    assert "top reason 'temp: not a number' (4 rows)" in text
    assert "data row 0: 'a0,R,08-12-2018 09:30,hot,In'" in text


def test_too_many_bad_rows_make_the_file_unusable() -> None:
    rows = [good(i, minute=i) for i in range(4)] + [
        (f"b{i}", "R", "08-12-2018 09:30", "29", "Inn") for i in range(6)
    ]
    data = csv_bytes(raw(*rows))
    with pytest.raises(DataFileError) as error:
        validate_file(iter_raw_chunks(io.BytesIO(data)))
    text = str(error.value)
    assert "6 of 10 rows quarantined (60.0%, more than the allowed 50%)" in text
    assert "top reason 'out/in: not In/Out' (6 rows)" in text
    # A looser threshold accepts it; a stricter one refuses a file with 30 % bad rows.
    assert validate_file(iter_raw_chunks(io.BytesIO(data)), max_bad_fraction=0.7).clean_rows == 4
    data30 = csv_bytes(raw(*rows[:7]))
    assert validate_file(iter_raw_chunks(io.BytesIO(data30))).quarantined_rows == 3
    with pytest.raises(DataFileError, match="more than the allowed 20%"):
        validate_file(iter_raw_chunks(io.BytesIO(data30)), max_bad_fraction=0.2)


def month_first(frame: pd.DataFrame) -> pd.DataFrame:
    times = pd.to_datetime(frame["noted_date"], format=DATE_FORMAT)
    return frame.assign(noted_date=times.dt.strftime("%m-%d-%Y %H:%M"))


def test_a_month_first_file_is_refused() -> None:
    data = csv_bytes(month_first(generate_readings(0.3, seed=6, days=40)))
    with pytest.raises(DataFileError) as error:
        validate_file(iter_raw_chunks(io.BytesIO(data), chunk_rows=1000))
    text = str(error.value)
    assert "dates look month-first (MM-DD-YYYY)" in text
    assert "parse only month-first" in text


def test_a_month_first_file_with_few_late_days_is_refused_too() -> None:
    # Only the days 1..14 of each month: 2/14 of the rows fail, far below max_bad_fraction.
    frame = generate_readings(0.5, seed=6, days=40)
    day = pd.to_datetime(frame["noted_date"], format=DATE_FORMAT).dt.day
    data = csv_bytes(month_first(frame[day <= 14]))
    with pytest.raises(DataFileError, match=r"\(\d+\.\d%\) parse only month-first") as error:
        validate_file(iter_raw_chunks(io.BytesIO(data)))
    assert "rows with a day of 12 or less would be silently misread" in str(error.value)


def test_scale_2_streams_chunk_by_chunk() -> None:
    data = io.BytesIO()
    rows = write_csv(data, 2.0, seed=1)
    data.seek(0)
    sizes: list[tuple[int, int, int]] = []
    report = validate_file(
        iter_raw_chunks(data, chunk_rows=10_000),
        on_result=lambda r: sizes.append((r.rows, len(r.clean), r.quarantined)),
    )
    assert max(n for n, _, _ in sizes) == 10_000
    assert all(clean <= 10_000 and bad == 0 for _, clean, bad in sizes)
    assert report.rows == rows
    assert report.clean_rows + report.duplicates == rows
    assert report.clean is None


def test_chunks_from_the_generator_work_directly() -> None:
    frame = generate_readings(0.2, seed=2, days=5)  # temp is int here
    result = validate_chunk(frame)
    assert result.quarantined == 0
    assert len(result.clean) + result.duplicates == len(frame)


def test_a_chunk_without_the_required_columns_is_refused() -> None:
    with pytest.raises(DataFileError, match="'out/in'"):
        validate_chunk(pd.DataFrame({"id": ["a"], "room_id/id": ["R"], "noted_date": ["x"], "temp": ["1"]}))


def test_refuses_to_run_with_pandera_disabled() -> None:
    with config_context(validation_enabled=False), pytest.raises(RuntimeError, match="disabled"):
        validate_chunk(raw(good(1)))


def seen_reference(batches: list[np.ndarray]) -> list[np.ndarray]:
    """For each batch, which hashes a set would have seen before (earlier batch or earlier in it)."""
    reference: set[int] = set()
    masks = []
    for batch in batches:
        mask = np.zeros(len(batch), dtype=bool)
        for i, h in enumerate(batch.tolist()):
            mask[i] = h in reference
            reference.add(h)
        masks.append(mask)
    return masks


@pytest.mark.parametrize("max_memory_keys", [10**6, 300, 1])
@pytest.mark.parametrize("in_time_order", [True, False])
def test_seen_readings_behaves_like_a_set(
    max_memory_keys: int, in_time_order: bool, tmp_path: Path, monkeypatch
) -> None:
    compactions: list[int] = []
    compact = SeenReadings._compact
    monkeypatch.setattr(SeenReadings, "_compact", lambda self: compactions.append(1) or compact(self))
    rng = np.random.default_rng(0)
    if in_time_order:  # each batch a little further on, overlapping the one before
        batches = [rng.integers(100 * b, 100 * b + 400, 300, dtype=np.uint64) for b in range(40)]
    else:
        batches = [rng.integers(0, 5000, 300, dtype=np.uint64) for _ in range(40)]
    seen = SeenReadings(max_memory_keys=max_memory_keys, spill_dir=str(tmp_path))
    for batch, expected in zip(batches, seen_reference(batches), strict=True):
        hours = batch.astype(np.int64) // 7  # equal readings are of equal hours
        if not in_time_order:
            hours *= 10_000  # spread over centuries: _counted sorts instead of counting in one pass
        assert (seen.add(hours, batch) == expected).all()
        assert len(seen._hashes) <= max_memory_keys  # the rest went to disk
        live = seen._file_keys - seen._dead_keys
        assert seen._dead_keys <= max(live, max_memory_keys)  # superseded runs are reclaimed
    assert len(seen) == len(set(np.concatenate(batches).tolist()))
    assert (seen.filed_hours > 0) == (max_memory_keys < 1000)
    if max_memory_keys == 300:  # room for the hours two batches share: runs are rewritten out of order only
        assert bool(compactions) == (not in_time_order)
    assert list(tmp_path.iterdir()) == []  # the file has no name: nothing to leave behind
    seen.close()
    assert seen._file is None
    assert len(seen) == 0


def test_hashes_are_ordered_stably_also_when_they_differ_in_their_low_bits_only() -> None:
    rng = np.random.default_rng(5)
    hashes = rng.integers(0, 2**63, 1000, dtype=np.int64).view(np.uint64)
    hashes[::7] = hashes[3]  # repeats keep their order
    for low_bits_only in (False, True):
        if low_bits_only:  # sorting with the positions in the low bits cannot order these alone
            hashes[10], hashes[20] = np.uint64(2**40 + 5), np.uint64(2**40 + 1)
        order, ordered = validate._stable_order(hashes)
        np.testing.assert_array_equal(order, np.argsort(hashes, kind="stable"))
        np.testing.assert_array_equal(ordered, np.sort(hashes))


@pytest.mark.parametrize("span", [10, 10**9])
def test_hour_helpers_equal_numpy(span: int) -> None:
    rng = np.random.default_rng(6)
    hours = rng.integers(400_000, 400_000 + span, 5000)
    wanted = rng.choice(hours, 30)
    np.testing.assert_array_equal(validate._isin_hours(hours, wanted), np.isin(hours, wanted))
    np.testing.assert_array_equal(validate._isin_hours(hours, []), np.zeros(len(hours), dtype=bool))
    np.testing.assert_array_equal(validate._stable_hour_order(hours), np.argsort(hours, kind="stable"))


def test_seen_readings_of_a_file_in_time_order_write_each_hour_once(monkeypatch) -> None:
    reads: list[int] = []
    read = SeenReadings._read
    monkeypatch.setattr(SeenReadings, "_read", lambda self, *args: reads.append(1) or read(self, *args))
    seen = SeenReadings(max_memory_keys=500)
    batches = [np.arange(100 * b, 100 * b + 150, dtype=np.uint64) for b in range(50)]  # hours 0..712
    for batch, expected in zip(batches, seen_reference(batches), strict=True):
        assert (seen.add(batch.astype(np.int64) // 7, batch) == expected).all()
    assert seen.filed_hours > 500
    assert reads == []  # never read back
    assert seen._dead_keys == 0  # nor rewritten
    assert seen._file_keys + len(seen._hashes) == len(seen)
    seen.close()


def test_duplicates_are_found_when_the_seen_readings_go_to_disk(monkeypatch) -> None:
    monkeypatch.setattr(validate, "DEFAULT_SEEN_MEMORY_KEYS", 40)
    filed: list[int] = []
    file_away = SeenReadings._file_away
    monkeypatch.setattr(
        SeenReadings, "_file_away", lambda self: file_away(self) or filed.append(self.filed_hours)
    )
    frame = generate_readings(0.3, seed=4, days=20)
    expected = int(frame.duplicated(["room_id/id", "noted_date", "temp", "out/in"]).sum())
    shuffled = frame.sample(frac=1.0, random_state=1)  # out of time order: filed hours come back
    for data in (frame, shuffled):
        report = validate_file(iter_raw_chunks(io.BytesIO(csv_bytes(data)), chunk_rows=200), collect=True)
        assert report.duplicates == expected
        assert report.clean is not None
        assert not report.clean.duplicated(["room_id", "noted_at", "temp", "location"]).any()
    assert max(filed) > 100

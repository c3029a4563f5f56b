"""Validate raw chunks with pandera: clean rows go on, bad rows go to quarantine with a reason.

Two pandera schemas do the checking (nothing is hand-rolled):

* :data:`RAW_SCHEMA` on the raw text (after blank fields became missing): every field present,
  ``noted_date`` day-first ``DD-MM-YYYY HH:MM`` (parsed strictly with ``schema.DATE_FORMAT``;
  unpadded "8-7-2018 9:05" is accepted, 31-04 is not) with a year in ``YEAR_MIN..YEAR_MAX``,
  ``temp`` a finite number within ``TEMP_MIN..TEMP_MAX``, ``out/in`` exactly "In" or "Out"
  (case and spaces matter). The checks are pandera ``Check`` objects: built-in ``isin`` and
  vectorised functions; all run on every row, so a row's reason lists all its problems.
* :data:`CLEAN_SCHEMA` on the canonical frame built from the rows that passed: the dtypes of
  ``schema.CLEAN_DTYPES``, ``temp`` within ``TEMP_MIN..TEMP_MAX``, ``location`` In/Out. It is
  the contract of the clean data (later steps may validate their input with it); rows failing
  it are quarantined too, though after the raw checks none should.

Each quarantined row keeps its raw fields, its data row number (``row``) and a ``reason``
naming every problem with its value (``temp: '999' outside -30..70 °C; out/in: 'Inside' not
In/Out``). Counts are per reason *code*, the reason without the value (``temp: outside -30..70
°C``); a row with two problems counts under both codes but once in ``quarantined``. Lines the
loader could not split into the header's fields count as quarantined rows (code ``row: wrong
number of fields``).

Day-first dates: a month-first date with a day above 12 (``12-13-2018 09:30``) fails the strict
day-first parse and is quarantined with its own code (``noted_date: month-first ...``) because it
does parse month-first; one with a day of 12 or less cannot be told apart row by row. A whole
month-first file is therefore detected at file level: :func:`validate_file` refuses a file in
which more than ``max_month_first_fraction`` (default 1 %) of the rows are month-first-only
(a day-first file has none), and in any case one in which more than ``max_bad_fraction`` of
the rows were quarantined (about 19/31 of a month-first file's rows are).

Duplicates: rows of the same reading (equal ``DUPLICATE_KEY``: room, time, temperature,
location; ids ignored, since the export repeats readings under new ids) are not bad rows. The
first occurrence stays in ``clean``, later ones are dropped and counted. Within a chunk this is
``DataFrame.duplicated``; across chunks :func:`validate_file` keeps a :class:`SeenReadings` set of
64-bit row hashes (8 bytes per distinct reading: 80 MB for 10 M readings; a false "duplicate"
needs a 64-bit hash collision, odds about n²/2⁶⁵, 3e-6 at 10 M rows).

The reason codes (``*_CODE`` constants) are stable strings, fit for metrics labels: ``<column>:
missing``, ``noted_date: not day-first DD-MM-YYYY HH:MM``, ``noted_date: month-first, expected
day-first DD-MM-YYYY HH:MM``, ``noted_date: year outside 1970..2099``, ``temp: not a number``,
``temp: outside -30..70 °C``, ``out/in: not In/Out``, ``row: wrong number of fields``.

Memory: :func:`validate_chunk` holds one chunk; :func:`validate_file` holds one chunk plus the
hash set, unless ``collect=True`` (small files, tests) asks it to keep the clean and quarantined
rows. ``on_result`` receives each chunk's result, e.g. to append clean rows to a staging file:
the file-level verdict comes after the last chunk, so publish the staged output only once
:func:`validate_file` has returned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.compute as pc
from pandera.config import get_config_context

from r3e_testbed.pipeline.load import DataFileError, RawCsvReader
from r3e_testbed.pipeline.schema import (
    CLEAN_DTYPES,
    CLEAN_ID,
    CLEAN_LOCATION,
    CLEAN_ROOM,
    CLEAN_TEMP,
    CLEAN_TIME,
    DATE_FORMAT,
    DATE_LAYOUT,
    DUPLICATE_KEY,
    LOCATIONS,
    MONTH_FIRST_FORMAT,
    RAW_COLUMNS,
    RAW_DATE,
    RAW_ID,
    RAW_LOCATION,
    RAW_ROOM,
    RAW_TEMP,
    RAW_TO_CLEAN,
    TEMP_MAX,
    TEMP_MIN,
    YEAR_MAX,
    YEAR_MIN,
)

DEFAULT_MAX_BAD_FRACTION = 0.5
DEFAULT_MAX_MONTH_FIRST_FRACTION = 0.01

_RANGE = f"{TEMP_MIN:g}..{TEMP_MAX:g} °C"
_LOCATIONS_TEXT = "/".join(LOCATIONS)

# Reason codes (what is counted) and the per-row detail ({v}: the raw value, quoted).
DATE_CODE = f"noted_date: not day-first {DATE_LAYOUT}"
MONTH_FIRST_CODE = f"noted_date: month-first, expected day-first {DATE_LAYOUT}"
YEAR_CODE = f"noted_date: year outside {YEAR_MIN}..{YEAR_MAX}"
TEMP_NUMBER_CODE = "temp: not a number"
TEMP_RANGE_CODE = f"temp: outside {_RANGE}"
LOCATION_CODE = f"out/in: not {_LOCATIONS_TEXT}"
FIELDS_CODE = "row: wrong number of fields"
_DETAIL = {
    DATE_CODE: f"noted_date: {{v}} not day-first {DATE_LAYOUT}",
    MONTH_FIRST_CODE: f"noted_date: {{v}} is month-first, expected day-first {DATE_LAYOUT}",
    YEAR_CODE: f"noted_date: {{v}} year outside {YEAR_MIN}..{YEAR_MAX}",
    TEMP_NUMBER_CODE: "temp: {v} not a number",
    TEMP_RANGE_CODE: f"temp: {{v}} outside {_RANGE}",
    LOCATION_CODE: f"out/in: {{v}} not {_LOCATIONS_TEXT}",
}

QUARANTINE_COLUMNS: tuple[str, ...] = (*RAW_COLUMNS, "row", "reason")


def parse_noted_date(values: pd.Series) -> pd.Series:
    """``noted_date`` text -> datetime64[ns]: strictly ``DATE_FORMAT`` (day-first) and a year in
    ``YEAR_MIN..YEAR_MAX``; NaT for anything else.

    Equal to ``pd.to_datetime(values, format=DATE_FORMAT, errors="coerce")`` within those years,
    only faster: values in the canonical zero-padded layout are parsed by pyarrow (C++) and kept
    when their day and month fields match the parsed date (pyarrow rolls 31-04 over to 01-05,
    pandas refuses it); everything else goes through pandas' strict parser.
    """
    text = _arrow_text(values)
    parsed = pc.strptime(text, format=DATE_FORMAT, unit="s", error_is_null=True)
    canonical = pc.fill_null(pc.match_substring_regex(text, r"^\d{2}-\d{2}-\d{4} \d{2}:\d{2}$"), False)
    safe = pc.if_else(canonical, text, "01-01-2000 00:00")
    day = pc.cast(pc.utf8_slice_codeunits(safe, 0, 2), "int64")
    month = pc.cast(pc.utf8_slice_codeunits(safe, 3, 5), "int64")
    year = pc.cast(pc.utf8_slice_codeunits(safe, 6, 10), "int64")
    fast = pc.and_kleene(
        canonical,
        pc.and_(
            pc.and_(pc.equal(pc.day(parsed), day), pc.equal(pc.month(parsed), month)),
            pc.and_(pc.greater_equal(year, YEAR_MIN), pc.less_equal(year, YEAR_MAX)),
        ),
    )
    fast_ok = pc.fill_null(fast, False).to_numpy(zero_copy_only=False)
    times = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    seconds = parsed.filter(pyarrow.array(fast_ok)).to_numpy(zero_copy_only=False)
    times[fast_ok] = seconds.astype("datetime64[ns]")
    rest = ~fast_ok & values.notna().to_numpy()
    if rest.any():
        times[rest] = _bounded(pd.to_datetime(values[rest], format=DATE_FORMAT, errors="coerce"))
    return pd.Series(times, index=values.index)


def _bounded(times: pd.Series) -> np.ndarray:
    """datetime64[ns] values, NaT where the year is outside YEAR_MIN..YEAR_MAX."""
    inside = times.dt.year.between(YEAR_MIN, YEAR_MAX).to_numpy()
    result = np.full(len(times), np.datetime64("NaT"), dtype="datetime64[ns]")
    result[inside] = times[inside].to_numpy(dtype="datetime64[ns]")
    return result


def _arrow_text(values: pd.Series) -> pyarrow.Array:
    """The values as a pyarrow string array (missing -> null)."""
    array = pyarrow.array(values, from_pandas=True)
    if not (pyarrow.types.is_string(array.type) or pyarrow.types.is_large_string(array.type)):
        array = array.cast(pyarrow.string())
    return array


def _date_status(values: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Per value: parses (day-first, plausible year); parses day-first but the year is
    implausible; parses only month-first."""
    good = parse_noted_date(values).notna()
    bad_year = pd.Series(False, index=values.index)
    month_first = pd.Series(False, index=values.index)
    failed = ~good & values.notna()
    if failed.any():
        rest = values[failed]
        bad_year[failed] = pd.to_datetime(rest, format=DATE_FORMAT, errors="coerce").notna()
        month_first[failed] = (
            ~bad_year[failed] & pd.to_datetime(rest, format=MONTH_FIRST_FORMAT, errors="coerce").notna()
        )
    return good, bad_year, month_first


def _is_date(values: pd.Series) -> pd.Series:
    """Parses day-first, or month-first, or with an implausible year (those have own checks)."""
    good, bad_year, month_first = _date_status(values)
    return good | bad_year | month_first


def _plausible_year(values: pd.Series) -> pd.Series:
    return ~_date_status(values)[1]


def _not_month_first_only(values: pd.Series) -> pd.Series:
    return ~_date_status(values)[2]


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _is_number(values: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(_numbers(values)), index=values.index)


def _plausible_if_number(values: pd.Series) -> pd.Series:
    """Within TEMP_MIN..TEMP_MAX; values that are no number are left to ``_is_number``."""
    numbers = _numbers(values)
    within = (numbers >= TEMP_MIN) & (numbers <= TEMP_MAX)
    return pd.Series(within | ~np.isfinite(numbers), index=values.index)


#: The raw text, blank fields already turned into missing values.
RAW_SCHEMA = pa.DataFrameSchema(
    {
        RAW_ID: pa.Column(nullable=False),
        RAW_ROOM: pa.Column(nullable=False),
        RAW_DATE: pa.Column(
            nullable=False,
            checks=[
                pa.Check(_is_date, error=DATE_CODE),
                pa.Check(_not_month_first_only, error=MONTH_FIRST_CODE),
                pa.Check(_plausible_year, error=YEAR_CODE),
            ],
        ),
        RAW_TEMP: pa.Column(
            nullable=False,
            checks=[
                pa.Check(_is_number, error=TEMP_NUMBER_CODE),
                pa.Check(_plausible_if_number, error=TEMP_RANGE_CODE),
            ],
        ),
        RAW_LOCATION: pa.Column(nullable=False, checks=pa.Check.isin(LOCATIONS, error=LOCATION_CODE)),
    },
    name="iot_temp_raw",
    strict=False,
    coerce=False,
)

#: The clean (canonical) frame.
CLEAN_SCHEMA = pa.DataFrameSchema(
    {
        CLEAN_ID: pa.Column(CLEAN_DTYPES[CLEAN_ID], nullable=False),
        CLEAN_ROOM: pa.Column(CLEAN_DTYPES[CLEAN_ROOM], nullable=False),
        CLEAN_TIME: pa.Column(CLEAN_DTYPES[CLEAN_TIME], nullable=False),
        CLEAN_TEMP: pa.Column(
            CLEAN_DTYPES[CLEAN_TEMP],
            nullable=False,
            checks=pa.Check.in_range(TEMP_MIN, TEMP_MAX, error=TEMP_RANGE_CODE),
        ),
        CLEAN_LOCATION: pa.Column(
            CLEAN_DTYPES[CLEAN_LOCATION], nullable=False, checks=pa.Check.isin(LOCATIONS, error=LOCATION_CODE)
        ),
    },
    name="iot_temp_clean",
    strict=True,
    ordered=True,
)


class SeenReadings:
    """A growing set of 64-bit hashes, stored as a few sorted numpy arrays (8 bytes each).

    Levels are merged when a newer one is at least half the size of the one before it, so there
    are O(log n) levels and each hash is merged O(log n) times.
    """

    def __init__(self) -> None:
        self._levels: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        for level in self._levels:
            pos = np.searchsorted(level, hashes).clip(max=len(level) - 1)
            found |= level[pos] == hashes
        return found

    def add(self, hashes: np.ndarray) -> None:
        new = np.unique(np.asarray(hashes, dtype=np.uint64))
        new = new[~self.contains(new)]
        if not len(new):
            return
        self._levels.append(new)
        while len(self._levels) > 1 and 2 * len(self._levels[-1]) >= len(self._levels[-2]):
            top = self._levels.pop()
            merged = np.concatenate([self._levels[-1], top])  # disjoint: no repeats to remove
            merged.sort()
            self._levels[-1] = merged


@dataclass
class ValidationResult:
    """One chunk, validated."""

    clean: pd.DataFrame  # CLEAN_COLUMNS, duplicates dropped; index: data row numbers
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS
    reason_counts: dict[str, int]  # reason code -> rows with that problem
    rows: int  # rows in the chunk, unparseable lines included
    duplicates: int  # valid rows dropped as repeats of an earlier reading
    examples: dict[str, str] = field(default_factory=dict)  # reason code -> first such row

    @property
    def quarantined(self) -> int:
        return len(self.quarantine)


@dataclass
class FileValidation:
    """A whole file, validated chunk by chunk."""

    name: str
    rows: int = 0
    clean_rows: int = 0
    quarantined_rows: int = 0
    duplicates: int = 0
    reason_counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # reason code -> first such row
    warnings: list[str] = field(default_factory=list)
    chunks: int = 0
    clean: pd.DataFrame | None = None  # only with collect=True
    quarantine: pd.DataFrame | None = None  # only with collect=True

    @property
    def bad_fraction(self) -> float:
        return self.quarantined_rows / self.rows if self.rows else 0.0

    def summary(self) -> dict[str, Any]:
        """Counts only, JSON-serialisable (for logs, XCom, metrics)."""
        return {
            "name": self.name,
            "rows": self.rows,
            "clean_rows": self.clean_rows,
            "quarantined_rows": self.quarantined_rows,
            "duplicates": self.duplicates,
            "bad_fraction": round(self.bad_fraction, 6),
            "reason_counts": dict(self.reason_counts),
            "examples": dict(self.examples),
            "warnings": list(self.warnings),
            "chunks": self.chunks,
        }


def empty_clean() -> pd.DataFrame:
    """A clean frame with no rows (the right columns and dtypes)."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in CLEAN_DTYPES.items()})


def _as_raw_text(chunk: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in RAW_COLUMNS if c not in chunk.columns]
    if missing:
        raise DataFileError(f"chunk lacks required column(s) {', '.join(map(repr, missing))}")
    raw = chunk[list(RAW_COLUMNS)]
    raw = raw.astype({c: "str" for c in RAW_COLUMNS if not pd.api.types.is_string_dtype(raw[c])})
    return raw.reset_index(drop=True)


def _failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """pandera's failure cases (``column``, ``check``, ``index``), empty when all is well."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        unlocated = cases[cases["index"].isna()]
        if len(unlocated):  # schema-level (a column missing, a wrong dtype): a bug, not bad data
            raise RuntimeError(f"{schema.name}: {unlocated.to_dict('records')}") from exc
        return cases[["column", "check", "index"]].astype({"index": "int64"})
    return pd.DataFrame({"column": [], "check": [], "index": np.array([], dtype="int64")})


def _describe(cases: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """Add ``code`` and ``detail`` to failure cases (the detail quotes the raw value)."""
    raw_of_clean = {v: k for k, v in RAW_TO_CLEAN.items()}
    codes, details = [], []
    for column, check, index in cases[["column", "check", "index"]].itertuples(index=False):
        raw_column = raw_of_clean.get(column, column) if column not in RAW_COLUMNS else column
        if check == "not_nullable":
            code = detail = f"{raw_column}: missing"
        else:
            code = check if check in _DETAIL else f"{raw_column}: {check}"
            value = raw.at[index, raw_column] if raw_column in raw.columns else None
            detail = _DETAIL.get(code, code + ": {v}").format(v=repr(value))
        codes.append(code)
        details.append(detail)
    return cases.assign(code=codes, detail=details)


def _to_clean(raw: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            CLEAN_ID: raw[RAW_ID],
            CLEAN_ROOM: raw[RAW_ROOM],
            CLEAN_TIME: parse_noted_date(raw[RAW_DATE]),
            CLEAN_TEMP: pd.to_numeric(raw[RAW_TEMP]).astype("float64"),
            CLEAN_LOCATION: raw[RAW_LOCATION],
        },
        index=raw.index,
    )
    return frame.astype({c: t for c, t in CLEAN_DTYPES.items() if t == "str"})


def validate_chunk(raw_chunk: pd.DataFrame, seen: SeenReadings | None = None) -> ValidationResult:
    """Validate one raw chunk (``RAW_COLUMNS`` as text; other columns are ignored).

    Returns the clean rows (canonical columns and dtypes, index = the chunk's index), the
    quarantined raw rows with their reasons, counts per reason code, and the number of duplicate
    readings dropped: repeats within the chunk and, when ``seen`` is given, of readings in
    earlier chunks (``seen`` is updated). Unparseable lines listed in
    ``raw_chunk.attrs["bad_lines"]`` (see :mod:`.load`) are added to the quarantine.
    """
    if not get_config_context().validation_enabled:
        raise RuntimeError("pandera validation is disabled (PANDERA_VALIDATION_ENABLED): will not validate")
    row_numbers = raw_chunk.index.to_numpy()
    raw = _as_raw_text(raw_chunk)
    blank = raw.apply(lambda column: column.str.strip().eq("").fillna(True))
    checked = raw.mask(blank)

    cases = _failures(RAW_SCHEMA, checked)
    passed = ~np.isin(np.arange(len(raw)), cases["index"].to_numpy())
    clean = _to_clean(checked[passed])
    clean_cases = _failures(CLEAN_SCHEMA, clean)
    if len(clean_cases):
        cases = pd.concat([cases, clean_cases], ignore_index=True)
        clean = clean.drop(index=clean_cases["index"].unique())
    cases = _describe(cases, raw)

    # Duplicates among the valid rows: the first occurrence stays.
    hashes = pd.util.hash_pandas_object(clean[list(DUPLICATE_KEY)], index=False).to_numpy()
    repeat = pd.Series(hashes).duplicated().to_numpy(copy=True)
    if seen is not None:
        repeat |= seen.contains(hashes)
        seen.add(hashes[~repeat])
    clean = clean[~repeat]
    clean.index = row_numbers[clean.index.to_numpy()]

    bad_index = np.sort(cases["index"].unique())
    quarantine = raw.iloc[bad_index].copy()
    reasons = cases.sort_values(["index"], kind="stable").groupby("index", sort=True)["detail"]
    quarantine["row"] = pd.array(row_numbers[bad_index], dtype="Int64")
    quarantine["reason"] = pd.Series(reasons.agg("; ".join).to_numpy(), dtype="str", index=quarantine.index)
    counts = Counter(cases.drop_duplicates(["index", "code"])["code"])
    examples = {}
    for code, index in cases.drop_duplicates("code")[["code", "index"]].itertuples(index=False):
        fields = ",".join(str(v) for v in raw.iloc[index])
        examples[code] = f"data row {row_numbers[index]}: {fields!r}"

    bad_lines = raw_chunk.attrs.get("bad_lines") or []
    if bad_lines:
        lines = pd.DataFrame({c: pd.Series([""] * len(bad_lines), dtype="str") for c in RAW_COLUMNS})
        lines["row"] = pd.array([None] * len(bad_lines), dtype="Int64")
        lines["reason"] = pd.Series([f"line {n}: {message}" for n, message in bad_lines], dtype="str")
        quarantine = pd.concat([quarantine, lines], ignore_index=True)
        counts[FIELDS_CODE] += len(bad_lines)
        examples.setdefault(FIELDS_CODE, f"line {bad_lines[0][0]}: {bad_lines[0][1]}")
    quarantine = quarantine.reset_index(drop=True)[list(QUARANTINE_COLUMNS)]
    return ValidationResult(
        clean=clean,
        quarantine=quarantine,
        reason_counts=dict(counts.most_common()),
        rows=len(raw) + len(bad_lines),
        duplicates=int(repeat.sum()),
        examples=examples,
    )


def validate_file(
    chunks: Iterable[pd.DataFrame],
    *,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    max_month_first_fraction: float = DEFAULT_MAX_MONTH_FIRST_FRACTION,
    on_result: Callable[[ValidationResult], None] | None = None,
    collect: bool = False,
    name: str | None = None,
) -> FileValidation:
    """Validate every chunk of one file (e.g. ``validate_file(iter_raw_chunks(path))``).

    Duplicates are caught across chunk boundaries. Raises :class:`DataFileError` when the file
    is unusable: no data rows, no valid rows, more than ``max_month_first_fraction`` of the rows
    month-first, or more than ``max_bad_fraction`` quarantined; the message names the dominant
    reason and an example row. Otherwise returns the counts (and, with ``collect=True``, the
    clean and quarantined rows). ``on_result`` is called with each chunk's result.
    """
    if not 0 <= max_bad_fraction <= 1:
        raise ValueError(f"max_bad_fraction must be within 0..1, got {max_bad_fraction!r}")
    reader = chunks if isinstance(chunks, RawCsvReader) else None
    report = FileValidation(name=name or (reader.name if reader else "<chunks>"))
    seen = SeenReadings()
    counts: Counter[str] = Counter()
    kept_clean: list[pd.DataFrame] = []
    kept_bad: list[pd.DataFrame] = []
    for chunk in chunks:
        result = validate_chunk(chunk, seen)
        report.chunks += 1
        report.rows += result.rows
        report.clean_rows += len(result.clean)
        report.quarantined_rows += result.quarantined
        report.duplicates += result.duplicates
        counts.update(result.reason_counts)
        for code, example in result.examples.items():
            report.examples.setdefault(code, example)
        if on_result is not None:
            on_result(result)
        if collect:
            kept_clean.append(result.clean)
            kept_bad.append(result.quarantine)
    report.reason_counts = dict(counts.most_common())
    if reader is not None:
        report.warnings.extend(reader.warnings)
    if collect:
        report.clean = pd.concat(kept_clean) if kept_clean else empty_clean()
        report.quarantine = (
            pd.concat(kept_bad, ignore_index=True)
            if kept_bad
            else pd.DataFrame({c: pd.Series(dtype="str") for c in QUARANTINE_COLUMNS})
        )
    _judge(report, max_bad_fraction, max_month_first_fraction)
    return report


def _judge(report: FileValidation, max_bad_fraction: float, max_month_first_fraction: float) -> None:
    name, rows = report.name, report.rows
    if rows == 0:
        raise DataFileError(f"{name}: no data rows (a header at most)")
    top = next(iter(report.reason_counts), None)

    def because(code: str | None) -> str:
        if code is None:
            return ""
        example = report.examples.get(code)
        return f"; top reason {code!r} ({report.reason_counts[code]:,} rows)" + (
            f", e.g. {example}" if example else ""
        )

    month_first = report.reason_counts.get(MONTH_FIRST_CODE, 0)
    if month_first and month_first > max_month_first_fraction * rows:
        raise DataFileError(
            f"{name}: dates look month-first (MM-DD-YYYY): {month_first:,} of {rows:,} rows "
            f"({month_first / rows:.1%}) parse only month-first, "
            f"e.g. {report.examples.get(MONTH_FIRST_CODE)}; "
            f"rows with a day of 12 or less would be silently misread. Expected day-first {DATE_LAYOUT}"
        )
    if report.clean_rows == 0:
        raise DataFileError(f"{name}: no valid rows: all {rows:,} rows quarantined{because(top)}")
    if report.bad_fraction > max_bad_fraction:
        raise DataFileError(
            f"{name}: {report.quarantined_rows:,} of {rows:,} rows quarantined ({report.bad_fraction:.1%}, "
            f"more than the allowed {max_bad_fraction:.0%}){because(top)}"
        )

"""Validate raw chunks with pandera: clean rows go on, bad rows go to quarantine with a reason.

Two pandera schemas do the checking (nothing is hand-rolled):

* :data:`RAW_SCHEMA` on the raw text (after blank fields became missing) and the columns parsed
  from it: every field present, ``noted_date`` day-first ``DD-MM-YYYY HH:MM`` (parsed strictly
  with ``schema.DATE_FORMAT``; unpadded "8-7-2018 9:05" is accepted, 31-04 is not) with a year in
  ``YEAR_MIN..YEAR_MAX``, ``temp`` a finite number within ``TEMP_MIN..TEMP_MAX``, ``out/in``
  exactly "In" or "Out" (case and spaces matter). The checks are pandera's built-in ``Check``
  objects (``isin``, ``ne``, ``eq``, ``in_range``); all run on every row, so a row's reason lists
  all its problems. Each chunk's dates and temperatures are parsed once (:func:`_parse_raw`):
  the checks run on the parsed columns (the date's layout and year, the temperature's number)
  and the clean frame is built from the same parsed values.
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
first occurrence stays in ``clean``, later ones are dropped and counted. Readings are compared
by 64-bit hashes of those four fields: within a chunk alone (:func:`validate_chunk` without
``seen``) with ``duplicated``; across chunks :func:`validate_file` keeps a :class:`SeenReadings`
set, one sorted lookup-and-merge per chunk, that holds at most ``DEFAULT_SEEN_MEMORY_KEYS``
readings in memory (8 MB) and files the rest by the hour of the reading in an anonymous
temporary file (8 bytes per distinct reading: 80 MB for 10 M; the class says why that is still
exact). A false "duplicate" needs a 64-bit hash collision, odds about n²/2⁶⁵, 3e-6 at 10 M rows.
The identity cannot be narrowed to the id to save memory: the export repeats readings under new
ids (three of the original's first ten rows do), which an id-keyed set would let through.

The reason codes (``*_CODE`` constants) are stable strings, fit for metrics labels: ``<column>:
missing``, ``noted_date: not day-first DD-MM-YYYY HH:MM``, ``noted_date: month-first, expected
day-first DD-MM-YYYY HH:MM``, ``noted_date: year outside 1970..2099``, ``temp: not a number``,
``temp: outside -30..70 °C``, ``out/in: not In/Out``, ``row: wrong number of fields``.

Memory: :func:`validate_chunk` holds one chunk; :func:`validate_file` holds one chunk plus the
in-memory part of the hash set (at most 8 MB), unless ``collect=True`` (small files, tests) asks
it to keep the clean and quarantined rows. ``on_result`` receives each chunk's result, e.g. to
append clean rows to a staging file: the file-level verdict comes after the last chunk, so
publish the staged output only once :func:`validate_file` has returned.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

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


#: Columns derived from the raw text, once per chunk (:func:`_parse_raw`), for RAW_SCHEMA's checks.
DATE_LAYOUT_COLUMN = f"{RAW_DATE} (layout)"  # "day-first", "month-first", "neither"; missing if blank
DATE_YEAR_COLUMN = f"{RAW_DATE} (year)"  # year of the strict day-first parse, any year; NaN if none
TEMP_IS_NUMBER_COLUMN = f"{RAW_TEMP} (is number)"  # a finite number; missing if blank
TEMP_NUMBER_COLUMN = f"{RAW_TEMP} (number)"  # the number; NaN if blank or no finite number
_SOURCE_OF = {
    DATE_LAYOUT_COLUMN: RAW_DATE,
    DATE_YEAR_COLUMN: RAW_DATE,
    TEMP_IS_NUMBER_COLUMN: RAW_TEMP,
    TEMP_NUMBER_COLUMN: RAW_TEMP,
}
_DAY_FIRST, _MONTH_FIRST, _NEITHER = "day-first", "month-first", "neither"
_LAYOUTS = pd.CategoricalDtype([_DAY_FIRST, _MONTH_FIRST, _NEITHER])


#: Day-first dates in the export's own layout (zero-padded ASCII digits) naming a day that exists
#: (29 February aside) and a time: for these, and only these, pyarrow's strptime (the C library's,
#: which also skips spaces before numbers and rolls 31-04 over into May) gives what pandas' strict
#: parse gives.
_VALID_DATE = (
    r"^(?:(?:0[1-9]|1\d|2[0-8])-(?:0[1-9]|1[0-2])|(?:29|30)-(?:0[13-9]|1[0-2])|31-(?:0[13578]|1[02]))"
    r"-\d{4} (?:[01]\d|2[0-3]):[0-5]\d$"
)


def _parse_dates(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each ``noted_date`` text parsed once: ``(times, years, month_first)``.

    * ``times`` (datetime64[ns]): strictly ``DATE_FORMAT`` (day-first) with a year in
      ``YEAR_MIN..YEAR_MAX``, NaT for anything else (what :func:`parse_noted_date` returns);
    * ``years`` (float64): the year of a strict day-first parse whatever the year, NaN if the text
      does not parse day-first (tells an implausible year from no date);
    * ``month_first`` (bool): does not parse day-first, but does month-first.

    pyarrow's strptime parses every value; where its verdict might differ from pandas' strict
    parse (anything but ``_VALID_DATE`` with a plausible year, none of the export's dates),
    pandas decides, as it does the month-first test of what fails it.
    """
    text = _arrow_text(values)
    parsed = pc.strptime(text, format=DATE_FORMAT, unit="ns", error_is_null=True)
    parsed_years = pc.year(parsed)
    plausible = pc.and_(pc.greater_equal(parsed_years, YEAR_MIN), pc.less_equal(parsed_years, YEAR_MAX))
    agreed = pc.and_(pc.match_substring_regex(text, _VALID_DATE), plausible).fill_null(False)
    times = parsed.to_numpy(zero_copy_only=False)
    years = parsed_years.to_numpy(zero_copy_only=False).astype("float64")
    month_first = np.zeros(len(values), dtype=bool)
    rest = values.notna().to_numpy() & ~agreed.to_numpy(zero_copy_only=False)
    if rest.any():
        times = times.copy()  # (a view of pyarrow's buffer when no value was null)
        day_first = pd.to_datetime(values[rest], format=DATE_FORMAT, errors="coerce")
        times[rest] = day_first.where(day_first.dt.year.between(YEAR_MIN, YEAR_MAX)).to_numpy(
            "datetime64[ns]"
        )
        years[rest] = day_first.dt.year.to_numpy(dtype="float64", na_value=np.nan)
        failed = np.flatnonzero(rest)[day_first.isna().to_numpy()]
        if len(failed):
            other = pd.to_datetime(values.iloc[failed], format=MONTH_FIRST_FORMAT, errors="coerce")
            month_first[failed] = other.notna().to_numpy()
    return times, years, month_first


def parse_noted_date(values: pd.Series) -> pd.Series:
    """``noted_date`` text -> datetime64[ns]: strictly ``DATE_FORMAT`` (day-first) and a year in
    ``YEAR_MIN..YEAR_MAX``; NaT for anything else.

    Equal to ``pd.to_datetime(values, format=DATE_FORMAT, errors="coerce")`` within those years,
    only faster (see :func:`_parse_dates`).
    """
    return pd.Series(_parse_dates(values)[0], index=values.index)


def _arrow_text(values: pd.Series) -> pyarrow.Array:
    """The values as one pyarrow string array (missing -> null)."""
    array = pyarrow.array(values, from_pandas=True)
    if isinstance(array, pyarrow.ChunkedArray):
        array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    if not (pyarrow.types.is_string(array.type) or pyarrow.types.is_large_string(array.type)):
        array = array.cast(pyarrow.string())
    return array


def _parse_numbers(values: pd.Series) -> np.ndarray:
    """``temp`` text -> float64, equal to ``pd.to_numeric(values, errors="coerce")`` (NaN where
    missing or no number; "inf" stays inf).

    Whole numbers (the export's temperatures) take a fast path: pyarrow's integer cast, when every
    value is ASCII digits after any leading "-"; that guard matters, as the cast would also read
    hexadecimal "0x1A", which pandas refuses. Any other value sends the chunk to pandas.
    """
    text = _arrow_text(values)
    if pc.all(pc.ascii_is_decimal(pc.utf8_ltrim(text, characters="-"))).as_py() is not False:
        try:
            integers = pc.cast(text, pyarrow.int64())  # refuses "--5" and overflow: pandas decides those
        except pyarrow.ArrowInvalid:
            pass
        else:
            return integers.to_numpy(zero_copy_only=False).astype("float64")
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _parse_raw(checked: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The chunk's dates and temperatures, each parsed once: ``(frame, times, temps)``.

    ``frame`` is the raw text (blank fields missing) plus the derived columns that RAW_SCHEMA
    checks; ``times`` (datetime64[ns], NaT unless a valid date) and ``temps`` (float64, NaN unless
    a finite number) are the parsed values that the clean frame is built from.
    """
    times, years, month_first = _parse_dates(checked[RAW_DATE])
    date_present = checked[RAW_DATE].notna().to_numpy()
    layout = np.where(np.isnan(years), np.where(month_first, 1, 2), 0)  # codes of _LAYOUTS
    numbers = _parse_numbers(checked[RAW_TEMP])
    finite = np.isfinite(numbers)
    temps = np.where(finite, numbers, np.nan)
    frame = checked.assign(
        **{
            DATE_LAYOUT_COLUMN: pd.Categorical.from_codes(np.where(date_present, layout, -1), dtype=_LAYOUTS),
            DATE_YEAR_COLUMN: years,
            TEMP_IS_NUMBER_COLUMN: pd.arrays.BooleanArray(finite, mask=checked[RAW_TEMP].isna().to_numpy()),
            TEMP_NUMBER_COLUMN: temps,
        }
    )
    return frame, times, temps


#: The raw text (blank fields already missing) with the columns derived from it by
#: :func:`_parse_raw`: the checks run on values parsed once per chunk. A missing raw value
#: leaves its derived values missing, which the checks skip: "missing" is its only reason.
RAW_SCHEMA = pa.DataFrameSchema(
    {
        RAW_ID: pa.Column(nullable=False),
        RAW_ROOM: pa.Column(nullable=False),
        RAW_DATE: pa.Column(nullable=False),
        # day-first, or month-first, or with an implausible year: the latter have their own checks
        DATE_LAYOUT_COLUMN: pa.Column(
            _LAYOUTS,
            nullable=True,
            checks=[
                pa.Check.ne(_NEITHER, error=DATE_CODE),
                pa.Check.ne(_MONTH_FIRST, error=MONTH_FIRST_CODE),
            ],
        ),
        DATE_YEAR_COLUMN: pa.Column(
            "float64", nullable=True, checks=pa.Check.in_range(YEAR_MIN, YEAR_MAX, error=YEAR_CODE)
        ),
        RAW_TEMP: pa.Column(nullable=False),
        TEMP_IS_NUMBER_COLUMN: pa.Column(
            "boolean", nullable=True, checks=pa.Check.eq(True, error=TEMP_NUMBER_CODE)
        ),
        # values that are no (finite) number are NaN here, left to the check above
        TEMP_NUMBER_COLUMN: pa.Column(
            "float64", nullable=True, checks=pa.Check.in_range(TEMP_MIN, TEMP_MAX, error=TEMP_RANGE_CODE)
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

_NS_PER_HOUR = 3_600 * 10**9
if CLEAN_TIME not in DUPLICATE_KEY:  # SeenReadings files readings by hour: exact only if time is identity
    raise ImportError("validate: DUPLICATE_KEY must include the reading's time (SeenReadings files by hour)")
#: Readings :class:`SeenReadings` keeps in memory before it files hours away to disk (16 B each).
DEFAULT_SEEN_MEMORY_KEYS = 1 << 19


def _stable_order(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(order, ordered)``: ``np.argsort(hashes, kind="stable")`` and ``hashes[order]``.

    Sorted as one array, which is faster than an argsort: each hash with its low bits replaced by
    its position (equal hashes stay in their order). That orders the hashes by their high bits
    only; in the rare batch where two hashes differ in the low bits alone, the result is not
    ascending, and the argsort decides after all.
    """
    bits = max(1, (len(hashes) - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    packed = np.sort((hashes & ~low) | np.arange(len(hashes), dtype=np.uint64))
    order = (packed & low).astype(np.intp)
    ordered = hashes[order]
    if len(ordered) > 1 and (ordered[1:] < ordered[:-1]).any():
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
    return order, ordered


def _first_occurrences(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(repeat, keys, rows)``: ``repeat`` marks each hash equal to an earlier one in the array;
    ``keys`` are the distinct hashes ascending, ``rows`` the position of each one's first occurrence."""
    order, ordered = _stable_order(hashes)  # stable: equal hashes keep their order, the first leads
    first = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    repeat = np.zeros(len(hashes), dtype=bool)
    repeat[order[~first]] = True
    return repeat, ordered[first], order[first]


def _stable_hour_order(hours: np.ndarray) -> np.ndarray:
    """``np.argsort(hours, kind="stable")``, as a radix sort when the hours span less than 2**16
    (numpy sorts 16-bit integers so, in linear time)."""
    if len(hours) and int(hours.max()) - int(hours.min()) < 1 << 16:
        return np.argsort((hours - hours.min()).astype(np.uint16), kind="stable")
    return np.argsort(hours, kind="stable")


def _isin_hours(hours: np.ndarray, wanted: list[int] | np.ndarray) -> np.ndarray:
    """``np.isin(hours, wanted)``, with a lookup table when the wanted hours span little (several
    times faster than numpy's default on the hours in memory)."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(wanted) and int(wanted.max()) - int(wanted.min()) < max(len(hours), 1 << 16):
        return np.isin(hours, wanted, kind="table")
    return np.isin(hours, wanted)


def _counted(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values (int64) ascending and how often each occurs: counted in one pass when
    their span is small (a count array no larger than the values themselves), else by sorting."""
    if not len(values):
        return values[:0], np.zeros(0, dtype=np.int64)
    low = int(values.min())
    if int(values.max()) - low < max(len(values), 1 << 16):
        counts = np.bincount(values - low)
        distinct = np.flatnonzero(counts)
        return distinct + low, counts[distinct]
    return np.unique(values, return_counts=True)


class SeenReadings:
    """The readings seen so far, as 64-bit hashes of their identity (``DUPLICATE_KEY``), each filed
    under the hour of the reading; :meth:`add` is the one lookup-and-insert per chunk.

    In memory: one array of hashes sorted ascending and the hour of each alongside (16 bytes per
    reading). A batch is sorted once, looked up with one sorted pass (``searchsorted``) and its new
    hashes merged in linearly (``np.insert`` at the sorted positions); nothing is re-sorted.

    Memory is bounded: above ``max_memory_keys`` readings (default ``DEFAULT_SEEN_MEMORY_KEYS``),
    the hours used least recently go to disk until half the budget is free: appended, as
    runs of sorted hashes, to one anonymous temporary file (in ``spill_dir``, default the system's
    temporary directory; it has no name, so nothing is left behind even if the process dies). A
    later batch with readings of a filed hour reads that hour's run, looks its keys up and appends
    the merged run if any are new, one hour in memory at a time; superseded runs are reclaimed by
    rewriting the file once they outweigh the live ones.

    Filing by hour loses nothing: two readings with the same identity have the same ``noted_at``,
    hence the same hour, so a reading can only repeat one of its own hour, and every hour a batch
    touches is consulted, in memory or on disk. Exports are in time order (newest first), so the
    hours in use are those of the last few chunks: memory stays at about ``max_memory_keys`` x
    16 B (8 MB by default) whatever the file's size, and each hour is written once and never read.
    A file in random order is handled just as exactly, only slower (each chunk rereads the filed
    hours it touches).

    Hashes, not the readings themselves, are compared: a reading is wrongly taken for a repeat
    only if its 64-bit hash equals that of a different reading seen before, odds below n²/2⁶⁵
    for n distinct readings (3e-6 at 10 M). ``close()`` drops everything, the file included.
    """

    def __init__(self, max_memory_keys: int | None = None, spill_dir: str | None = None) -> None:
        if max_memory_keys is None:
            max_memory_keys = DEFAULT_SEEN_MEMORY_KEYS
        if max_memory_keys < 1:
            raise ValueError(f"max_memory_keys must be >= 1, got {max_memory_keys!r}")
        self.max_memory_keys = max_memory_keys
        self._spill_dir = spill_dir
        self._file: IO[bytes] | None = None
        self._reset()

    def _reset(self) -> None:
        self._hashes = np.empty(0, dtype=np.uint64)  # ascending
        self._hours = np.empty(0, dtype=np.int64)  # the hour of each hash
        self._used: dict[int, int] = {}  # hour in memory -> the last batch that used it
        self._batches = 0
        self._count = 0
        self._filed: dict[
            int, tuple[int, int]
        ] = {}  # hour on disk (not in memory) -> its run (start, length)
        self._file_keys = 0  # keys in the file
        self._dead_keys = 0  # of those, in superseded runs

    def __len__(self) -> int:
        return self._count

    @property
    def filed_hours(self) -> int:
        """Hours on disk."""
        return len(self._filed)

    def add(self, hours: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Add a batch of readings (their hours since the epoch and hashes); return a mask of those
        seen before: in an earlier batch or earlier in this one (the first occurrence is new)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        hours = np.asarray(hours, dtype=np.int64)
        if len(hours) != len(hashes):
            raise ValueError("hours and hashes differ in length")
        if not len(hashes):
            return np.zeros(0, dtype=bool)
        seen, keys, rows = _first_occurrences(hashes)
        key_hours = hours[rows]
        self._batches += 1
        touched = _counted(key_hours)[0].tolist()
        on_disk = [hour for hour in touched if hour in self._filed]
        if on_disk:
            filed = _isin_hours(key_hours, on_disk)
            seen[rows[filed]] = self._add_filed(key_hours[filed], keys[filed])
            keys, rows, key_hours = keys[~filed], rows[~filed], key_hours[~filed]
            touched = [hour for hour in touched if hour not in self._filed]
        self._used.update(dict.fromkeys(touched, self._batches))
        # One sorted pass over the keys in memory, then a linear merge of the new ones.
        at = np.searchsorted(self._hashes, keys)
        found = np.zeros(len(keys), dtype=bool)
        inside = at < len(self._hashes)
        found[inside] = self._hashes[at[inside]] == keys[inside]
        seen[rows[found]] = True
        new = ~found
        self._hashes = np.insert(self._hashes, at[new], keys[new])
        self._hours = np.insert(self._hours, at[new], key_hours[new])
        self._count += int(new.sum())
        if len(self._hashes) > self.max_memory_keys:
            self._file_away()
        return seen

    def _add_filed(self, key_hours: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Look up and add keys (ascending) of filed hours, one hour at a time; the found mask."""
        found = np.zeros(len(keys), dtype=bool)
        order = _stable_hour_order(key_hours)  # by hour; keys stay ascending within one
        for part in np.split(order, np.flatnonzero(np.diff(key_hours[order])) + 1):
            hour = int(key_hours[part[0]])
            stored = self._read(*self._filed[hour])
            at = np.searchsorted(stored, keys[part])
            inside = at < len(stored)
            hit = np.zeros(len(part), dtype=bool)
            hit[inside] = stored[at[inside]] == keys[part][inside]
            found[part] = hit
            if not hit.all():
                merged = np.insert(stored, at[~hit], keys[part][~hit])
                self._filed[hour] = (self._append(merged), len(merged))
                self._dead_keys += len(stored)
                self._count += int((~hit).sum())
        if self._dead_keys > max(self._file_keys - self._dead_keys, self.max_memory_keys):
            self._compact()
        return found

    def _file_away(self) -> None:
        """Move the least recently used hours to disk until half the budget is free."""
        hours, counts = _counted(self._hours)
        last_used = np.array([self._used[h] for h in hours.tolist()], dtype=np.int64)
        order = np.lexsort((hours, last_used))  # least recently used first
        excess = len(self._hashes) - self.max_memory_keys // 2
        evict = hours[order[: int(np.searchsorted(np.cumsum(counts[order]), excess)) + 1]]
        leaving = _isin_hours(self._hours, evict)
        where = np.flatnonzero(leaving)
        leaving_hours = self._hours[where]
        order = _stable_hour_order(leaving_hours)  # by hour, hashes ascending in each
        where, leaving_hours = where[order], leaving_hours[order]
        start = self._append(self._hashes[where])  # one write
        firsts = np.r_[0, np.flatnonzero(np.diff(leaving_hours)) + 1]
        lengths = np.diff(np.r_[firsts, len(where)])
        for hour, first, length in zip(
            leaving_hours[firsts].tolist(), firsts.tolist(), lengths.tolist(), strict=True
        ):
            self._filed[hour] = (start + first, length)
            del self._used[hour]
        staying = ~leaving
        self._hashes = self._hashes[staying]
        self._hours = self._hours[staying]

    def _append(self, keys: np.ndarray) -> int:
        """Write keys at the end of the file; where they start (in keys)."""
        if self._file is None:
            # closed by close() or _compact()
            self._file = tempfile.TemporaryFile(prefix="r3e-seen-readings-", dir=self._spill_dir)  # noqa: SIM115
        self._file.seek(self._file_keys * 8)
        self._file.write(np.ascontiguousarray(keys, dtype=np.uint64).data)
        start, self._file_keys = self._file_keys, self._file_keys + len(keys)
        return start

    def _read(self, start: int, length: int, file: IO[bytes] | None = None) -> np.ndarray:
        """The run of ``length`` keys at ``start`` of the file."""
        file = file or self._file
        assert file is not None
        keys = np.empty(length, dtype=np.uint64)
        file.seek(start * 8)
        if file.readinto(memoryview(keys).cast("B")) != 8 * length:
            raise OSError("short read from the duplicate check's temporary file")
        return keys

    def _compact(self) -> None:
        """Rewrite the file with the live runs only, one run in memory at a time."""
        old, runs = self._file, self._filed
        assert old is not None
        self._file, self._file_keys, self._dead_keys = None, 0, 0
        self._filed = {}
        try:
            for hour, (start, length) in runs.items():
                self._filed[hour] = (self._append(self._read(start, length, old)), length)
        finally:
            old.close()

    def close(self) -> None:
        """Drop every reading (the file on disk included)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._reset()

    def __enter__(self) -> SeenReadings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    raw = chunk[list(RAW_COLUMNS)]  # a new frame: its index may be replaced
    not_text = {c: "str" for c in RAW_COLUMNS if not pd.api.types.is_string_dtype(raw[c])}
    if not_text:
        raw = raw.astype(not_text)
    raw.index = pd.RangeIndex(len(raw))
    return raw


def _blank_to_missing(raw: pd.DataFrame) -> pd.DataFrame:
    """``raw`` with blank fields (empty or only whitespace, as ``str.strip`` has it) missing."""
    blanks = {}
    for column in raw.columns:
        text = _arrow_text(raw[column])
        blank = pc.or_(pc.equal(pc.binary_length(text), 0), pc.utf8_is_space(text)).fill_null(True)
        if pc.any(blank).as_py():
            blanks[column] = raw[column].mask(blank.to_numpy(zero_copy_only=False))
    return raw.assign(**blanks) if blanks else raw


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
        if column in RAW_COLUMNS:
            raw_column = column
        else:
            raw_column = _SOURCE_OF.get(column) or raw_of_clean.get(column, column)
        if check == "not_nullable":
            code = detail = f"{raw_column}: missing"
        else:
            code = check if check in _DETAIL else f"{raw_column}: {check}"
            value = raw.at[index, raw_column] if raw_column in raw.columns else None
            detail = _DETAIL.get(code, code + ": {v}").format(v=repr(value))
        codes.append(code)
        details.append(detail)
    return cases.assign(code=codes, detail=details)


def _empty_quarantine(raw: pd.DataFrame) -> pd.DataFrame:
    """A quarantine frame of ``raw``'s rows with no rows (the columns and dtypes of one with rows)."""
    columns = {c: pd.Series(dtype=raw[c].dtype) for c in RAW_COLUMNS}
    return pd.DataFrame({**columns, "row": pd.Series(dtype="Int64"), "reason": pd.Series(dtype="str")})


def _to_clean(raw: pd.DataFrame, times: np.ndarray, temps: np.ndarray) -> pd.DataFrame:
    """The canonical frame of ``raw``'s rows, from their parsed ``times`` and ``temps``."""
    frame = pd.DataFrame(
        {
            CLEAN_ID: raw[RAW_ID],
            CLEAN_ROOM: raw[RAW_ROOM],
            CLEAN_TIME: times,
            CLEAN_TEMP: temps,
            CLEAN_LOCATION: raw[RAW_LOCATION],
        },
        index=raw.index,
    )
    convert = {c: t for c, t in CLEAN_DTYPES.items() if t == "str" and frame[c].dtype != t}
    return frame.astype(convert) if convert else frame


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
    checked = _blank_to_missing(raw)

    parsed, times, temps = _parse_raw(checked)  # each column parsed once, for checks and clean frame
    cases = _failures(RAW_SCHEMA, parsed)
    if len(cases):
        passed = ~np.isin(np.arange(len(raw)), cases["index"].to_numpy())
        clean = _to_clean(checked[passed], times[passed], temps[passed])
    else:
        clean = _to_clean(checked, times, temps)
    clean_cases = _failures(CLEAN_SCHEMA, clean)
    if len(clean_cases):
        cases = pd.concat([cases, clean_cases], ignore_index=True)
        clean = clean.drop(index=clean_cases["index"].unique())
    if len(cases):
        cases = _describe(cases, raw)

    # Duplicates among the valid rows: the first occurrence stays.
    hashes = pd.util.hash_pandas_object(clean[list(DUPLICATE_KEY)], index=False).to_numpy()
    if seen is None:
        repeat = pd.Series(hashes).duplicated().to_numpy(copy=True)
    else:  # one lookup: repeats within the chunk and of earlier chunks
        repeat = seen.add(clean[CLEAN_TIME].to_numpy().view("int64") // _NS_PER_HOUR, hashes)
    if repeat.any():
        clean = clean[~repeat]
    clean.index = row_numbers[clean.index.to_numpy()]

    bad_lines = raw_chunk.attrs.get("bad_lines") or []
    if not len(cases) and not bad_lines:  # (the usual chunk: nothing to quarantine)
        return ValidationResult(
            clean=clean,
            quarantine=_empty_quarantine(raw),
            reason_counts={},
            rows=len(raw),
            duplicates=int(repeat.sum()),
        )
    bad_index = np.sort(cases["index"].unique())
    quarantine = raw.iloc[bad_index].copy()
    quarantine["row"] = pd.array(row_numbers[bad_index], dtype="Int64")
    counts: Counter[str] = Counter()
    examples = {}
    if len(cases):  # (the usual chunk has none: no grouping of nothing)
        reasons = cases.sort_values(["index"], kind="stable").groupby("index", sort=True)["detail"]
        quarantine["reason"] = pd.Series(
            reasons.agg("; ".join).to_numpy(), dtype="str", index=quarantine.index
        )
        counts.update(cases.drop_duplicates(["index", "code"])["code"])
        for code, index in cases.drop_duplicates("code")[["code", "index"]].itertuples(index=False):
            fields = ",".join(str(v) for v in raw.iloc[index])
            examples[code] = f"data row {row_numbers[index]}: {fields!r}"
    else:
        quarantine["reason"] = pd.Series([], dtype="str", index=quarantine.index)

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
    counts: Counter[str] = Counter()
    kept_clean: list[pd.DataFrame] = []
    kept_bad: list[pd.DataFrame] = []
    with SeenReadings() as seen:
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

"""Synthetic IoT temperature readings in the exact layout of the Kaggle ``IOT-temp.csv``.

The real file cannot be downloaded on the testbed, so the pipeline runs on data generated here:
same columns, same text formats, and the same statistical features that matter to the pipeline.

* 97,606 rows at ``scale=1`` (the original's count, duplicates included), over the calendar days
  ``start`` .. ``start + days`` (2018-07-28 .. 2018-12-08 by default; the last day stops at 09:59,
  the original's last reading is at 09:30). Newest rows first, as in the original export.
* About 79 % "Out" readings; "Out" is warmer and more variable (In ≈ 30 °C, Out ≈ 36 °C in
  summer), with a daily cycle (Out peaks mid-afternoon), a seasonal drift (monsoon, a warmer
  post-monsoon, then winter cooling in November and December), day-to-day weather (an AR(1)
  process), noise and occasional sun spikes on the Out sensor. Temperatures are whole °C clipped
  to the original's 21..51.
* An irregular sampling rate: the volume per day and per hour varies (log-normal weights), some
  hours have no reading at all, a few whole days are missing, timestamps have minute resolution.
* About 1 % duplicate rows: a reading exported twice, half of them with the same id, half with a
  new id. Apart from those, no two readings share room, minute, location and temperature, so the
  number of duplicates a validator finds equals the number generated.
* Ids ``__export__.temp_log_<n>_<8 hex>``: n grows with time (about 2 per row, like the
  original's 196134 for 97,606 rows), unique except for the same-id duplicates.

Scaling: ``scale`` multiplies the density of readings: ``BASE_ROWS * scale * days / 133`` rows
(exactly, rounded), so a shorter span has proportionally fewer rows. The original has
one room ("Room Admin"); larger scales add rooms (``ceil(scale)`` rooms, "Room Admin",
"Room 002", ...) rather than cramming more readings into one room's minutes, so each room keeps
the original's density and the duplicate rate stays meaningful. Rooms differ by a small constant
offset (standard deviation 0.5 °C; "Room Admin" has none).

Everything is a function of ``(scale, seed, start, days)``: each calendar day is generated from
its own random stream, so :func:`iter_readings` builds one day at a time and never holds more
than a day plus a chunk (scale 100, about 9.8 M rows, streams in a few hundred MB), and the
chunks concatenated equal :func:`generate_readings` whatever ``chunk_rows`` is.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from r3e_testbed.pipeline.schema import (
    ID_PREFIX,
    RAW_COLUMNS,
    RAW_DATE,
    RAW_ID,
    RAW_LOCATION,
    RAW_ROOM,
    RAW_TEMP,
)

#: Rows of the original file; ``scale=1`` generates this many (duplicates included).
BASE_ROWS = 97_606
DEFAULT_START = "2018-07-28"
DEFAULT_DAYS = 133
OUT_FRACTION = 0.79
DUPLICATE_FRACTION = 0.01
#: Range of the original's temperatures; generated values are clipped to it.
GENERATED_TEMP_RANGE = (21, 51)
FIRST_ROOM = "Room Admin"
DEFAULT_CHUNK_ROWS = 100_000

# Climate: monthly mean temperature (°C) of each sensor, January..December, placed mid-month and
# interpolated by day of year. Indian plains: hot pre-monsoon summer, monsoon July-September, a
# warmer spell after the monsoon (October), cooling in November-December.
_MONTHLY_OUT = np.array([28.0, 30.0, 34.0, 37.0, 39.0, 37.5, 36.0, 35.5, 36.0, 37.0, 33.5, 30.0])
_MONTHLY_IN = np.array([25.0, 26.5, 28.5, 30.5, 32.0, 31.0, 30.0, 29.5, 30.0, 30.5, 28.5, 26.5])
_MID_MONTH_DOY = np.array([15, 45, 74, 105, 135, 166, 196, 227, 258, 288, 319, 349], dtype=float)
# Daily cycle: amplitude (°C) and hour of the maximum.
_DAILY_AMPLITUDE = {"Out": 4.5, "In": 1.2}
_DAILY_PEAK_HOUR = {"Out": 14.5, "In": 16.5}
# Reading noise (°C, standard deviation) and day-to-day weather.
_NOISE_SD = {"Out": 2.0, "In": 0.7}
_WEATHER_PHI = 0.7
_WEATHER_SD_OUT = 1.5
_WEATHER_IN_SHARE = 0.35  # the inside follows a third of the outside weather
_SUN_SPIKE_P = 0.03  # daytime Out readings with the sensor in the sun
_SUN_SPIKE_MEAN, _SUN_SPIKE_SD = 6.0, 2.0
# Irregular sampling.
_DAY_ACTIVITY_SIGMA = 0.6
_HOUR_ACTIVITY_SIGMA = 0.8
_HOUR_GAP_P = 0.08
_OUTAGE_P = 0.15  # chance that a day has an outage of 2..6 hours
_GAP_DAYS = 5  # single missing days, plus one missing run of 2 days
_LAST_DAY_HOURS = 10  # the last calendar day stops at 09:59
_ID_SPACING = 2  # id numbers advance about 2 per row
_ID_START = 1000
_ROOM_OFFSET_SD = 0.5

# Independent random streams, one per purpose (numpy SeedSequence keys [seed, stream, ...]).
_STREAM_PLAN, _STREAM_COUNTS, _STREAM_ROOMS, _STREAM_DAY = 1, 2, 3, 4

_HHMM = np.array([f"{m // 60:02d}:{m % 60:02d}" for m in range(24 * 60)], dtype=object)


@dataclass(frozen=True)
class _Plan:
    """What is decided for the whole span before any day is generated."""

    seed: int
    dates: pd.DatetimeIndex  # every calendar day, oldest first
    counts: np.ndarray  # rows per day (duplicates included); 0 on missing days
    weather_out: np.ndarray  # °C offset per day
    weather_in: np.ndarray
    room_names: np.ndarray
    room_offsets: np.ndarray
    id_base: np.ndarray  # first id number of each day


def _plan(scale: float, seed: int, start: str | pd.Timestamp, days: int) -> _Plan:
    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days!r}")
    dates = pd.date_range(pd.Timestamp(start).normalize(), periods=days + 1, freq="D")
    n_days = len(dates)
    rng = np.random.default_rng([seed, _STREAM_PLAN])
    activity = rng.lognormal(0.0, _DAY_ACTIVITY_SIGMA, n_days)
    activity[-1] *= _LAST_DAY_HOURS / 24
    inner = np.arange(1, n_days - 1)  # the first and last day always have readings
    if len(inner) > _GAP_DAYS + 4:
        run = int(rng.integers(inner[0], inner[-1]))
        activity[[run, run + 1]] = 0.0
        singles = rng.choice(np.setdiff1d(inner, [run - 1, run, run + 1, run + 2]), _GAP_DAYS, replace=False)
        activity[singles] = 0.0
    # Day-to-day weather: AR(1), stationary from the first day.
    shocks = rng.normal(0.0, _WEATHER_SD_OUT, n_days)
    weather = np.empty(n_days)
    weather[0] = shocks[0] / math.sqrt(1 - _WEATHER_PHI**2)
    for i in range(1, n_days):
        weather[i] = _WEATHER_PHI * weather[i - 1] + shocks[i]
    weather_in = _WEATHER_IN_SHARE * weather + rng.normal(0.0, 0.3, n_days)

    total = round(BASE_ROWS * scale * days / DEFAULT_DAYS)
    counts = np.random.default_rng([seed, _STREAM_COUNTS]).multinomial(total, activity / activity.sum())

    n_rooms = max(1, math.ceil(scale - 1e-9))
    room_rng = np.random.default_rng([seed, _STREAM_ROOMS])
    offsets = room_rng.normal(0.0, _ROOM_OFFSET_SD, n_rooms)
    offsets[0] = 0.0
    names = np.array([FIRST_ROOM] + [f"Room {i + 1:03d}" for i in range(1, n_rooms)], dtype=object)
    id_base = _ID_START + np.concatenate([[0], np.cumsum(_ID_SPACING * counts[:-1] + 1)])
    return _Plan(seed, dates, counts, weather, weather_in, names, offsets, id_base)


def _seasonal(day_of_year: float, monthly: np.ndarray) -> float:
    return float(np.interp(day_of_year, _MID_MONTH_DOY, monthly, period=365.0))


def _day_frame(plan: _Plan, d: int) -> pd.DataFrame:
    """The rows of calendar day ``d``, newest first, in the raw layout."""
    n = int(plan.counts[d])
    rng = np.random.default_rng([plan.seed, _STREAM_DAY, d])
    n_dup = int(rng.binomial(n, DUPLICATE_FRACTION)) if n > 1 else 0
    n_real = n - n_dup

    # Hours with readings, and how busy each one is.
    hours = np.arange(_LAST_DAY_HOURS if d == len(plan.dates) - 1 else 24)
    weight = rng.lognormal(0.0, _HOUR_ACTIVITY_SIGMA, len(hours))
    weight[rng.random(len(hours)) < _HOUR_GAP_P] = 0.0
    if rng.random() < _OUTAGE_P:
        first = int(rng.integers(0, len(hours)))
        weight[first : first + int(rng.integers(2, 7))] = 0.0
    if weight.sum() == 0:
        weight[int(rng.integers(0, len(hours)))] = 1.0

    # Candidate readings; collisions (same room, minute, location and temperature, which a
    # validator cannot tell from a duplicate) are dropped, then n_real of the rest are kept.
    # More candidates are drawn while too few distinct ones remain (a crowded day), up to 5 times.
    date = plan.dates[d]
    p_hour = weight / weight.sum()
    parts: list[tuple[np.ndarray, ...]] = []
    distinct = 0
    for _ in range(5):
        parts.append(_candidates(plan, d, rng, hours, p_hour, n_real - distinct + n_real // 4 + 8))
        minute, out, room, temp = (np.concatenate(column) for column in zip(*parts, strict=True))
        key = ((room * 1440 + minute) * 2 + out) * 256 + (temp - GENERATED_TEMP_RANGE[0])
        _, first_seen = np.unique(key, return_index=True)
        distinct = len(first_seen)
        if distinct >= n_real:
            break
    keep = np.sort(rng.choice(first_seen, min(n_real, distinct), replace=False))
    minute, out, room, temp = minute[keep], out[keep], room[keep], temp[keep]
    n_real = len(keep)

    # Duplicates: copies of real readings, half keeping the id, half getting a new one.
    dup_of = rng.choice(n_real, n_dup, replace=n_dup > n_real) if n_real else np.empty(0, int)
    same_id = rng.random(len(dup_of)) < 0.5
    src = np.concatenate([np.arange(n_real), dup_of])  # creation order: reals, then duplicates
    # Oldest first by minute, ties in random order; id numbers are handed out in that order.
    order = np.lexsort((rng.random(len(src)), minute[src]))
    src = src[order]
    is_dup = order >= n_real
    keeps_id = np.zeros(len(src), dtype=bool)
    keeps_id[is_dup] = same_id[order[is_dup] - n_real]
    numbers = plan.id_base[d] + np.sort(rng.choice(_ID_SPACING * len(src) + 1, len(src), replace=False))
    hexes = _hex8(rng.integers(0, 2**32, len(src), dtype=np.uint64))
    position_of_real = np.empty(n_real, dtype=np.int64)
    position_of_real[src[~is_dup]] = np.flatnonzero(~is_dup)
    copy_from = np.where(keeps_id, position_of_real[src], np.arange(len(src)))
    numbers, hexes = numbers[copy_from], hexes[copy_from]

    ids = ID_PREFIX + pd.Series(numbers).astype(str) + "_" + pd.Series(hexes)
    prefix = date.strftime("%d-%m-%Y ")
    frame = pd.DataFrame(
        {
            RAW_ID: ids.to_numpy(),
            RAW_ROOM: plan.room_names[room[src]],
            RAW_DATE: prefix + _HHMM[minute[src]],
            RAW_TEMP: temp[src],
            RAW_LOCATION: np.where(out[src], "Out", "In").astype(object),
        }
    )
    return frame.iloc[::-1]


def _candidates(
    plan: _Plan, d: int, rng: np.random.Generator, hours: np.ndarray, p_hour: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``m`` random readings of day ``d``: minute of the day, is-Out, room index, whole °C."""
    minute = rng.choice(hours, m, p=p_hour) * 60 + rng.integers(0, 60, m)
    out = rng.random(m) < OUT_FRACTION
    room = rng.integers(0, len(plan.room_names), m)
    hour = minute / 60.0
    doy = float(plan.dates[d].day_of_year)
    mean_out = _seasonal(doy, _MONTHLY_OUT) + plan.weather_out[d]
    mean_in = _seasonal(doy, _MONTHLY_IN) + plan.weather_in[d]
    cycle_out = _DAILY_AMPLITUDE["Out"] * np.cos(2 * np.pi * (hour - _DAILY_PEAK_HOUR["Out"]) / 24)
    cycle_in = _DAILY_AMPLITUDE["In"] * np.cos(2 * np.pi * (hour - _DAILY_PEAK_HOUR["In"]) / 24)
    noise = rng.normal(0.0, 1.0, m) * np.where(out, _NOISE_SD["Out"], _NOISE_SD["In"])
    spike = (rng.random(m) < _SUN_SPIKE_P) & out & (hour >= 9) & (hour < 17)
    spike_size = rng.normal(_SUN_SPIKE_MEAN, _SUN_SPIKE_SD, m)
    value = np.where(out, mean_out + cycle_out, mean_in + cycle_in) + noise + plan.room_offsets[room]
    value = value + np.where(spike, spike_size, 0.0)
    temp = np.rint(np.clip(value, *GENERATED_TEMP_RANGE)).astype(np.int64)
    return minute, out, room, temp


def _hex8(values: np.ndarray) -> np.ndarray:
    """8 lower-case hex digits per value (< 2**32), vectorised."""
    text = values.astype(">u4").tobytes().hex()
    return np.frombuffer(text.encode("ascii"), dtype="S8").astype(str).astype(object)


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="str") for c in RAW_COLUMNS})
    frame[RAW_TEMP] = frame[RAW_TEMP].astype(np.int64)
    return frame


def iter_readings(
    scale: float = 1.0,
    seed: int = 0,
    *,
    start: str | pd.Timestamp = DEFAULT_START,
    days: int = DEFAULT_DAYS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """Yield the readings of :func:`generate_readings` in chunks of ``chunk_rows`` rows.

    Every chunk but the last has exactly ``chunk_rows`` rows; the index runs on across chunks, so
    ``pd.concat(chunks)`` equals ``generate_readings(...)``. Memory: one day plus one chunk.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows!r}")
    plan = _plan(scale, seed, start, days)
    pending: list[pd.DataFrame] = []
    n_pending = 0
    emitted = 0

    def cut(frame: pd.DataFrame) -> pd.DataFrame:
        nonlocal emitted
        frame = frame.reset_index(drop=True)
        frame.index = pd.RangeIndex(emitted, emitted + len(frame))
        emitted += len(frame)
        return frame

    for d in reversed(range(len(plan.dates))):
        if plan.counts[d] == 0:
            continue
        day = _day_frame(plan, d)
        pending.append(day)
        n_pending += len(day)
        if n_pending >= chunk_rows:
            block = pd.concat(pending, ignore_index=True)
            whole = (len(block) // chunk_rows) * chunk_rows
            for lo in range(0, whole, chunk_rows):
                yield cut(block.iloc[lo : lo + chunk_rows])
            pending = [block.iloc[whole:]]
            n_pending = len(block) - whole
    if n_pending:
        yield cut(pd.concat(pending, ignore_index=True))


def generate_readings(
    scale: float = 1.0,
    seed: int = 0,
    start: str | pd.Timestamp = DEFAULT_START,
    days: int = DEFAULT_DAYS,
) -> pd.DataFrame:
    """All readings as one DataFrame in the raw layout (``RAW_COLUMNS``; ``temp`` int64, the rest
    text formatted exactly like the original). For large scales use :func:`iter_readings` or
    :func:`write_csv`."""
    chunks = list(iter_readings(scale, seed, start=start, days=days, chunk_rows=1 << 62))
    if not chunks:
        return _empty()
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks)


def write_csv(
    path_or_file: str | os.PathLike[str] | IO[bytes] | IO[str],
    scale: float = 1.0,
    seed: int = 0,
    *,
    start: str | pd.Timestamp = DEFAULT_START,
    days: int = DEFAULT_DAYS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> int:
    """Stream the readings as CSV in the original's layout; return the number of rows written.

    ``path_or_file`` is a local path, or an open binary (e.g. ``fsspec.open(url, "wb")``) or text
    file object, which is written to and left open. UTF-8, ``\\n`` line ends, no index, no quoting
    (no field needs it).
    """
    if isinstance(path_or_file, str | os.PathLike):
        with Path(path_or_file).open("wb") as handle:
            return write_csv(handle, scale, seed, start=start, days=days, chunk_rows=chunk_rows)
    text_mode = isinstance(path_or_file, io.TextIOBase)
    rows = 0
    header = True
    for chunk in iter_readings(scale, seed, start=start, days=days, chunk_rows=chunk_rows):
        text = chunk.to_csv(index=False, header=header, lineterminator="\n")
        path_or_file.write(text if text_mode else text.encode("utf-8"))
        header = False
        rows += len(chunk)
    if header:  # no rows: still a valid, header-only file
        line = ",".join(RAW_COLUMNS) + "\n"
        path_or_file.write(line if text_mode else line.encode("utf-8"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m r3e_testbed.pipeline.generate OUTPUT [--scale S] [--seed N] [--start D] [--days N]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m r3e_testbed.pipeline.generate",
        description="Write seeded synthetic readings in the layout of IOT-temp.csv.",
    )
    parser.add_argument("output", type=Path, help="the CSV file to write")
    parser.add_argument("--scale", type=float, default=1.0, help="1 = the original's 97,606 rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default=DEFAULT_START, help="first day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.days < 1:
        parser.error("--scale must be positive and --days at least 1")
    rows = write_csv(args.output, args.scale, args.seed, start=args.start, days=args.days)
    print(f"{args.output}: {rows:,} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

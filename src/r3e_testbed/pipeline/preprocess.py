"""Daily series and Prophet frames from the clean readings, as in the Kaggle notebook.

The notebook ("IoT Temperature Forecasting", Prophet on IOT-temp.csv) drops duplicates, parses the
dates day-first, takes the daily mean temperature of the In and Out series, fills gaps by
interpolation and labels every day with an Indian season. The functions here do the same on the
clean frame that validation produces (columns ``id``, ``room_id``, ``noted_at``, ``temp``,
``location``; dates already parsed).

Bad input is refused rather than guessed at: readings without a timestamp, non-finite
temperatures other than NaN, and locations other than ``In``/``Out`` raise ``ValueError``. A NaN
temperature is skipped (as the notebook's daily mean skips it); a day left without any reading
becomes a gap and is interpolated.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from r3e_testbed.pipeline.schema import CLEAN_LOCATION as LOCATION
from r3e_testbed.pipeline.schema import CLEAN_TEMP as TEMP
from r3e_testbed.pipeline.schema import CLEAN_TIME as NOTED_AT
from r3e_testbed.pipeline.schema import DUPLICATE_KEY, LOCATIONS

WINTER, SUMMER, MONSOON, POST_MONSOON = "Winter", "Summer", "Monsoon", "Post_Monsoon"
SEASONS: tuple[str, ...] = (WINTER, SUMMER, MONSOON, POST_MONSOON)

#: Month number -> season: Winter Dec-Feb, Summer Mar-May, Monsoon Jun-Sep, Post_Monsoon Oct-Nov.
SEASON_OF_MONTH: dict[int, str] = {
    12: WINTER,
    1: WINTER,
    2: WINTER,
    3: SUMMER,
    4: SUMMER,
    5: SUMMER,
    6: MONSOON,
    7: MONSOON,
    8: MONSOON,
    9: MONSOON,
    10: POST_MONSOON,
    11: POST_MONSOON,
}

#: Boolean condition column -> the season in which it is True. Each flag comes from its own
#: season (the notebook's copy put the monsoon flag into the post-monsoon column).
SEASON_FLAGS: dict[str, str] = {
    "is_monsoon": MONSOON,
    "is_post_monsoon": POST_MONSOON,
    "is_winter": WINTER,
}


def season_of(timestamps: pd.Series | pd.DatetimeIndex | Iterable) -> pd.Series:
    """The season name of every timestamp.

    A Series keeps its index; a DatetimeIndex (or any other sequence, converted to one) becomes
    the index of the result. Raises ``ValueError`` on missing timestamps.
    """
    if isinstance(timestamps, pd.Series):
        values = pd.to_datetime(timestamps)
        months, index = values.dt.month, timestamps.index
    else:
        values = pd.DatetimeIndex(pd.to_datetime(timestamps))
        months, index = pd.Series(values.month, index=values), values
    if values.isna().any():
        raise ValueError(f"season_of: {int(values.isna().sum())} missing timestamp(s)")
    names = [SEASON_OF_MONTH[int(m)] for m in months]
    return pd.Series(names, index=index, dtype=object, name="season")


def add_season_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with ``season`` and the boolean condition columns computed from ``ds``.

    Used both for the training frame and for Prophet's future frames, so that the conditional
    seasonalities see the same flags at fit and at predict time.
    """
    if "ds" not in frame.columns:
        raise ValueError(f"add_season_flags: no 'ds' column (columns: {list(frame.columns)})")
    out = frame.copy()
    out["ds"] = pd.to_datetime(out["ds"])
    season = season_of(out["ds"])
    out["season"] = season
    for flag, name in SEASON_FLAGS.items():
        out[flag] = (season == name).astype(bool)
    return out


def _check_clean(chunk: pd.DataFrame) -> pd.DataFrame:
    """The columns the daily means need, duplicates dropped; ValueError on what cannot be placed.

    Duplicates are rows equal on ``schema.DUPLICATE_KEY`` (room, time, temperature, location),
    whatever their ids: the same reading exported twice, as the validator defines it.
    """
    missing = [c for c in (NOTED_AT, TEMP, LOCATION) if c not in chunk.columns]
    if missing:
        raise ValueError(f"clean readings lack column(s) {missing} (columns: {list(chunk.columns)})")
    chunk = chunk.drop_duplicates(subset=[c for c in DUPLICATE_KEY if c in chunk.columns])
    unknown = sorted(set(chunk[LOCATION].dropna().unique()) - set(LOCATIONS))
    n_missing_loc = int(chunk[LOCATION].isna().sum())
    if unknown or n_missing_loc:
        raise ValueError(
            f"unknown location value(s) {unknown[:10]} and {n_missing_loc} missing location(s); "
            f"expected one of {list(LOCATIONS)}"
        )
    if not pd.api.types.is_datetime64_any_dtype(chunk[NOTED_AT]):
        raise ValueError(
            f"{NOTED_AT} has dtype {chunk[NOTED_AT].dtype}, not datetime: parse the dates (day-first) "
            "before preprocessing"
        )
    noted_at = chunk[NOTED_AT]
    if noted_at.isna().any():
        raise ValueError(f"{int(noted_at.isna().sum())} reading(s) without a timestamp ({NOTED_AT})")
    temp = pd.to_numeric(chunk[TEMP]).astype("float64")
    if np.isinf(temp).any():
        raise ValueError(f"{int(np.isinf(temp).sum())} infinite temperature(s)")
    keep = temp.notna()
    return pd.DataFrame(
        {
            "day": noted_at[keep].dt.floor("D"),
            LOCATION: chunk.loc[keep, LOCATION].astype(str),
            TEMP: temp[keep],
        }
    )


class DailyAccumulator:
    """Daily means built chunk by chunk, holding only a sum and a count per (day, location).

    ``acc.add(chunk)`` for every chunk of clean readings, then ``acc.daily()`` gives what
    ``daily_series`` gives on all the readings at once (up to float summation order, ~1e-12).

    Duplicates are dropped within a chunk only. A reading repeated in two chunks is counted
    twice: removing duplicates across the whole data set is the validator's job (it sees every
    ``id``); this class deliberately keeps no per-reading state.
    """

    def __init__(self) -> None:
        self._sums = pd.Series(dtype="float64")
        self._counts = pd.Series(dtype="int64")
        self.rows = 0

    def add(self, chunk: pd.DataFrame) -> DailyAccumulator:
        """Add one chunk of clean readings; returns self."""
        readings = _check_clean(chunk)
        if readings.empty:
            return self
        grouped = readings.groupby(["day", LOCATION])[TEMP]
        sums, counts = grouped.sum(), grouped.count()
        if self._sums.empty:
            self._sums, self._counts = sums, counts
        else:
            self._sums = self._sums.add(sums, fill_value=0.0)
            self._counts = self._counts.add(counts, fill_value=0).astype("int64")
        self.rows += len(readings)
        return self

    def daily(self) -> pd.DataFrame:
        """Daily mean °C: index ``day`` (every calendar day from the first to the last reading of
        either series), columns ``In`` and ``Out``.

        Gaps inside a series are filled by time interpolation; days before a series' first or
        after its last reading stay NaN (a series with no reading at all is all NaN). Raises
        ``ValueError`` if no reading was added.
        """
        if self._sums.empty:
            raise ValueError("no readings: cannot build daily series from an empty frame")
        means = (self._sums / self._counts).unstack(LOCATION)
        means = means.reindex(columns=list(LOCATIONS))
        days = pd.date_range(means.index.min(), means.index.max(), freq="D", name="day")
        means = means.reindex(days)
        means.columns.name = None
        return means.interpolate(method="time", limit_area="inside").astype("float64")


def daily_series(clean: pd.DataFrame) -> pd.DataFrame:
    """Daily mean temperature of the In and Out series (see ``DailyAccumulator.daily``)."""
    return DailyAccumulator().add(clean).daily()


def prophet_frame(daily: pd.DataFrame, location: str) -> pd.DataFrame:
    """The Prophet training frame of one series: ``ds``, ``y``, ``season`` and the condition flags.

    Days outside the series' first and last reading are dropped. Raises ``ValueError`` for an
    unknown location or a series without any reading.
    """
    if location not in LOCATIONS:
        raise ValueError(f"unknown location {location!r}; expected one of {list(LOCATIONS)}")
    if location not in daily.columns:
        raise ValueError(f"daily frame has no {location!r} column (columns: {list(daily.columns)})")
    series = daily[location].dropna()
    if series.empty:
        raise ValueError(f"no {location!r} readings: the series is empty")
    frame = pd.DataFrame({"ds": pd.DatetimeIndex(series.index), "y": series.to_numpy(dtype="float64")})
    return add_season_flags(frame)

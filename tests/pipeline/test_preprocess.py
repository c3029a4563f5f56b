"""Daily series, seasons and Prophet frames (r3e_testbed.pipeline.preprocess)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.pipeline.preprocess import (
    SEASON_FLAGS,
    DailyAccumulator,
    add_season_flags,
    daily_series,
    prophet_frame,
    season_of,
)

FLAGS = ["is_monsoon", "is_post_monsoon", "is_winter"]


def readings(rows: list[tuple[str, float, str]], room: str = "Room Admin") -> pd.DataFrame:
    """A clean frame from (timestamp, temp, location) rows."""
    return pd.DataFrame(
        {
            "id": [f"__export__.temp_log_{i}_0000abcd" for i in range(len(rows))],
            "room_id": room,
            "noted_at": pd.to_datetime([r[0] for r in rows], format="%Y-%m-%d %H:%M").astype(
                "datetime64[ns]"
            ),
            "temp": np.array([r[1] for r in rows], dtype="float64"),
            "location": [r[2] for r in rows],
        }
    )


def random_readings(n: int = 4000, days: int = 90, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2018-07-28")
    minutes = np.sort(rng.integers(0, days * 24 * 60, n))
    return pd.DataFrame(
        {
            "id": [f"__export__.temp_log_{i}_{i:08x}" for i in range(n)],
            "room_id": "Room Admin",
            "noted_at": (start + pd.to_timedelta(minutes, unit="min")).astype("datetime64[ns]"),
            "temp": rng.normal(30, 3, n).round(0),
            "location": rng.choice(["In", "Out"], n, p=[0.3, 0.7]),
        }
    )


# --- seasons ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "season"),
    [
        ("2018-01-15", "Winter"),
        ("2018-02-28", "Winter"),
        ("2018-03-01", "Summer"),
        ("2018-05-31", "Summer"),
        ("2018-06-01", "Monsoon"),
        ("2018-09-30", "Monsoon"),
        ("2018-10-01", "Post_Monsoon"),
        ("2018-11-30", "Post_Monsoon"),
        ("2018-12-01", "Winter"),
    ],
)
def test_season_of_boundaries(day, season):
    assert season_of(pd.DatetimeIndex([day])).iloc[0] == season


def test_season_of_keeps_series_index_and_indexes_by_dates():
    s = pd.Series(pd.to_datetime(["2018-07-01", "2018-12-24"]), index=[10, 20])
    out = season_of(s)
    assert list(out.index) == [10, 20]
    assert list(out) == ["Monsoon", "Winter"]
    days = pd.date_range("2018-09-29", periods=4, freq="D")
    out = season_of(days)
    assert out.index.equals(days)
    assert list(out) == ["Monsoon", "Monsoon", "Post_Monsoon", "Post_Monsoon"]


def test_season_of_refuses_missing_timestamps():
    with pytest.raises(ValueError, match="1 missing timestamp"):
        season_of(pd.Series(pd.to_datetime(["2018-07-01", None])))


def test_season_flags_each_from_its_own_season():
    """The notebook's copy filled is_post_monsoon from the monsoon months; this catches that."""
    frame = pd.DataFrame({"ds": pd.to_datetime(["2018-07-15", "2018-10-15", "2018-01-15", "2018-04-15"])})
    out = add_season_flags(frame)
    assert list(out["season"]) == ["Monsoon", "Post_Monsoon", "Winter", "Summer"]
    assert list(out["is_monsoon"]) == [True, False, False, False]
    assert list(out["is_post_monsoon"]) == [False, True, False, False]
    assert list(out["is_winter"]) == [False, False, True, False]
    assert all(out[f].dtype == bool for f in FLAGS)
    assert SEASON_FLAGS == {"is_monsoon": "Monsoon", "is_post_monsoon": "Post_Monsoon", "is_winter": "Winter"}


def test_season_flags_over_a_year_match_the_months():
    out = add_season_flags(pd.DataFrame({"ds": pd.date_range("2018-01-01", "2018-12-31", freq="D")}))
    month = out["ds"].dt.month
    assert (out["is_monsoon"] == month.isin([6, 7, 8, 9])).all()
    assert (out["is_post_monsoon"] == month.isin([10, 11])).all()
    assert (out["is_winter"] == month.isin([12, 1, 2])).all()
    assert (out[FLAGS].sum(axis=1) == (~month.isin([3, 4, 5])).astype(int)).all()  # at most one flag


def test_add_season_flags_copies_and_needs_ds():
    frame = pd.DataFrame({"ds": pd.to_datetime(["2018-07-15"]), "y": [1.0]})
    add_season_flags(frame)
    assert list(frame.columns) == ["ds", "y"]
    with pytest.raises(ValueError, match="no 'ds' column"):
        add_season_flags(pd.DataFrame({"date": [1]}))


# --- daily series ----------------------------------------------------------------------------


def test_daily_means_interpolation_and_no_invented_edges():
    clean = readings(
        [
            ("2018-07-01 09:00", 30.0, "In"),
            ("2018-07-01 18:00", 32.0, "In"),
            ("2018-07-04 12:00", 37.0, "In"),  # 07-02 and 07-03 are a gap
            ("2018-07-02 10:00", 40.0, "Out"),
            ("2018-07-03 10:00", 41.0, "Out"),
            ("2018-07-03 11:00", 44.0, "Out"),
        ]
    )
    daily = daily_series(clean)
    assert list(daily.columns) == ["In", "Out"]
    assert daily.index.name == "day"
    assert list(daily.index) == list(pd.date_range("2018-07-01", "2018-07-04", freq="D"))
    assert daily["In"].tolist() == pytest.approx([31.0, 33.0, 35.0, 37.0])
    out = daily["Out"]
    assert np.isnan(out.iloc[0]) and np.isnan(out.iloc[3])  # before first / after last reading
    assert out.iloc[1:3].tolist() == pytest.approx([40.0, 42.5])


def test_daily_time_interpolation_over_uneven_gap():
    clean = readings(
        [("2018-07-01 00:00", 30.0, "In"), ("2018-07-02 00:00", 30.0, "In"), ("2018-07-06 00:00", 34.0, "In")]
    )
    assert daily_series(clean)["In"].tolist() == pytest.approx([30.0, 30.0, 31.0, 32.0, 33.0, 34.0])


def test_daily_drops_duplicate_readings_whatever_their_ids():
    clean = readings(
        [("2018-07-01 09:00", 30.0, "In"), ("2018-07-01 09:00", 30.0, "In"), ("2018-07-01 10:00", 36.0, "In")]
    )
    assert clean["id"].nunique() == 3
    assert daily_series(clean)["In"].iloc[0] == pytest.approx(33.0)  # not (30 + 30 + 36) / 3 = 32


def test_daily_single_day():
    daily = daily_series(readings([("2018-07-01 09:00", 29.0, "In"), ("2018-07-01 09:05", 41.0, "Out")]))
    assert len(daily) == 1
    assert daily.iloc[0].tolist() == [29.0, 41.0]


def test_daily_series_missing_entirely():
    daily = daily_series(readings([("2018-07-01 09:00", 41.0, "Out"), ("2018-07-02 09:00", 43.0, "Out")]))
    assert daily["In"].isna().all()
    assert daily["Out"].tolist() == [41.0, 43.0]
    with pytest.raises(ValueError, match="no 'In' readings"):
        prophet_frame(daily, "In")


def test_daily_skips_nan_temperatures_and_fills_an_all_nan_day():
    clean = readings(
        [
            ("2018-07-01 09:00", 30.0, "In"),
            ("2018-07-01 10:00", float("nan"), "In"),
            ("2018-07-02 09:00", float("nan"), "In"),
            ("2018-07-03 09:00", 34.0, "In"),
        ]
    )
    assert daily_series(clean)["In"].tolist() == pytest.approx([30.0, 32.0, 34.0])


def test_daily_refuses_empty_and_all_nan():
    with pytest.raises(ValueError, match="no readings"):
        daily_series(readings([]))
    with pytest.raises(ValueError, match="no readings"):
        daily_series(readings([("2018-07-01 09:00", float("nan"), "In")]))


@pytest.mark.parametrize("bad", ["in", "Inside", ""])
def test_daily_refuses_unknown_locations(bad):
    with pytest.raises(ValueError, match="unknown location"):
        daily_series(readings([("2018-07-01 09:00", 30.0, "In"), ("2018-07-01 09:00", 30.0, bad)]))


def test_daily_refuses_missing_location_timestamp_inf_and_text_dates():
    clean = readings([("2018-07-01 09:00", 30.0, "In")])
    with pytest.raises(ValueError, match="missing location"):
        daily_series(clean.assign(location=[None]))
    with pytest.raises(ValueError, match="without a timestamp"):
        daily_series(clean.assign(noted_at=pd.Series([pd.NaT], dtype="datetime64[ns]")))
    with pytest.raises(ValueError, match="infinite"):
        daily_series(clean.assign(temp=[np.inf]))
    with pytest.raises(ValueError, match="not datetime"):
        daily_series(clean.assign(noted_at=["01-07-2018 09:00"]))
    with pytest.raises(ValueError, match=r"lack column\(s\) \['temp'\]"):
        daily_series(clean.drop(columns="temp"))


# --- streaming -------------------------------------------------------------------------------


def test_accumulator_chunks_equal_whole():
    clean = random_readings()
    whole = daily_series(clean)
    acc = DailyAccumulator()
    for start in range(0, len(clean), 777):
        acc.add(clean.iloc[start : start + 777])
    chunked = acc.daily()
    assert acc.rows == len(clean.drop_duplicates(subset=["room_id", "noted_at", "temp", "location"]))
    assert len(whole) == 90
    pd.testing.assert_frame_equal(chunked, whole, rtol=0, atol=1e-9)
    # and the whole-data means are the plain per-day means
    expected = clean.drop_duplicates(subset=["noted_at", "temp", "location"]).assign(
        day=clean["noted_at"].dt.floor("D")
    )
    mean_out = expected[expected["location"] == "Out"].groupby("day")["temp"].mean()
    np.testing.assert_allclose(whole.loc[mean_out.index, "Out"].to_numpy(), mean_out.to_numpy(), atol=1e-9)


def test_accumulator_shuffled_chunks_and_empty_chunks():
    clean = random_readings(n=600, days=20, seed=3)
    shuffled = clean.sample(frac=1.0, random_state=1)
    acc = DailyAccumulator().add(clean.iloc[:0])
    for part in np.array_split(np.arange(len(shuffled)), 5):
        acc.add(shuffled.iloc[part])
    pd.testing.assert_frame_equal(acc.daily(), daily_series(clean), rtol=0, atol=1e-9)


def test_accumulator_counts_cross_chunk_duplicates_twice():
    """Documented limitation: duplicates across chunks are the validator's job."""
    rows = readings([("2018-07-01 09:00", 30.0, "In"), ("2018-07-01 10:00", 36.0, "In")])
    acc = DailyAccumulator().add(rows).add(rows.iloc[:1])
    assert acc.daily()["In"].iloc[0] == pytest.approx(32.0)  # (30 + 36 + 30) / 3


def test_accumulator_empty_refuses():
    with pytest.raises(ValueError, match="no readings"):
        DailyAccumulator().daily()


# --- Prophet frame ---------------------------------------------------------------------------


def test_prophet_frame_columns_values_and_edges():
    daily = pd.DataFrame(
        {"In": [np.nan, 30.0, 31.0, np.nan], "Out": [40.0, 41.0, 42.0, 43.0]},
        index=pd.date_range("2018-09-29", periods=4, freq="D", name="day"),
    )
    frame = prophet_frame(daily, "In")
    assert list(frame.columns) == ["ds", "y", "season", *FLAGS]
    assert list(frame["ds"]) == list(pd.to_datetime(["2018-09-30", "2018-10-01"]))
    assert frame["y"].tolist() == [30.0, 31.0]
    assert frame["season"].tolist() == ["Monsoon", "Post_Monsoon"]
    assert frame["is_monsoon"].tolist() == [True, False]
    assert frame["is_post_monsoon"].tolist() == [False, True]
    assert len(prophet_frame(daily, "Out")) == 4


def test_prophet_frame_refuses_unknown_or_absent_location():
    daily = pd.DataFrame({"Out": [40.0]}, index=pd.DatetimeIndex(["2018-07-01"], name="day"))
    with pytest.raises(ValueError, match="unknown location 'out'"):
        prophet_frame(daily, "out")
    with pytest.raises(ValueError, match="no 'In' column"):
        prophet_frame(daily, "In")

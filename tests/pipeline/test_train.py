"""Prophet, the ridge baseline and their serialization (r3e_testbed.pipeline.train)."""

from __future__ import annotations

import json
import logging
import pickle

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.pipeline.train import (
    BASELINE_FOURIER_ORDER,
    PROPHET_SETTINGS,
    BaselineModel,
    baseline_feature_names,
    baseline_features,
    baseline_from_bytes,
    baseline_to_bytes,
    forecast_baseline,
    forecast_prophet,
    predict_prophet,
    prophet_from_bytes,
    prophet_to_bytes,
    train_baseline,
    train_prophet,
)

START = pd.Timestamp("2018-07-28")  # the first day of the Kaggle file
DAYS = 126  # 2018-07-28 .. 2018-11-30: monsoon and post-monsoon


def linear(days: int = DAYS, noise: float = 0.1) -> pd.DataFrame:
    """y = 32 - 0.04 * day + seeded noise: a known trend both models must extrapolate.

    The noise matters: on a noise-free series of fewer than 100 days Prophet's Newton optimiser
    takes 5-30 s (the observation noise goes to zero); with a little noise it takes 0.1 s.
    """
    ds = pd.date_range(START, periods=days, freq="D")
    wiggle = np.random.default_rng(1).normal(0.0, noise, days)
    return pd.DataFrame({"ds": ds, "y": 32.0 - 0.04 * np.arange(days) + wiggle})


def truth(dates: pd.Series) -> np.ndarray:
    return 32.0 - 0.04 * ((pd.to_datetime(dates) - START) / pd.Timedelta(days=1)).to_numpy()


@pytest.fixture(scope="module")
def prophet_model():
    return train_prophet(linear())


@pytest.fixture(scope="module")
def baseline_model():
    return train_baseline(linear())


# --- settings --------------------------------------------------------------------------------


def test_prophet_settings_are_the_notebooks():
    assert PROPHET_SETTINGS["model"] == {
        "changepoint_prior_scale": 0.1,
        "yearly_seasonality": 2,
        "weekly_seasonality": False,
        "daily_seasonality": False,
    }
    by_name = {s["name"]: s for s in PROPHET_SETTINGS["conditional_seasonalities"]}
    assert {n: s["period"] for n, s in by_name.items()} == {"monsoon": 124, "post_monsoon": 62, "winter": 93}
    assert {n: s["condition_name"] for n, s in by_name.items()} == {
        "monsoon": "is_monsoon",
        "post_monsoon": "is_post_monsoon",
        "winter": "is_winter",
    }
    assert all(s["fourier_order"] == 5 and s["prior_scale"] == 0.1 for s in by_name.values())


# --- Prophet ---------------------------------------------------------------------------------


def test_fitted_prophet_has_the_notebooks_components(prophet_model):
    seasonalities = prophet_model.seasonalities
    assert set(seasonalities) == {"monsoon", "post_monsoon", "winter", "yearly"}
    assert seasonalities["yearly"]["fourier_order"] == 2
    assert seasonalities["post_monsoon"]["condition_name"] == "is_post_monsoon"
    assert seasonalities["post_monsoon"]["period"] == 62
    assert prophet_model.changepoint_prior_scale == 0.1


def test_prophet_trains_on_flags_from_its_own_season():
    """Mixed-up flags from the caller are ignored: train recomputes them from ds."""
    frame = linear(130)  # to 2018-12-04: a few winter days too
    frame["is_monsoon"] = True
    frame["is_post_monsoon"] = frame["ds"].dt.month.isin([6, 7, 8, 9])  # the notebook's mistake
    frame["is_winter"] = False
    model = train_prophet(frame)
    month = model.history["ds"].dt.month
    assert (model.history["is_post_monsoon"] == month.isin([10, 11])).all()
    assert (model.history["is_monsoon"] == month.isin([6, 7, 8, 9])).all()
    assert (model.history["is_winter"] == month.isin([12, 1, 2])).all()
    assert model.history["is_winter"].sum() == 4  # 2018-12-01 .. 12-04


def test_prophet_forecast_shape_dates_and_accuracy(prophet_model):
    forecast = forecast_prophet(prophet_model, 14)
    assert list(forecast.columns) == ["ds", "yhat", "yhat_lower", "yhat_upper"]
    assert list(forecast["ds"]) == list(pd.date_range("2018-12-01", periods=14, freq="D"))
    assert (forecast["yhat_lower"] < forecast["yhat"]).all()
    assert (forecast["yhat"] < forecast["yhat_upper"]).all()
    np.testing.assert_allclose(forecast["yhat"], truth(forecast["ds"]), atol=0.3)


def test_prophet_repeated_fits_give_identical_forecasts(prophet_model):
    again = train_prophet(linear())
    pd.testing.assert_frame_equal(forecast_prophet(again, 14), forecast_prophet(prophet_model, 14))


def test_prophet_forecast_leaves_global_random_state_alone(prophet_model):
    np.random.seed(123)
    expected = np.random.random_sample()
    np.random.seed(123)
    forecast_prophet(prophet_model, 3)
    assert np.random.random_sample() == expected


def test_prophet_seed_changes_only_the_interval(prophet_model):
    a = forecast_prophet(prophet_model, 5, seed=0)
    b = forecast_prophet(prophet_model, 5, seed=1)
    pd.testing.assert_series_equal(a["yhat"], b["yhat"])
    assert (a["yhat_upper"] != b["yhat_upper"]).all()


def test_predict_prophet_at_given_dates(prophet_model):
    dates = pd.to_datetime(["2018-08-01", "2018-12-10"])
    out = predict_prophet(prophet_model, dates)
    assert list(out["ds"]) == list(dates)
    np.testing.assert_allclose(out["yhat"], truth(dates), atol=0.3)
    with pytest.raises(ValueError, match="no dates"):
        predict_prophet(prophet_model, [])


def test_prophet_round_trips_through_bytes(prophet_model):
    data = prophet_to_bytes(prophet_model)
    assert isinstance(data, bytes)
    assert json.loads(data)["changepoint_prior_scale"] == 0.1
    loaded = prophet_from_bytes(data)
    pd.testing.assert_frame_equal(forecast_prophet(loaded, 14), forecast_prophet(prophet_model, 14))


@pytest.mark.parametrize("days", [0, -3, 2.5, True])
def test_forecast_prophet_refuses_bad_days(prophet_model, days):
    with pytest.raises(ValueError, match="positive integer"):
        forecast_prophet(prophet_model, days)


def test_train_prophet_refuses_bad_frames():
    frame = linear(5)
    with pytest.raises(ValueError, match="at least 2 rows with a value; got 1"):
        train_prophet(frame.iloc[:1])
    with pytest.raises(ValueError, match="got 0"):
        train_prophet(frame.iloc[:0])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['y'\]"):
        train_prophet(frame.drop(columns="y"))
    with pytest.raises(ValueError, match="1 repeated date"):
        train_prophet(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(ValueError, match="infinite"):
        train_prophet(frame.assign(y=[1.0, np.inf, 3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="got 1"):
        train_prophet(frame.assign(y=[1.0, np.nan, np.nan, np.nan, np.nan]))


def test_train_prophet_skips_nan_values():
    frame = linear(40)
    frame.loc[[5, 6, 20], "y"] = np.nan
    model = train_prophet(frame)
    assert len(model.history) == 37
    without = train_prophet(frame.dropna())
    pd.testing.assert_frame_equal(forecast_prophet(model, 3), forecast_prophet(without, 3))


def test_prophet_fit_is_quiet(caplog, capfd):
    for name in ("cmdstanpy", "prophet"):  # as loud as they are on import: each fit must quieten them
        logging.getLogger(name).setLevel(logging.DEBUG)
    with caplog.at_level(logging.DEBUG):
        train_prophet(linear(40))
    noisy = [r for r in caplog.records if r.name.startswith(("cmdstanpy", "prophet")) and r.levelno < 30]
    assert noisy == []
    assert not any("Yearly seasonality is enabled" in r.getMessage() for r in caplog.records)
    assert "cmdstanpy" not in capfd.readouterr().err


# --- baseline --------------------------------------------------------------------------------


def test_baseline_features():
    assert baseline_feature_names(2) == [
        "trend_years",
        "yearly_sin1",
        "yearly_cos1",
        "yearly_sin2",
        "yearly_cos2",
    ]
    dates = [pd.Timestamp("1970-01-01"), pd.Timestamp("1970-04-02 07:30")]
    x = baseline_features(dates, pd.Timestamp("1970-01-01"), 1)
    # 1970-04-02 07:30 is 91.3125 days = a quarter of 365.25 days after the epoch
    np.testing.assert_allclose(x, [[0.0, 0.0, 1.0], [0.25, 1.0, 0.0]], atol=1e-12)


def test_baseline_forecast_on_a_known_trend(baseline_model):
    dates = pd.date_range("2018-12-01", periods=14, freq="D")
    forecast = forecast_baseline(baseline_model, dates)
    assert list(forecast.columns) == ["ds", "yhat"]
    assert list(forecast["ds"]) == list(dates)
    np.testing.assert_allclose(forecast["yhat"], truth(dates), atol=0.5)
    # in-sample it is close too
    inside = forecast_baseline(baseline_model, linear()["ds"])
    assert np.abs(inside["yhat"] - truth(inside["ds"])).mean() < 0.1


def test_baseline_is_deterministic_and_exact_through_bytes(baseline_model):
    data = baseline_to_bytes(baseline_model)
    document = json.loads(data)
    assert document["features"] == baseline_feature_names(BASELINE_FOURIER_ORDER)
    assert document["origin"] == "2018-07-28T00:00:00"
    loaded = baseline_from_bytes(data)
    assert isinstance(loaded, BaselineModel)
    dates = pd.date_range("2018-07-01", periods=200, freq="D")
    pd.testing.assert_frame_equal(forecast_baseline(loaded, dates), forecast_baseline(baseline_model, dates))
    again = train_baseline(linear())
    pd.testing.assert_frame_equal(forecast_baseline(again, dates), forecast_baseline(baseline_model, dates))
    assert baseline_to_bytes(again) == data


def test_baseline_from_bytes_refuses_other_data(baseline_model):
    with pytest.raises(ValueError, match="not a serialized baseline"):
        baseline_from_bytes(pickle.dumps(baseline_model))
    with pytest.raises(ValueError, match="format tag"):
        baseline_from_bytes(b'{"coef": [1]}')
    document = json.loads(baseline_to_bytes(baseline_model))
    with pytest.raises(ValueError, match="version 99"):
        baseline_from_bytes(json.dumps({**document, "version": 99}).encode())
    with pytest.raises(ValueError, match="feature set"):
        baseline_from_bytes(json.dumps({**document, "coef": [1.0, 2.0]}).encode())
    with pytest.raises(ValueError, match="malformed"):
        baseline_from_bytes(json.dumps({k: v for k, v in document.items() if k != "intercept"}).encode())


def test_baseline_refuses_bad_inputs(baseline_model):
    with pytest.raises(ValueError, match="got 1"):
        train_baseline(linear(1))
    with pytest.raises(ValueError, match="no dates"):
        forecast_baseline(baseline_model, [])
    with pytest.raises(ValueError, match="1 missing date"):
        forecast_baseline(baseline_model, [pd.Timestamp("2018-12-05"), pd.NaT])


def test_baseline_on_two_points_is_finite():
    model = train_baseline(linear(2))
    assert np.isfinite(forecast_baseline(model, pd.date_range("2018-08-01", periods=3))["yhat"]).all()

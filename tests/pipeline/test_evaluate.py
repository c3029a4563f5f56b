"""Holdout split, metrics, series evaluation and the promotion rule (r3e_testbed.pipeline.evaluate)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.pipeline.evaluate import (
    evaluate_series,
    holdout_split,
    holdout_tag,
    is_better,
    metrics,
    score_baseline,
    score_prophet,
)
from r3e_testbed.pipeline.train import forecast_baseline, predict_prophet, train_baseline, train_prophet


def series(days: int = 100, start: str = "2018-07-28", noise: float = 0.1) -> pd.DataFrame:
    ds = pd.date_range(start, periods=days, freq="D")
    wiggle = np.random.default_rng(1).normal(0.0, noise, days)
    return pd.DataFrame({"ds": ds, "y": 32.0 - 0.04 * np.arange(days) + wiggle})


# --- holdout ---------------------------------------------------------------------------------


def test_holdout_split_last_days():
    frame = series(60)
    train, holdout = holdout_split(frame, 14)
    assert (len(train), len(holdout)) == (46, 14)
    assert train["ds"].max() == pd.Timestamp("2018-09-11")
    assert holdout["ds"].min() == pd.Timestamp("2018-09-12")
    assert holdout["ds"].max() == pd.Timestamp("2018-09-25")
    pd.testing.assert_frame_equal(pd.concat([train, holdout], ignore_index=True), frame)


def test_holdout_split_counts_calendar_days_and_sorts():
    frame = series(60).drop(index=[55, 56]).sample(frac=1.0, random_state=0)  # two missing days, shuffled
    train, holdout = holdout_split(frame, 7)
    assert list(holdout["ds"]) == [
        d for d in pd.date_range("2018-09-19", "2018-09-25") if d.day not in (21, 22)
    ]
    assert len(train) == 53
    assert train["ds"].is_monotonic_increasing


def test_holdout_longer_than_the_data_names_counts():
    with pytest.raises(ValueError, match=r"10 rows .* leave 0 to train on, fewer than the 28 required"):
        holdout_split(series(10), 14)
    with pytest.raises(ValueError, match=r"41 rows .* leave 27 to train on"):
        holdout_split(series(41), 14)
    train, _ = holdout_split(series(41), 14, min_train_days=27)
    assert len(train) == 27


def test_holdout_refuses_bad_inputs():
    with pytest.raises(ValueError, match="no data"):
        holdout_split(series(0), 14)
    with pytest.raises(ValueError, match="positive integer"):
        holdout_split(series(60), 0)
    with pytest.raises(ValueError, match="no 'ds' column"):
        holdout_split(pd.DataFrame({"y": [1.0]}), 1)
    with pytest.raises(ValueError, match="1 missing date"):
        holdout_split(series(60).assign(ds=[pd.NaT, *pd.date_range("2018-07-29", periods=59)]), 14)


def test_holdout_tag():
    assert holdout_tag(series(60).iloc[-14:]) == "2018-09-12/2018-09-25"


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_by_hand():
    # errors 1, 0, -2 on actuals 1, 2, 4
    out = metrics([1.0, 2.0, 4.0], [2.0, 2.0, 2.0])
    assert out["mae"] == pytest.approx(1.0)
    assert out["rmse"] == pytest.approx(math.sqrt(5.0 / 3.0))
    assert out["mape"] == pytest.approx((1.0 + 0.0 + 0.5) / 3.0 * 100.0)  # 50 %
    assert set(out) == {"mae", "rmse", "mape"}


def test_metrics_negative_actuals_and_perfect_forecast():
    assert metrics([-2.0, 4.0], [-1.0, 4.0]) == pytest.approx(
        {"mae": 0.5, "rmse": math.sqrt(0.5), "mape": 25.0}
    )
    assert metrics(pd.Series([30.0, 31.0]), np.array([30.0, 31.0])) == {"mae": 0.0, "rmse": 0.0, "mape": 0.0}


def test_metrics_refuses_zero_actuals():
    with pytest.raises(ValueError, match=r"1 actual value.* zero"):
        metrics([0.0, 2.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("actual", "predicted", "message"),
    [
        ([], [], "no values"),
        ([1.0, 2.0], [1.0], "2 actual value.* but 1 prediction"),
        ([1.0, np.nan], [1.0, 2.0], "1 NaN or infinite actual"),
        ([1.0, 2.0], [np.inf, 2.0], "1 NaN or infinite predicted"),
    ],
)
def test_metrics_refuses_bad_inputs(actual, predicted, message):
    with pytest.raises(ValueError, match=message):
        metrics(actual, predicted)


# --- evaluation ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation():
    return evaluate_series(series(126), 14)  # 2018-07-28 .. 2018-11-30


def test_evaluate_series_report(evaluation):
    assert evaluation["holdout"] == {
        "start": "2018-11-17",
        "end": "2018-11-30",
        "days": 14,
        "train_start": "2018-07-28",
        "train_end": "2018-11-16",
        "train_days": 112,
    }
    for name in ("prophet", "baseline"):
        assert set(evaluation[name]) == {"mae", "rmse", "mape", "holdout"}
        assert evaluation[name]["holdout"] == "2018-11-17/2018-11-30"
        assert 0 < evaluation[name]["mae"] <= evaluation[name]["rmse"]
        assert evaluation[name]["mae"] < 0.5  # the trend is learnable; the noise is 0.1
        assert evaluation["fit_seconds"][name] >= 0
    json.dumps(evaluation)  # XCom-ready


def test_evaluate_series_scores_are_those_of_models_trained_on_the_train_part(evaluation):
    train, holdout = holdout_split(series(126), 14)
    prophet = train_prophet(train)
    expected = metrics(holdout["y"], predict_prophet(prophet, holdout["ds"])["yhat"])
    assert {k: evaluation["prophet"][k] for k in expected} == expected
    baseline = train_baseline(train)
    expected = metrics(holdout["y"], forecast_baseline(baseline, holdout["ds"])["yhat"])
    assert {k: evaluation["baseline"][k] for k in expected} == expected
    assert score_prophet(prophet, holdout) == evaluation["prophet"]
    assert score_baseline(baseline, holdout) == evaluation["baseline"]


def test_evaluate_series_too_little_data():
    with pytest.raises(ValueError, match=r"20 rows .* leave 6 to train on"):
        evaluate_series(series(20), 14)


# --- promotion rule --------------------------------------------------------------------------


def scores(mae: float, tag: str | None = "2018-11-17/2018-11-30", rmse: float = 1.0) -> dict:
    out = {"mae": mae, "rmse": rmse, "mape": 1.0}
    if tag is not None:
        out["holdout"] = tag
    return out


@pytest.mark.parametrize(
    ("candidate", "production", "baseline", "promote"),
    [
        (0.5, 0.6, 0.7, True),
        (0.5, None, 0.7, True),
        (0.5, 0.4, 0.7, False),  # worse than production
        (0.5, 0.6, 0.4, False),  # worse than the baseline
        (0.5, None, 0.4, False),
        (0.5, 0.5, 0.7, False),  # a tie is not an improvement
        (0.5, 0.6, 0.5, False),
        (float("nan"), 0.6, 0.7, False),
        (0.5, float("nan"), 0.7, False),
        (0.5, None, float("nan"), False),
    ],
)
def test_is_better(candidate, production, baseline, promote):
    prod = None if production is None else scores(production)
    assert is_better(scores(candidate), prod, scores(baseline)) is promote


def test_is_better_uses_the_named_metric():
    candidate, production, baseline = scores(0.5, rmse=2.0), scores(0.6, rmse=1.0), scores(0.7, rmse=3.0)
    assert is_better(candidate, production, baseline, metric="mae")
    assert not is_better(candidate, production, baseline, metric="rmse")


def test_is_better_refuses_different_holdouts_and_bad_metrics():
    with pytest.raises(ValueError, match="different holdouts"):
        is_better(scores(0.5), scores(0.6, tag="2018-11-01/2018-11-14"), scores(0.7))
    assert is_better(scores(0.5), scores(0.6, tag=None), scores(0.7))  # untagged: cannot check
    with pytest.raises(ValueError, match="unknown metric 'r2'"):
        is_better(scores(0.5), None, scores(0.7), metric="r2")
    with pytest.raises(ValueError, match="baseline scores have no 'mae'"):
        is_better(scores(0.5), None, {"rmse": 1.0})


def test_is_better_on_a_real_evaluation(evaluation):
    prophet, baseline = evaluation["prophet"], evaluation["baseline"]
    assert is_better(prophet, None, baseline) is (prophet["mae"] < baseline["mae"])
    assert is_better(baseline, None, prophet) is (baseline["mae"] < prophet["mae"])
    assert not is_better(prophet, prophet, baseline)  # never better than itself

"""The naive floor, model selection, holdout records and the whole-version promotion decision."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.pipeline.evaluate import (
    decide_promotion,
    holdout_frame,
    holdout_records,
    holdout_split,
    naive_forecast,
    score_model,
    score_naive,
    select_kind,
)
from r3e_testbed.pipeline.train import train_baseline


def series(days: int = 60) -> pd.DataFrame:
    ds = pd.date_range("2018-07-28", periods=days, freq="D")
    return pd.DataFrame({"ds": ds, "y": 30.0 + 0.05 * np.arange(days)})


def scores(mae: float, tag: str = "2018-09-13/2018-09-26") -> dict:
    return {"mae": mae, "rmse": mae * 1.2, "mape": mae * 3, "holdout": tag}


def test_naive_floor_is_the_mean_of_the_last_training_week():
    train = series(30)
    forecast = naive_forecast(train, pd.date_range("2018-09-01", periods=3))
    assert forecast["yhat"].tolist() == pytest.approx([train["y"].iloc[-7:].mean()] * 3)
    assert list(forecast.columns) == ["ds", "yhat"]


@pytest.mark.parametrize("window", [0, -1, 1.5, True])
def test_naive_floor_refuses_a_bad_window(window):
    with pytest.raises(ValueError, match="naive window"):
        naive_forecast(series(10), ["2018-09-01"], window)


def test_naive_floor_needs_values():
    empty = pd.DataFrame({"ds": pd.to_datetime([]), "y": []})
    with pytest.raises(ValueError, match="no training values"):
        naive_forecast(empty, ["2018-09-01"])


def test_score_naive_and_score_model_share_the_holdout_tag():
    train, holdout = holdout_split(series(60), 14)
    naive = score_naive(train, holdout)
    model = score_model("baseline", train_baseline(train), holdout)
    assert naive["holdout"] == model["holdout"] == "2018-09-12/2018-09-25"
    # on a rising line the flat floor lags by the slope times (3 + 7.5) days on average
    assert naive["mae"] == pytest.approx(0.05 * 10.5)
    assert model["mae"] < naive["mae"] / 5


def test_select_kind_takes_the_lower_mae_and_prefers_prophet_on_a_tie():
    assert select_kind({"prophet": scores(2.0), "baseline": scores(1.0)}) == "baseline"
    assert select_kind({"prophet": scores(1.0), "baseline": scores(2.0)}) == "prophet"
    assert select_kind({"prophet": scores(1.0), "baseline": scores(1.0)}) == "prophet"
    assert select_kind({"prophet": scores(float("nan")), "baseline": scores(3.0)}) == "baseline"


def test_select_kind_refuses_nothing_to_select():
    with pytest.raises(ValueError, match="no model scores"):
        select_kind({"naive": scores(1.0)})
    with pytest.raises(ValueError, match="NaN"):
        select_kind({"prophet": scores(float("nan"))})
    with pytest.raises(ValueError, match="unknown metric"):
        select_kind({"prophet": scores(1.0)}, "r2")


def test_holdout_records_round_trip():
    _, holdout = holdout_split(series(40), 5)
    records = holdout_records(holdout)
    assert records[0] == {"ds": "2018-09-01", "y": pytest.approx(31.75)}
    pd.testing.assert_frame_equal(holdout_frame(records), holdout[["ds", "y"]].reset_index(drop=True))


@pytest.mark.parametrize(
    "records", [[], [{"ds": "01-09-2018", "y": 1.0}], [{"ds": "2018-09-01", "y": "warm"}]]
)
def test_holdout_frame_refuses_malformed_records(records):
    with pytest.raises(ValueError, match="holdout"):
        holdout_frame(records)


def test_first_version_is_promoted_when_it_beats_the_floor_on_every_series():
    decision = decide_promotion(
        {"In": scores(0.5), "Out": scores(1.0)}, None, {"In": scores(0.9), "Out": scores(2.0)}
    )
    assert decision["promote"] is True
    assert decision["reasons"] == []
    assert decision["series"]["In"] == {"candidate": 0.5, "production": None, "floor": 0.9, "passed": True}


def test_one_losing_series_blocks_the_whole_version():
    decision = decide_promotion(
        {"In": scores(0.5), "Out": scores(2.5)}, None, {"In": scores(0.9), "Out": scores(2.0)}
    )
    assert decision["promote"] is False
    assert decision["series"]["In"]["passed"] and not decision["series"]["Out"]["passed"]
    assert decision["reasons"] == ["Out: candidate mae 2.500 does not beat floor 2.000"]


def test_candidate_must_beat_production_strictly():
    candidate = {"In": scores(0.5)}
    floor = {"In": scores(0.9)}
    assert not decide_promotion(candidate, {"In": scores(0.5)}, floor)["promote"]
    lost = decide_promotion(candidate, {"In": scores(0.4)}, floor)
    assert lost["reasons"] == ["In: candidate mae 0.500 does not beat production 0.400"]
    assert decide_promotion(candidate, {"In": scores(0.6)}, floor)["promote"]


def test_scores_from_different_holdouts_cannot_be_compared():
    with pytest.raises(ValueError, match="different holdouts"):
        decide_promotion(
            {"In": scores(0.5)}, {"In": scores(0.6, "2018-01-01/2018-01-14")}, {"In": scores(0.9)}
        )


def test_decision_needs_candidate_and_floor_scores():
    with pytest.raises(ValueError, match="no candidate"):
        decide_promotion({}, None, {})
    with pytest.raises(ValueError, match="no floor"):
        decide_promotion({"In": scores(0.5)}, None, {})

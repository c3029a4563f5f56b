"""Batch forecast requests (pipeline.forecast) and the either-kind model functions (pipeline.train)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from r3e_testbed.pipeline import train
from r3e_testbed.pipeline.forecast import MAX_REQUEST_ROWS, RequestError, batch_forecast, parse_request


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    ds = pd.date_range("2018-07-28", periods=40, freq="D")
    # noisy: a noise-free series makes Prophet's optimiser crawl (see pipeline.train)
    noise = np.random.default_rng(0).normal(0.0, 0.3, 40)
    return pd.DataFrame({"ds": ds, "y": 30.0 + 0.1 * np.arange(40) + noise})


@pytest.fixture(scope="module")
def models(frame) -> dict:
    return {
        "In": ("baseline", train.train_baseline(frame)),
        "Out": ("baseline", train.train_baseline(frame.assign(y=frame["y"] + 5))),
    }


def test_parse_request_reads_series_and_iso_dates():
    request = parse_request(b"series,date\nIn,2018-09-10\nOut,2018-09-11\n")
    assert request["series"].tolist() == ["In", "Out"]
    assert request["date"].tolist() == [pd.Timestamp("2018-09-10"), pd.Timestamp("2018-09-11")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"series;date\nIn;2018-09-10\n", "missing column"),
        (b"series,date\n", "no rows"),
        (b"series,date\nInside,2018-09-10\n", "unknown series"),
        (b"series,date\nIn,10-09-2018\n", "not YYYY-MM-DD"),
        (b"series,date\n" + b"In,2018-09-10\n" * (MAX_REQUEST_ROWS + 1), "rows; at most"),
        (b"x" * (2 << 20), "bytes; a request may have at most"),
    ],
)
def test_parse_request_names_the_problem(data, message):
    with pytest.raises(RequestError, match=message):
        parse_request(data, "forecast-requests/r.csv")


def test_batch_forecast_answers_every_row_in_order(models):
    request = parse_request(b"series,date\nOut,2018-09-12\nIn,2018-09-10\nOut,2018-09-11\n")
    answer = batch_forecast(request, models)
    assert answer[["series", "date", "kind"]].values.tolist() == [
        ["Out", "2018-09-12", "baseline"],
        ["In", "2018-09-10", "baseline"],
        ["Out", "2018-09-11", "baseline"],
    ]
    expected = train.predict_model("baseline", models["In"][1], ["2018-09-10"])["yhat"].iloc[0]
    assert answer["yhat"].iloc[1] == pytest.approx(expected)


def test_batch_forecast_refuses_a_series_without_a_model(models):
    with pytest.raises(RequestError, match="no production model for series 'Out'"):
        batch_forecast(parse_request(b"series,date\nOut,2018-09-12\n"), {"In": models["In"]})


# --- either kind ---------------------------------------------------------------------------------


def test_kind_functions_round_trip_the_baseline(frame):
    model = train.train_model("baseline", frame)
    again = train.model_from_bytes("baseline", train.model_to_bytes("baseline", model))
    assert train.model_last_day("baseline", again) == pd.Timestamp("2018-09-05")
    forecast = train.forecast_model("baseline", again, 3)
    assert forecast["ds"].dt.strftime("%Y-%m-%d").tolist() == ["2018-09-06", "2018-09-07", "2018-09-08"]
    pd.testing.assert_frame_equal(forecast, train.forecast_model("baseline", model, 3))


def test_kind_functions_round_trip_prophet(frame):
    model = train.train_model("prophet", frame)
    again = train.model_from_bytes("prophet", train.model_to_bytes("prophet", model))
    assert train.model_last_day("prophet", again) == pd.Timestamp("2018-09-05")
    forecast = train.forecast_model("prophet", again, 2)
    assert list(forecast.columns) == ["ds", "yhat"]
    np.testing.assert_allclose(forecast["yhat"], train.forecast_model("prophet", model, 2)["yhat"])


@pytest.mark.parametrize("function", [train.train_model, train.model_to_bytes, train.model_from_bytes])
def test_unknown_kinds_are_refused(function):
    with pytest.raises(ValueError, match="unknown model kind 'lstm'"):
        function("lstm", None)


def test_a_wrong_file_is_not_a_model():
    with pytest.raises(ValueError, match="not a serialized Prophet model"):
        train.model_from_bytes("prophet", b'{"format": "r3e-ridge-baseline"}')
    with pytest.raises(ValueError, match="not a serialized baseline"):
        train.model_from_bytes("baseline", b"{}")


@pytest.mark.parametrize("days", [0, -3, 2.5, True])
def test_forecast_days_must_be_a_positive_integer(frame, days):
    with pytest.raises(ValueError, match="days must be a positive integer"):
        train.forecast_model("baseline", train.train_baseline(frame), days)

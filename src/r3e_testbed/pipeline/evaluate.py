"""Holdout evaluation of Prophet against the baseline, and the promotion rule of the deploy DAG.

The notebook has no metric; here the last ``days`` calendar days of a series are held out, both
models are trained on the days before, and MAE, RMSE and MAPE are computed on the held-out days.
Every metric is "lower is better".

On the Kaggle calendar (2018-07-28 .. 12-08) a 14-day holdout crosses into December, a season
the training days never saw: Prophet's post-monsoon component switches off and its yearly terms,
fitted on four months, drift, so the notebook's model often loses to the baseline there (generated
data, seed 0: MAE 3.4 vs 0.5 °C inside). That is a finding, not a bug in the evaluation.

Metric dicts carry a ``holdout`` tag (``"YYYY-MM-DD/YYYY-MM-DD"``, first and last held-out day) so
that ``is_better`` can refuse to compare scores from different holdouts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from r3e_testbed.pipeline.train import (
    MODEL_KINDS,
    BaselineModel,
    forecast_baseline,
    predict_model,
    predict_prophet,
    train_baseline,
    train_prophet,
)

METRICS: tuple[str, ...] = ("mae", "rmse", "mape")
HOLDOUT_DAYS = 14
#: The naive floor predicts the mean of the last this many training days for every held-out day.
NAIVE_WINDOW_DAYS = 7
#: The fewest training days ``holdout_split`` accepts: four weeks, enough for a trend.
MIN_TRAIN_DAYS = 28


def holdout_split(
    frame: pd.DataFrame, days: int = HOLDOUT_DAYS, *, min_train_days: int = MIN_TRAIN_DAYS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, holdout)``: the rows of the last ``days`` calendar days, and the rows before.

    ``frame`` has a ``ds`` column (a Prophet frame, one row per day). Raises ``ValueError`` if
    ``days`` is not positive or if fewer than ``min_train_days`` days would remain to train on.
    """
    if isinstance(days, bool) or not isinstance(days, int | np.integer) or days < 1:
        raise ValueError(f"holdout days must be a positive integer; got {days!r}")
    if "ds" not in frame.columns:
        raise ValueError(f"frame has no 'ds' column (columns: {list(frame.columns)})")
    data = frame.assign(ds=pd.to_datetime(frame["ds"])).sort_values("ds").reset_index(drop=True)
    if data["ds"].isna().any():
        raise ValueError(f"frame has {int(data['ds'].isna().sum())} missing date(s) in 'ds'")
    if data.empty:
        raise ValueError(f"no data: a {days}-day holdout needs at least {days + min_train_days} days")
    cutoff = data["ds"].max().normalize() - pd.Timedelta(days=int(days))
    in_train = data["ds"] < cutoff + pd.Timedelta(days=1)
    train, holdout = data[in_train].reset_index(drop=True), data[~in_train].reset_index(drop=True)
    if len(train) < min_train_days:
        raise ValueError(
            f"too little data for a {days}-day holdout: {len(data)} rows "
            f"({data['ds'].min():%Y-%m-%d} to {data['ds'].max():%Y-%m-%d}) leave {len(train)} to "
            f"train on, fewer than the {min_train_days} required"
        )
    return train, holdout


def holdout_tag(holdout: pd.DataFrame) -> str:
    """``"first/last"`` held-out day, the identity ``is_better`` compares."""
    ds = pd.to_datetime(holdout["ds"])
    return f"{ds.min():%Y-%m-%d}/{ds.max():%Y-%m-%d}"


def metrics(actual: Any, predicted: Any) -> dict[str, float]:
    """``mae``, ``rmse`` (units of the data) and ``mape`` (in %, mean of ``|error| / |actual|``).

    Raises ``ValueError`` on empty or unequal-length inputs, on NaN or infinite values, and on a
    zero actual value, for which the percentage error is undefined (no epsilon is slipped in: a
    0.0 °C daily mean in this data set points at a fault, and an epsilon would turn it into an
    enormous MAPE that looks like a model failure).
    """
    a = np.asarray(actual, dtype="float64").ravel()
    p = np.asarray(predicted, dtype="float64").ravel()
    if a.size == 0:
        raise ValueError("no values to score")
    if a.shape != p.shape:
        raise ValueError(f"{a.size} actual value(s) but {p.size} prediction(s)")
    for name, values in (("actual", a), ("predicted", p)):
        bad = int((~np.isfinite(values)).sum())
        if bad:
            raise ValueError(f"{bad} NaN or infinite {name} value(s)")
    zeros = int((a == 0).sum())
    if zeros:
        raise ValueError(f"MAPE is undefined: {zeros} actual value(s) are zero (use mae or rmse)")
    error = p - a
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(np.mean(np.abs(error) / np.abs(a)) * 100.0),
    }


def score_prophet(model: Any, holdout: pd.DataFrame) -> dict[str, Any]:
    """Metrics of a fitted Prophet model on a holdout frame (``ds``, ``y``), tagged."""
    forecast = predict_prophet(model, holdout["ds"])
    return {**metrics(holdout["y"], forecast["yhat"]), "holdout": holdout_tag(holdout)}


def score_baseline(model: BaselineModel, holdout: pd.DataFrame) -> dict[str, Any]:
    """Metrics of a fitted baseline on a holdout frame (``ds``, ``y``), tagged."""
    forecast = forecast_baseline(model, holdout["ds"])
    return {**metrics(holdout["y"], forecast["yhat"]), "holdout": holdout_tag(holdout)}


def naive_forecast(train: pd.DataFrame, dates: Any, window: int = NAIVE_WINDOW_DAYS) -> pd.DataFrame:
    """The naive floor: the mean ``y`` of the last ``window`` training rows, for every date."""
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"naive window must be a positive integer; got {window!r}")
    values = pd.to_numeric(train.sort_values("ds")["y"]).dropna()
    if values.empty:
        raise ValueError("no training values for the naive floor")
    ds = pd.Series(pd.to_datetime(list(dates)), dtype="datetime64[ns]")
    return pd.DataFrame({"ds": ds, "yhat": float(values.iloc[-int(window) :].mean())})


def score_naive(
    train: pd.DataFrame, holdout: pd.DataFrame, window: int = NAIVE_WINDOW_DAYS
) -> dict[str, Any]:
    """Metrics of the naive floor on a holdout frame, tagged."""
    forecast = naive_forecast(train, holdout["ds"], window)
    return {**metrics(holdout["y"], forecast["yhat"]), "holdout": holdout_tag(holdout)}


def score_model(kind: str, model: Any, holdout: pd.DataFrame) -> dict[str, Any]:
    """Metrics of a model of either kind (``train.MODEL_KINDS``) on a holdout frame, tagged."""
    forecast = predict_model(kind, model, holdout["ds"])
    return {**metrics(holdout["y"], forecast["yhat"]), "holdout": holdout_tag(holdout)}


def select_kind(result: Mapping[str, Any], metric: str = "mae") -> str:
    """The model kind with the lowest ``metric`` in an ``evaluate_series`` result (ties: Prophet)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    scored = {k: _metric_value(result[k], metric, k) for k in MODEL_KINDS if k in result}
    if not scored:
        raise ValueError(f"no model scores in the result (keys: {sorted(result)})")
    finite = {k: v for k, v in scored.items() if not math.isnan(v)}
    if not finite:
        raise ValueError("every model scored NaN")
    return min(finite, key=lambda k: (finite[k], MODEL_KINDS.index(k)))


def evaluate_series(frame: pd.DataFrame, holdout_days: int = HOLDOUT_DAYS, **split: Any) -> dict[str, Any]:
    """Train Prophet and the baseline on all but the last ``holdout_days`` days; score both there,
    with the naive floor beside them.

    Returns a JSON-ready dict::

        {"holdout": {"start", "end", "days", "train_start", "train_end", "train_days"},
         "prophet": {"mae", "rmse", "mape", "holdout"},
         "baseline": {"mae", "rmse", "mape", "holdout"},
         "naive": {"mae", "rmse", "mape", "holdout"},
         "selected": "prophet" or "baseline" (the lower MAE),
         "actuals": [{"ds": "YYYY-MM-DD", "y": float}, ...] (the held-out days),
         "fit_seconds": {"prophet", "baseline"}}

    Extra keyword arguments go to ``holdout_split`` (``min_train_days``).
    """
    train, holdout = holdout_split(frame, holdout_days, **split)
    started = time.perf_counter()
    prophet_model = train_prophet(train)
    prophet_seconds = time.perf_counter() - started
    started = time.perf_counter()
    baseline_model = train_baseline(train)
    baseline_seconds = time.perf_counter() - started
    result = {
        "holdout": {
            "start": f"{holdout['ds'].min():%Y-%m-%d}",
            "end": f"{holdout['ds'].max():%Y-%m-%d}",
            "days": len(holdout),
            "train_start": f"{train['ds'].min():%Y-%m-%d}",
            "train_end": f"{train['ds'].max():%Y-%m-%d}",
            "train_days": len(train),
        },
        "prophet": score_prophet(prophet_model, holdout),
        "baseline": score_baseline(baseline_model, holdout),
        "naive": score_naive(train, holdout),
        "actuals": holdout_records(holdout),
        "fit_seconds": {"prophet": round(prophet_seconds, 3), "baseline": round(baseline_seconds, 3)},
    }
    result["selected"] = select_kind(result)
    return result


def holdout_records(holdout: pd.DataFrame) -> list[dict[str, Any]]:
    """The held-out days as JSON-ready records (``ds`` as ``YYYY-MM-DD``, ``y``)."""
    return [
        {"ds": f"{ds:%Y-%m-%d}", "y": float(y)}
        for ds, y in zip(pd.to_datetime(holdout["ds"]), holdout["y"], strict=True)
    ]


def holdout_frame(records: Any) -> pd.DataFrame:
    """The frame (``ds``, ``y``) back from ``holdout_records``; ``ValueError`` if malformed."""
    try:
        frame = pd.DataFrame(list(records), columns=["ds", "y"])
        frame["ds"] = pd.to_datetime(frame["ds"], format="%Y-%m-%d")
        frame["y"] = pd.to_numeric(frame["y"]).astype("float64")
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"malformed holdout records: {error}") from error
    if frame.empty:
        raise ValueError("empty holdout")
    return frame


def _metric_value(scores: Mapping[str, Any], metric: str, role: str) -> float:
    if metric not in scores:
        raise ValueError(f"{role} scores have no {metric!r} (keys: {sorted(scores)})")
    return float(scores[metric])


def is_better(
    candidate: Mapping[str, Any],
    production: Mapping[str, Any] | None,
    baseline: Mapping[str, Any],
    metric: str = "mae",
) -> bool:
    """The promotion rule: True only if the candidate's ``metric`` is strictly lower than the
    baseline's and, when there is a production model, strictly lower than production's.

    All scores must come from the same holdout: if their ``holdout`` tags differ, ``ValueError``.
    A NaN score anywhere blocks the promotion (returns False).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")
    scored = {"candidate": candidate, "baseline": baseline}
    if production is not None:
        scored["production"] = production
    tags = {role: s["holdout"] for role, s in scored.items() if "holdout" in s}
    if len(set(tags.values())) > 1:
        raise ValueError(f"scores come from different holdouts: {tags}")
    values = {role: _metric_value(s, metric, role) for role, s in scored.items()}
    if any(math.isnan(v) for v in values.values()):
        return False
    others = [v for role, v in values.items() if role != "candidate"]
    return all(values["candidate"] < v for v in others)


def decide_promotion(
    candidate: Mapping[str, Mapping[str, Any]],
    production: Mapping[str, Mapping[str, Any]] | None,
    floor: Mapping[str, Mapping[str, Any]],
    metric: str = "mae",
) -> dict[str, Any]:
    """The promotion decision for a whole model version (every series must pass).

    ``candidate``, ``production`` and ``floor`` map series -> scores on that series' holdout.
    Returns ``{"promote": bool, "metric", "reasons": [str], "series": {series: {...}}}``; a series
    the production pointer lacks is compared with the floor only.
    """
    if not candidate:
        raise ValueError("no candidate scores")
    reasons: list[str] = []
    per_series: dict[str, Any] = {}
    for series in sorted(candidate):
        if series not in floor:
            raise ValueError(f"no floor scores for series {series!r}")
        current = None if production is None else production.get(series)
        passed = is_better(candidate[series], current, floor[series], metric)
        per_series[series] = {
            "candidate": float(candidate[series][metric]),
            "production": None if current is None else float(current[metric]),
            "floor": float(floor[series][metric]),
            "passed": passed,
        }
        if not passed:
            beaten_by = [
                role
                for role, other in (("floor", floor[series]), ("production", current))
                if other is not None and not float(candidate[series][metric]) < float(other[metric])
            ]
            reasons.append(
                f"{series}: candidate {metric} {float(candidate[series][metric]):.3f} does not beat "
                + ", ".join(
                    f"{role} {float((floor if role == 'floor' else production)[series][metric]):.3f}"
                    for role in beaten_by or ["floor"]
                )
            )
    return {"promote": not reasons, "metric": metric, "reasons": reasons, "series": per_series}

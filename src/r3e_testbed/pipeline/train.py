"""Prophet as in the Kaggle notebook, a scikit-learn baseline, and both models to bytes and back.

Both models take the frame that ``preprocess.prophet_frame`` builds; only ``ds`` and ``y`` are
read. Prophet's season flags are recomputed here from ``ds``, at fit and at predict time, so that
a caller cannot hand in stale or mixed-up flags. Rows with a missing ``y`` are skipped.

Small noise-free series (under 100 days, where Prophet picks its Newton optimiser) can take
5-30 s to fit because the observation noise goes to zero; real or noisy data fit in 0.05-0.2 s.

Determinism: Prophet's MAP fit starts from a deterministic initial point and runs a deterministic
optimiser, so the same data give the same parameters. Its uncertainty interval is drawn from
numpy's global random generator; ``forecast_prophet`` seeds it for the duration of the call and
then restores the caller's state, so repeated forecasts are identical.

Prophet and scikit-learn are imported inside the functions: DAG files import this package at parse
time, and those imports cost a second or more.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from r3e_testbed.pipeline.preprocess import add_season_flags

if TYPE_CHECKING:  # pragma: no cover
    from prophet import Prophet
    from sklearn.linear_model import Ridge

#: The notebook's Prophet settings. ``model`` goes to ``Prophet(...)``; every entry of
#: ``conditional_seasonalities`` to ``add_seasonality(...)``, its ``condition_name`` being the flag
#: column that ``preprocess.add_season_flags`` sets True in that season only.
PROPHET_SETTINGS: dict[str, Any] = {
    "model": {
        "changepoint_prior_scale": 0.1,
        "yearly_seasonality": 2,
        "weekly_seasonality": False,
        "daily_seasonality": False,
    },
    "conditional_seasonalities": (
        {
            "name": "monsoon",
            "period": 124,
            "fourier_order": 5,
            "prior_scale": 0.1,
            "condition_name": "is_monsoon",
        },
        {
            "name": "post_monsoon",
            "period": 62,
            "fourier_order": 5,
            "prior_scale": 0.1,
            "condition_name": "is_post_monsoon",
        },
        {
            "name": "winter",
            "period": 93,
            "fourier_order": 5,
            "prior_scale": 0.1,
            "condition_name": "is_winter",
        },
    ),
}

#: Seed of the draws behind ``yhat_lower``/``yhat_upper``.
FORECAST_SEED = 0

#: Ridge baseline settings: yearly Fourier order (as in PROPHET_SETTINGS) and ridge penalty.
BASELINE_FOURIER_ORDER = 2
BASELINE_ALPHA = 1.0
_BASELINE_FORMAT = "r3e-ridge-baseline"
_BASELINE_VERSION = 1
_DAYS_PER_YEAR = 365.25


class _KnownNotice(logging.Filter):
    """Drops Prophet's per-fit warning about yearly seasonality on < 2 years of data: the notebook
    asks for ``yearly_seasonality=2`` on five months on purpose, so the warning says nothing new."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Yearly seasonality is enabled with less than")


def quiet_stan_logging() -> None:
    """Silence cmdstanpy's per-fit INFO lines, Prophet's notices and its missing-plotly error.

    Other warnings still show. Imports prophet (after muting ``prophet.plot``) and cmdstanpy, whose
    loggers set their own levels when first imported.
    """
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    import prophet  # noqa: F401  (sets the "prophet" logger to INFO on import)
    from cmdstanpy.utils import get_logger

    get_logger().setLevel(logging.WARNING)
    prophet_logger = logging.getLogger("prophet")
    prophet_logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _KnownNotice) for f in prophet_logger.filters):
        prophet_logger.addFilter(_KnownNotice())


def _training_frame(frame: pd.DataFrame, *, minimum: int = 2) -> pd.DataFrame:
    """``ds``, ``y`` and fresh season flags; rows with a missing ``y`` dropped; checked."""
    missing = [c for c in ("ds", "y") if c not in frame.columns]
    if missing:
        raise ValueError(f"training frame lacks column(s) {missing} (columns: {list(frame.columns)})")
    data = frame[["ds", "y"]].copy()
    data["ds"] = pd.to_datetime(data["ds"])
    if data["ds"].isna().any():
        raise ValueError(f"training frame has {int(data['ds'].isna().sum())} missing date(s) in 'ds'")
    data["y"] = pd.to_numeric(data["y"]).astype("float64")
    if np.isinf(data["y"]).any():
        raise ValueError("training frame has infinite value(s) in 'y'")
    data = data.dropna(subset=["y"])
    if data["ds"].duplicated().any():
        raise ValueError(f"training frame has {int(data['ds'].duplicated().sum())} repeated date(s)")
    if len(data) < minimum:
        raise ValueError(f"training needs at least {minimum} rows with a value; got {len(data)}")
    return add_season_flags(data.sort_values("ds").reset_index(drop=True))


# --- Prophet -------------------------------------------------------------------------------------


def train_prophet(frame: pd.DataFrame) -> Prophet:
    """Fit Prophet with ``PROPHET_SETTINGS`` on one series (``ds``, ``y``; at least 2 values)."""
    quiet_stan_logging()
    from prophet import Prophet

    data = _training_frame(frame)
    model = Prophet(**PROPHET_SETTINGS["model"])
    for seasonality in PROPHET_SETTINGS["conditional_seasonalities"]:
        model.add_seasonality(**seasonality)
    model.fit(data)
    return model


def predict_prophet(model: Prophet, dates: Iterable, *, seed: int = FORECAST_SEED) -> pd.DataFrame:
    """Prophet's ``ds``, ``yhat``, ``yhat_lower``, ``yhat_upper`` at the given dates."""
    future = add_season_flags(pd.DataFrame({"ds": pd.DatetimeIndex(pd.to_datetime(list(dates)))}))
    if future.empty:
        raise ValueError("no dates to predict")
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        forecast = model.predict(future)
    finally:
        np.random.set_state(state)
    return forecast[["ds", "yhat", "yhat_lower", "yhat_upper"]].reset_index(drop=True)


def forecast_prophet(model: Prophet, days: int, *, seed: int = FORECAST_SEED) -> pd.DataFrame:
    """The ``days`` days after the last training day: ``ds``, ``yhat``, ``yhat_lower``, ``yhat_upper``."""
    if isinstance(days, bool) or not isinstance(days, int | np.integer) or days < 1:
        raise ValueError(f"days must be a positive integer; got {days!r}")
    last = pd.Timestamp(model.history_dates.max())
    dates = pd.date_range(last + pd.Timedelta(days=1), periods=int(days), freq="D")
    return predict_prophet(model, dates, seed=seed)


def prophet_to_bytes(model: Prophet) -> bytes:
    """A fitted Prophet model as UTF-8 JSON (``prophet.serialize.model_to_json``)."""
    quiet_stan_logging()
    from prophet.serialize import model_to_json

    return model_to_json(model).encode("utf-8")


def prophet_from_bytes(data: bytes) -> Prophet:
    """The model ``prophet_to_bytes`` wrote (JSON: no code runs on load)."""
    quiet_stan_logging()
    from prophet.serialize import model_from_json

    return model_from_json(data.decode("utf-8"))


# --- Ridge baseline ------------------------------------------------------------------------------
#
# A ridge regression on a linear time trend and yearly Fourier terms (the same order as Prophet's
# ``yearly_seasonality``), features standardised on the training days. It has Prophet's trend and
# yearly structure without its changepoints and conditional seasonalities, so "Prophet beats the
# baseline" says that the notebook's extra machinery pays off on this holdout. It is closed-form
# and deterministic, and fits in milliseconds.
#
# The season flags are left out on purpose: as level dummies they jump at a season boundary, and
# for a season never seen in training (a December holdout after a July-November history, the
# shape of the Kaggle data) the dummy of the last season switches off and the forecast jumps back
# to the level of the other seasons.


@dataclass(frozen=True)
class BaselineModel:
    """The fitted baseline.

    ``origin``: day 0 of the trend; ``feature_mean``/``feature_scale``: the training standardisation
    of ``feature_names``; ``regressor``: the fitted ``sklearn.linear_model.Ridge``; ``last_day``: the
    last training day.
    """

    origin: pd.Timestamp
    fourier_order: int
    feature_mean: tuple[float, ...]
    feature_scale: tuple[float, ...]
    regressor: Ridge
    last_day: pd.Timestamp

    @property
    def feature_names(self) -> list[str]:
        return baseline_feature_names(self.fourier_order)


def baseline_feature_names(order: int = BASELINE_FOURIER_ORDER) -> list[str]:
    """``trend_years``, then ``yearly_sin1``, ``yearly_cos1``, … up to ``order``."""
    names = ["trend_years"]
    for k in range(1, order + 1):
        names += [f"yearly_sin{k}", f"yearly_cos{k}"]
    return names


def baseline_features(
    dates: Iterable, origin: pd.Timestamp, order: int = BASELINE_FOURIER_ORDER
) -> np.ndarray:
    """The unstandardised features of ``baseline_feature_names(order)`` at ``dates``."""
    ds = pd.DatetimeIndex(pd.to_datetime(list(dates)))
    days = ((ds - pd.Timestamp(origin)) / pd.Timedelta(days=1)).to_numpy(dtype="float64")
    epoch_days = ((ds - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)).to_numpy(dtype="float64")
    columns = [days / _DAYS_PER_YEAR]
    for k in range(1, order + 1):  # Prophet's yearly terms: the same period and phase origin
        phase = 2 * np.pi * k * epoch_days / _DAYS_PER_YEAR
        columns += [np.sin(phase), np.cos(phase)]
    return np.column_stack(columns)


def _standardise(features: np.ndarray, model: BaselineModel) -> np.ndarray:
    return (features - np.asarray(model.feature_mean)) / np.asarray(model.feature_scale)


def train_baseline(
    frame: pd.DataFrame, *, fourier_order: int = BASELINE_FOURIER_ORDER, alpha: float = BASELINE_ALPHA
) -> BaselineModel:
    """Fit the ridge baseline on one series (``ds``, ``y``; at least 2 values)."""
    from sklearn.linear_model import Ridge

    data = _training_frame(frame)
    origin = pd.Timestamp(data["ds"].min())
    features = baseline_features(data["ds"], origin, fourier_order)
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0  # a constant feature stays 0 after centring
    regressor = Ridge(alpha=alpha)
    regressor.fit((features - mean) / scale, data["y"].to_numpy())
    return BaselineModel(
        origin=origin,
        fourier_order=fourier_order,
        feature_mean=tuple(float(v) for v in mean),
        feature_scale=tuple(float(v) for v in scale),
        regressor=regressor,
        last_day=pd.Timestamp(data["ds"].max()),
    )


def forecast_baseline(model: BaselineModel, dates: Iterable) -> pd.DataFrame:
    """The baseline's ``ds``, ``yhat`` at the given dates (any dates, not only future ones)."""
    ds = pd.Series(pd.to_datetime(list(dates)), dtype="datetime64[ns]")
    if ds.empty:
        raise ValueError("no dates to predict")
    if ds.isna().any():
        raise ValueError(f"{int(ds.isna().sum())} missing date(s) to predict")
    features = _standardise(baseline_features(ds, model.origin, model.fourier_order), model)
    yhat = model.regressor.predict(features)
    return pd.DataFrame({"ds": ds, "yhat": yhat.astype("float64")})


def baseline_to_bytes(model: BaselineModel) -> bytes:
    """The baseline as UTF-8 JSON: settings, standardisation and ridge coefficients; no code.

    skops is not installed, and pickle/joblib run code on load (only safe for bytes from a trusted
    writer); a linear model is a handful of numbers, so it is written as numbers instead and
    ``baseline_from_bytes`` rebuilds the ``Ridge`` from them. Python's float repr round-trips
    exactly, so the reloaded model predicts bit-for-bit the same.
    """
    regressor = model.regressor
    document = {
        "format": _BASELINE_FORMAT,
        "version": _BASELINE_VERSION,
        "origin": model.origin.isoformat(),
        "last_day": model.last_day.isoformat(),
        "fourier_order": model.fourier_order,
        "alpha": float(regressor.alpha),
        "features": model.feature_names,
        "feature_mean": list(model.feature_mean),
        "feature_scale": list(model.feature_scale),
        "coef": [float(c) for c in np.ravel(regressor.coef_)],
        "intercept": float(regressor.intercept_),
    }
    return json.dumps(document, sort_keys=True).encode("utf-8")


def baseline_from_bytes(data: bytes) -> BaselineModel:
    """The model ``baseline_to_bytes`` wrote; ``ValueError`` on anything else."""
    from sklearn.linear_model import Ridge

    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a serialized baseline model: {error}") from error
    if not isinstance(document, dict) or document.get("format") != _BASELINE_FORMAT:
        raise ValueError("not a serialized baseline model (format tag missing)")
    if document.get("version") != _BASELINE_VERSION:
        raise ValueError(
            f"baseline model version {document.get('version')!r}; this code reads {_BASELINE_VERSION}"
        )
    try:
        order = int(document["fourier_order"])
        names = baseline_feature_names(order)
        coef = np.asarray(document["coef"], dtype="float64")
        mean = tuple(float(v) for v in document["feature_mean"])
        scale = tuple(float(v) for v in document["feature_scale"])
        if document["features"] != names or not (
            coef.shape == (len(names),) == (len(mean),) == (len(scale),)
        ):
            raise ValueError("its features do not match this code's feature set")
        regressor = Ridge(alpha=float(document["alpha"]))
        regressor.coef_ = coef
        regressor.intercept_ = float(document["intercept"])
        regressor.n_features_in_ = coef.shape[0]
        return BaselineModel(
            origin=pd.Timestamp(document["origin"]),
            fourier_order=order,
            feature_mean=mean,
            feature_scale=scale,
            regressor=regressor,
            last_day=pd.Timestamp(document["last_day"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed baseline model: {error}") from error


# --- Either model by its kind --------------------------------------------------------------------
#
# The registry stores each series' model with its kind; the deploy DAG, the batch forecast and the
# forecast service load and use it through these four functions without caring which kind it is.

#: The kinds of model a model version can hold per series.
MODEL_KINDS: tuple[str, ...] = ("prophet", "baseline")


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {list(MODEL_KINDS)}")


def train_model(kind: str, frame: pd.DataFrame) -> Any:
    """Fit a model of ``kind`` on one series (``ds``, ``y``)."""
    _check_kind(kind)
    return train_prophet(frame) if kind == "prophet" else train_baseline(frame)


def model_to_bytes(kind: str, model: Any) -> bytes:
    """A fitted model of ``kind`` as UTF-8 JSON."""
    _check_kind(kind)
    return prophet_to_bytes(model) if kind == "prophet" else baseline_to_bytes(model)


def model_from_bytes(kind: str, data: bytes) -> Any:
    """The model of ``kind`` that ``model_to_bytes`` wrote; ``ValueError`` if it is not one."""
    _check_kind(kind)
    if kind == "baseline":
        return baseline_from_bytes(data)
    try:
        return prophet_from_bytes(data)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"not a serialized Prophet model: {error}") from error


def predict_model(kind: str, model: Any, dates: Iterable) -> pd.DataFrame:
    """``ds`` and ``yhat`` of a model of ``kind`` at the given dates."""
    _check_kind(kind)
    if kind == "prophet":
        return predict_prophet(model, dates)[["ds", "yhat"]]
    return forecast_baseline(model, dates)


def model_last_day(kind: str, model: Any) -> pd.Timestamp:
    """The last day the model was trained on (forecasts start the day after)."""
    _check_kind(kind)
    if kind == "prophet":
        return pd.Timestamp(model.history_dates.max()).normalize()
    return pd.Timestamp(model.last_day).normalize()


def forecast_model(kind: str, model: Any, days: int) -> pd.DataFrame:
    """``ds`` and ``yhat`` for the ``days`` days after the model's last training day."""
    if isinstance(days, bool) or not isinstance(days, int | np.integer) or days < 1:
        raise ValueError(f"days must be a positive integer; got {days!r}")
    start = model_last_day(kind, model) + pd.Timedelta(days=1)
    return predict_model(kind, model, pd.date_range(start, periods=int(days), freq="D"))

"""Forecasts from the production models: batch requests and the published 30-day forecast.

A batch request is a small CSV with a header ``series,date`` (``In``/``Out``, ``YYYY-MM-DD``), one
row per wanted day; ``batch_forecast`` answers it with ``series,date,kind,yhat``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pandas as pd

from r3e_testbed.pipeline.schema import LOCATIONS
from r3e_testbed.pipeline.train import predict_model

#: Days of the forecast published with every promotion.
PUBLISHED_DAYS = 30
#: The most rows a batch request may have (it is read whole: it is a request, not data).
MAX_REQUEST_ROWS = 10_000
MAX_REQUEST_BYTES = 1 << 20


class RequestError(ValueError):
    """A batch forecast request that cannot be answered; the message names the problem."""


def parse_request(data: bytes, name: str = "request") -> pd.DataFrame:
    """The request's ``series`` and ``date`` columns, checked; :class:`RequestError` otherwise."""
    if len(data) > MAX_REQUEST_BYTES:
        raise RequestError(f"{name}: {len(data):,} bytes; a request may have at most {MAX_REQUEST_BYTES:,}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise RequestError(f"{name}: not UTF-8 text ({error})") from error
    if not text.strip():
        raise RequestError(f"{name}: the request is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as error:
        raise RequestError(f"{name}: not CSV: {error}") from error
    missing = [c for c in ("series", "date") if c not in frame.columns]
    if missing:
        raise RequestError(f"{name}: missing column(s) {missing}; header must be 'series,date'")
    if frame.empty:
        raise RequestError(f"{name}: no rows after the header")
    if len(frame) > MAX_REQUEST_ROWS:
        raise RequestError(f"{name}: {len(frame):,} rows; at most {MAX_REQUEST_ROWS:,}")
    unknown = sorted(set(frame["series"]) - set(LOCATIONS))
    if unknown:
        raise RequestError(f"{name}: unknown series {unknown}; expected {list(LOCATIONS)}")
    dates = pd.to_datetime(frame["date"], format="%Y-%m-%d", errors="coerce")
    if dates.isna().any():
        first = frame.loc[dates.isna(), "date"].iloc[0]
        raise RequestError(f"{name}: {int(dates.isna().sum())} date(s) not YYYY-MM-DD, e.g. {first!r}")
    return pd.DataFrame({"series": frame["series"], "date": dates})


def batch_forecast(request: pd.DataFrame, models: Mapping[str, tuple[str, Any]]) -> pd.DataFrame:
    """``series``, ``date``, ``kind``, ``yhat`` for every request row, in request order."""
    answers = []
    for series, rows in request.groupby("series", sort=True):
        if series not in models:
            raise RequestError(f"no production model for series {series!r}")
        kind, model = models[series]
        predicted = predict_model(kind, model, rows["date"])
        answers.append(
            pd.DataFrame(
                {
                    "series": series,
                    "date": rows["date"].to_numpy(),
                    "kind": kind,
                    "yhat": predicted["yhat"].to_numpy(),
                },
                index=rows.index,
            )
        )
    result = pd.concat(answers).sort_index()
    result["date"] = pd.to_datetime(result["date"]).dt.strftime("%Y-%m-%d")
    return result.reset_index(drop=True)

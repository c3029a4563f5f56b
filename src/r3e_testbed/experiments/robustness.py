"""The robustness curve: forecast error against the share of corrupted rows in the input.

For each fraction, that share of the rows of a clean generated file is corrupted with the
``mixed_temperatures`` corruption of :mod:`.inputs`: half of them get values validation
quarantines (impossible or non-numeric temperatures), half get plausible but wrong values it
cannot tell from real readings. The bad file then goes the pipeline's way: the real ingest,
daily means of its clean parts, Prophet and the baseline trained on all but the last
``holdout_days`` days. The models are scored against the *clean* file's held-out days, so what
the corruption does to the forecast shows up as error.

``mae_selected`` is the true error of the model the pipeline would pick: the deploy rule takes
the lower MAE on the holdout it can see, which is the corrupted file's own, so corruption can
also make it pick the worse model.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from r3e_testbed.experiments.inputs import clean_file, corrupt, ingest_report
from r3e_testbed.experiments.results import CurvePoint
from r3e_testbed.pipeline.evaluate import (
    HOLDOUT_DAYS,
    holdout_split,
    holdout_tag,
    score_baseline,
    score_prophet,
    select_kind,
)
from r3e_testbed.pipeline.ingest import daily_from_parts
from r3e_testbed.pipeline.preprocess import prophet_frame
from r3e_testbed.pipeline.schema import LOCATIONS
from r3e_testbed.pipeline.train import train_baseline, train_prophet

#: The corruption of :mod:`.inputs` the curve applies.
CURVE_CORRUPTION = "mixed_temperatures"
DEFAULT_FRACTIONS = (0.0, 0.01, 0.05, 0.2)


def _ingest_daily(data: bytes, workdir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Daily means of what the ingest keeps of ``data``, and its report."""
    store, report = ingest_report(data, workdir)
    if report["verdict"] == "refused":
        raise ValueError(f"the ingest refused the file: {report['error']}")
    return daily_from_parts(store, report["clean_parts"]), report


def _curve_point(
    fraction: float, series: str, daily: pd.DataFrame, truth: pd.DataFrame, quarantined: int, days: int
) -> CurvePoint:
    train, seen = holdout_split(prophet_frame(daily, series), days)
    if holdout_tag(seen) != holdout_tag(truth):  # the corrupted file lost its first or last day
        raise ValueError(
            f"{series} at fraction {fraction}: holdout {holdout_tag(seen)} differs from the clean "
            f"file's {holdout_tag(truth)}"
        )
    models = {"prophet": train_prophet(train), "baseline": train_baseline(train)}
    score = {"prophet": score_prophet, "baseline": score_baseline}
    picked = select_kind({kind: score[kind](model, seen) for kind, model in models.items()})
    true_mae = {kind: float(score[kind](model, truth)["mae"]) for kind, model in models.items()}
    return CurvePoint(
        fraction=float(fraction),
        series=series,
        quarantined_rows=int(quarantined),
        mae_prophet=true_mae["prophet"],
        mae_baseline=true_mae["baseline"],
        mae_selected=true_mae[picked],
    )


def robustness_curve(
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    scale: float = 1.0,
    holdout_days: int = HOLDOUT_DAYS,
) -> list[CurvePoint]:
    """One point per fraction and series (In, Out), in the order of ``fractions``.

    Raises ``ValueError`` for a fraction outside 0..1, or if the ingest refuses a corrupted file
    (more than half of its rows quarantined).
    """
    bad = [f for f in fractions if not (isinstance(f, int | float) and math.isfinite(f) and 0 <= f <= 1)]
    if bad:
        raise ValueError(f"fractions must be within 0..1, got {bad}")
    clean = clean_file(scale, seed)
    points: list[CurvePoint] = []
    with tempfile.TemporaryDirectory(prefix="r3e-robustness-") as workdir:
        clean_daily, _ = _ingest_daily(clean, Path(workdir) / "clean")
        truth = {s: holdout_split(prophet_frame(clean_daily, s), holdout_days)[1] for s in LOCATIONS}
        for number, fraction in enumerate(fractions):
            data = corrupt(clean, CURVE_CORRUPTION, fraction, seed)
            daily, report = _ingest_daily(data, Path(workdir) / f"fraction-{number}")
            points.extend(
                _curve_point(fraction, s, daily, truth[s], report["quarantined_rows"], holdout_days)
                for s in LOCATIONS
            )
    return points

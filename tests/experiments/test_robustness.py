"""The robustness curve: forecast error against the share of corrupted rows (experiments.robustness)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest

from r3e_testbed.experiments.inputs import clean_file, ingest_report
from r3e_testbed.experiments.robustness import robustness_curve
from r3e_testbed.pipeline.evaluate import evaluate_series
from r3e_testbed.pipeline.ingest import daily_from_parts
from r3e_testbed.pipeline.preprocess import prophet_frame
from r3e_testbed.pipeline.schema import LOCATIONS

SCALE, SEED, HOLDOUT = 0.2, 0, 14
FRACTIONS = (0.0, 0.3)


@pytest.fixture(scope="module")
def curve() -> list[dict]:
    return robustness_curve(FRACTIONS, seed=SEED, scale=SCALE, holdout_days=HOLDOUT)


def point(curve, fraction, series) -> dict:
    (found,) = [p for p in curve if p["fraction"] == fraction and p["series"] == series]
    return found


def test_one_point_per_fraction_and_series(curve):
    assert [(p["fraction"], p["series"]) for p in curve] == [(f, s) for f in FRACTIONS for s in LOCATIONS]


def test_values_are_finite_and_selected_is_one_of_the_two(curve):
    for p in curve:
        maes = (p["mae_prophet"], p["mae_baseline"], p["mae_selected"])
        assert all(math.isfinite(v) and v >= 0 for v in maes), p
        assert p["mae_selected"] in (p["mae_prophet"], p["mae_baseline"])


def test_no_corruption_no_quarantine_and_more_corruption_more_quarantine(curve):
    quarantined = [point(curve, f, "In")["quarantined_rows"] for f in FRACTIONS]
    assert quarantined[0] == 0
    assert quarantined == sorted(quarantined) and quarantined[-1] > 0
    rows = clean_file(SCALE, SEED).count(b"\n") - 1
    corrupted = round(FRACTIONS[-1] * rows)
    assert quarantined[-1] == pytest.approx(corrupted / 2, abs=2)  # the detectable half


def test_without_corruption_the_curve_is_the_pipelines_own_evaluation(curve):
    with tempfile.TemporaryDirectory() as workdir:
        store, report = ingest_report(clean_file(SCALE, SEED), Path(workdir))
        daily = daily_from_parts(store, report["clean_parts"])
    for series in LOCATIONS:
        evaluation = evaluate_series(prophet_frame(daily, series), HOLDOUT)
        p = point(curve, 0.0, series)
        assert p["mae_prophet"] == pytest.approx(evaluation["prophet"]["mae"])
        assert p["mae_baseline"] == pytest.approx(evaluation["baseline"]["mae"])
        assert p["mae_selected"] == pytest.approx(evaluation[evaluation["selected"]]["mae"])


def test_undetected_noise_shows_up_as_error_inside(curve):
    # Plausible values spread over 21..51 °C pull the inside series (about 30 °C) up.
    assert point(curve, 0.3, "In")["mae_baseline"] > point(curve, 0.0, "In")["mae_baseline"]


@pytest.mark.parametrize("fractions", [(0.1, 1.5), (-0.1,), (float("nan"),)])
def test_fractions_outside_0_1_are_refused(fractions):
    with pytest.raises(ValueError, match=r"fractions must be within 0\.\.1"):
        robustness_curve(fractions, scale=SCALE)

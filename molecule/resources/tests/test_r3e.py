"""The R3E harness's CI subset against the running stack: a few faults, a few bad inputs.

Runs the `r3e` command as a user would (scenario files from experiments/, the same
inventory), then checks outcomes, never times: every run green, nothing lost or promoted
by mistake, every bad input refused or quarantined with its reason, and a report written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[3]
FAULTS = ["kill-worker", "kill-api-server", "restart-postgresql"]
INPUTS = ["month-first-dates", "missing-column", "non-numeric-temperatures"]


@pytest.fixture(scope="module")
def results(pytestconfig, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reports")
    scenarios = [REPO / "experiments/faults" / f"{name}.yml" for name in FAULTS]
    scenarios += [REPO / "experiments/inputs" / f"{name}.yml" for name in INPUTS]
    command = [sys.executable, "-m", "r3e_testbed.experiments.cli", "run", *map(str, scenarios)]
    command += ["-i", pytestconfig.getoption("ansible_inventory"), "--out", str(out)]
    command += ["--reliability-runs", "2", "--no-curve", "--no-tuning"]
    finished = subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
    print(finished.stderr[-3000:])
    assert finished.returncode == 0, finished.stderr[-3000:]
    (folder,) = out.iterdir()
    return {"folder": folder, **json.loads((folder / "results.json").read_text())}


def _failed_checks(result: dict) -> list[str]:
    return [f"{c['name']}: {c['detail']}" for c in result["checks"] if not c["passed"]]


@pytest.mark.parametrize("name", FAULTS)
def test_the_pipeline_survives_the_fault(results, name):
    (result,) = [f for f in results["faults"] if f["name"] == name]
    assert result["outcome"] == "passed", result.get("error") or _failed_checks(result)
    assert result["run_state"] == "success"
    assert result["injected_at_s"] is not None


@pytest.mark.parametrize("name", INPUTS)
def test_the_bad_input_is_refused_or_quarantined_with_its_reason(results, name):
    (result,) = [i for i in results["inputs"] if i["name"] == name]
    assert result["outcome"] == "passed", result.get("error") or _failed_checks(result)
    assert result["verdict"] in ("refused", "quarantined")
    assert not result["promoted"] or result["verdict"] == "quarantined"


def test_repeated_runs_all_succeed(results):
    reliability = results["reliability"]
    assert [run["state"] for run in reliability["runs"]] == ["success", "success"]
    assert all(variance == 0 for variance in reliability["metric_variance"].values()), reliability


def test_the_report_is_written_with_its_figures(results):
    html = (results["folder"] / "report.html").read_text()
    figures = sorted((results["folder"] / "figures").glob("*.png"))
    assert figures
    for figure in figures:
        assert f"figures/{figure.name}" in html

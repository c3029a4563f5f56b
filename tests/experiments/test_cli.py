"""The `r3e` command's offline parts: checking scenario files, drawing a report again."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from r3e_testbed.experiments.cli import _distribution, app
from r3e_testbed.experiments.results import empty_results

runner = CliRunner()


def test_check_lists_every_scenario_of_the_project(repo):
    result = runner.invoke(app, ["check", str(repo / "experiments/faults"), str(repo / "experiments/inputs")])
    assert result.exit_code == 0, result.output
    names = [p.stem for folder in ("faults", "inputs") for p in (repo / "experiments" / folder).glob("*.yml")]
    assert names and all(name in result.output for name in names)


def test_check_exits_2_naming_the_bad_file_and_field(tmp_path):
    bad = tmp_path / "kill-it.yml"
    bad.write_text("name: kill-it\nfault: {type: kill_everything, target: airflow_workers}\n")
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 2
    assert "kill-it.yml" in result.output and "fault.type" in result.output


def test_report_draws_a_report_again_from_its_results(tmp_path):
    results = empty_results("2026-11-24T00:00:00+00:00")
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results))
    out = tmp_path / "again"
    result = runner.invoke(app, ["report", str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()
    assert json.loads((out / "results.json").read_text()) == results


def test_duration_distribution():
    values = [10.0, 11.0, 12.0, 13.0, 20.0]
    summary = _distribution(values)
    assert (summary["min"], summary["p50"], summary["max"]) == (10.0, 12.0, 20.0)
    assert summary["mean"] == sum(values) / len(values)
    assert 13.0 <= summary["p90"] <= 20.0
    assert _distribution([]) == {}

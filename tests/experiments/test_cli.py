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


def _workers_figure(count: int, span_s: float) -> dict:
    return {
        "part": "workers",
        "name": f"r3e_probe throughput, {count} workers",
        "value": f"{16 / span_s:.3f} tasks/s",
        "goal": "reference",
        "met": None,
        "data": {"workers": [f"w:{i}" for i in range(count)], "span_s": span_s},
    }


def test_report_takes_the_benchmarks_figures_into_its_elasticity_section(tmp_path):
    source = tmp_path / "results.json"
    source.write_text(json.dumps(empty_results("2026-11-24T00:00:00+00:00")))
    elasticity = tmp_path / "elasticity.json"
    figures = [_workers_figure(1, 134.4), _workers_figure(2, 72.9)]
    figures.append(
        {
            "part": "autoscaler",
            "name": "backlog -> new worker",
            "value": "11.3 s",
            "goal": "<= 30 s",
            "met": True,
            "data": {},
        }
    )
    elasticity.write_text(json.dumps({"figures": figures}))
    ingest = tmp_path / "ingest.json"
    scale = {
        "scale": 100.0,
        "rows": 9760600,
        "peak_mb": {"chunked": 238.4, "whole": 4553.3},
        "rows_per_s": {"chunked": 385459.0, "pyarrow": 6360078.0},
        "rate_ratio": 0.0606,
    }
    peak_ratio = {"from_scale": 1.0, "to_scale": 100.0, "peak": 1.104, "goal_at_most": 1.2}
    ingest.write_text(
        json.dumps({"summary": {"scales": [scale], "peak_ratio": peak_ratio, "rate_goal_at_least": 0.7}})
    )
    out = tmp_path / "again"
    command = [
        "report",
        str(source),
        "--out",
        str(out),
        "--benchmark",
        str(elasticity),
        "--benchmark",
        str(ingest),
    ]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    stored = json.loads(source.read_text())["elasticity"]
    assert (stored["workers"], stored["wall_s"]) == ([1, 2], [134.4, 72.9])
    names = [f["name"] for f in stored["figures"]]
    assert "backlog -> new worker" in names
    assert {
        "name": "ingest peak RSS 100x / 1x (chunked)",
        "value": "1.10",
        "goal": "<= 1.2",
        "met": True,
    } in stored["figures"]
    rate = next(f for f in stored["figures"] if "pyarrow" in f["name"])
    assert rate["met"] is False and rate["value"].endswith("= 0.06")
    page = (out / "report.html").read_text()
    assert "backlog -&gt; new worker" in page and "11.3 s" in page
    assert (out / "figures" / "elasticity.png").is_file()


def test_duration_distribution():
    values = [10.0, 11.0, 12.0, 13.0, 20.0]
    summary = _distribution(values)
    assert (summary["min"], summary["p50"], summary["max"]) == (10.0, 12.0, 20.0)
    assert summary["mean"] == sum(values) / len(values)
    assert 13.0 <= summary["p90"] <= 20.0
    assert _distribution([]) == {}


def test_run_refuses_a_playbooks_folder_that_is_not_the_projects_before_touching_anything(repo, tmp_path):
    scenario = str(repo / "experiments/faults/kill-worker.yml")
    result = runner.invoke(app, ["--playbooks", str(tmp_path), "run", "-i", "nowhere.yml", scenario])
    assert result.exit_code == 2
    assert str(tmp_path) in unwrapped(result.output) and "lacks" in result.output
    from_environment = runner.invoke(
        app, ["run", "-i", "nowhere.yml", scenario], env={"R3E_PLAYBOOKS": str(tmp_path)}
    )
    assert from_environment.exit_code == 2 and str(tmp_path) in unwrapped(from_environment.output)


def unwrapped(output: str) -> str:
    """The console's output without the line breaks it wraps long words with."""
    return output.replace("\n", "")

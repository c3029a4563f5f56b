"""The README's figures written from results/ (r3e_testbed.experiments.readme, `r3e publish`, `r3e readme`).

The published run is made by the harness's own code: results from the report tests' builder written
by ``write_report`` (results.json, fingerprint.json, figures), the benchmarks' JSON from the
benchmark scripts' own functions.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from test_failover import host_loss_result, results_of
from test_report import make_results
from typer.testing import CliRunner

from r3e_testbed.experiments import cli as cli_module
from r3e_testbed.experiments import readme
from r3e_testbed.experiments.cli import app
from r3e_testbed.experiments.readme import ReadmeError, load_published, publish, rewrite, spans
from r3e_testbed.experiments.report import write_report

REPO = Path(__file__).resolve().parents[2]
cli = CliRunner()

TEMPLATE = """# Project

Hand-written text stays as it is.

<!-- r3e:begin r3e-run -->
typed by hand
<!-- r3e:end r3e-run -->

<!-- r3e:begin r3e-faults -->
<!-- r3e:end r3e-faults -->

Between the blocks: also kept.

<!-- r3e:begin r3e-summary -->
<!-- r3e:end r3e-summary -->

<!-- r3e:begin r3e-figures -->
<!-- r3e:end r3e-figures -->

## Elasticity

<!-- r3e:begin bench -->
<!-- r3e:end bench -->

<!-- r3e:begin host-loss -->
<!-- r3e:end host-loss -->

The end.
"""


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"readme_test_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory) -> dict[str, Path]:
    """The two benchmark JSON files, made by the scripts' own summary and figure functions."""
    folder = tmp_path_factory.mktemp("bench")
    ingest = load_script("ingest")

    def run(mode, scale, rows, wall, peak_mib):
        return {"mode": mode, "scale": scale, "rows": rows, "wall_s": wall, "peak_kib": peak_mib * 1024}

    runs = [
        run("chunked", 1.0, 97_606, 0.14, 205) | {"file_bytes": 6_900_000},
        run("whole", 1.0, 97_606, 0.5, 190) | {"file_bytes": 6_900_000},
        run("pyarrow", 1.0, 97_606, 0.0128, 150) | {"file_bytes": 6_900_000},
        run("chunked", 100.0, 9_760_600, 10.3, 232) | {"file_bytes": 690_000_000},
        {"mode": "whole", "scale": 100.0, "skipped": "needs about 6,900 MB", "file_bytes": 690_000_000},
        run("pyarrow", 100.0, 9_760_600, 0.655, 900) | {"file_bytes": 690_000_000},
    ]
    ingest_document = {
        "store": "temporary DirectoryStore, removed afterwards",
        "host": {"cpus": 2, "mem_total_mb": 24_576.0},
        "runs": runs,
        "summary": ingest.summarise(runs, baseline_kib=120 * 1024),
    }
    elasticity = load_script("elasticity")

    def measured(per_s):
        return {
            "per_s": per_s,
            "tasks": 16,
            "span_s": 16 / per_s,
            "run_s": 99.0,
            "run_state": "success",
            "mean_task_s": 33.0,
            "hosts": {"worker-1": 16},
            "workers": ["worker-1:airflow-worker"],
        }

    figures = elasticity.worker_figures({1: measured(0.1), 2: measured(0.191)}, 16, 30)
    figures.append(elasticity.bare_figure(None))
    elasticity_document = {
        "started": "2026-11-24T14:03:00+00:00",
        "inventory": [".vagrant/provisioners/ansible/inventory/vagrant_ansible_inventory"],
        "figures": [dataclasses.asdict(figure) for figure in figures],
    }
    for module in (ingest, elasticity):
        del sys.modules[module.__name__]
    paths = {"ingest": folder / "ingest.json", "elasticity": folder / "elasticity.json"}
    paths["ingest"].write_text(json.dumps(ingest_document))
    paths["elasticity"].write_text(json.dumps(elasticity_document))
    return paths


def harness_results() -> dict:
    results = make_results()
    results["finished_at"] = "2025-11-24T12:47:00+00:00"  # 47 min after created_at
    return results


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reports") / "20251124T120000Z"
    write_report(harness_results(), folder)
    return folder


@pytest.fixture
def project(tmp_path, report_dir, benchmarks) -> tuple[Path, Path]:
    """(README, results/) of a project whose last run is published."""
    results = tmp_path / "results"
    publish(report_dir, results, [benchmarks["ingest"], benchmarks["elasticity"]])
    (results / "ha").mkdir()
    (results / readme.HA_RESULTS).write_text(json.dumps(ha_run()), encoding="utf-8")
    (tmp_path / "README.md").write_text(TEMPLATE, encoding="utf-8")
    return tmp_path / "README.md", results


def ha_run() -> dict:
    """A highly available deployment's host-loss run with the minimal one's beside it."""
    from r3e_testbed.experiments.report import compared_run

    minimal = results_of("testbed", ["db", "storage", "control"], [host_loss_result("failed", None)])
    ha = results_of("testbed-ha", ["infra-1", "infra-2", "infra-3"], [host_loss_result("passed", 6.5)])
    ha["compared"] = [compared_run(minimal)]
    return ha


def written(project) -> str:
    readme_file, results = project
    return rewrite(readme_file.read_text(encoding="utf-8"), load_published(results, readme_file)).text


def block(text: str, name: str) -> str:
    (span,) = [s for s in spans(text) if s.name == name]
    return text[span.start : span.end]


def table_rows(markdown: str) -> dict[str, list[str]]:
    """A Markdown table's rows by their first cell (header and rule left out)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    rows = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    return {row[0]: row for row in rows}


# --- publish -------------------------------------------------------------------------------------


def test_publish_copies_the_run_its_small_figures_and_the_benchmarks(tmp_path, report_dir, benchmarks):
    results = tmp_path / "results"
    (results / "figures").mkdir(parents=True)
    (results / "figures" / "timeline-09-of-an-older-run.png").write_bytes(b"old")
    done = publish(report_dir, results, [benchmarks["elasticity"], benchmarks["ingest"]])

    assert json.loads((results / "results.json").read_text()) == harness_results()
    assert json.loads((results / "fingerprint.json").read_text()) == harness_results()["fingerprint"]
    figures = sorted(p.name for p in (report_dir / "figures").glob("*.png"))
    assert figures and sorted(p.name for p in (results / "figures").iterdir()) == figures
    assert done.oversized == []
    assert json.loads((results / "bench-ingest.json").read_text()) == json.loads(
        benchmarks["ingest"].read_text()
    )
    elasticity = json.loads((results / "bench-elasticity.json").read_text())
    assert elasticity == json.loads(benchmarks["elasticity"].read_text())
    assert sorted(done.benchmarks) == ["bench-elasticity.json", "bench-ingest.json"]


def test_publish_leaves_out_figures_above_the_size_limit(tmp_path, report_dir):
    sizes = {p.name: p.stat().st_size for p in (report_dir / "figures").glob("*.png")}
    limit = sorted(sizes.values())[len(sizes) // 2]
    done = publish(report_dir, tmp_path / "results", max_figure_bytes=limit)
    kept = {p.name for p in (tmp_path / "results" / "figures").iterdir()}
    assert kept == {name for name, size in sizes.items() if size <= limit}
    assert kept and len(done.oversized) == len(sizes) - len(kept) > 0
    assert all(name.split(" ")[0] not in kept for name in done.oversized)


def test_the_committed_figure_limit_keeps_the_figures_of_a_full_report(report_dir):
    assert max(p.stat().st_size for p in (report_dir / "figures").glob("*.png")) <= readme.MAX_FIGURE_BYTES


def test_publish_refuses_what_is_not_a_run_or_a_benchmark(tmp_path, report_dir, benchmarks):
    with pytest.raises(ReadmeError, match="does not exist"):
        publish(tmp_path / "no-report", tmp_path / "results")
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text('{"figures": []}')
    with pytest.raises(ReadmeError, match="not an R3E results file"):
        publish(other, tmp_path / "results")
    stray = tmp_path / "stray.json"
    stray.write_text('{"rows": 3}')
    with pytest.raises(ReadmeError, match="neither"):
        publish(report_dir, tmp_path / "results", [stray])


# --- the blocks ----------------------------------------------------------------------------------


def test_the_faults_table_has_every_fault_with_its_measurements(project):
    rows = table_rows(block(written(project), "r3e-faults"))
    faults = harness_results()["faults"]
    assert len(rows) == len(faults)
    for fault in faults:
        row = rows[f"`{fault['name']}`"]
        assert row[2] == fault["outcome"]
        for column, key in (
            (4, "detection_s"),
            (5, "recovery_s"),
            (7, "extra_wall_s"),
            (8, "baseline_duration_s"),
        ):
            assert row[column] == ("—" if fault[key] is None else f"{fault[key]:.1f}"), (fault["name"], key)
        assert row[6] == str(fault["retries_used"])
    broken = next(f for f in faults if f["outcome"] == "error")
    # The error goes in as text: "<host unreachable>" would otherwise be read as an HTML tag.
    assert rows[f"`{broken['name']}`"][3] == "not run: the inject playbook failed: &lt;host unreachable>"


def test_the_summary_counts_and_names_what_the_results_hold(project):
    summary = block(written(project), "r3e-summary")
    results = harness_results()
    faults, inputs = results["faults"], results["inputs"]
    injected = sum(f["injected_at_s"] is not None for f in faults)
    survived = sum(f["outcome"] == "passed" for f in faults)
    assert f"**{survived} of {injected} injected survived ({len(faults)} tried)**" in summary
    assert f"**{sum(i['outcome'] == 'passed' for i in inputs)} handled of {len(inputs)}**" in summary
    failed_input = next(i for i in inputs if i["outcome"] == "failed")
    (failed_check,) = [c for c in failed_input["checks"] if not c["passed"]]
    assert f"`{failed_input['name']}` ({failed_check['name']}: {failed_check['detail']})" in summary
    assert f"promoted a model: `{failed_input['name']}`" in summary

    tuning = {t["profile"]: t for t in results["tuning"]}
    assert (
        f"recovery {tuning['defaults']['recovery_s']:.1f} s → {tuning['tuned']['recovery_s']:.1f} s"
        in summary
    )
    runs = results["reliability"]["runs"]
    assert f"{sum(r['state'] == 'success' for r in runs)} of {len(runs)} runs succeeded" in summary
    assert "holdout metrics vary" in summary  # the builder's runs differ in their MAE
    for point in results["robustness_curve"]:
        if point["series"] == "In":
            out = next(
                p
                for p in results["robustness_curve"]
                if p["series"] == "Out" and p["fraction"] == point["fraction"]
            )
            percent = f"{point['fraction'] * 100:g} %"
            assert f"{percent} {point['mae_selected']:.2f} / {out['mae_selected']:.2f}" in summary
    assert "in-process on the controller" in summary


def test_identical_metrics_are_said_to_be_identical(project, tmp_path):
    results = harness_results()
    results["reliability"]["metric_variance"] = {"In.prophet_mae": 0.0, "Out.prophet_mae": 0.0}
    folder = tmp_path / "steady"
    write_report(results, folder)
    publish(folder, project[1])
    assert "identical in every run (variance 0)" in block(written(project), "r3e-summary")


def test_the_run_block_says_when_where_and_from_which_files(project):
    text = block(written(project), "r3e-run")
    fingerprint = harness_results()["fingerprint"]
    assert "started 2025-11-24 12:00 UTC, 47 min" in text
    assert f"commit `{fingerprint['git_commit']}`" in text
    assert "[`results/results.json`](results/results.json)" in text
    assert "[`results/fingerprint.json`](results/fingerprint.json)" in text


def test_the_figures_block_links_every_published_figure(project):
    readme_file, results = project
    text = block(written(project), "r3e-figures")
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(f"results/figures/{p.name}" for p in (results / "figures").iterdir())
    assert all((readme_file.parent / link).is_file() for link in links)


def test_the_benchmark_table_carries_both_benchmarks(project, benchmarks):
    text = block(written(project), "bench")
    rows = table_rows(text)
    summary = json.loads(benchmarks["ingest"].read_text())["summary"]
    peak = rows["ingest peak RSS, chunked, 1x / 100x data (local)"]
    whole = summary["scales"][0]["peak_mb"]["whole"]
    assert f"= {summary['peak_ratio']['peak']:.2f}**" in peak[1]
    assert f"(whole-object: {whole / 1000:.1f} GB / skipped)" in peak[1]
    assert peak[2] == "<= 1.2" and peak[3] == ("yes" if summary["peak_ratio"]["peak"] <= 1.2 else "**no**")
    rate = rows["ingest rows/s against pyarrow's raw CSV parse of the same file (local)"]
    ratios = sorted(s["rate_ratio"] for s in summary["scales"])
    assert f"**{ratios[0]:.2f}-{ratios[-1]:.2f}**" in rate[1] and rate[3] == "**no**"
    for figure in json.loads(benchmarks["elasticity"].read_text())["figures"]:
        row = rows[figure["name"]]
        assert row[1:3] == [figure["value"], figure["goal"]]
        assert row[3] == {None: "—", True: "yes", False: "**no**"}[figure["met"]]
    host = json.loads(benchmarks["ingest"].read_text())["host"]
    assert f"{host['cpus']} cores, {host['mem_total_mb'] * 1e6 / 2**30:.0f} GiB" in text
    assert "started 2026-11-24 14:03 UTC" in text


# --- the README ----------------------------------------------------------------------------------


def test_only_the_marked_text_is_rewritten_and_a_second_run_changes_nothing(project):
    readme_file, results = project
    first = rewrite(TEMPLATE, load_published(results, readme_file))
    assert first.changed == list(readme.BLOCKS) and first.unsourced == {}
    outside = re.compile(r"<!-- r3e:begin ([a-z0-9-]+) -->.*?<!-- r3e:end \1 -->", re.S)
    assert outside.sub("", first.text) == outside.sub("", TEMPLATE)
    again = rewrite(first.text, load_published(results, readme_file))
    assert again.text == first.text and again.changed == [] and again.unsourced == {}


def test_a_block_whose_files_are_missing_keeps_its_text_and_is_reported(project):
    readme_file, results = project
    (results / "bench-ingest.json").unlink()
    done = rewrite(TEMPLATE, load_published(results, readme_file))
    assert done.unsourced == {"bench": ["bench-ingest.json"]}
    assert block(done.text, "bench") == block(TEMPLATE, "bench")
    assert "typed by hand" not in block(done.text, "r3e-run")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- r3e:begin nonsense -->\n<!-- r3e:end nonsense -->\n", "unknown README block"),
        ("<!-- r3e:begin bench -->\ntext\n", "has no <!-- r3e:end bench -->"),
        ("<!-- r3e:begin bench -->\n<!-- r3e:end r3e-run -->\n", "has no <!-- r3e:end bench -->"),
        (
            "<!-- r3e:begin bench -->\n<!-- r3e:begin r3e-run -->\n<!-- r3e:end r3e-run -->\n"
            "<!-- r3e:end bench -->\n",
            "has no <!-- r3e:end bench -->",
        ),
        ("<!-- r3e:begin bench -->\n<!-- r3e:end bench -->\n" * 2, "appears twice"),
        ("text\n<!-- r3e:end bench -->\n", "without its r3e:begin"),
    ],
)
def test_broken_markers_are_refused(text, message):
    with pytest.raises(ReadmeError, match=re.escape(message)):
        spans(text)


def test_the_commands_publish_write_and_check_the_readme(tmp_path, report_dir, benchmarks, monkeypatch):
    # Not the checkout's own reports/bench-*.json, which exist after a `make bench` there.
    monkeypatch.setattr(cli_module, "BENCHMARK_FILES", [tmp_path / "absent.json"])
    readme_file, results = tmp_path / "README.md", tmp_path / "results"
    readme_file.write_text(TEMPLATE, encoding="utf-8")
    paths = ["--readme", str(readme_file), "--results", str(results)]
    done = cli.invoke(app, ["publish", str(report_dir), "--to", str(results)])
    assert done.exit_code == 0, done.output
    assert cli.invoke(app, ["readme", "--check", *paths]).exit_code == 1, "the template is out of date"

    done = cli.invoke(app, ["readme", *paths])
    assert done.exit_code == 1, "written, but the benchmarks are missing: " + done.output
    assert "bench" in done.output and "bench-ingest.json" in done.output
    bench = ["--benchmark", str(benchmarks["ingest"]), "--benchmark", str(benchmarks["elasticity"])]
    assert cli.invoke(app, ["publish", str(report_dir), "--to", str(results), *bench]).exit_code == 0
    ha_report = tmp_path / "reports" / "ha"
    write_report(ha_run(), ha_report)
    assert cli.invoke(app, ["publish", str(ha_report), "--to", str(results / "ha")]).exit_code == 0
    done = cli.invoke(app, ["readme", *paths])
    assert done.exit_code == 0, done.output
    assert cli.invoke(app, ["readme", "--check", *paths]).exit_code == 0

    stale = readme_file.read_text(encoding="utf-8").replace("| passed |", "| failed |", 1)
    readme_file.write_text(stale, encoding="utf-8")
    done = cli.invoke(app, ["readme", "--check", *paths])
    assert done.exit_code == 1 and "r3e-faults" in done.output
    assert readme_file.read_text(encoding="utf-8") == stale, "--check writes nothing"


def test_the_projects_readme_has_every_block_once():
    names = [span.name for span in spans((REPO / "README.md").read_text(encoding="utf-8"))]
    assert sorted(names) == sorted(readme.BLOCKS)


def test_the_projects_readme_matches_its_results_folder():
    """Every block whose files are in results/ is what they give; once a run is there, every block."""
    readme_file = REPO / "README.md"
    text = readme_file.read_text(encoding="utf-8")
    done = rewrite(text, load_published(REPO / "results", readme_file))
    assert done.changed == [], "the README differs from results/: make readme"
    if (REPO / "results" / "results.json").is_file():
        assert done.unsourced == {}, "a marked figure of the README has no file in results/"


def test_a_failed_playbook_shows_its_innermost_cause():
    error = (
        "fault.yml failed (failed, exit 2):\n"
        "  fault_injection : Inject the fault: Specified qdisc kind is unknown."
    )
    assert readme._cause(error) == "fault_injection : Inject the fault: Specified qdisc kind is unknown."
    assert readme._cause("") == ""
    assert readme._cause("x" * 300).endswith("…") and len(readme._cause("x" * 300)) == 200


def test_the_host_loss_block_shows_both_deployments_per_experiment(project):
    rows = [line for line in block(written(project), "host-loss").splitlines() if line.startswith("| `")]
    assert len(rows) == 2
    assert "testbed-ha (3 hosts)" in rows[0] and "| 6.5 |" in rows[0] and "| 40 / 40 |" in rows[0]
    assert "testbed (3 hosts)" in rows[1] and "run success: the run ended" in rows[1]
    assert "run 2026-12-04" in block(written(project), "host-loss")

"""The R3E report (r3e_testbed.experiments.report): files, figures, numbers, escaping, rendering."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from r3e_testbed.experiments.report import write_report
from r3e_testbed.experiments.results import Results, empty_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("owned")</script> stop-object-store'


def task_try(task_id, start, end, state, try_number=1, map_index=-1, host="worker-1"):
    return {
        "task_id": task_id,
        "map_index": map_index,
        "try_number": try_number,
        "state": state,
        "start_s": start,
        "end_s": end,
        "hostname": host,
    }


def check(name, passed, detail=""):
    return {"name": name, "passed": passed, "detail": detail}


def fault(name, fault_type, outcome, *, detected=None, recovered=None, injected=None, **rest):
    run_state = rest.get("run_state", "success")
    result = {
        "name": name,
        "fault": fault_type,
        "target": "airflow_workers",
        "description": f"{fault_type} during training",
        "outcome": outcome,
        "checks": [check("dag run success", outcome == "passed", f"run state {run_state}")],
        "dag_id": "iot_training",
        "run_id": f"r3e__{fault_type}",
        "run_state": run_state,
        "duration_s": None,
        "baseline_duration_s": 92.0,
        "extra_wall_s": None,
        "injected_at_s": injected,
        "detected_at_s": detected,
        "recovered_at_s": recovered,
        "detection_s": None if detected is None else round(detected - injected, 3),
        "recovery_s": None if recovered is None else round(recovered - injected, 3),
        "retries_used": 0,
        "timeline": [],
        "events": [],
    }
    result.update(rest)
    return result


def make_results() -> Results:
    killed = fault(
        "kill-worker",
        "kill_worker",
        "passed",
        injected=45.0,
        detected=52.3,
        recovered=120.4,
        duration_s=131.0,
        extra_wall_s=39.0,
        retries_used=1,
        timeline=[
            task_try("extract", 0.4, 12.1, "success"),
            task_try("train", 13.0, 52.0, "failed", map_index=0),
            task_try("train", 13.2, 95.5, "success", map_index=1, host="worker-2"),
            task_try("train", 70.1, 120.4, "success", try_number=2, map_index=0, host="worker-2"),
            task_try("evaluate", 121.0, 130.6, "success"),
        ],
        events=[
            {"at_s": 45.0, "what": "inject"},
            {"at_s": 52.3, "what": "detected"},
            {"at_s": 120.4, "what": "recovered"},
        ],
    )
    isolated = fault(
        "isolate-worker",
        "isolate_worker",
        "failed",
        injected=20.0,
        detected=31.75,
        run_state="running",
        duration_s=None,
        timeline=[
            task_try("extract", 0.5, 11.0, "success"),
            task_try("train", 12.0, None, "running", host="worker-1"),
            task_try("evaluate", None, None, "upstream_failed"),
        ],
        events=[{"at_s": 20.0, "what": "inject"}, {"at_s": 31.75, "what": "detected"}],
    )
    broken = fault(
        HOSTILE,
        "stop_object_store",
        "error",
        run_state="failed",
        error="the inject playbook failed: <host unreachable>",
    )
    runs = [
        {
            "run_id": f"rel-{i}",
            "state": state,
            "duration_s": duration,
            "metrics": {"In": {"prophet_mae": 1.0 + i / 10}},
        }
        for i, (state, duration) in enumerate(
            [("success", 88.2), ("success", 91.0), ("failed", 140.5), ("success", 90.1), ("success", 87.6)]
        )
    ]
    durations = sorted(r["duration_s"] for r in runs)
    return {
        "created_at": "2025-11-24T12:00:00+00:00",
        "fingerprint": {
            "git_commit": "0123abcd",
            "packages": {"pandas": "2.2.3", "prophet": None},
            "topology": {"airflow_workers": ["worker-1", "worker-2"]},
            "seeds": {"data": 0},
        },
        "faults": [killed, isolated, broken],
        "inputs": [
            {
                "name": "month-first-dates",
                "corruption": "month_first",
                "description": "the file re-saved by a US-locale tool",
                "expected": "refused",
                "outcome": "passed",
                "checks": [check("refused", True)],
                "verdict": "refused",
                "rows": 4000,
                "clean_rows": None,
                "quarantined_rows": None,
                "reason": "dates look month-first",
                "promoted": False,
                "run_state": "failed",
            },
            {
                "name": "out-of-range-temperatures",
                "corruption": "out_of_range",
                "description": "a sensor reporting 999",
                "expected": "quarantined",
                "outcome": "failed",
                "checks": [check("quarantined", False, "verdict was accepted")],
                "verdict": "accepted",
                "rows": 4000,
                "clean_rows": 4000,
                "quarantined_rows": 0,
                "reason": "",
                "promoted": True,
                "run_state": "success",
            },
        ],
        "robustness_curve": [
            {
                "fraction": fraction,
                "series": series,
                "quarantined_rows": int(4000 * fraction),
                "mae_prophet": 1.2 + 3 * fraction + offset,
                "mae_baseline": 1.9 + fraction + offset,
                "mae_selected": min(1.2 + 3 * fraction, 1.9 + fraction) + offset,
            }
            for series, offset in (("In", 0.0), ("Out", 0.4))
            for fraction in (0.0, 0.1, 0.3)
        ],
        "reliability": {
            "runs": runs,
            "success_rate": sum(r["state"] == "success" for r in runs) / len(runs),
            "duration_s": {
                "min": durations[0],
                "p50": statistics.median(durations),
                "p90": statistics.quantiles(durations, n=10, method="inclusive")[-1],
                "max": durations[-1],
                "mean": statistics.fmean(durations),
            },
            "metric_variance": {
                "In.prophet_mae": statistics.pvariance([r["metrics"]["In"]["prophet_mae"] for r in runs])
            },
        },
        "tuning": [
            {
                "profile": "defaults",
                "settings": {"scheduler.task_instance_heartbeat_timeout": "300"},
                "detection_s": 301.2,
                "recovery_s": 355.04,
                "run_state": "success",
                "duration_s": 402.0,
            },
            {
                "profile": "tuned",
                "settings": {"scheduler.task_instance_heartbeat_timeout": "30"},
                "detection_s": 31.9,
                "recovery_s": 86.66,
                "run_state": "success",
                "duration_s": 140.0,
            },
        ],
    }


class PageParser(HTMLParser):
    """Table cells per section, <img> sources and skipped-figure notices of the report page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[list[str]]]] = {}
        self.images: list[dict[str, str | None]] = []
        self.skipped: list[str] = []
        self.scripts = 0
        self._section, self._cell = "", None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section":
            self._section = attributes.get("id") or ""
        elif tag == "table":
            self.tables.setdefault(self._section, []).append([])
        elif tag == "tr":
            self.tables[self._section][-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "script":
            self.scripts += 1
        if "data-figure" in attributes:
            self.skipped.append(attributes["data-figure"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._section][-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def headline_value(page: str, stat: str) -> str:
    match = re.search(rf'id="stat-{stat}"[^>]*>\s*<span class="value">(.*?)</span>', page, re.S)
    assert match, f"no headline value for {stat}"
    return html.unescape(match.group(1)).strip()


def rows_by_first_cell(table: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row for row in table[1:]}


@pytest.fixture
def results() -> Results:
    return make_results()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    """One report of make_results() for every test that only reads it (drawing takes seconds)."""
    results = make_results()
    path = write_report(results, tmp_path_factory.mktemp("report"))
    assert results == make_results(), "write_report must not change its input"
    return path, path.read_text(encoding="utf-8")


def test_the_report_writes_its_files_next_to_the_page(results, report):
    path, _ = report
    assert path.name == "report.html"
    out = path.parent
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == results
    assert json.loads((out / "fingerprint.json").read_text(encoding="utf-8")) == results["fingerprint"]


def test_every_figure_is_a_png_that_the_page_shows(report):
    path, page = report
    written = sorted(p.relative_to(path.parent).as_posix() for p in (path.parent / "figures").iterdir())
    assert written, "no figure was drawn"
    for name in written:
        assert (path.parent / name).read_bytes()[:8] == PNG_MAGIC, name
    images = parse(page).images
    assert sorted(img["src"] for img in images) == written
    assert all(img.get("alt") for img in images), "every figure needs alt text"


def test_figures_without_data_are_skipped_and_the_page_says_so(results, tmp_path):
    results.update(robustness_curve=[], tuning=[])
    for run in results["reliability"]["runs"]:
        run["duration_s"] = None  # runs that never finished: nothing to draw
    path = write_report(results, tmp_path)
    skipped = parse(path.read_text(encoding="utf-8")).skipped
    figures = {p.stem for p in (tmp_path / "figures").iterdir()}

    for key in ("robustness-curve", "reliability-durations", "defaults-vs-tuned", "elasticity"):
        assert key in skipped and key not in figures
    # The fault that could not be run has no timeline; the others have theirs.
    no_timeline = {i for i, f in enumerate(results["faults"], 1) if not f["timeline"] and not f["events"]}
    assert no_timeline
    assert {int(k.split("-")[1]) for k in skipped if k.startswith("timeline-")} == no_timeline
    drawn = {int(k.split("-")[1]) for k in figures if k.startswith("timeline-")}
    assert drawn == set(range(1, len(results["faults"]) + 1)) - no_timeline
    assert "recovery-times" in figures


def test_results_without_any_measurement_still_make_a_page(tmp_path):
    empty = empty_results("2025-11-24T12:00:00+00:00")
    page = write_report(empty, tmp_path).read_text(encoding="utf-8")
    assert not list((tmp_path / "figures").iterdir())
    assert set(parse(page).skipped) == {
        "recovery-times",
        "robustness-curve",
        "reliability-durations",
        "defaults-vs-tuned",
        "elasticity",
    }
    assert headline_value(page, "faults") == "0 / 0"
    assert headline_value(page, "recovery") == "— → —"
    assert headline_value(page, "reliability") == "—"


def test_the_headline_shows_what_the_results_imply(results, report):
    _, page = report
    faults, inputs = results["faults"], results["inputs"]
    assert (
        headline_value(page, "faults") == f"{sum(f['outcome'] == 'passed' for f in faults)} / {len(faults)}"
    )
    assert (
        headline_value(page, "inputs") == f"{sum(i['outcome'] == 'passed' for i in inputs)} / {len(inputs)}"
    )

    recovery = {t["profile"]: t["recovery_s"] for t in results["tuning"]}
    shown = re.fullmatch(r"([\d.]+) s → ([\d.]+) s", headline_value(page, "recovery"))
    assert shown, headline_value(page, "recovery")
    assert float(shown[1]) == round(recovery["defaults"], 1)
    assert float(shown[2]) == round(recovery["tuned"], 1)

    runs = results["reliability"]["runs"]
    rate = re.fullmatch(r"([\d.]+) % of (\d+) runs", headline_value(page, "reliability"))
    assert rate, headline_value(page, "reliability")
    assert float(rate[1]) == pytest.approx(
        100 * sum(r["state"] == "success" for r in runs) / len(runs), abs=0.05
    )
    assert int(rate[2]) == len(runs)


def test_the_faults_table_shows_seconds_with_one_decimal_and_missing_as_a_dash(results, report):
    _, page = report
    table = parse(page).tables["faults"][0]
    header, rows = table[0], rows_by_first_cell(table)
    column = {name: header.index(name) for name in ("detection s", "recovery s", "outcome", "failed checks")}
    for f in results["faults"]:
        row = rows[f["name"]]
        for field, name in (("detection_s", "detection s"), ("recovery_s", "recovery s")):
            expected = "—" if f[field] is None else f"{f[field]:.1f}"
            assert row[column[name]] == expected, (f["name"], field)
        assert row[column["outcome"]] == f["outcome"]
        for c in f["checks"]:
            assert (f"{c['name']}: {c['detail']}" in row[column["failed checks"]]) != c["passed"]
    broken = next(f for f in results["faults"] if f["outcome"] == "error")
    assert broken["error"] in rows[broken["name"]][column["failed checks"]]


def test_the_inputs_table_names_the_failed_checks_as_the_faults_table_does(results, tmp_path):
    promoted_twice = check("no partial or duplicate promotion", False, "v-1 promoted twice in a row")
    failing = results["inputs"][1]
    failing["checks"] = [check("verdict quarantined", True, "the pipeline's verdict: quarantined")]
    failing["checks"].append(promoted_twice)
    broken = {**results["inputs"][0], "name": "empty-file", "outcome": "error", "checks": []}
    broken["error"] = "iot_training run did not end within 1620 s"
    results["inputs"].append(broken)
    table = parse(write_report(results, tmp_path).read_text(encoding="utf-8")).tables["inputs"][0]
    header, rows = table[0], rows_by_first_cell(table)
    failed = header.index("failed checks")
    assert rows[failing["name"]][failed] == "no partial or duplicate promotion: v-1 promoted twice in a row"
    assert "verdict quarantined" not in rows[failing["name"]][failed], "passed checks are not listed"
    assert rows["month-first-dates"][failed] == "—"
    assert rows["empty-file"][failed] == f"experiment error: {broken['error']}"


def test_the_input_curve_tuning_and_reliability_tables_carry_the_results(results, report):
    _, page = report
    tables = parse(page).tables
    inputs = rows_by_first_cell(tables["inputs"][0])
    header = tables["inputs"][0][0]
    for i in results["inputs"]:
        row = inputs[i["name"]]
        assert row[header.index("verdict")] == i["verdict"]
        assert row[header.index("clean")] == ("—" if i["clean_rows"] is None else str(i["clean_rows"]))
        assert row[header.index("promoted?")] == ("yes" if i["promoted"] else "no")
    assert len(tables["inputs"][1]) - 1 == len(results["robustness_curve"])

    tuning = rows_by_first_cell(tables["tuning"][0])
    for t in results["tuning"]:
        (name, value), *_ = t["settings"].items()
        assert f"{name} = {value}" in tuning[t["profile"]][1]

    summary = {row[0]: row[1] for row in tables["reliability"][0]}
    assert summary["runs"] == str(len(results["reliability"]["runs"]))
    assert summary["duration p90 s"] == f"{results['reliability']['duration_s']['p90']:.1f}"


def test_hostile_names_are_escaped(report):
    _, page = report
    assert HOSTILE not in page
    assert HOSTILE in rows_by_first_cell(parse(page).tables["faults"][0]), "shown as text"
    assert parse(page).scripts == 1, "only the page's own script may run"


def test_the_page_needs_nothing_from_the_network(report):
    _, page = report
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page


def test_elasticity_is_drawn_when_given_and_tolerated_when_malformed(results, tmp_path):
    results.update(faults=[], inputs=[], robustness_curve=[], reliability=None, tuning=[])
    results["elasticity"] = {"workers": [1, 2, 4], "wall_s": [600.0, 330.0, None], "note": "ignored"}
    write_report(results, tmp_path / "good")
    assert (tmp_path / "good" / "figures" / "elasticity.png").read_bytes()[:8] == PNG_MAGIC

    results["elasticity"] = {"workers": [1, 2, 4], "wall_s": [600.0]}
    page = write_report(results, tmp_path / "bad").read_text(encoding="utf-8")
    assert "elasticity" in parse(page).skipped
    assert not (tmp_path / "bad" / "figures" / "elasticity.png").exists()


def test_a_rewritten_report_keeps_no_figures_of_the_previous_one(results, tmp_path):
    results.update(robustness_curve=[], reliability=None, tuning=[])
    write_report(results, tmp_path)
    results["faults"] = results["faults"][:1]
    page = write_report(results, tmp_path).read_text(encoding="utf-8")
    shown = {img["src"] for img in parse(page).images}
    assert {f"figures/{p.name}" for p in (tmp_path / "figures").iterdir()} == shown


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_report_renders_in_chromium(results, report, tmp_path):
    binary = chromium_binary()
    if binary is None:
        reason = "no chromium or chromium-browser on PATH: the report's rendering is not checked"
        if os.environ.get("R3E_REQUIRE_CHROMIUM") == "1":
            pytest.fail(reason + " (R3E_REQUIRE_CHROMIUM=1)")
        pytest.skip(reason)
    path, _ = report
    done = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",  # never the user's profile
            "--dump-dom",
            path.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = re.search(r'data-figures-loaded="(\d+)"', dom)
    total = re.search(r'data-figures-total="(\d+)"', dom)
    assert loaded and total, "the page's load script did not run:\n" + dom[:2000]
    assert int(total[1]) == len(list((path.parent / "figures").glob("*.png"))) > 0
    assert loaded[1] == total[1], "some figures did not load"
    faults = results["faults"]
    assert headline_value(dom, "faults") == f"{sum(f['outcome'] == 'passed' for f in faults)} / {len(faults)}"


def test_an_upload_experiment_gets_its_row_and_a_timeline_of_every_uploads_run(tmp_path):
    lost = check("uploads delivered once", False, "raw/r3e-faults/x-3.csv: 0 iot_training runs")
    uploads = fault(
        "stop-event-bridge",
        "stop_event_bridge",
        "failed",
        injected=0.4,
        recovered=71.2,
        run_state="failed, missing",
        checks=[check("run failed", False, "the uploads' runs ended: 2 failed, 1 missing"), lost],
        timeline=[
            task_try("#1 fetch", 70.1, 71.0, "success"),
            task_try("#1 validate", 71.2, 72.5, "failed"),
            task_try("#2 fetch", 70.3, 71.1, "success"),
        ],
        events=[{"at_s": 0.4, "what": "inject"}, {"at_s": 1.1, "what": "upload 1"}],
        uploads=[{"key": "raw/r3e-faults/x-1.csv", "run_state": "failed", "runs": 1, "asset_events": 1}],
    )
    results = empty_results("2026-11-24T12:00:00+00:00")
    results["faults"].append(uploads)
    page = write_report(results, tmp_path).read_text(encoding="utf-8")
    row = rows_by_first_cell(parse(page).tables["faults"][0])["stop-event-bridge"]
    assert "failed, missing" in row and "failed" in row
    assert any(lost["detail"] in cell for cell in row)
    assert (tmp_path / "figures" / "timeline-01-stop-event-bridge.png").read_bytes()[:8] == PNG_MAGIC

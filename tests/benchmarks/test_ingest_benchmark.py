"""The pure helpers of benchmarks/ingest.py (the benchmark itself prints figures and is not run here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_ingest", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and annotations look the module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


STATUS = "Name:\tpython\nVmPeak:\t  900000 kB\nVmHWM:\t  217388 kB\nVmRSS:\t  200000 kB\n"
MEMINFO = "MemTotal:       24000000 kB\nMemFree:        21000000 kB\nMemAvailable:   22000000 kB\n"


def test_proc_kib_reads_the_named_field_only(bench):
    assert bench.proc_kib(STATUS, "VmHWM") == 217388
    assert bench.proc_kib(MEMINFO, "MemAvailable") == 22000000
    with pytest.raises(KeyError, match="VmSwap"):
        bench.proc_kib(STATUS, "VmSwap")


def test_whole_object_is_skipped_only_when_the_estimate_exceeds_available_memory(bench):
    factor = bench.WHOLE_OBJECT_MEMORY_FACTOR
    assert bench.whole_object_skip_reason(700_000_000, factor * 700_000_000) is None
    reason = bench.whole_object_skip_reason(700_000_000, factor * 700_000_000 - 1)
    assert reason is not None
    assert f"{factor * 700:,.0f} MB" in reason


def run(mode, scale, rows, wall, peak_mib):
    return {"mode": mode, "scale": scale, "rows": rows, "wall_s": wall, "peak_kib": peak_mib * 1024}


def test_summary_ratios_and_table(bench):
    runs = [
        run("chunked", 1.0, 100, 1.0, 200) | {"file_bytes": 5_000_000},
        run("whole", 1.0, 100, 0.5, 210),
        run("pyarrow", 1.0, 100, 0.1, 150),
        run("chunked", 100.0, 10_000, 50.0, 300) | {"file_bytes": 500_000_000},
        {"mode": "whole", "scale": 100.0, "skipped": "needs about 5,000 MB"},
        run("pyarrow", 100.0, 10_000, 10.0, 900),
    ]
    summary = bench.summarise(runs, baseline_kib=100 * 1024)
    # The largest scale's chunked peak over the smallest's, also above the import baseline.
    assert summary["peak_ratio"]["peak"] == pytest.approx(1.5)
    assert summary["peak_ratio"]["above_import"] == pytest.approx(2.0)
    small, large = summary["scales"]
    assert small["rows_per_s"]["chunked"] == pytest.approx(100)
    assert small["rate_ratio"] == pytest.approx(0.1)
    assert large["rate_ratio"] == pytest.approx(200 / 1000)
    assert large["whole_skipped"]

    # P3, the ratio of the issue, per scale next to its goal
    assert summary["p3"] == {
        "by_scale": {"1": pytest.approx(0.1), "100": pytest.approx(0.2)},
        "goal_at_least": 0.7,
        "met": False,
    }
    assert bench.p3_lines(summary) == [
        "P3 ingest/pyarrow rows/s = 0.10 (goal >= 0.7) at 1x: 100 / 1,000 rows/s",
        "P3 ingest/pyarrow rows/s = 0.20 (goal >= 0.7) at 100x: 200 / 1,000 rows/s",
    ]

    cells = bench.table_rows(summary)
    assert cells[0][:4] == ["1x", "100", "5.0", f"{200 * 1.048576:,.0f} ({100 * 1.048576:,.0f})"]
    assert cells[1][4] == "skipped"
    assert cells[1][-1] == "0.20 (goal >= 0.7)"


def test_missing_figures_show_as_dashes(bench):
    summary = bench.summarise([run("chunked", 1.0, 100, 2.0, 200)], baseline_kib=0)
    assert summary["scales"][0]["rate_ratio"] is None
    assert bench.table_rows(summary)[0][-1].startswith("-")
    assert bench.p3_lines(summary) == ["P3 ingest/pyarrow rows/s = - (goal >= 0.7) at 1x: 50 / - rows/s"]
    assert summary["p3"]["met"] is False


def test_p3_is_met_only_when_every_scale_meets_it(bench):
    runs = [run("chunked", 1.0, 100, 1.0, 200), run("pyarrow", 1.0, 100, 0.7, 150)]
    assert bench.summarise(runs, baseline_kib=0)["p3"]["met"] is True
    runs += [run("chunked", 10.0, 1000, 10.0, 200), run("pyarrow", 10.0, 1000, 6.0, 150)]
    assert bench.summarise(runs, baseline_kib=0)["p3"]["met"] is False

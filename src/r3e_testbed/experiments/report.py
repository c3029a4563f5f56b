"""The R3E report: ``results.json`` turned into figures and one self-contained HTML page.

``write_report(results, out_dir)`` writes::

    out_dir/results.json       the results, as given
    out_dir/fingerprint.json   results["fingerprint"]
    out_dir/figures/*.png      timelines, recovery bars, robustness curve, run durations,
                               defaults vs tuned, elasticity (each only when it has data)
    out_dir/report.html        tables, figures (relative paths), fingerprint; no network

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through
``pyplot``: no global figure registry, so nothing leaks from one figure (or one report) to
the next, and nothing needs a display.

``results["elasticity"]`` is optional. The elasticity figure expects::

    {"workers": [1, 2, 4], "wall_s": [610.0, 340.2, 205.9]}

(the wall time of the same workload at each worker count; ``None`` entries are left out).
Its optional ``"figures"`` list (``{"name", "value", "goal", "met"}`` each) is shown as a table;
``elasticity_from_benchmarks`` builds both from the JSON files of ``benchmarks/``. When the two
lists are missing, empty or of different lengths, the figure is skipped and the page says why.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, StrictUndefined
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from r3e_testbed.experiments.results import FaultResult, Reliability, Results, TuningResult

MISSING = "—"
FIGURE_DPI = 110

STATE_COLORS = {
    "success": "#2e7d32",
    "failed": "#c62828",
    "up_for_retry": "#ef6c00",
    "up_for_reschedule": "#f9a825",
    "running": "#1565c0",
    "queued": "#78909c",
    "scheduled": "#90a4ae",
    "upstream_failed": "#8d6e63",
    "skipped": "#bdbdbd",
    "removed": "#e0e0e0",
}
OTHER_STATE_COLOR = "#616161"
EVENT_COLORS = {"inject": "#c62828", "revert": "#6a1b9a", "detected": "#f9a825", "recovered": "#2e7d32"}
OTHER_EVENT_COLOR = "#455a64"


# --- number formatting -------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_seconds(value: float | None) -> str:
    """Seconds with one decimal; "—" when not measured."""
    return MISSING if _missing(value) else f"{value:.1f}"


def fmt_number(value: float | None, digits: int = 2) -> str:
    return MISSING if _missing(value) else f"{value:.{digits}f}"


def fmt_small(value: float | None) -> str:
    """Three significant digits, for variances that range over orders of magnitude."""
    return MISSING if _missing(value) else f"{value:.3g}"


def fmt_count(value: int | None) -> str:
    return MISSING if value is None else str(value)


def fmt_percent(share: float | None) -> str:
    """A share 0..1 as a percentage, without a useless ".0"."""
    if _missing(share):
        return MISSING
    text = f"{share * 100:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + " %"


def fmt_bool(value: bool | None) -> str:
    return MISSING if value is None else ("yes" if value else "no")


# --- figures -------------------------------------------------------------------------------


@dataclass
class FigureRef:
    """One figure of the page: written (``file`` set) or skipped (``skipped`` says why)."""

    key: str
    title: str
    alt: str
    file: str | None = None
    skipped: str | None = None


def _plain(text: str, limit: int = 60) -> str:
    """Matplotlib reads "$...$" as math; names are shown literally (and shortened to ``limit``)."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "x"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> None:
    figure.savefig(path, format="png")  # constrained layout already fits labels and legends
    figure.clear()  # the canvas and its artists are freed now, not at garbage collection


def _row_label(task_id: str, map_index: int) -> str:
    return task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]"


def draw_timeline(fault: FaultResult) -> Figure | None:
    """Task tries as bars (one row per task or map index) and the fault's events as lines."""
    tries, events = fault.get("timeline") or [], fault.get("events") or []
    if not tries and not events:
        return None
    known = [t for t in tries if t["start_s"] is not None]
    times = [t["start_s"] for t in known] + [t["end_s"] for t in known if t["end_s"] is not None]
    times += [e["at_s"] for e in events]
    x_end = max([*times, 1.0]) * 1.05

    # Rows in the order the tasks first started; tasks that never started come last.
    first_start: dict[tuple[str, int], float] = {}
    for t in tries:
        key = (t["task_id"], t["map_index"])
        start = math.inf if t["start_s"] is None else t["start_s"]
        first_start[key] = min(first_start.get(key, math.inf), start)
    rows = sorted(first_start, key=lambda key: (first_start[key], key))
    row_of = {key: i for i, key in enumerate(rows)}

    figure = _new_figure(11, min(16.0, 1.8 + 0.32 * max(len(rows), 2)))
    ax = figure.add_subplot()
    states_seen: dict[str, str] = {}
    unfinished = False
    for t in tries:
        y = row_of[(t["task_id"], t["map_index"])]
        color = STATE_COLORS.get(t["state"], OTHER_STATE_COLOR)
        if t["start_s"] is None:
            ax.text(0, y, f" not started ({_plain(t['state'])})", va="center", fontsize=7, color="#616161")
            continue
        end = t["end_s"]
        unfinished |= end is None
        states_seen[t["state"]] = color
        width = (x_end if end is None else end) - t["start_s"]
        ax.barh(
            y,
            max(width, x_end * 0.002),  # a zero-length try stays visible
            left=t["start_s"],
            height=0.6,
            color=color,
            edgecolor="black",
            linewidth=0.4,
            hatch="//" if end is None else None,
        )
        if t["try_number"] > 1:  # retries are what the reader looks for
            ax.text(
                t["start_s"],
                y,
                f"try {t['try_number']}",
                va="center",
                fontsize=7,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5},
            )

    # Events at the same moment share one label instead of printing over each other.
    labels_at: dict[float, list[str]] = {}
    for e in sorted(events, key=lambda e: e["at_s"]):
        ax.axvline(e["at_s"], color=EVENT_COLORS.get(e["what"], OTHER_EVENT_COLOR), linestyle="--", lw=1.2)
        labels_at.setdefault(round(e["at_s"], 1), []).append(_plain(e["what"]))
    for at_s, whats in labels_at.items():
        ax.text(
            at_s,
            0.98,
            ", ".join(whats),
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="right",
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )

    ax.set_yticks(range(len(rows)), [_plain(_row_label(*key)) for key in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5 if rows else 0.5, -0.5)
    ax.set_xlim(0, x_end)
    origin = "the experiment (its first upload or injection)" if fault.get("uploads") else "the run"
    ax.set_xlabel(f"seconds from the start of {origin}")
    ax.set_title(
        _plain(f"{fault['name']}: {fault['fault']} on {fault['target']} — {fault['outcome']}", limit=120),
        fontsize=10,
    )
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(facecolor=c, edgecolor="black", label=_plain(s)) for s, c in states_seen.items()]
    if unfinished:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="unfinished"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="try state")
    return figure


def draw_grouped_bars(
    title: str,
    xlabel: str,
    groups: Sequence[str],
    measures: dict[str, Sequence[float | None]],
    missing_text: dict[str, str],
    group_notes: Sequence[str | None] = (),
) -> Figure:
    """Horizontal bars per group and measure; an unmeasured value is written out, not drawn as 0.

    A group's note (e.g. why nothing was measured) replaces the measure's own missing text.
    """
    figure = _new_figure(9, 1.4 + 0.55 * len(groups) * len(measures) / 2 + 0.5)
    ax = figure.add_subplot()
    values = [v for series in measures.values() for v in series if not _missing(v)]
    x_max = max([*values, 1.0]) * 1.25
    height = 0.8 / len(measures)
    colors = ("#f9a825", "#2e7d32", "#1565c0", "#6a1b9a")
    for m, (measure, series) in enumerate(measures.items()):
        for g, value in enumerate(series):
            y = g + (m - (len(measures) - 1) / 2) * height
            if _missing(value):
                note = group_notes[g] if g < len(group_notes) and group_notes[g] else missing_text[measure]
                ax.text(x_max * 0.005, y, note, va="center", fontsize=8, style="italic")
                continue
            ax.barh(y, value, height=height * 0.9, color=colors[m % len(colors)])
            ax.text(value, y, f" {value:.1f} s", va="center", fontsize=8)
    ax.set_yticks(range(len(groups)), [_plain(g) for g in groups], fontsize=9)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlim(0, x_max)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[Patch(color=colors[m % len(colors)], label=k) for m, k in enumerate(measures)],
        loc="lower right",
        fontsize=8,
    )
    return figure


def draw_recovery_times(faults: Sequence[FaultResult]) -> Figure | None:
    if not faults:
        return None
    return draw_grouped_bars(
        "Time to detection and to recovery per fault",
        "seconds after the fault was injected",
        [f["name"] for f in faults],
        {"detection": [f["detection_s"] for f in faults], "recovery": [f["recovery_s"] for f in faults]},
        {"detection": "not detected", "recovery": "not recovered"},
        ["experiment error: not measured" if f["outcome"] == "error" else None for f in faults],
    )


def draw_defaults_vs_tuned(tuning: Sequence[TuningResult]) -> Figure | None:
    if not tuning:
        return None
    return draw_grouped_bars(
        "Worker kill: default vs tuned settings",
        "seconds after the worker was killed",
        [t["profile"] for t in tuning],
        {"detection": [t["detection_s"] for t in tuning], "recovery": [t["recovery_s"] for t in tuning]},
        {"detection": "not detected", "recovery": "not recovered"},
    )


def draw_robustness_curve(points: Sequence[dict]) -> Figure | None:
    """MAE against the corrupted share of rows, one panel per series, one line per model."""
    if not points:
        return None
    series_names = list(dict.fromkeys(p["series"] for p in points))
    figure = _new_figure(5 * len(series_names), 3.8)
    axes = figure.subplots(1, len(series_names), squeeze=False)[0]
    models = (
        ("mae_prophet", "prophet", "o-"),
        ("mae_baseline", "baseline", "s--"),
        ("mae_selected", "selected", "^:"),
    )
    for ax, series in zip(axes, series_names, strict=True):
        mine = sorted((p for p in points if p["series"] == series), key=lambda p: p["fraction"])
        fractions = [p["fraction"] * 100 for p in mine]
        for field, label, style in models:
            values = [math.nan if p.get(field) is None else p[field] for p in mine]
            ax.plot(fractions, values, style, label=label, markersize=4)
        ax.set_title(_plain(f"series {series}"), fontsize=10)
        ax.set_xlabel("rows corrupted (%)")
        ax.set_ylabel("MAE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("Robustness: forecast error as the input gets worse", fontsize=11)
    return figure


def draw_durations(reliability: Reliability | None) -> Figure | None:
    """Box plot of the reliability runs' durations with every run as a point."""
    runs = (reliability or {}).get("runs") or []
    timed = [r for r in runs if not _missing(r["duration_s"])]
    if not timed:
        return None
    figure = _new_figure(6, 4.2)
    ax = figure.add_subplot()
    durations = [r["duration_s"] for r in timed]
    ax.boxplot(durations, widths=0.5, showfliers=False)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(timed))  # fixed: same report, same figure
    ok = np.array([r["state"] == "success" for r in timed])
    xs, ys = 1 + jitter, np.array(durations)
    ax.scatter(xs[ok], ys[ok], s=18, color=STATE_COLORS["success"], label="success", zorder=3)
    if (~ok).any():
        failed_color = STATE_COLORS["failed"]
        ax.scatter(xs[~ok], ys[~ok], s=22, color=failed_color, marker="x", label="not success", zorder=3)
    ax.set_xticks([1], ["runs"])
    ax.set_ylabel("duration (s)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    untimed = len(runs) - len(timed)
    note = f", {untimed} without a duration" if untimed else ""
    ax.set_title(
        f"{len(runs)} runs — success rate {fmt_percent(reliability['success_rate'])}{note}", fontsize=10
    )
    return figure


def elasticity_series(elasticity: Any) -> tuple[list[float], list[float]] | str:
    """(workers, wall_s) pairs with a wall time, or the reason there is nothing to draw."""
    if not isinstance(elasticity, dict) or not elasticity:
        return "the results have no elasticity data"
    workers, wall = elasticity.get("workers"), elasticity.get("wall_s")
    if not isinstance(workers, list) or not isinstance(wall, list) or len(workers) != len(wall):
        return 'the elasticity data has no "workers" and "wall_s" lists of the same length'
    pairs = sorted(
        (float(w), float(s))
        for w, s in zip(workers, wall, strict=True)
        if isinstance(w, int | float) and isinstance(s, int | float) and not _missing(s) and w > 0 and s > 0
    )
    if not pairs:
        return "the elasticity data has no worker count with a wall time"
    return [w for w, _ in pairs], [s for _, s in pairs]


def _ingest_figures(summary: dict[str, Any]) -> list[dict[str, Any]]:
    figures = []
    for scale in summary.get("scales") or []:
        peak, rate = scale.get("peak_mb") or {}, scale.get("rows_per_s") or {}
        label = f"ingest {scale['scale']:g}x ({scale['rows']:,} rows)"
        figures.append(
            {
                "name": f"{label}: peak RSS chunked / whole-object",
                "value": f"{fmt_number(peak.get('chunked'), 0)} / {fmt_number(peak.get('whole'), 0)} MB",
                "goal": "",
                "met": None,
            }
        )
        if scale.get("rate_ratio") is not None:
            figures.append(
                {
                    "name": f"{label}: rows/s chunked / pyarrow's parse",
                    "value": f"{rate.get('chunked', 0):,.0f} / {rate.get('pyarrow', 0):,.0f}"
                    f" = {scale['rate_ratio']:.2f}",
                    "goal": f">= {summary.get('rate_goal_at_least', 0.7)}",
                    "met": scale["rate_ratio"] >= summary.get("rate_goal_at_least", 0.7),
                }
            )
    ratio = summary.get("peak_ratio")
    if ratio:
        figures.append(
            {
                "name": f"ingest peak RSS {ratio['to_scale']:g}x / {ratio['from_scale']:g}x (chunked)",
                "value": f"{ratio['peak']:.2f}",
                "goal": f"<= {ratio['goal_at_most']}",
                "met": ratio["peak"] <= ratio["goal_at_most"],
            }
        )
    return figures


def elasticity_from_benchmarks(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``results["elasticity"]`` from the JSON of ``benchmarks/ingest.py`` and ``benchmarks/elasticity.py``.

    Elasticity figures carry ``part``, ``name``, ``value``, ``goal``, ``met`` and ``data``; the
    ``workers`` part's data gives the worker count (``len(workers)``) and the workload's span.
    """
    elasticity: dict[str, Any] = {"workers": [], "wall_s": [], "figures": []}
    for document in documents:
        if "summary" in document:
            elasticity["figures"] += _ingest_figures(document["summary"])
        for figure in document.get("figures") or []:
            elasticity["figures"].append({key: figure.get(key) for key in ("name", "value", "goal", "met")})
            data = figure.get("data") or {}
            if figure.get("part") == "workers" and data.get("workers") and data.get("span_s"):
                elasticity["workers"].append(len(data["workers"]))
                elasticity["wall_s"].append(data["span_s"])
    return elasticity


def draw_elasticity(workers: list[float], wall: list[float]) -> Figure:
    """Wall time and speed-up against workers, next to perfect linear scaling from the first point."""
    figure = _new_figure(10, 3.8)
    left, right = figure.subplots(1, 2)
    ideal_wall = [wall[0] * workers[0] / w for w in workers]
    left.plot(workers, wall, "o-", label="measured")
    left.plot(workers, ideal_wall, ":", color="grey", label="linear scaling")
    left.set_xlabel("workers")
    left.set_ylabel("wall time (s)")
    right.plot(workers, [wall[0] / s for s in wall], "o-", label="measured")
    right.plot(workers, [w / workers[0] for w in workers], ":", color="grey", label="linear scaling")
    right.set_xlabel("workers")
    right.set_ylabel(f"speed-up over {workers[0]:g} worker(s)")
    for ax in (left, right):
        ax.set_xticks(workers, [f"{w:g}" for w in workers])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("Elasticity: the same workload on more workers", fontsize=11)
    return figure


def _figure(
    figures_dir: Path, key: str, title: str, alt: str, draw: Callable[[], Figure | None], skipped: str
) -> FigureRef:
    ref = FigureRef(key=key, title=title, alt=alt)
    figure = draw()
    if figure is None:
        ref.skipped = skipped
        return ref
    _save(figure, figures_dir / f"{key}.png")
    ref.file = f"figures/{key}.png"
    return ref


def _profile(tuning: Sequence[TuningResult], name: str) -> TuningResult | None:
    return next((t for t in tuning if t["profile"] == name), None)


def draw_figures(results: Results, figures_dir: Path) -> dict[str, Any]:
    """Every figure of the page, written to figures_dir; skipped ones carry their reason."""
    faults, tuning = results.get("faults") or [], results.get("tuning") or []
    timelines = [
        _figure(
            figures_dir,
            f"timeline-{i:02d}-{_slug(fault['name'])}",
            f"Timeline of {fault['name']}",
            f"Timeline of fault experiment {fault['name']}: task tries as bars per task over seconds "
            "from the run's start, coloured by state, with the fault's events as vertical lines",
            lambda fault=fault: draw_timeline(fault),
            "no task tries or events were recorded for this experiment",
        )
        for i, fault in enumerate(faults, start=1)
    ]
    recovery = _figure(
        figures_dir,
        "recovery-times",
        "Detection and recovery per fault",
        "Bars of detection and recovery time in seconds for each fault experiment; "
        "unmeasured times are labelled as such",
        lambda: draw_recovery_times(faults),
        "the results have no fault experiments",
    )
    curve = _figure(
        figures_dir,
        "robustness-curve",
        "Robustness curve",
        "Forecast MAE of prophet, the baseline and the selected model against the share of corrupted rows, "
        "one panel per series",
        lambda: draw_robustness_curve(results.get("robustness_curve") or []),
        "the results have no robustness-curve points",
    )
    durations = _figure(
        figures_dir,
        "reliability-durations",
        "Durations of the reliability runs",
        "Box plot of the reliability runs' durations in seconds with each run as a point; "
        "the title gives the success rate",
        lambda: draw_durations(results.get("reliability")),
        "the results have no reliability runs with a duration",
    )
    defaults_vs_tuned = _figure(
        figures_dir,
        "defaults-vs-tuned",
        "Defaults vs tuned",
        "Bars of detection and recovery time in seconds after a worker kill, per settings profile",
        lambda: draw_defaults_vs_tuned(tuning),
        "the results have no tuning comparison",
    )
    series = elasticity_series(results.get("elasticity"))
    elasticity = _figure(
        figures_dir,
        "elasticity",
        "Elasticity",
        "Wall time and speed-up of the same workload against the number of workers, "
        "next to perfect linear scaling",
        lambda: None if isinstance(series, str) else draw_elasticity(*series),
        series if isinstance(series, str) else "",
    )
    return {
        "timelines": timelines,
        "recovery": recovery,
        "curve": curve,
        "durations": durations,
        "tuning": defaults_vs_tuned,
        "elasticity": elasticity,
    }


# --- the page ----------------------------------------------------------------------------


#: The host-loss table's components, in its column order, with their headings.
FAILOVER_COLUMNS = {
    "postgresql": "PostgreSQL",
    "broker": "broker",
    "object_store": "object store",
    "execution_api": "execution API",
    "scheduling": "scheduling",
}


def _hosts(results: Mapping[str, Any]) -> int:
    groups = ((results.get("fingerprint") or {}).get("topology") or {}).get("groups") or {}
    return len({host for members in groups.values() for host in members})


def memory_at_rest_bytes(results: Mapping[str, Any]) -> int | None:
    """The memory every host's processes used before the run's experiments, summed (the
    harness measures it through playbooks/footprint.yml); None where it was not measured."""
    per_host = ((results.get("fingerprint") or {}).get("extra") or {}).get("memory_at_rest_bytes")
    return sum(per_host.values()) if per_host else None


def deployment_label(run: Mapping[str, Any]) -> str:
    """``testbed-ha (7 hosts, 5.2 GiB at rest)``: a deployment and what it costs."""
    cost = [f"{run['hosts']} hosts"]
    if run.get("memory_bytes"):
        cost.append(f"{run['memory_bytes'] / 2**30:.1f} GiB at rest")
    return f"{run['deployment']} ({', '.join(cost)})"


def _pair(figures: Mapping[str, Any], first: str, second: str) -> str:
    return f"{fmt_count(figures.get(first))} / {fmt_count(figures.get(second))}"


def deployment_of(results: Mapping[str, Any]) -> str:
    """The deployment a run measured, as its fingerprint records it (``extra.deployment``)."""
    return ((results.get("fingerprint") or {}).get("extra") or {}).get("deployment") or "?"


def compared_run(results: Mapping[str, Any]) -> dict[str, Any]:
    """A run's host-loss experiments, as ``Results.compared`` keeps another deployment's."""
    return {
        "deployment": deployment_of(results),
        "created_at": results.get("created_at") or "",
        "hosts": _hosts(results),
        "memory_bytes": memory_at_rest_bytes(results),
        "faults": [f for f in results.get("faults") or [] if "failover" in f],
    }


def host_loss_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per host-loss experiment and deployment (this run's and the compared ones),
    grouped by experiment: the outcome, failover seconds per component and the accounting."""
    runs = [compared_run(results), *(results.get("compared") or [])]
    names: list[str] = []
    for run in runs:
        names += [f["name"] for f in run["faults"] if f["name"] not in names]
    rows = []
    for name in names:
        for run in runs:
            for fault in (f for f in run["faults"] if f["name"] == name):
                record = fault["failover"]
                ledger, objects = record.get("ledger") or {}, record.get("objects") or {}
                uploads = record.get("uploads") or []
                rows.append(
                    {
                        "name": name,
                        "deployment": deployment_label(run),
                        "target": fault["target"],
                        "outcome": fault["outcome"],
                        "run_state": fault["run_state"],
                        "failover": {
                            key: (record["components"].get(key) or {}).get("failover_s")
                            for key in FAILOVER_COLUMNS
                        },
                        "ledger": _pair(ledger, "acknowledged", "found"),
                        "objects": _pair(objects, "acknowledged", "readable"),
                        "runs_per_upload": ", ".join(str(u["runs"]) for u in uploads) or MISSING,
                        "twice": len(record.get("tasks_completed_twice") or []),
                        "primaries": record.get("primaries_at_once"),
                        "retries": fault["retries_used"],
                        "checks": fault["checks"],
                        "error": fault.get("error", ""),
                    }
                )
    return rows


def headline(results: Results) -> dict[str, str]:
    """The four numbers at the top of the page, already formatted."""
    faults, inputs = results.get("faults") or [], results.get("inputs") or []
    tuning, reliability = results.get("tuning") or [], results.get("reliability")
    errors = sum(f["outcome"] == "error" for f in faults)
    defaults, tuned = _profile(tuning, "defaults"), _profile(tuning, "tuned")
    return {
        "faults": f"{sum(f['outcome'] == 'passed' for f in faults)} / {len(faults)}",
        "faults_note": f"{errors} could not be run" if errors else "",
        "inputs": f"{sum(i['outcome'] == 'passed' for i in inputs)} / {len(inputs)}",
        "recovery": f"{_with_unit(defaults)} → {_with_unit(tuned)}",
        "reliability": (
            f"{fmt_percent(reliability['success_rate'])} of {len(reliability['runs'])} runs"
            if reliability
            else MISSING
        ),
    }


def _with_unit(tuning: TuningResult | None) -> str:
    value = None if tuning is None else tuning["recovery_s"]
    return MISSING if _missing(value) else f"{fmt_seconds(value)} s"


def _json_block(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>R3E report {{ created_at }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em 2em;
  color: #212121; }
h1 { margin-bottom: 0.1em; }
.sub { color: #616161; margin-top: 0; }
#headline { display: flex; flex-wrap: wrap; gap: 1em; margin: 1.2em 0; }
.stat { flex: 1 1 14em; border: 1px solid #cfd8dc; border-radius: 6px; padding: 0.6em 1em;
  background: #f5f7f8; }
.stat .value { display: block; font-size: 1.7em; font-weight: 600; }
.stat .label, .stat .note { color: #546e7a; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #cfd8dc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eceff1; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.passed { color: #2e7d32; font-weight: 600; }
.failed { color: #c62828; font-weight: 600; }
.error { color: #6a1b9a; font-weight: 600; }
ul.checks { margin: 0; padding-left: 1.1em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eceff1; }
figcaption { color: #546e7a; font-size: 0.9em; }
.skipped { color: #8d6e63; font-style: italic; }
pre { background: #f5f7f8; padding: 0.5em; overflow-x: auto; font-size: 0.85em; margin: 0; }
dl.fingerprint dt { font-weight: 600; margin-top: 0.6em; }
dl.fingerprint dd { margin-left: 1.5em; }
</style>
</head>
<body>
<h1>R3E report</h1>
<p class="sub">Results of {{ created_at }}</p>

<section id="headline">
  <div class="stat" id="stat-faults"><span class="value">{{ head.faults }}</span>
    <span class="label">faults survived / tried</span>
    {% if head.faults_note %}<span class="note">({{ head.faults_note }})</span>{% endif %}</div>
  <div class="stat" id="stat-inputs"><span class="value">{{ head.inputs }}</span>
    <span class="label">bad inputs handled / tried</span></div>
  <div class="stat" id="stat-recovery"><span class="value">{{ head.recovery }}</span>
    <span class="label">recovery after a worker kill, defaults → tuned</span></div>
  <div class="stat" id="stat-reliability"><span class="value">{{ head.reliability }}</span>
    <span class="label">reliability: runs that succeeded</span></div>
</section>

<section id="meaning">
<h2>What each property means here</h2>
<p><strong>Robustness</strong>: bad input data (wrong date order, duplicates, corrupted rows) is
refused or quarantined with a clear reason, and the forecast error grows gracefully as more of the
input is corrupted. <strong>Resilience</strong>: when part of the infrastructure fails during a run
(a killed worker, a restarted database, a stopped object store), the run still reaches its steady
state; we measure how long Airflow took to notice (detection) and to get the work done again
(recovery), with default and with tuned settings. <strong>Reliability</strong>: the same run
repeated without faults succeeds every time, with stable duration and model metrics.
<strong>Elasticity</strong>: the same workload finishes faster when workers are added.</p>
</section>

<section id="faults">
<h2>Faults (resilience)</h2>
{% if faults %}
<table>
<thead><tr><th>name</th><th>fault</th><th>target</th><th>outcome</th><th>run state</th>
<th>detection s</th><th>recovery s</th><th>retries used</th><th>extra wall time s</th>
<th>failed checks</th></tr></thead>
<tbody>
{% for f in faults %}
<tr>
<td title="{{ f.description }}">{{ f.name }}</td><td>{{ f.fault }}</td><td>{{ f.target }}</td>
<td class="{{ f.outcome }}">{{ f.outcome }}</td><td>{{ f.run_state or "—" }}</td>
<td class="num">{{ f.detection_s | seconds }}</td><td class="num">{{ f.recovery_s | seconds }}</td>
<td class="num">{{ f.retries_used | count }}</td><td class="num">{{ f.extra_wall_s | seconds }}</td>
<td>{{ failed_checks(f) }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="skipped">No fault experiments in these results.</p>
{% endif %}
{{ figure(figs.recovery) }}
{% for ref in figs.timelines %}{{ figure(ref) }}{% endfor %}
</section>

<section id="host-loss">
<h2>Host loss (minimal vs highly available)</h2>
{% if host_loss %}
<p>A whole host lost during a training run. Failover: seconds from the injection until the
component accepted writes again, as probes on a spared host saw it (0: no interruption; — : never
within the fault), and until the scheduler queued a task again. Ledger and objects: acknowledged /
found afterwards.</p>
<table>
<thead><tr><th>experiment</th><th>deployment</th><th>host</th><th>outcome</th><th>run</th>
{% for heading in failover_columns.values() %}<th>{{ heading }} s</th>{% endfor %}
<th>ledger rows</th><th>objects</th><th>runs per upload</th><th>completed twice</th>
<th>primaries at once</th><th>retries</th><th>failed checks</th></tr></thead>
<tbody>
{% for r in host_loss %}
<tr>
<td>{{ r.name }}</td><td>{{ r.deployment }}</td><td>{{ r.target }}</td>
<td class="{{ r.outcome }}">{{ r.outcome }}</td><td>{{ r.run_state or "—" }}</td>
{% for key in failover_columns %}<td class="num">{{ r.failover[key] | seconds }}</td>{% endfor %}
<td class="num">{{ r.ledger }}</td><td class="num">{{ r.objects }}</td><td>{{ r.runs_per_upload }}</td>
<td class="num">{{ r.twice | count }}</td><td class="num">{{ r.primaries | count }}</td>
<td class="num">{{ r.retries | count }}</td><td>{{ failed_checks(r) }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="skipped">No host-loss experiments in these results.</p>
{% endif %}
</section>

<section id="inputs">
<h2>Bad inputs (robustness)</h2>
{% if inputs %}
<table>
<thead><tr><th>name</th><th>corruption</th><th>expected</th><th>verdict</th><th>rows</th><th>clean</th>
<th>quarantined</th><th>reason</th><th>promoted?</th><th>outcome</th><th>failed checks</th></tr></thead>
<tbody>
{% for i in inputs %}
<tr>
<td title="{{ i.description }}">{{ i.name }}</td><td>{{ i.corruption }}</td><td>{{ i.expected }}</td>
<td>{{ i.verdict }}</td><td class="num">{{ i.rows | count }}</td>
<td class="num">{{ i.clean_rows | count }}</td><td class="num">{{ i.quarantined_rows | count }}</td>
<td>{{ i.reason or "—" }}</td>
<td>{{ i.promoted | yesno }}</td><td class="{{ i.outcome }}">{{ i.outcome }}</td>
<td>{{ failed_checks(i) }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="skipped">No bad-input experiments in these results.</p>
{% endif %}

<h3>Robustness curve</h3>
{% if curve %}
<table>
<thead><tr><th>rows corrupted</th><th>series</th><th>quarantined rows</th><th>MAE prophet</th>
<th>MAE baseline</th><th>MAE selected</th></tr></thead>
<tbody>
{% for p in curve %}
<tr><td class="num">{{ p.fraction | percent }}</td><td>{{ p.series }}</td>
<td class="num">{{ p.quarantined_rows | count }}</td>
<td class="num">{{ p.mae_prophet | number }}</td><td class="num">{{ p.mae_baseline | number }}</td>
<td class="num">{{ p.mae_selected | number }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endif %}
{{ figure(figs.curve) }}
</section>

<section id="reliability">
<h2>Reliability</h2>
{% if reliability %}
<table>
<tbody>
<tr><th>success rate</th><td class="num">{{ reliability.success_rate | percent }}</td></tr>
<tr><th>runs</th><td class="num">{{ reliability.runs | length }}</td></tr>
{% for key in ("min", "p50", "p90", "max", "mean") %}
<tr><th>duration {{ key }} s</th><td class="num">{{ reliability.duration_s.get(key) | seconds }}</td></tr>
{% endfor %}
</tbody>
</table>
{% if reliability.metric_variance %}
<table>
<thead><tr><th>metric</th><th>variance across runs</th></tr></thead>
<tbody>
{% for name, value in reliability.metric_variance.items() %}
<tr><td>{{ name }}</td><td class="num">{{ value | small }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endif %}
{% else %}
<p class="skipped">No reliability runs in these results.</p>
{% endif %}
{{ figure(figs.durations) }}
</section>

<section id="tuning">
<h2>Defaults vs tuned</h2>
{% if tuning %}
<table>
<thead><tr><th>profile</th><th>settings</th><th>detection s</th><th>recovery s</th><th>run state</th>
<th>duration s</th></tr></thead>
<tbody>
{% for t in tuning %}
<tr><td>{{ t.profile }}</td>
<td>{% if t.settings %}<ul class="checks">
{% for k, v in t.settings.items() %}<li>{{ k }} = {{ v }}</li>{% endfor %}
</ul>{% else %}—{% endif %}</td>
<td class="num">{{ t.detection_s | seconds }}</td><td class="num">{{ t.recovery_s | seconds }}</td>
<td>{{ t.run_state or "—" }}</td><td class="num">{{ t.duration_s | seconds }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="skipped">No tuning comparison in these results.</p>
{% endif %}
{{ figure(figs.tuning) }}
</section>

<section id="elasticity">
<h2>Elasticity</h2>
{% if elasticity %}
<table>
<thead><tr><th>workers</th><th>wall time s</th><th>speed-up</th></tr></thead>
<tbody>
{% for w, s, x in elasticity %}
<tr><td class="num">{{ w }}</td><td class="num">{{ s | seconds }}</td>
<td class="num">{{ x | number }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endif %}
{{ figure(figs.elasticity) }}
{% if elasticity_figures %}
<table>
<thead><tr><th>figure</th><th>measured</th><th>goal</th><th>met</th></tr></thead>
<tbody>
{% for f in elasticity_figures %}
<tr><td>{{ f.name }}</td><td class="num">{{ f.value }}</td><td>{{ f.goal }}</td>
<td>{{ "-" if f.met is none else ("yes" if f.met else "no") }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endif %}
</section>

<section id="fingerprint">
<h2>Environment</h2>
{% if fingerprint %}
<dl class="fingerprint">
{% for key, value in fingerprint.items() %}
<dt>{{ key }}</dt>
<dd>{% if value is mapping or (value is iterable and value is not string) -%}
<pre>{{ value | json_block }}</pre>
{%- else %}{{ "—" if value is none else value }}{% endif %}</dd>
{% endfor %}
</dl>
{% else %}
<p class="skipped">No environment fingerprint in these results.</p>
{% endif %}
</section>

<script>
// Lets a headless browser check that every figure loaded.
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.dataset.figuresTotal = String(images.length);
  document.body.dataset.figuresLoaded = String(loaded.length);
});
</script>
</body>
</html>
"""

# The fault and the bad-input tables show an experiment's failed checks the same way.
FAILED_CHECKS_MACRO = """{% macro failed_checks(experiment) -%}
{% set failed = experiment.checks | rejectattr("passed") | list %}
{% if failed or experiment.error %}<ul class="checks">
{% if experiment.error %}<li>experiment error: {{ experiment.error }}</li>{% endif %}
{% for c in failed %}<li>{{ c.name }}: {{ c.detail }}</li>{% endfor %}
</ul>{% else %}—{% endif %}
{%- endmacro %}
"""

FIGURE_MACRO = """{% macro figure(ref) -%}
{% if ref.file %}<figure><img src="{{ ref.file }}" alt="{{ ref.alt }}">
<figcaption>{{ ref.title }}</figcaption></figure>
{% else %}<p class="skipped" data-figure="{{ ref.key }}">
Figure not drawn ({{ ref.title }}): {{ ref.skipped }}.</p>
{% endif %}
{%- endmacro %}
"""


def _environment() -> Environment:
    env = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(
        seconds=fmt_seconds,
        number=fmt_number,
        small=fmt_small,
        count=fmt_count,
        percent=fmt_percent,
        yesno=fmt_bool,
        json_block=_json_block,
    )
    return env


def render_html(results: Results, figures: dict[str, Any]) -> str:
    series = elasticity_series(results.get("elasticity"))
    elasticity_rows = []
    if not isinstance(series, str):
        workers, wall = series
        elasticity_rows = [(f"{w:g}", s, wall[0] / s) for w, s in zip(workers, wall, strict=True)]
    template = _environment().from_string(FIGURE_MACRO + FAILED_CHECKS_MACRO + TEMPLATE)
    return template.render(
        created_at=results.get("created_at") or MISSING,
        head=headline(results),
        faults=[{"error": "", **f} for f in results.get("faults") or []],
        inputs=[{"error": "", **i} for i in results.get("inputs") or []],
        curve=sorted(results.get("robustness_curve") or [], key=lambda p: (p["series"], p["fraction"])),
        reliability=results.get("reliability"),
        tuning=results.get("tuning") or [],
        elasticity=elasticity_rows,
        elasticity_figures=(results.get("elasticity") or {}).get("figures") or [],
        fingerprint=results.get("fingerprint") or {},
        host_loss=host_loss_rows(results),
        failover_columns=FAILOVER_COLUMNS,
        figs=figures,
    )


def write_report(results: Results, out_dir: Path) -> Path:
    """Write results.json, fingerprint.json, figures/*.png and report.html; return report.html's path."""
    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in figures_dir.glob("*.png"):  # a previous report's figures would be orphans here
        stale.unlink()
    (out_dir / "results.json").write_text(_json_block(results) + "\n", encoding="utf-8")
    (out_dir / "fingerprint.json").write_text(
        _json_block(results.get("fingerprint") or {}) + "\n", encoding="utf-8"
    )
    figures = draw_figures(results, figures_dir)
    report = out_dir / "report.html"
    report.write_text(render_html(results, figures), encoding="utf-8")
    return report

"""The README's R3E and benchmark figures, written from the files of ``results/``.

``results/`` holds one published run, so that every figure of the README can be traced to a file::

    results/results.json          the R3E run (``r3e run``; with the benchmarks' figures after ``make bench``)
    results/fingerprint.json      the environment it ran in
    results/figures/*.png         the report's figures, the small ones (``MAX_FIGURE_BYTES``)
    results/bench-ingest.json     ``benchmarks/ingest.py --json``
    results/bench-elasticity.json ``benchmarks/elasticity.py --json``

``publish`` copies a report folder (and the benchmarks' JSON files) there. ``rewrite`` replaces the
text between each pair of markers in the README::

    <!-- r3e:begin NAME -->
    ... generated, never edited by hand ...
    <!-- r3e:end NAME -->

with what ``BLOCKS[NAME]`` makes of the files it names. Text outside the markers is left alone; a
block whose files are missing keeps its text and is reported, so ``--check`` fails both when the
README is out of date and when one of its figures has no file behind it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .report import (
    FAILOVER_COLUMNS,
    deployment_of,
    fmt_count,
    fmt_number,
    fmt_percent,
    fmt_seconds,
    fmt_small,
    host_loss_rows,
)
from .stack import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "results"
README = PROJECT_ROOT / "README.md"
RESULTS, FINGERPRINT = "results.json", "fingerprint.json"
BENCH_INGEST, BENCH_ELASTICITY = "bench-ingest.json", "bench-elasticity.json"
#: The highly available deployment's host-loss run, with the minimal one's beside it (``r3e run
#: --compare``), published with ``r3e publish reports/<timestamp> --to results/ha``.
HA_RESULTS = "ha/results.json"
FIGURES = "figures"
#: A figure larger than this stays out of ``results/``: the repository keeps small files only.
MAX_FIGURE_BYTES = 256 * 1024

BEGIN = re.compile(r"^<!-- r3e:begin (?P<name>[a-z0-9-]+) -->$", re.MULTILINE)
END = re.compile(r"^<!-- r3e:end (?P<name>[a-z0-9-]+) -->$", re.MULTILINE)
DASH = "—"


class ReadmeError(ValueError):
    """The README's markers or the published files cannot be used."""


# --- the published files -------------------------------------------------------------------------


@dataclass
class Published:
    """What ``results/`` holds; a missing file is ``None``."""

    folder: Path
    link_base: str  # the folder as the README links to it (relative to the README)
    documents: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)  # file names in figures/, sorted

    def get(self, name: str) -> Any:
        return self.documents.get(name)

    def path(self, name: str) -> str:
        return f"{self.link_base}/{name}"


def load_published(folder: Path, readme: Path) -> Published:
    folder = Path(folder)
    documents = {}
    for name in (RESULTS, FINGERPRINT, BENCH_INGEST, BENCH_ELASTICITY, HA_RESULTS):
        path = folder / name
        if path.is_file():
            try:
                documents[name] = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ReadmeError(f"{path} is not JSON: {error}") from error
    figures = sorted(p.name for p in (folder / FIGURES).glob("*.png"))
    link_base = Path(os.path.relpath(folder.resolve(), Path(readme).resolve().parent)).as_posix()
    return Published(folder=folder, link_base=link_base, documents=documents, figures=figures)


@dataclass
class PublishReport:
    copied: list[str]
    oversized: list[str]  # figures left out, with their size
    benchmarks: list[str]


def publish(
    report_dir: Path,
    to: Path = RESULTS_DIR,
    benchmarks: Sequence[Path] = (),
    max_figure_bytes: int = MAX_FIGURE_BYTES,
) -> PublishReport:
    """Copy a report folder's results, fingerprint and small figures, and the benchmarks' JSON, to ``to``.

    The previous run's figures are removed first (they would be orphans). A benchmark file goes
    under its fixed name, told by its content: the ingest benchmark writes a ``summary``, the
    elasticity benchmark a ``figures`` list.
    """
    report_dir, to = Path(report_dir), Path(to)
    results = _json_object(report_dir / RESULTS)
    if not isinstance(results.get("faults"), list) or not isinstance(results.get("inputs"), list):
        raise ReadmeError(f"{report_dir / RESULTS} has no faults and inputs lists: not an R3E results file")
    fingerprint_path = report_dir / FINGERPRINT
    fingerprint = _json_object(fingerprint_path) if fingerprint_path.is_file() else results.get("fingerprint")
    to.mkdir(parents=True, exist_ok=True)
    _write_json(to / RESULTS, results)
    _write_json(to / FINGERPRINT, fingerprint or {})
    figures = to / FIGURES
    figures.mkdir(exist_ok=True)
    for stale in figures.glob("*.png"):
        stale.unlink()
    copied, oversized = [RESULTS, FINGERPRINT], []
    for png in sorted((report_dir / FIGURES).glob("*.png")):
        size = png.stat().st_size
        if size > max_figure_bytes:
            oversized.append(f"{png.name} ({size / 1024:.0f} KiB)")
            continue
        shutil.copyfile(png, figures / png.name)
        copied.append(f"{FIGURES}/{png.name}")
    published_benchmarks = []
    for path in benchmarks:
        document = _json_object(Path(path))
        if "summary" in document:
            name = BENCH_INGEST
        elif isinstance(document.get("figures"), list):
            name = BENCH_ELASTICITY
        else:
            raise ReadmeError(f"{path} is neither benchmarks/ingest.py's nor benchmarks/elasticity.py's JSON")
        _write_json(to / name, document)
        published_benchmarks.append(name)
    return PublishReport(copied=copied, oversized=oversized, benchmarks=published_benchmarks)


def _json_object(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReadmeError(f"{path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ReadmeError(f"{path} is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise ReadmeError(f"{path} holds no JSON object")
    return document


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


# --- text helpers --------------------------------------------------------------------------------


# What Markdown would read as HTML (a tag or an entity): "<host unreachable>" would vanish, "<= 30 s" not.
HTML_LIKE = re.compile(r"<(?=[A-Za-z/!?])|&(?=#?\w+;)")


def _plain(text: Any) -> str:
    """Text from the results as Markdown text: on one line, with nothing read as HTML."""
    return HTML_LIKE.sub(lambda m: "&lt;" if m[0] == "<" else "&amp;", " ".join(str(text).split()))


def _code(name: Any) -> str:
    """A name as inline code (where HTML is shown as it is)."""
    return "`" + " ".join(str(name).split()).replace("`", "'") + "`"


def _cell(text: str) -> str:
    """Markdown as one table cell."""
    return text.replace("|", r"\|") or DASH


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _names(items: Iterable[str]) -> str:
    return ", ".join(_code(item) for item in items)


def _when(timestamp: str | None) -> str:
    """An ISO timestamp as "2026-11-24 10:05 UTC"."""
    if not timestamp:
        return DASH
    moment = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _cause(text: str, limit: int = 200) -> str:
    """The last line of an error: the innermost cause (Ansible puts the failed task's message
    under a "playbook failed:" line, as Python puts the exception under its traceback)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- the R3E blocks ------------------------------------------------------------------------------


def run_block(published: Published) -> str:
    """Where and when the published run was made, and from which files the figures below come."""
    results, fingerprint = published.get(RESULTS), published.get(FINGERPRINT) or {}
    started, finished = results.get("created_at"), results.get("finished_at")
    took = ""
    if started and finished:
        seconds = (dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)).total_seconds()
        took = f", {seconds / 60:.0f} min"
    commit = fingerprint.get("git_commit")
    code = f"commit `{commit[:10]}`" if commit else "commit unknown"
    if fingerprint.get("git_dirty"):
        code += " with uncommitted changes"
    facts = [f"started {_when(started)}{took}", code]
    if fingerprint.get("airflow_version"):
        facts.append(f"Airflow {fingerprint['airflow_version']}")
    extra = fingerprint.get("extra") or {}
    if extra.get("deployment"):
        facts.append(f"deployment `{extra['deployment']}`")
    if extra.get("inventory"):
        facts.append("inventory " + _names(extra["inventory"]))
    controller = fingerprint.get("controller") or {}
    if controller.get("platform"):
        facts.append(f"controller {controller['platform']}")
    return (
        f"**Latest full run** ({'; '.join(facts)}). The table and the paragraph below are written by "
        f"`make readme` from [`{published.path(RESULTS)}`]({published.path(RESULTS)}) and "
        f"[`{published.path(FINGERPRINT)}`]({published.path(FINGERPRINT)}); tuned settings unless stated; "
        '"extra wall s" is measured against "fault-free s", a run of the same workload without a fault.'
    )


def faults_block(published: Published) -> str:
    rows = []
    for fault in published.get(RESULTS).get("faults") or []:
        if fault.get("outcome") == "error":
            run = f"not run: {_cause(fault.get('error', ''))}"
        else:
            run = fault.get("run_state") or DASH
        rows.append(
            [
                _code(fault["name"]),
                _plain(f"{fault['fault']} on {fault['target']}"),
                _plain(fault["outcome"]),
                _plain(run),
                fmt_seconds(fault.get("detection_s")),
                fmt_seconds(fault.get("recovery_s")),
                fmt_count(fault.get("retries_used")),
                fmt_seconds(fault.get("extra_wall_s")),
                fmt_seconds(fault.get("baseline_duration_s")),
            ]
        )
    header = ["scenario", "fault", "outcome", "run", "detection s", "recovery s", "retries"]
    return _table([*header, "extra wall s", "fault-free s"], rows)


def host_loss_block(published: Published) -> str:
    """The host-loss matrix, minimal vs highly available: failover seconds and accounting."""
    results = published.get(HA_RESULTS)
    runs = [deployment_of(results)]
    runs += [run.get("deployment") or DASH for run in results.get("compared") or []]
    rows = [
        [
            _code(row["name"]),
            _plain(row["deployment"]),
            _plain(f"{row['outcome']}, run {row['run_state'] or DASH}"),
            *(fmt_seconds(row["failover"][key]) for key in FAILOVER_COLUMNS),
            row["ledger"],
            row["objects"],
            _plain(row["runs_per_upload"]),
            fmt_count(row["twice"]),
            fmt_count(row["primaries"]),
            _plain(_failures(row) or DASH),
        ]
        for row in host_loss_rows(results)
    ]
    header = ["experiment", "deployment", "outcome", *(f"{name} s" for name in FAILOVER_COLUMNS.values())]
    header += ["ledger rows ack / found", "objects ack / readable", "runs per upload", "done twice"]
    lead = (
        f"From [`{HA_RESULTS}`]({published.path(HA_RESULTS)}), run {_when(results.get('created_at'))}"
        f" on {', '.join(runs)}."
    )
    return lead + "\n\n" + _table([*header, "primaries at once", "failed checks"], rows)


def _failures(experiment: Mapping[str, Any]) -> str:
    """An experiment's failed checks, after its own error if it had one ("" when none)."""
    failed = [f"{c['name']}: {c['detail']}" for c in experiment.get("checks") or [] if not c["passed"]]
    if experiment.get("error"):
        failed.insert(0, f"experiment error: {_cause(experiment['error'])}")
    return "; ".join(failed)


def _failed_checks(experiment: Mapping[str, Any]) -> str:
    return f"{_code(experiment['name'])} ({_plain(_failures(experiment) or experiment['outcome'])})"


def _faults_sentence(faults: Sequence[Mapping[str, Any]]) -> str:
    if not faults:
        return "No fault experiments."
    injected = [f for f in faults if f.get("injected_at_s") is not None]
    passed = [f for f in faults if f["outcome"] == "passed"]
    text = f"Faults: **{len(passed)} of {len(injected)} injected survived ({len(faults)} tried)**"
    checks = list(dict.fromkeys(c["name"] for f in passed for c in f.get("checks") or []))
    if passed:
        text += f"; the survivors held every check: {_plain(', '.join(checks))}"
    others = [f for f in faults if f["outcome"] != "passed"]
    if others:
        text += "; not survived: " + "; ".join(_failed_checks(f) for f in others)
    return text + "."


def _inputs_sentence(inputs: Sequence[Mapping[str, Any]]) -> str:
    if not inputs:
        return "No bad-input experiments."
    passed = sum(i["outcome"] == "passed" for i in inputs)
    by_verdict: dict[str, list[str]] = {}
    for result in inputs:
        shown = _code(result["name"])
        if result["verdict"] == "accepted" and result.get("rows") is not None:
            shown += f" ({result['rows']:,} rows)"
        by_verdict.setdefault(result["verdict"], []).append(shown)
    verdicts = "; ".join(f"{_plain(verdict)}: {', '.join(shown)}" for verdict, shown in by_verdict.items())
    promoted = [i["name"] for i in inputs if i.get("promoted")]
    text = f"Bad inputs: **{passed} handled of {len(inputs)}** ({verdicts}); "
    text += f"promoted a model: {_names(promoted)}" if promoted else "none promoted a model"
    failed = [i for i in inputs if i["outcome"] != "passed"]
    if failed:
        text += "; not handled: " + "; ".join(_failed_checks(i) for i in failed)
    return text + "."


def _tuning_sentence(tuning: Sequence[Mapping[str, Any]]) -> str:
    profiles = {t["profile"]: t for t in tuning}
    defaults, tuned = profiles.get("defaults"), profiles.get("tuned")
    if not defaults or not tuned:
        return "Defaults against tuned: not measured."

    def pair(key: str) -> str:
        return f"{fmt_seconds(defaults.get(key))} s → {fmt_seconds(tuned.get(key))} s"

    settings = ", ".join(
        f"{name} {defaults['settings'][name]} → {tuned['settings'].get(name, DASH)}"
        for name in defaults.get("settings") or {}
    )
    states = {t.get("run_state") for t in (defaults, tuned)}
    runs = "" if states == {"success"} else f" (runs: {defaults.get('run_state')}, {tuned.get('run_state')})"
    return (
        f"Worker kill, **Airflow's defaults against tuned** ({_plain(settings)}): "
        f"detection {pair('detection_s')}, recovery {pair('recovery_s')}{_plain(runs)}."
    )


def _reliability_sentence(reliability: Mapping[str, Any] | None) -> str:
    if not reliability or not reliability.get("runs"):
        return "**Reliability**: not measured."
    runs, durations = reliability["runs"], reliability.get("duration_s") or {}
    succeeded = sum(r["state"] == "success" for r in runs)
    text = f"**Reliability**: {succeeded} of {len(runs)} runs succeeded"
    if durations:
        text += (
            f", {fmt_seconds(durations.get('min'))}-{fmt_seconds(durations.get('max'))} s (median "
            f"{fmt_seconds(durations.get('p50'))} s, p90 {fmt_seconds(durations.get('p90'))} s)"
        )
    variance = reliability.get("metric_variance") or {}
    if variance and not any(variance.values()):
        text += ", holdout metrics identical in every run (variance 0)"
    elif variance:
        name = max(variance, key=lambda key: variance[key])
        text += f", holdout metrics vary (largest variance: {_plain(name)} {fmt_small(variance[name])})"
    return text + "."


def _curve_sentence(points: Sequence[Mapping[str, Any]]) -> str:
    if not points:
        return "**Robustness curve**: not computed."
    series = list(dict.fromkeys(p["series"] for p in points))
    selected = {(p["fraction"], p["series"]): p.get("mae_selected") for p in points}
    steps = [
        f"{fmt_percent(fraction)} {' / '.join(fmt_number(selected.get((fraction, s))) for s in series)}"
        for fraction in sorted({p["fraction"] for p in points})
    ]
    return (
        f"**Robustness curve** (computed in-process on the controller; MAE of the model the deploy rule "
        f"picks, {_plain(' / '.join(series))}, °C, by the share of corrupted rows): {', '.join(steps)}."
    )


def summary_block(published: Published) -> str:
    results = published.get(RESULTS)
    return "\n".join(  # a sentence a line: one paragraph, readable diffs
        [
            _faults_sentence(results.get("faults") or []),
            _inputs_sentence(results.get("inputs") or []),
            _tuning_sentence(results.get("tuning") or []),
            _reliability_sentence(results.get("reliability")),
            _curve_sentence(results.get("robustness_curve") or []),
        ]
    )


def figures_block(published: Published) -> str:
    if not published.figures:
        return (
            f"No figures are published in `{published.path(FIGURES)}/` yet: "
            "`r3e publish reports/<timestamp>` copies a report's small ones there."
        )
    links = ", ".join(f"[{Path(name).stem}]({published.path(FIGURES)}/{name})" for name in published.figures)
    return f"Figures of the published run (`{published.path(FIGURES)}/`): {links}."


# --- the benchmark block -------------------------------------------------------------------------


def _range(values: Sequence[float], spec: str) -> str:
    low, high = min(values), max(values)
    return format(low, spec) if format(low, spec) == format(high, spec) else f"{low:{spec}}-{high:{spec}}"


def _met(met: bool | None) -> str:
    return DASH if met is None else ("yes" if met else "**no**")


def _ingest_rows(document: Mapping[str, Any]) -> list[list[str]]:
    summary = document.get("summary") or {}
    scales = summary.get("scales") or []
    if not scales:
        return []
    where = "S3" if str(document.get("store", "")).startswith("S3") else "local"
    labels = " / ".join(f"{s['scale']:g}x" for s in scales)
    chunked = " / ".join(fmt_number((s.get("peak_mb") or {}).get("chunked"), 0) for s in scales)
    whole = " / ".join(
        "skipped" if s.get("whole_skipped") else _gigabytes((s.get("peak_mb") or {}).get("whole"))
        for s in scales
    )
    peak = summary.get("peak_ratio") or {}
    goal_peak = peak.get("goal_at_most")
    ratio_text = (
        DASH
        if peak.get("peak") is None
        else f"**{peak['to_scale']:g}x / {peak['from_scale']:g}x = {peak['peak']:.2f}**"
    )
    rows = [
        [
            f"ingest peak RSS, chunked, {labels} data ({where})",
            f"{chunked} MB: {ratio_text} (whole-object: {whole})",
            f"<= {goal_peak}",
            _met(None if peak.get("peak") is None or goal_peak is None else peak["peak"] <= goal_peak),
        ]
    ]
    rates = [s for s in scales if s.get("rate_ratio") is not None]
    if rates:
        goal_rate = summary.get("rate_goal_at_least")
        chunked_rates = " / ".join(f"{s['rows_per_s']['chunked'] / 1e6:.2f}" for s in rates)
        pyarrow = _range([s["rows_per_s"]["pyarrow"] / 1e6 for s in rates], ".1f")
        ratios = [s["rate_ratio"] for s in rates]
        rows.append(
            [
                f"ingest rows/s against pyarrow's raw CSV parse of the same file ({where})",
                f"{chunked_rates} M against {pyarrow} M rows/s: **{_range(ratios, '.2f')}**",
                f">= {goal_rate}",
                _met(None if goal_rate is None else all(r >= goal_rate for r in ratios)),
            ]
        )
    return rows


def _gigabytes(megabytes: float | None) -> str:
    return DASH if megabytes is None else f"{megabytes / 1000:.1f} GB"


def bench_block(published: Published) -> str:
    ingest, elasticity = published.get(BENCH_INGEST), published.get(BENCH_ELASTICITY)
    host = ingest.get("host") or {}
    # The benchmark counts memory in MB of 10^6 bytes.
    memory = f", {host['mem_total_mb'] * 1e6 / 2**30:.0f} GiB" if host.get("mem_total_mb") else ""
    inventory = _names(elasticity.get("inventory") or []) or DASH
    rows = _ingest_rows(ingest)
    for figure in elasticity.get("figures") or []:
        rows.append([_plain(figure[key]) for key in ("name", "value", "goal")] + [_met(figure.get("met"))])
    lead = (
        f"Latest figures, written by `make readme` from "
        f"[`{published.path(BENCH_INGEST)}`]({published.path(BENCH_INGEST)}) (ingest on the controller, "
        f"{host.get('cpus', DASH)} cores{memory}) and "
        f"[`{published.path(BENCH_ELASTICITY)}`]({published.path(BENCH_ELASTICITY)}) (started "
        f"{_when(elasticity.get('started'))}, against the inventory {inventory}):"
    )
    return lead + "\n\n" + _table(["figure", "measured", "goal", "met"], rows)


# --- the README ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    sources: tuple[str, ...]  # the files of results/ it is made from
    render: Callable[[Published], str]


BLOCKS: dict[str, Block] = {
    "r3e-run": Block((RESULTS, FINGERPRINT), run_block),
    "r3e-faults": Block((RESULTS,), faults_block),
    "r3e-summary": Block((RESULTS,), summary_block),
    "r3e-figures": Block((), figures_block),
    "bench": Block((BENCH_INGEST, BENCH_ELASTICITY), bench_block),
    "host-loss": Block((HA_RESULTS,), host_loss_block),
}


@dataclass(frozen=True)
class Span:
    name: str
    start: int  # where the block's text begins (after the begin marker's line)
    end: int  # where it ends (the end marker's first character)


def spans(text: str) -> list[Span]:
    """The marked blocks of ``text``, in order; ``ReadmeError`` for unknown, unpaired or nested markers."""
    found: list[Span] = []
    ends = list(END.finditer(text))
    for begin in BEGIN.finditer(text):
        name = begin["name"]
        if name not in BLOCKS:
            raise ReadmeError(f"unknown README block {name!r}; known: {', '.join(BLOCKS)}")
        if any(span.name == name for span in found):
            raise ReadmeError(f"README block {name!r} appears twice")
        if found and begin.start() < found[-1].end:
            raise ReadmeError(f"README block {name!r} begins inside block {found[-1].name!r}")
        end = next((e for e in ends if e.start() > begin.end()), None)
        if end is None or end["name"] != name:
            raise ReadmeError(f"README block {name!r} has no <!-- r3e:end {name} --> before the next marker")
        found.append(Span(name, begin.end() + 1, end.start()))
    if len(ends) != len(found):
        raise ReadmeError("the README has an r3e:end marker without its r3e:begin")
    return found


@dataclass
class Rewrite:
    text: str
    changed: list[str]  # blocks whose text changed
    unsourced: dict[str, list[str]]  # blocks left as they were: the files they lack


def rewrite(text: str, published: Published) -> Rewrite:
    """``text`` with every marked block written from ``published`` (where its files are there)."""
    pieces, cursor = [], 0
    changed: list[str] = []
    unsourced: dict[str, list[str]] = {}
    for span in spans(text):
        block = BLOCKS[span.name]
        missing = [name for name in block.sources if published.get(name) is None]
        old = text[span.start : span.end]
        if missing:
            unsourced[span.name] = missing
            new = old
        else:
            new = block.render(published).strip() + "\n"
        if new != old:
            changed.append(span.name)
        pieces += [text[cursor : span.start], new]
        cursor = span.end
    pieces.append(text[cursor:])
    return Rewrite(text="".join(pieces), changed=changed, unsourced=unsourced)

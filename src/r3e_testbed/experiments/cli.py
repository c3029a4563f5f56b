"""``r3e``: run the R3E experiments against a deployment and write the report.

    r3e check [SCENARIOS...]              check scenario files, touch nothing
    r3e run -i INVENTORY [SCENARIOS...]   run them, then write reports/<timestamp>/
    r3e report RESULTS.json               render a report again from its results
    r3e publish reports/<timestamp>       copy a run (and the benchmarks' JSON) to results/
    r3e readme [--check]                  write the README's figures from results/

SCENARIOS are files or folders of them (default: experiments/faults and experiments/inputs).
The inventory is any Ansible inventory of the testbed (Molecule's, Vagrant's, real hosts):
faults are injected by ``playbooks/fault.yml`` against it, measurements read Airflow's REST
API, the object store and the forecast service. The robustness curve is the exception: it runs
the pipeline's ingest and training in this process, on the controller. The playbooks are found
in ``playbooks/`` of the working directory or of the checkout the package is installed from
(editable); elsewhere name them: ``r3e --playbooks DIR run ...`` (or ``R3E_PLAYBOOKS=DIR``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from r3e_testbed.clients.airflow import AirflowError

from .results import Reliability, ReliabilityRun, Results, TuningResult, empty_results
from .scenario import FaultScenario, InputScenario, ScenarioError, Workload, load_scenarios
from .stack import PLAYBOOKS_ENV, PROJECT_ROOT, Playbooks, Stack, StackError, find_playbooks, read_endpoints

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
console = Console(stderr=True)
DEFAULT_SCENARIOS = [PROJECT_ROOT / "experiments" / "faults", PROJECT_ROOT / "experiments" / "inputs"]

ScenarioPaths = Annotated[list[Path] | None, typer.Argument(help="scenario files or folders")]
CompareFiles = Annotated[
    list[Path] | None,
    typer.Option(help="another deployment's results.json: its host-loss runs beside these in the report"),
]


def _compared(paths: list[Path] | None) -> list[dict[str, Any]]:
    """The host-loss experiments of other runs' results (``--compare``), read before anything runs."""
    from .report import compared_run

    runs = []
    for path in paths or []:
        try:
            runs.append(compared_run(json.loads(path.read_text())))
        except (OSError, ValueError) as error:
            console.print(f"[red]--compare {path}: cannot read it as results.json ({error})[/red]")
            raise typer.Exit(2) from None
    return runs


@app.callback()
def main(
    ctx: typer.Context,
    playbooks: Annotated[
        Path | None,
        typer.Option(
            "--playbooks",
            envvar=PLAYBOOKS_ENV,
            help="the project's playbooks folder (default: playbooks/ here, or of the editable checkout)",
        ),
    ] = None,
) -> None:
    """Run the R3E experiments against a deployment and write the report."""
    ctx.obj = {"playbooks": playbooks}


def _playbooks(ctx: typer.Context, inventory: list[str]) -> Playbooks:
    try:
        return Playbooks(find_playbooks((ctx.obj or {}).get("playbooks")), inventory)
    except StackError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


def _load(paths: list[Path] | None) -> list[FaultScenario | InputScenario]:
    try:
        return load_scenarios(paths or DEFAULT_SCENARIOS)
    except ScenarioError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


@app.command()
def check(paths: ScenarioPaths = None) -> None:
    """Check scenario files and list them; exit 2 naming the first bad one."""
    # Names stay whole (they are what `r3e run` takes); the other columns wrap.
    table = Table(Column("scenario", no_wrap=True), "kind", "what", "expects")
    for scenario in _load(paths):
        if isinstance(scenario, FaultScenario):
            what = f"{scenario.fault.type} on {scenario.fault.target}"
            if scenario.fault.pick:
                what += f" ({scenario.fault.pick})"
            expects = f"run {scenario.steady_state.run_state}"
            if scenario.steady_state.accounting:
                expects += ", nothing lost or done twice"
            if scenario.workload.uploads:
                what += f", {scenario.workload.uploads} uploads"
                if scenario.steady_state.uploads_delivered_once:
                    expects = f"one run per upload, {scenario.steady_state.run_state}"
        else:
            what = f"{scenario.input.corruption} ({scenario.input.fraction:.0%} of rows)"
            expects = scenario.expected
        table.add_row(scenario.name, scenario.kind, what, expects)
    Console().print(table)


@app.command()
def run(
    ctx: typer.Context,
    paths: ScenarioPaths = None,
    inventory: Annotated[list[str], typer.Option("--inventory", "-i", help="Ansible inventory")] = ...,  # type: ignore[assignment]
    out: Annotated[Path, typer.Option(help="reports folder")] = PROJECT_ROOT / "reports",
    reliability_runs: Annotated[int, typer.Option(help="fault-free runs for the reliability figures")] = 20,
    curve: Annotated[bool, typer.Option(help="compute the robustness curve")] = True,
    tuning: Annotated[bool, typer.Option(help="worker kill with Airflow's defaults and tuned")] = True,
    seed: Annotated[int, typer.Option(help="seed of the generated data")] = 0,
    compare: CompareFiles = None,
) -> None:
    """Run the scenarios against the deployment, then write reports/<timestamp>/."""
    from . import runner

    scenarios = _load(paths)
    compared = _compared(compare)
    faults = [s for s in scenarios if isinstance(s, FaultScenario)]
    inputs = [s for s in scenarios if isinstance(s, InputScenario)]
    playbooks = _playbooks(ctx, inventory)
    try:
        endpoints = read_endpoints(playbooks)
    except StackError as error:
        console.print(f"[red]cannot read the deployment's endpoints: {error}[/red]")
        raise typer.Exit(1) from None
    stack = Stack(endpoints, playbooks)
    created = dt.datetime.now(dt.UTC)
    results = empty_results(created.isoformat(timespec="seconds"))
    memory = _memory_at_rest(stack)
    steps = len(faults) + len(inputs) + curve + bool(reliability_runs) + tuning
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        overall = bar.add_task("R3E experiments", total=steps)

        def say(message: str) -> None:
            bar.console.log(message)

        baselines: dict[str, float | None] = {}  # one fault-free run per workload that triggers one
        for scenario in faults:
            workload = scenario.workload.model_dump_json()
            if workload not in baselines and not scenario.workload.uploads:
                baselines[workload] = runner.run_seconds(runner.baseline(stack, scenario.workload, say))
            bar.update(overall, description=f"fault {scenario.name}")
            result = runner.run_fault(stack, scenario, baselines.get(workload), say)
            results["faults"].append(result)
            outcome, recovery = result["outcome"], result["recovery_s"]
            say(f"{scenario.name}: {outcome}, run {result['run_state']}, recovery {recovery} s")
            bar.advance(overall)
        for scenario in inputs:
            bar.update(overall, description=f"input {scenario.name}")
            result = runner.run_input(stack, scenario, say)
            results["inputs"].append(result)
            say(f"{scenario.name}: {result['outcome']} (verdict {result['verdict']})")
            bar.advance(overall)
        if reliability_runs:
            bar.update(overall, description=f"reliability ({reliability_runs} runs)")
            results["reliability"] = reliability(stack, Workload(seed=seed), reliability_runs, say)
            bar.advance(overall)
        if tuning:
            bar.update(overall, description="defaults against tuned")
            results["tuning"] = compare_tuning(stack, say)
            bar.advance(overall)
        if curve:
            from .robustness import robustness_curve

            bar.update(overall, description="robustness curve")
            results["robustness_curve"] = robustness_curve(seed=seed)
            bar.advance(overall)
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if compared:
        results["compared"] = compared
    results["fingerprint"] = _fingerprint(stack, seed, memory)
    folder = _write(results, out / created.strftime("%Y%m%dT%H%M%SZ"))
    _summary(results, folder)


def reliability(stack: Stack, workload: Workload, runs: int, say) -> Reliability:
    """``runs`` fault-free runs one after another: success rate, durations, metric variance."""
    from . import runner

    measured: list[ReliabilityRun] = []
    for number in range(runs):
        run = runner.baseline(stack, workload, say)
        metrics = _evaluation(stack, run) if run["state"] == "success" else {}
        measured.append(
            ReliabilityRun(
                run_id=run["dag_run_id"],
                state=run["state"],
                duration_s=runner.run_seconds(run),
                metrics=metrics,
            )
        )
        say(f"reliability run {number + 1}/{runs}: {run['state']} in {measured[-1]['duration_s']} s")
    durations = sorted(r["duration_s"] for r in measured if r["duration_s"] is not None)
    flat = [_flat(r["metrics"]) for r in measured]  # "<series>.<metric>" -> value, per run
    variance = {
        name: statistics.pvariance(values)
        for name in sorted({name for scores in flat for name in scores})
        if len(values := [scores[name] for scores in flat if name in scores]) > 1
    }
    return Reliability(
        runs=measured,
        success_rate=sum(r["state"] == "success" for r in measured) / len(measured),
        duration_s=_distribution(durations),
        metric_variance=variance,
    )


TUNED_SETTINGS = ("task_instance_heartbeat_timeout", "task_instance_heartbeat_timeout_detection_interval")
TUNING_SCENARIO = Path("experiments") / "faults" / "kill-worker.yml"  # in the project's folder


def compare_tuning(stack: Stack, say) -> list[TuningResult]:
    """The worker kill under Airflow's defaults, then under the inventory's (tuned) settings."""
    import yaml

    from . import runner
    from .scenario import load_scenario

    project = stack.playbooks.project
    scenario = load_scenario(project / TUNING_SCENARIO)
    role_defaults = yaml.safe_load((project / "roles/airflow/defaults/main.yml").read_text())
    airflow_defaults = {name: role_defaults[f"airflow_{name}"] for name in TUNED_SETTINGS}
    control = stack.endpoints.groups["airflow_control"][0]
    tuned = {name: stack.endpoints.settings[control][name] for name in TUNED_SETTINGS}
    measured: list[TuningResult] = []
    try:
        for profile, settings, extra in (
            ("defaults", airflow_defaults, {f"airflow_{k}": v for k, v in airflow_defaults.items()}),
            ("tuned", tuned, {}),  # no extra variables: the inventory's own settings
        ):
            say(f"applying {profile} settings {settings}")
            stack.run_playbook("airflow-settings.yml", extra)
            result = runner.run_fault(stack, scenario, None, say)
            measured.append(
                TuningResult(
                    profile=profile,
                    settings={k: str(v) for k, v in settings.items()},
                    detection_s=result["detection_s"],
                    recovery_s=result["recovery_s"],
                    run_state=result["run_state"],
                    duration_s=result["duration_s"],
                )
            )
            say(f"{profile}: detection {result['detection_s']} s, recovery {result['recovery_s']} s")
    finally:
        if len(measured) < 2:  # broke off under the defaults: put the inventory's settings back
            stack.run_playbook("airflow-settings.yml", {})
    return measured


def _distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    quantiles = statistics.quantiles(values, n=10, method="inclusive") if len(values) > 1 else values * 9
    return {
        "min": values[0],
        "p50": statistics.median(values),
        "p90": quantiles[8],
        "max": values[-1],
        "mean": statistics.fmean(values),
    }


def _flat(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{series}.{name}": value for series, scores in metrics.items() for name, value in scores.items()}


def _evaluation(stack: Stack, run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The holdout scores the run's evaluate task returned: {series: {"prophet_mae": ...}}."""
    value = stack.xcom(run["dag_id"], run["dag_run_id"], "evaluate")
    if isinstance(value, str) and value.startswith("s3://"):  # the object-storage XCom backend's path
        bucket, _, key = value.removeprefix("s3://").split("@")[-1].partition("/")
        value = json.loads(stack.store(bucket).get(key))
    elif isinstance(value, str):
        value = json.loads(value)
    return {
        series: {
            f"{kind}_{metric}": float(result[kind][metric])
            for kind in ("prophet", "baseline", "naive")
            for metric in ("mae", "rmse", "mape")
        }
        for series, result in value.items()
    }


def _memory_at_rest(stack: Stack) -> dict[str, int] | None:
    """The memory of each host's processes before any experiment: what the deployment costs."""
    try:
        return stack.memory_in_use()
    except StackError as error:
        console.print(f"[yellow]the hosts' memory is not measured: {error}[/yellow]")
        return None


def _fingerprint(stack: Stack, seed: int, memory: dict[str, int] | None = None) -> dict[str, Any]:
    from .fingerprint import environment_fingerprint

    endpoints = stack.endpoints
    version = None
    with contextlib.suppress(StackError, AirflowError):
        version = stack.airflow_version()
    return environment_fingerprint(
        topology={"groups": endpoints.groups},
        settings={"airflow": endpoints.settings, "object_store_backend": endpoints.object_store_backend},
        seeds={"data": seed},
        airflow_version=version,
        extra={
            "deployment": endpoints.deployment_name,
            "inventory": stack.inventory,
            "memory_at_rest_bytes": memory,
        },
    )


def _write(results: Results, folder: Path) -> Path:
    from .report import write_report

    folder.mkdir(parents=True, exist_ok=True)
    return write_report(results, folder)


def _summary(results: Results, html: Path) -> None:
    faults, inputs = results["faults"], results["inputs"]
    console.print(
        f"faults survived {sum(f['outcome'] == 'passed' for f in faults)}/{len(faults)}, "
        f"bad inputs handled {sum(i['outcome'] == 'passed' for i in inputs)}/{len(inputs)}"
    )
    if results["reliability"]:
        console.print(f"success rate {results['reliability']['success_rate']:.0%}")
    console.print(f"report: {html}")


@app.command()
def report(
    results_file: Annotated[Path, typer.Argument(help="a results.json")],
    out: Annotated[Path | None, typer.Option(help="folder (default: the results file's)")] = None,
    benchmark: Annotated[
        list[Path] | None, typer.Option(help="a benchmarks/*.py --json file for the elasticity section")
    ] = None,
    compare: CompareFiles = None,
) -> None:
    """Render the report again from a results.json (with the benchmarks' figures, if given)."""
    results = json.loads(results_file.read_text())
    if compare:
        results["compared"] = _compared(compare)
        results_file.write_text(json.dumps(results, indent=2))
    if benchmark:
        from .report import elasticity_from_benchmarks

        results["elasticity"] = elasticity_from_benchmarks(
            [json.loads(path.read_text()) for path in benchmark]
        )
        results_file.write_text(json.dumps(results, indent=2))
    console.print(f"report: {_write(results, out or results_file.parent)}")


PUBLISHED = PROJECT_ROOT / "results"  # the run the README's figures come from
README = PROJECT_ROOT / "README.md"
BENCHMARK_FILES = [PROJECT_ROOT / "reports" / name for name in ("bench-ingest.json", "bench-elasticity.json")]


@app.command()
def publish(
    report_dir: Annotated[Path, typer.Argument(help="a report folder, reports/<timestamp>")],
    benchmark: Annotated[
        list[Path] | None,
        typer.Option(help="a benchmarks/*.py --json file (default: make bench's, where they exist)"),
    ] = None,
    to: Annotated[Path, typer.Option(help="the folder the README's figures come from")] = PUBLISHED,
) -> None:
    """Copy a run's results.json, fingerprint.json and small figures, and the benchmarks' JSON, to results/.

    Figures larger than the limit stay out (the repository keeps small files); the previous run's go.
    """
    from .readme import MAX_FIGURE_BYTES, ReadmeError
    from .readme import publish as publish_run

    benchmarks = benchmark if benchmark is not None else [path for path in BENCHMARK_FILES if path.is_file()]
    try:
        published = publish_run(report_dir, to, benchmarks)
    except ReadmeError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"copied to {to}: {', '.join(published.copied + published.benchmarks)}")
    if published.oversized:
        limit = MAX_FIGURE_BYTES // 1024
        console.print(
            f"[yellow]left out (larger than {limit} KiB): {', '.join(published.oversized)}[/yellow]"
        )
    if not published.benchmarks:
        console.print(f"[yellow]no benchmark file given or found: {to} keeps the earlier ones[/yellow]")
    console.print("now `make readme` writes the README's figures from them")


@app.command()
def readme(
    check: Annotated[
        bool, typer.Option("--check", help="change nothing; exit 1 if the README is stale")
    ] = False,
    results: Annotated[Path, typer.Option(help="the published run")] = PUBLISHED,
    readme_file: Annotated[Path, typer.Option("--readme", help="the README to write")] = README,
) -> None:
    """Write the README's marked figures (<!-- r3e:begin NAME --> ... end) from the files of results/."""
    from .readme import ReadmeError, load_published, rewrite

    text = readme_file.read_text(encoding="utf-8")
    try:
        done = rewrite(text, load_published(results, readme_file))
    except ReadmeError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    for name, missing in done.unsourced.items():
        console.print(f"[red]{name}: not written, {results} lacks {', '.join(missing)}[/red]")
    if check:
        if done.changed:
            console.print(f"[red]{readme_file} is out of date ({', '.join(done.changed)}): make readme[/red]")
        elif not done.unsourced:
            console.print(f"{readme_file} matches {results}")
        if done.changed or done.unsourced:
            raise typer.Exit(1)
        return
    if done.changed:
        readme_file.write_text(done.text, encoding="utf-8")
    console.print(f"{readme_file}: {', '.join(done.changed) or 'nothing'} rewritten")
    if done.unsourced:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()

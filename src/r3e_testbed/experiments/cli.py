"""``r3e``: run the R3E experiments against a deployment and write the report.

    r3e check [SCENARIOS...]              check scenario files, touch nothing
    r3e run -i INVENTORY [SCENARIOS...]   run them, then write reports/<timestamp>/
    r3e report RESULTS.json               render a report again from its results

SCENARIOS are files or folders of them (default: experiments/faults and experiments/inputs).
The inventory is any Ansible inventory of the testbed (Molecule's, Vagrant's, real hosts):
faults are injected by ``playbooks/fault.yml`` against it, measurements read Airflow's REST
API, the object store and the forecast service.
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
from rich.table import Table

from .results import Reliability, ReliabilityRun, Results, TuningResult, empty_results
from .scenario import FaultScenario, InputScenario, ScenarioError, Workload, load_scenarios
from .stack import PROJECT_ROOT, Stack, StackError, read_endpoints

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
console = Console(stderr=True)
DEFAULT_SCENARIOS = [PROJECT_ROOT / "experiments" / "faults", PROJECT_ROOT / "experiments" / "inputs"]

ScenarioPaths = Annotated[list[Path] | None, typer.Argument(help="scenario files or folders")]


def _load(paths: list[Path] | None) -> list[FaultScenario | InputScenario]:
    try:
        return load_scenarios(paths or DEFAULT_SCENARIOS)
    except ScenarioError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


@app.command()
def check(paths: ScenarioPaths = None) -> None:
    """Check scenario files and list them; exit 2 naming the first bad one."""
    table = Table("scenario", "kind", "what", "expects")
    for scenario in _load(paths):
        if isinstance(scenario, FaultScenario):
            what = f"{scenario.fault.type} on {scenario.fault.target}"
            expects = f"run {scenario.steady_state.run_state}"
        else:
            what = f"{scenario.input.corruption} ({scenario.input.fraction:.0%} of rows)"
            expects = scenario.expected
        table.add_row(scenario.name, scenario.kind, what, expects)
    Console().print(table)


@app.command()
def run(
    paths: ScenarioPaths = None,
    inventory: Annotated[list[str], typer.Option("--inventory", "-i", help="Ansible inventory")] = ...,  # type: ignore[assignment]
    out: Annotated[Path, typer.Option(help="reports folder")] = PROJECT_ROOT / "reports",
    reliability_runs: Annotated[int, typer.Option(help="fault-free runs for the reliability figures")] = 20,
    curve: Annotated[bool, typer.Option(help="compute the robustness curve")] = True,
    tuning: Annotated[bool, typer.Option(help="worker kill with Airflow's defaults and tuned")] = True,
    seed: Annotated[int, typer.Option(help="seed of the generated data")] = 0,
) -> None:
    """Run the scenarios against the deployment, then write reports/<timestamp>/."""
    from . import runner

    scenarios = _load(paths)
    faults = [s for s in scenarios if isinstance(s, FaultScenario)]
    inputs = [s for s in scenarios if isinstance(s, InputScenario)]
    try:
        endpoints = read_endpoints(inventory)
    except StackError as error:
        console.print(f"[red]cannot read the deployment's endpoints: {error}[/red]")
        raise typer.Exit(1) from None
    stack = Stack(endpoints, inventory)
    created = dt.datetime.now(dt.UTC)
    results = empty_results(created.isoformat(timespec="seconds"))
    steps = len(faults) + len(inputs) + curve + bool(reliability_runs) + tuning
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        overall = bar.add_task("R3E experiments", total=steps)

        def say(message: str) -> None:
            bar.console.log(message)

        baselines: dict[str, float | None] = {}  # one fault-free run per workload
        for scenario in faults:
            workload = scenario.workload.model_dump_json()
            if workload not in baselines:
                baselines[workload] = runner.run_seconds(runner.baseline(stack, scenario.workload, say))
            bar.update(overall, description=f"fault {scenario.name}")
            result = runner.run_fault(stack, scenario, baselines[workload], say)
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
    results["fingerprint"] = _fingerprint(stack, seed)
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
TUNING_SCENARIO = PROJECT_ROOT / "experiments" / "faults" / "kill-worker.yml"


def compare_tuning(stack: Stack, say) -> list[TuningResult]:
    """The worker kill under Airflow's defaults, then under the inventory's (tuned) settings."""
    import yaml

    from . import runner
    from .scenario import load_scenario
    from .stack import run_playbook

    scenario = load_scenario(TUNING_SCENARIO)
    role_defaults = yaml.safe_load((PROJECT_ROOT / "roles/airflow/defaults/main.yml").read_text())
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
            run_playbook(stack.inventory, "airflow-settings.yml", extra)
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
            run_playbook(stack.inventory, "airflow-settings.yml", {})
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
    entry = stack.airflow.get(
        f"/api/v2/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}/taskInstances/evaluate/xcomEntries/return_value"
    )
    value = entry["value"]
    if isinstance(value, str) and value.startswith("s3://"):  # the object-storage XCom backend's path
        bucket, _, key = value.removeprefix("s3://").split("@")[-1].partition("/")
        value = json.loads(stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
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


def _fingerprint(stack: Stack, seed: int) -> dict[str, Any]:
    from .fingerprint import environment_fingerprint

    endpoints = stack.endpoints
    version = None
    with contextlib.suppress(StackError):
        version = stack.airflow.get("/api/v2/version").get("version")
    return environment_fingerprint(
        topology={"groups": endpoints.groups},
        settings={"airflow": endpoints.settings, "object_store_backend": endpoints.object_store_backend},
        seeds={"data": seed},
        airflow_version=version,
        extra={"deployment": endpoints.deployment_name, "inventory": stack.inventory},
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
) -> None:
    """Render the report again from a results.json (with the benchmarks' figures, if given)."""
    results = json.loads(results_file.read_text())
    if benchmark:
        from .report import elasticity_from_benchmarks

        results["elasticity"] = elasticity_from_benchmarks(
            [json.loads(path.read_text()) for path in benchmark]
        )
        results_file.write_text(json.dumps(results, indent=2))
    console.print(f"report: {_write(results, out or results_file.parent)}")


if __name__ == "__main__":
    app()

"""Scenario files: what parses, and that every problem names the file and the field (experiments.scenario)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from r3e_testbed.experiments.scenario import (
    FAULT_TYPES,
    FaultScenario,
    InputScenario,
    ScenarioError,
    load_scenario,
    load_scenarios,
    parse_scenario,
)

FAULT = {
    "name": "kill-worker",
    "description": "kill -9 of the worker running a training task",
    "fault": {
        "type": "kill_worker",
        "target": "airflow_workers",
        "inject": {"when_task_running": "train", "after_s": 5},
        "duration_s": 0,
        "params": {},
    },
    "workload": {"dag_id": "iot_training", "scale": 1, "seed": 0},
    "steady_state": {"run_state": "success", "artifacts_intact": True, "production_served": True},
}
INPUT = {
    "name": "month-first-dates",
    "description": "re-saved by a US-locale tool",
    "input": {"corruption": "month_first", "fraction": 1.0, "seed": 3, "scale": 0.2},
    "expected": "refused",
    "reason_contains": "month-first",
}


def write(folder: Path, document, name: str | None = None) -> Path:
    path = folder / f"{name or document['name']}.yml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def changed(document: dict, dotted: str, value) -> dict:
    """A deep copy with the field at ``dotted`` set (or removed when ``value`` is ...)."""
    result = copy.deepcopy(document)
    *parents, last = dotted.split(".")
    target = result
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return result


def test_a_fault_document_parses_with_its_values():
    scenario = parse_scenario(copy.deepcopy(FAULT), "kill-worker.yml")
    assert isinstance(scenario, FaultScenario) and scenario.kind == "fault"
    assert scenario.fault.type == "kill_worker"
    assert scenario.fault.inject.when_task_running == "train" and scenario.fault.inject.after_s == 5
    assert scenario.workload.scale == 1


def test_an_input_document_parses_with_its_values():
    scenario = parse_scenario(copy.deepcopy(INPUT), "month-first-dates.yml")
    assert isinstance(scenario, InputScenario) and scenario.kind == "input"
    assert (scenario.input.corruption, scenario.input.fraction) == ("month_first", 1.0)
    assert (scenario.input.seed, scenario.input.scale) == (3, 0.2)
    assert (scenario.expected, scenario.reason_contains) == ("refused", "month-first")


def test_defaults_fill_what_an_input_document_leaves_out():
    scenario = parse_scenario({"name": "x", "input": {"corruption": "clean"}, "expected": "accepted"})
    assert (scenario.input.fraction, scenario.input.seed, scenario.input.scale) == (1.0, 0, 0.2)


def test_load_scenario_reads_a_file(tmp_path):
    scenario = load_scenario(write(tmp_path, INPUT))
    assert scenario.name == "month-first-dates"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (changed(INPUT, "colour", "red"), "colour"),
        (changed(INPUT, "input.colour", "red"), "input.colour"),
        (changed(FAULT, "fault.inject.at", 3), "fault.inject.at"),
        (changed(INPUT, "input.fraction", "lots"), "input.fraction"),
        (changed(INPUT, "input.fraction", 1.5), "input.fraction"),
        (changed(INPUT, "input.scale", 0), "input.scale"),
        (changed(INPUT, "input.seed", "zero"), "input.seed"),
        (changed(INPUT, "input.corruption", ...), "input.corruption"),
        (changed(INPUT, "expected", "maybe"), "expected"),
        (changed(INPUT, "expected", ...), "expected"),
        (changed(INPUT, "name", "Month First"), "name"),
        (changed(FAULT, "fault.type", "unplug_everything"), "fault.type"),
        (changed(FAULT, "fault.duration_s", -1), "fault.duration_s"),
        (changed(FAULT, "steady_state.artifacts_intact", "perhaps"), "steady_state.artifacts_intact"),
    ],
)
def test_a_bad_field_is_named_with_the_file(tmp_path, document, field):
    path = write(tmp_path, document, name=document.get("name", "scenario"))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and f"{field}:" in message


def test_reason_contains_only_with_a_refusal_or_quarantine():
    document = {**changed(INPUT, "expected", "accepted"), "reason_contains": "anything"}
    with pytest.raises(ScenarioError, match=r"^a\.yml: .*reason_contains"):
        parse_scenario(document, "a.yml")


@pytest.mark.parametrize(
    "document",
    [
        changed(INPUT, "input", ...),  # neither fault nor input
        {**copy.deepcopy(INPUT), "fault": copy.deepcopy(FAULT["fault"])},  # both
    ],
    ids=["neither", "both"],
)
def test_exactly_one_of_fault_and_input(tmp_path, document):
    path = write(tmp_path, document)
    with pytest.raises(ScenarioError, match=r"exactly one of 'fault' or 'input'") as caught:
        load_scenario(path)
    assert str(caught.value).startswith(str(path))


def test_a_document_that_is_no_mapping(tmp_path):
    path = tmp_path / "list.yml"
    path.write_text("- name: x\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"list\.yml: a scenario is a mapping, got list"):
        load_scenario(path)


def test_the_name_must_match_the_file_name(tmp_path):
    path = write(tmp_path, INPUT, name="other-name")
    with pytest.raises(
        ScenarioError, match=r"other-name\.yml: name 'month-first-dates' must match"
    ) as caught:
        load_scenario(path)
    assert "'other-name'" in str(caught.value)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("name: broken\ninput: {corruption: clean\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"broken\.yml: not valid YAML"):
        load_scenario(path)


def test_a_missing_file_names_it(tmp_path):
    with pytest.raises(ScenarioError, match=r"absent\.yml: cannot read it"):
        load_scenario(tmp_path / "absent.yml")


def test_load_scenarios_reads_folders_sorted_and_files(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    write(folder, INPUT)
    write(folder, changed(INPUT, "name", "a-first"))
    (folder / "notes.txt").write_text("not a scenario", encoding="utf-8")
    fault = write(tmp_path, FAULT)
    names = [s.name for s in load_scenarios([folder, fault])]
    assert names == ["a-first", "month-first-dates", "kill-worker"]


def test_duplicate_names_across_folders_are_refused(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        write(tmp_path / folder, INPUT)
    with pytest.raises(ScenarioError, match=r"used twice: month-first-dates"):
        load_scenarios([tmp_path / "one", tmp_path / "two"])


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match="no scenario files"):
        load_scenarios([tmp_path])


UPLOADS = {
    "name": "stop-event-bridge",
    "fault": {"type": "stop_event_bridge", "target": "object_stores", "duration_s": 60},
    "workload": {"dag_id": "iot_training", "uploads": 3},
    "steady_state": {"run_state": "failed", "uploads_delivered_once": True},
}


def test_an_upload_workload_parses_with_its_steady_state():
    scenario = parse_scenario(copy.deepcopy(UPLOADS), "stop-event-bridge.yml")
    assert scenario.workload.uploads == 3 and scenario.steady_state.uploads_delivered_once
    assert scenario.steady_state.run_state == "failed"
    assert parse_scenario(copy.deepcopy(FAULT)).workload.uploads == 0  # triggering is the default


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (changed(UPLOADS, "workload.dag_id", "r3e_probe"), "uploads start iot_training runs"),
        (changed(UPLOADS, "workload.params", {"tasks": 3}), "uploads start iot_training runs"),
        (changed(UPLOADS, "workload.uploads", 0), "uploads_delivered_once needs a workload with uploads"),
        (changed(UPLOADS, "fault.inject", {"when_task_running": "fetch"}), "fault.inject takes no condition"),
        (changed(UPLOADS, "workload.uploads", 21), "workload.uploads"),
    ],
)
def test_an_upload_workload_that_cannot_run_is_refused(document, problem):
    with pytest.raises(ScenarioError, match=problem):
        parse_scenario(document, "x.yml")


def test_the_projects_event_loss_scenarios_upload_through_their_fault(repo):
    bridge = load_scenario(repo / "experiments/faults/stop-event-bridge.yml")
    filer = load_scenario(repo / "experiments/faults/restart-filer.yml")
    assert (bridge.fault.type, bridge.fault.duration_s > 0) == ("stop_event_bridge", True)
    assert (filer.fault.type, filer.fault.duration_s) == ("restart_filer", 0)
    assert filer.workload.uploads >= 2  # at least one upload on each side of the restart
    for scenario in (bridge, filer):
        assert scenario.steady_state.uploads_delivered_once and scenario.steady_state.run_state == "failed"


def test_every_fault_type_has_its_tasks_file_and_is_a_choice_of_the_role(repo):
    role = repo / "roles/fault_injection"
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())
    choices = spec["argument_specs"]["main"]["options"]["fault_injection_fault"]["choices"]
    # failover_probes is no fault: the probes a host-loss experiment measures with.
    assert sorted(choices) == sorted((*FAULT_TYPES, "failover_probes"))
    assert all((role / "tasks" / f"{fault}.yml").is_file() for fault in choices)

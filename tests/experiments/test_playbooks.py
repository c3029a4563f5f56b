"""Playbooks run through ansible-runner, for real, on this machine (experiments.stack.Playbooks):
what the harness reads from a run's events and stats, and where it finds the playbooks."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiments.ansible_project import make_inventory, make_project

from r3e_testbed.experiments.stack import (
    PLAYBOOKS_ENV,
    PlaybookRun,
    Playbooks,
    StackError,
    editable_checkout,
    find_playbooks,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    return make_project(root), make_inventory(tmp_path_factory.mktemp("inventories"))


@pytest.fixture(scope="module")
def converged(project, tmp_path_factory) -> tuple[PlaybookRun, object]:
    """One successful run of the demo playbook, its inventory named by a relative path from
    another folder than the project's (the harness's working directory is not the project)."""
    folder, inventory = project
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(inventory.parent)
        run = Playbooks(folder, [inventory.name]).run("demo.yml", {"out_dir": str(out), "greeting": "hej"})
    return run, out


def test_a_run_passes_the_extra_variables_and_finds_the_role_through_the_projects_config(converged):
    run, out = converged
    assert run.succeeded and run.status == "successful" and run.rc == 0
    assert (out / "alpha.txt").read_text() == "hej" and (out / "beta.txt").read_text() == "hej"
    assert any(result.role == "demo" for result in run.results())


def test_the_recap_counts_each_hosts_results_as_ansible_does(converged):
    recap = converged[0].recap()
    assert set(recap) == {"alpha", "beta"}
    # Both wrote their file; beta's loop also changed one item, and the handler it notified ran.
    assert recap["beta"]["changed"] == 3 and recap["alpha"]["changed"] == 1
    assert recap["alpha"]["ignored"] == 1 and recap["beta"]["ignored"] == 0
    assert recap["alpha"]["failed"] == recap["beta"]["failed"] == 0
    # beta skips what only alpha does (a while, the ignored failure); both skip the other two.
    assert (recap["alpha"]["skipped"], recap["beta"]["skipped"]) == (2, 4)
    assert all(counts["unreachable"] == 0 for counts in recap.values())


def test_changed_results_name_the_task_with_its_role_and_the_host(converged):
    changed = [(result.name, result.host) for result in converged[0].changed()]
    assert changed[0] == ("demo : Loop over items", "beta")  # once, although one item of two changed
    assert changed[-1] == ("demo : Say hello", "beta")  # the handler, at the end of the play
    written = [("Write the extra variable", "alpha"), ("Write the extra variable", "beta")]
    assert sorted(changed[1:-1]) == written  # host by host, in whatever order they finished


def test_an_ignored_failure_is_no_failure_but_keeps_its_message(converged):
    run = converged[0]
    assert run.failures() == []
    (ignored,) = [result for result in run.results() if result.status == "ignored"]
    assert (ignored.name, ignored.host) == ("Fail but carry on", "alpha")
    assert "non-zero return code" in ignored.msg


def test_task_seconds_time_each_task_over_all_hosts(converged):
    timed = dict(converged[0].task_seconds())
    assert {"demo : Loop over items", "Take a while", "Skip everywhere", "demo : Say hello"} <= set(timed)
    # A lower bound only: the sleep cannot be faster, any task can be slower on a loaded machine.
    assert timed["Take a while"] >= 2.0


def test_a_failed_task_fails_the_run_naming_the_task_the_host_and_the_message(project):
    folder, inventory = project
    run = Playbooks(folder, [str(inventory)]).run("demo.yml", {"fail_on": ["beta"]}, check=False)
    assert not run.succeeded and run.status == "failed" and run.rc != 0
    assert [(f.name, f.host, f.msg) for f in run.failures()] == [("Fail on purpose", "beta", "broke on beta")]
    assert run.recap()["beta"]["failed"] == 1 and run.recap()["alpha"]["failed"] == 0
    message = run.describe()
    assert message.startswith("demo.yml failed (failed, exit 2)")
    assert "Fail on purpose on beta: broke on beta" in message
    assert "alpha" not in message  # the ignored failure on alpha is not why it failed


def test_a_run_that_fails_raises_with_ansibles_own_words_when_no_task_ran(project):
    folder, inventory = project
    with pytest.raises(StackError, match=r"broken\.yml failed") as caught:
        Playbooks(folder, [str(inventory)]).run("broken.yml")
    assert "taks" in str(caught.value)  # Ansible names the key it does not know


def test_a_missing_playbook_is_named(project):
    folder, inventory = project
    with pytest.raises(StackError, match=r"no playbook .*absent\.yml"):
        Playbooks(folder, [str(inventory)]).run("absent.yml")


# --- finding the playbooks --------------------------------------------------------------------------


def test_the_playbooks_are_the_option_then_the_environment_then_the_working_directory(
    project, tmp_path, monkeypatch
):
    folder, _ = project
    other = make_project(tmp_path / "other")
    monkeypatch.chdir(tmp_path / "other")
    monkeypatch.delenv(PLAYBOOKS_ENV, raising=False)
    assert find_playbooks() == other.resolve()
    monkeypatch.setenv(PLAYBOOKS_ENV, str(folder))
    assert find_playbooks() == folder.resolve()
    assert find_playbooks(other) == other.resolve()


def test_a_folder_without_the_harness_playbooks_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(PLAYBOOKS_ENV, raising=False)
    (tmp_path / "fault.yml").write_text("---\n[]\n")
    with pytest.raises(StackError, match=r"lacks endpoints\.yml"):
        find_playbooks(tmp_path)


def test_without_a_project_at_hand_the_error_names_the_option(tmp_path, monkeypatch):
    monkeypatch.delenv(PLAYBOOKS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    checkout = editable_checkout()
    if checkout is not None and (checkout / "playbooks" / "fault.yml").is_file():
        assert find_playbooks() == (checkout / "playbooks").resolve()  # an editable install
        return
    with pytest.raises(StackError, match=f"--playbooks DIR .*{PLAYBOOKS_ENV}"):
        find_playbooks()


def test_an_editable_install_knows_its_checkout(repo):
    checkout = editable_checkout()
    if checkout is None:
        pytest.skip("the package is not installed in editable mode here")
    assert checkout.resolve() == repo.resolve()


def test_the_footprint_playbook_measures_each_hosts_processes(repo, tmp_path):
    """playbooks/footprint.yml itself, on the two local hosts: the memory of the processes they
    see, which includes at least this test's own Python."""
    from r3e_testbed.experiments.stack import Endpoints, Stack

    inventory = make_inventory(tmp_path / "inventory")
    endpoints = {
        **{name: "-" for name in ("airflow_url", "airflow_user", "airflow_password", "s3_endpoint")},
        **{name: "-" for name in ("s3_access_key", "s3_secret_key", "object_store_backend")},
        **{name: "-" for name in ("data_bucket", "models_bucket", "forecast_url", "deployment_name")},
        "groups": {},
        "addresses": {},
        "settings": {},
    }
    stack = Stack(Endpoints.from_mapping(endpoints), Playbooks(repo / "playbooks", [str(inventory)]))
    try:
        memory = stack.memory_in_use()
    finally:
        stack.close()
    assert set(memory) == {"alpha", "beta"}
    rollup = Path("/proc/self/smaps_rollup").read_text(encoding="ascii").splitlines()
    own = next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
    assert all(measured > own for measured in memory.values()), (memory, own)

"""The environment fingerprint (r3e_testbed.experiments.fingerprint)."""

from __future__ import annotations

import copy
import subprocess
from datetime import UTC, datetime, timedelta
from importlib import metadata

import pytest

from r3e_testbed.experiments import fingerprint
from r3e_testbed.experiments.fingerprint import PACKAGES, environment_fingerprint, package_versions

TOPOLOGY = {"airflow_workers": {"hosts": ["worker-1", "worker-2"]}, "object_stores": {"hosts": ["s3-1"]}}


@pytest.fixture
def no_git(monkeypatch, tmp_path):
    """A PATH on which no git can be found."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def test_the_fingerprint_carries_its_inputs_and_the_controller_facts():
    settings, seeds = {"scheduler.parallelism": "32"}, {"data": 7, "faults": 3}
    result = environment_fingerprint(
        topology=TOPOLOGY, settings=settings, seeds=seeds, airflow_version="3.1.3", extra={"scale": 0.2}
    )
    assert result["topology"] == TOPOLOGY
    assert result["settings"] == settings and result["seeds"] == seeds
    assert result["airflow_version"] == "3.1.3"
    assert result["extra"] == {"scale": 0.2}
    assert set(result["packages"]) == set(PACKAGES)
    assert result["controller"]["python"] and result["controller"]["platform"]
    created = datetime.fromisoformat(result["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)


def test_later_changes_to_the_inputs_do_not_rewrite_the_fingerprint():
    settings, topology = {"scheduler.parallelism": "32"}, copy.deepcopy(TOPOLOGY)
    result = environment_fingerprint(topology=topology, settings=settings, seeds={})
    settings["scheduler.parallelism"] = "1"
    topology["airflow_workers"]["hosts"].append("worker-3")
    assert result["settings"] == {"scheduler.parallelism": "32"}
    assert result["topology"] == TOPOLOGY


def test_optional_inputs_default_to_nothing():
    result = environment_fingerprint(topology=None, settings={}, seeds={})
    assert result["topology"] is None and result["airflow_version"] is None and result["extra"] == {}


def test_a_package_that_is_not_installed_is_none(monkeypatch):
    assert package_versions(("r3e-testbed", "r3e-no-such-distribution")) == {
        "r3e-testbed": metadata.version("r3e-testbed"),
        "r3e-no-such-distribution": None,
    }

    installed = metadata.version

    def without_prophet(name):
        if name == "prophet":
            raise metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(fingerprint.metadata, "version", without_prophet)
    packages = environment_fingerprint(topology=None, settings={}, seeds={})["packages"]
    assert packages["prophet"] is None
    assert packages["r3e-testbed"] == installed("r3e-testbed")


def test_without_git_the_commit_is_none(no_git):
    result = environment_fingerprint(topology=None, settings={}, seeds={})
    assert result["git_commit"] is None and result["git_dirty"] is None


def test_outside_a_repository_the_commit_is_none(monkeypatch, tmp_path):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above tmp_path
    assert fingerprint.git_state(tmp_path) == (None, None)


def test_the_commit_and_local_changes_of_a_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(tmp_path), *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    (tmp_path / "tracked.txt").write_text("one\n")
    git("add", "tracked.txt")
    git("commit", "-q", "-m", "first")
    # The branch's ref file says which commit is checked out, without asking git.
    head = (tmp_path / ".git" / "refs" / "heads" / "main").read_text().strip()

    assert fingerprint.git_state(tmp_path) == (head, False)
    (tmp_path / "tracked.txt").write_text("two\n")
    assert fingerprint.git_state(tmp_path) == (head, True)
    assert (
        environment_fingerprint(topology=None, settings={}, seeds={}, project_dir=tmp_path)["git_commit"]
        == head
    )

"""The environment an experiment ran in, recorded next to its results so they can be compared.

Two results are only comparable when the controller's libraries, the project's commit, the
topology, the settings and the seeds match; the fingerprint keeps all of them in one dict
(``Results["fingerprint"]``) that the report prints as it is.
"""

from __future__ import annotations

import copy
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from .stack import PROJECT_ROOT

# The distributions whose versions change what the pipeline computes or how it is driven.
PACKAGES = (
    "r3e-testbed",
    "pandas",
    "pyarrow",
    "prophet",
    "scikit-learn",
    "pandera",
    "ansible-core",
    "ansible-runner",
    "apache-airflow-client",
    "matplotlib",
)

# The project's folder (the working directory's or the editable checkout's), whose commit is kept.
PROJECT_DIR = PROJECT_ROOT


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution; ``None`` for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(project_dir: Path, *args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    # --no-optional-locks: `git status` must not rewrite the index of a tree others work in.
    try:
        done = subprocess.run(
            [git, "--no-optional-locks", "-C", str(project_dir), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(project_dir: Path = PROJECT_DIR) -> tuple[str | None, bool | None]:
    """The checked-out commit and whether tracked files differ from it; ``None`` without git or a repo."""
    commit = _git(project_dir, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git(project_dir, "status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else status != "")


def environment_fingerprint(
    *,
    topology: dict | None,
    settings: dict,
    seeds: dict,
    airflow_version: str | None = None,
    extra: dict | None = None,
    project_dir: Path = PROJECT_DIR,
) -> dict:
    """Facts about the controller and the testbed that the results depend on.

    ``topology`` (groups and hosts), ``settings`` and ``seeds`` are carried through as given
    (copied, so later changes to the caller's dicts do not rewrite the record); ``extra`` goes
    under its own key so it can never shadow one of the fixed ones.
    """
    commit, dirty = git_state(project_dir)
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "controller": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "python_implementation": platform.python_implementation(),
        },
        "packages": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "airflow_version": airflow_version,
        "topology": copy.deepcopy(topology),
        "settings": copy.deepcopy(settings),
        "seeds": copy.deepcopy(seeds),
        "extra": copy.deepcopy(extra) if extra else {},
    }

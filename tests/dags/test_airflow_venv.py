"""The venv these tests run in is the Airflow hosts' venv: their packages, at the lock's versions."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "roles/airflow/files/constraints.txt"


def hosts_requirements() -> list[Requirement]:
    """What the airflow role installs: airflow_pip_packages plus the playbooks' extra packages."""
    defaults = yaml.safe_load((REPO / "roles/airflow/defaults/main.yml").read_text())
    wiring = yaml.safe_load((REPO / "playbooks/group_vars/airflow.yml").read_text())
    packages = defaults["airflow_pip_packages"] + wiring["airflow_extra_pip_packages"]
    version = defaults["airflow_version"]
    return [Requirement(package.replace("{{ airflow_version }}", version)) for package in packages]


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def installed_versions() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


@pytest.mark.parametrize("requirement", hosts_requirements(), ids=str)
def test_every_package_of_the_hosts_is_installed_and_locked(requirement):
    installed = installed_versions()
    name = canonicalize_name(requirement.name)
    assert name in installed, f"{requirement} is not installed (the Makefile's AIRFLOW_PACKAGES)"
    assert requirement.specifier.contains(installed[name], prereleases=True)
    assert name in locked_versions(), f"{requirement} is not in the lock"


def test_every_locked_package_has_its_locked_version():
    installed = installed_versions()
    differ = {
        name: f"{installed[name]} installed, {version} locked"
        for name, version in locked_versions().items()
        if name in installed and installed[name] != version
    }
    assert differ == {}

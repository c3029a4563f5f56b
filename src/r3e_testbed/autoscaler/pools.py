"""Worker pools the autoscaler resizes: what "a worker" is on each kind of machine.

Both backends count only members that take tasks (starting or running); a member being stopped
is draining (Celery's warm shutdown: it finishes its running tasks and takes no new ones), so it is
no longer counted, and it is not started again until it has stopped.

``SystemdPool``
    Extra worker instances on this host, systemd template units ``airflow-worker@<n>``: how the
    pool grows on VMs and bare hosts. Starting and stopping never blocks the autoscaler
    (``--no-block``); the units' ``KillMode=mixed`` and ``TimeoutStopSec`` make the stop a drain.
``PodmanPool``
    Whole worker hosts as podman containers (the testbed), provisioned once by
    ``playbooks/scale.yml`` and then started and stopped. ``podman stop`` runs in the background
    with a timeout longer than the workers' drain.

Lower-numbered members start first and higher-numbered ones stop first, so the pool's membership
is predictable from its size.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from typing import Protocol

#: Runs a command and returns its standard output; raises PoolError when it fails.
Runner = Callable[[Sequence[str]], str]


class PoolError(RuntimeError):
    """The pool could not be read or changed; the message names the command and its error."""


def run_command(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PoolError(f"{' '.join(argv)}: {error}") from None
    # `systemctl is-active` exits 3 for inactive units yet prints every state: the caller decides.
    if done.returncode != 0 and not done.stdout:
        raise PoolError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[:300]}")
    return done.stdout


class Pool(Protocol):
    """A set of workers of which some take tasks."""

    name: str

    def members(self) -> list[str]: ...

    def taking_tasks(self) -> list[str]:
        """Members starting or running (not stopping, not stopped)."""
        ...

    def resize(self, size: int) -> list[str]:
        """Start or stop members until ``size`` take tasks; returns what was asked of whom."""
        ...


def _plan(
    members: list[str], taking: list[str], stopped: list[str], size: int
) -> tuple[list[str], list[str]]:
    """Which members to start and which to stop for ``size`` members taking tasks."""
    if not 0 <= size <= len(members):
        raise PoolError(f"a pool of {len(members)} members cannot have {size} taking tasks")
    if size > len(taking):
        return stopped[: size - len(taking)], []
    return [], list(reversed(taking))[: len(taking) - size]


class SystemdPool:
    """Template instances ``<template>@<n>.service`` on this host."""

    TAKING_TASKS = ("active", "activating", "reloading")

    def __init__(self, template: str, instances: Sequence[int], run: Runner = run_command) -> None:
        if not template.endswith("@"):
            raise ValueError(f"unit_template must end with '@' (e.g. airflow-worker@), got {template!r}")
        if not instances or len(set(instances)) != len(instances):
            raise ValueError(f"instances must be distinct instance numbers, got {list(instances)!r}")
        self.name = f"systemd {template}{{{','.join(map(str, instances))}}}"
        self._units = [f"{template}{number}.service" for number in sorted(instances)]
        self._run = run

    def members(self) -> list[str]:
        return list(self._units)

    def _states(self) -> dict[str, str]:
        lines = self._run(["systemctl", "is-active", *self._units]).split()
        if len(lines) != len(self._units):
            raise PoolError(f"systemctl is-active gave {len(lines)} states for {len(self._units)} units")
        return dict(zip(self._units, lines, strict=True))

    def taking_tasks(self) -> list[str]:
        return [unit for unit, state in self._states().items() if state in self.TAKING_TASKS]

    def resize(self, size: int) -> list[str]:
        states = self._states()
        taking = [unit for unit, state in states.items() if state in self.TAKING_TASKS]
        stopped = [unit for unit, state in states.items() if state in ("inactive", "failed")]
        start, stop = _plan(self._units, taking, stopped, size)
        done = []
        if start:
            # A failed unit would otherwise keep its state (and its restart counter); a unit
            # never started is not loaded, and reset-failed refuses those.
            failed = [unit for unit in start if states[unit] == "failed"]
            if failed:
                self._run(["systemctl", "reset-failed", *failed])
            self._run(["systemctl", "start", "--no-block", *start])
            done += [f"start {unit}" for unit in start]
        if stop:
            self._run(["systemctl", "stop", "--no-block", *stop])
            done += [f"stop {unit} (drain)" for unit in stop]
        return done


class PodmanPool:
    """Worker host containers, started and stopped with podman."""

    TAKING_TASKS = ("running", "created", "initialized")

    def __init__(
        self,
        containers: Sequence[str],
        stop_timeout_s: int,
        run: Runner = run_command,
        spawn: Callable[[Sequence[str]], object] = subprocess.Popen,
    ) -> None:
        if not containers or len(set(containers)) != len(containers):
            raise ValueError(f"containers must be distinct names, got {list(containers)!r}")
        self.name = f"podman {','.join(containers)}"
        self._containers = list(containers)
        self._stop_timeout_s = stop_timeout_s
        self._run = run
        self._spawn = spawn
        self._stopping: dict[str, object] = {}

    def members(self) -> list[str]:
        return list(self._containers)

    def _states(self) -> dict[str, str]:
        answer = json.loads(self._run(["podman", "container", "inspect", *self._containers]) or "[]")
        states = {item["Name"].lstrip("/"): item["State"]["Status"] for item in answer}
        missing = [name for name in self._containers if name not in states]
        if missing:
            raise PoolError(
                f"no such containers: {', '.join(missing)} (create them with playbooks/scale.yml)"
            )
        # A container whose stop we asked for is draining until podman says it has stopped.
        for name, process in list(self._stopping.items()):
            if process.poll() is None:  # type: ignore[attr-defined]
                states[name] = "stopping"
            else:
                del self._stopping[name]
        return {name: states[name] for name in self._containers}

    def taking_tasks(self) -> list[str]:
        return [name for name, state in self._states().items() if state in self.TAKING_TASKS]

    def resize(self, size: int) -> list[str]:
        states = self._states()
        taking = [name for name, state in states.items() if state in self.TAKING_TASKS]
        stopped = [name for name, state in states.items() if state in ("exited", "stopped", "configured")]
        start, stop = _plan(self._containers, taking, stopped, size)
        for name in start:
            self._run(["podman", "start", name])
        for name in stop:
            self._stopping[name] = self._spawn(["podman", "stop", "--time", str(self._stop_timeout_s), name])
        return [f"start {name}" for name in start] + [f"stop {name} (drain)" for name in stop]

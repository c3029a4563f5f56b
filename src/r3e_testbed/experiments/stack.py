"""The running testbed as the harness sees it: its public interfaces and nothing else.

``Endpoints`` comes from ``playbooks/endpoints.yml`` run against an inventory (URLs,
credentials, hosts per group, settings); ``Stack`` holds the official Airflow client
(:mod:`r3e_testbed.clients.airflow`), the object store (:mod:`r3e_testbed.storage`) and the
forecast service, and runs playbooks (fault injection) against the same inventory. Nothing
here knows whether the hosts are containers or machines.

Playbooks run through ansible-runner: what the harness learns from a run is its events and
stats (which task changed or failed on which host, and why), never Ansible's text. Where the
playbooks are: ``--playbooks DIR`` (``r3e``'s option), else ``$R3E_PLAYBOOKS``, else
``playbooks/`` of the working directory, else ``playbooks/`` of the checkout the package is
installed from in editable mode. The folder's parent is the project: playbooks run there, with
its ``ansible.cfg`` (roles_path and the settings the playbooks rely on) as ``ANSIBLE_CONFIG``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import re
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r3e_testbed.storage import ObjectStore, s3_store

if TYPE_CHECKING:
    from .leaders import Replication

HTTP_TIMEOUT_S = 15.0
#: How long a call keeps trying while the api-server does not answer (it may be the fault).
AIRFLOW_PATIENCE_S = 120.0
#: Items per page of a listing: Airflow's default maximum_page_limit (a larger limit is cut to it).
PAGE = 100
PLAYBOOKS_ENV = "R3E_PLAYBOOKS"
#: The playbooks the harness cannot do without: a folder holding them is the project's playbooks.
PLAYBOOK_MARKERS = ("endpoints.yml", "fault.yml")
DISTRIBUTION = "r3e-testbed"


class StackError(RuntimeError):
    """The testbed could not be reached or did something the harness cannot work with."""


# --- where the project is -------------------------------------------------------------------------


def _holds_playbooks(folder: Path) -> bool:
    return all((folder / name).is_file() for name in PLAYBOOK_MARKERS)


def editable_checkout() -> Path | None:
    """The folder the package is installed from in editable mode (``pip install -e``), else None.

    Read from the installation's ``direct_url.json`` (PEP 610), so it holds wherever the code is.
    """
    try:
        text = importlib.metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
        origin = json.loads(text or "null")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    if not isinstance(origin, dict) or not (origin.get("dir_info") or {}).get("editable"):
        return None
    url = urllib.parse.urlsplit(str(origin.get("url", "")))
    return Path(urllib.parse.unquote(url.path)) if url.scheme == "file" else None


def project_root() -> Path:
    """The folder the project's defaults are relative to (scenarios, reports, results, README):
    the working directory when it holds the playbooks, else the editable checkout, else the
    working directory."""
    here = Path.cwd()
    if _holds_playbooks(here / "playbooks"):
        return here
    checkout = editable_checkout()
    if checkout is not None and _holds_playbooks(checkout / "playbooks"):
        return checkout
    return here


PROJECT_ROOT = project_root()


def find_playbooks(given: str | os.PathLike[str] | None = None) -> Path:
    """The playbooks folder: ``given`` (the ``--playbooks`` option), else ``$R3E_PLAYBOOKS``, else
    ``playbooks/`` of the working directory or of the editable checkout; StackError otherwise."""
    given = given if given is not None else os.environ.get(PLAYBOOKS_ENV) or None
    if given is not None:
        folder = Path(given).expanduser().resolve()
        if not _holds_playbooks(folder):
            raise StackError(
                f"{folder} is not the project's playbooks folder (it lacks {' or '.join(PLAYBOOK_MARKERS)})"
            )
        return folder
    for root in (Path.cwd(), editable_checkout()):
        if root is not None and _holds_playbooks(root / "playbooks"):
            return (root / "playbooks").resolve()
    raise StackError(
        "cannot find the project's playbooks: run from the project's folder, or name the folder"
        f" with --playbooks DIR (or {PLAYBOOKS_ENV}=DIR)"
    )


# --- playbook runs --------------------------------------------------------------------------------

#: ansible-runner's events for one task's result on one host, and the status each stands for.
RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
TASK_STARTS = ("playbook_on_task_start", "playbook_on_handler_task_start")
RECAP_COUNTERS = {  # PLAY RECAP's names for ansible-runner's stats
    "ok": "ok",
    "changed": "changed",
    "unreachable": "dark",
    "failed": "failures",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class TaskResult:
    """One task's result on one host. ``status``: ok, changed, failed, ignored (a failure the
    task ignores), unreachable or skipped."""

    host: str
    task: str
    role: str
    status: str
    msg: str
    duration_s: float | None

    @property
    def name(self) -> str:
        """The task as Ansible names it: ``role : task`` inside a role."""
        return f"{self.role} : {self.task}" if self.role else self.task


def _message(result: Mapping[str, Any]) -> str:
    """What a task's result says went wrong: its msg, the stderr of a command, or the first
    failed item's."""
    for item in result.get("results") or []:
        if isinstance(item, Mapping) and item.get("failed"):
            return _message(item)
    parts = [str(result.get(name) or "").strip() for name in ("msg", "reason", "censored")]
    stderr = str(result.get("stderr") or "").strip()
    if stderr:
        parts.append(stderr.splitlines()[-1])
    return ": ".join(part for part in parts if part)


def _timestamp(event: Mapping[str, Any]) -> float | None:
    created = event.get("created")
    try:
        return dt.datetime.fromisoformat(created).timestamp() if created else None
    except ValueError:
        return None


@dataclass
class PlaybookRun:
    """One ansible-runner run: ``status`` (successful, failed, timeout, canceled), ``rc``, its
    events (ansible-runner's job events, in order) and the end of its text output (kept only to
    explain a run that failed before any task, e.g. a playbook that does not parse)."""

    playbook: str
    status: str
    rc: int
    events: list[dict[str, Any]] = field(default_factory=list)
    stdout_tail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def results(self) -> list[TaskResult]:
        found = []
        for event in self.events:
            status = RESULT_EVENTS.get(event.get("event", ""))
            if status is None:
                continue
            data = event.get("event_data") or {}
            result = data.get("res") or {}
            if status == "ok" and result.get("changed"):
                status = "changed"
            elif status == "failed" and data.get("ignore_errors"):
                status = "ignored"
            found.append(
                TaskResult(
                    host=str(data.get("host") or ""),
                    task=str(data.get("task") or ""),
                    role=str(data.get("role") or ""),
                    status=status,
                    msg=_message(result) if status in ("failed", "ignored", "unreachable") else "",
                    duration_s=data.get("duration"),
                )
            )
        return found

    def changed(self) -> list[TaskResult]:
        """The results that changed something (a looped task counts once per host)."""
        return [result for result in self.results() if result.status == "changed"]

    def failures(self) -> list[TaskResult]:
        return [result for result in self.results() if result.status in ("failed", "unreachable")]

    def stats(self) -> dict[str, dict[str, int]]:
        """ansible-runner's stats, counter -> host -> count ({} when the run never got to them)."""
        last = next((e for e in reversed(self.events) if e.get("event") == "playbook_on_stats"), None)
        data = (last or {}).get("event_data") or {}
        return {name: dict(data.get(name) or {}) for name in RECAP_COUNTERS.values()}

    def recap(self) -> dict[str, dict[str, int]]:
        """What PLAY RECAP shows: host -> {ok, changed, unreachable, failed, skipped, rescued, ignored}."""
        stats = self.stats()
        hosts = sorted({host for counts in stats.values() for host in counts})
        return {
            host: {shown: int(stats[name].get(host, 0)) for shown, name in RECAP_COUNTERS.items()}
            for host in hosts
        }

    def task_seconds(self) -> list[tuple[str, float]]:
        """(task, seconds) of every task, from its start to the next task's (or the end of the
        play's run): the time the whole task took over all hosts, as profile_tasks counts it."""
        starts: list[tuple[str, float]] = []
        end: float | None = None
        for event in self.events:
            at = _timestamp(event)
            if at is None:
                continue
            if event.get("event") in TASK_STARTS:
                data = event.get("event_data") or {}
                role, task = data.get("role") or "", data.get("task") or data.get("name") or ""
                starts.append((f"{role} : {task}" if role else str(task), at))
            end = at
        timed = []
        for (name, at), following in zip(starts, [*starts[1:], ("", end)], strict=True):
            timed.append((name, round(max(0.0, (following[1] or at) - at), 3)))
        return timed

    def describe(self) -> str:
        """Why the run failed: each failed task with its host and message, else the output's end."""
        lines = list(dict.fromkeys(f"{f.name} on {f.host}: {f.msg or f.status}" for f in self.failures()))
        if not lines:
            lines = [_ANSI.sub("", line) for line in self.stdout_tail.strip().splitlines()[-15:]]
        shown = "\n".join(f"  {line}" for line in lines[:10])
        more = f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else ""
        return f"{self.playbook} failed ({self.status}, exit {self.rc}):\n{shown}{more}"


def _absolute(source: str) -> str:
    """An inventory that is a path, made absolute (playbooks run from the project's folder);
    anything else (``host1,host2,``) as it is."""
    return str(Path(source).resolve()) if Path(source).exists() else source


class Playbooks:
    """The project's playbooks, run against one inventory through ansible-runner."""

    def __init__(self, folder: str | os.PathLike[str], inventory: Sequence[str]) -> None:
        self.folder = Path(folder).resolve()
        self.project = self.folder.parent
        self.inventory = list(inventory)
        config = self.project / "ansible.cfg"
        self.config = config if config.is_file() else None

    def path(self, playbook: str | os.PathLike[str]) -> Path:
        path = Path(playbook)
        return path if path.is_absolute() else self.folder / path

    def run(
        self,
        playbook: str | os.PathLike[str],
        extra_vars: Mapping[str, Any] | None = None,
        limit: str | None = None,
        check: bool = True,
    ) -> PlaybookRun:
        """Run a playbook (a name in the folder, or a path); StackError naming the failed tasks,
        their hosts and messages when it fails (``check=False``: the run, failed or not)."""
        import ansible_runner
        from ansible_runner.exceptions import AnsibleRunnerException

        path = self.path(playbook)
        if not path.is_file():
            raise StackError(f"no playbook {path}")
        # The ansible-playbook of this environment, also when its bin folder is not on PATH.
        envvars = {
            "PATH": os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))
        }
        if self.config is not None:
            envvars["ANSIBLE_CONFIG"] = str(self.config)
        with tempfile.TemporaryDirectory(prefix="r3e-ansible-") as private:
            runner = ansible_runner.run(
                private_data_dir=private,
                project_dir=str(self.project),
                playbook=str(path),
                inventory=[_absolute(source) for source in self.inventory],
                extravars=dict(extra_vars or {}),
                limit=limit,
                envvars=envvars,
                quiet=True,
                suppress_env_files=True,  # the extra variables may hold secrets
                # No signal handlers of ansible-runner's: Ctrl-C stays KeyboardInterrupt for the caller.
                cancel_callback=lambda: False,
            )
            events = list(runner.events)
            try:
                with runner.stdout as output:
                    tail = "".join(output.readlines()[-40:])
            except AnsibleRunnerException:  # no output was written
                tail = ""
        status = str(runner.status)
        rc = runner.rc if runner.rc is not None else (0 if status == "successful" else -1)
        result = PlaybookRun(playbook=path.name, status=status, rc=rc, events=events, stdout_tail=tail)
        if check and not result.succeeded:
            raise StackError(result.describe())
        return result


# --- the deployment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    deployment_name: str
    airflow_url: str
    airflow_user: str
    airflow_password: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    object_store_backend: str
    data_bucket: str
    models_bucket: str
    forecast_url: str
    groups: dict[str, list[str]]
    addresses: dict[str, str]
    settings: dict[str, dict[str, Any]]
    #: The asset the event bridge creates an event of for each upload.
    data_changes_asset: str = "iot_data_changes"
    #: Every api-server and every S3 gateway (several in a highly available deployment).
    airflow_urls: tuple[str, ...] = ()
    s3_endpoints: tuple[str, ...] = ()
    forecast_urls: tuple[str, ...] = ()
    high_availability: bool = False
    #: Where the replicated services say who leads (ports, the sentinels' master name, passwords).
    replication: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any]) -> Endpoints:
        fields = cls.__dataclass_fields__
        required = {
            name
            for name, spec in fields.items()
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(document))
        if missing:
            raise StackError(f"the endpoints file lacks {', '.join(missing)}")
        given = {name: document[name] for name in fields if name in document}
        for name in ("airflow_urls", "s3_endpoints", "forecast_urls"):
            given[name] = tuple(given.get(name) or ())
        return cls(**given)

    def hosts(self, group_or_host: str) -> list[str]:
        """The hosts of a group, or the host itself; StackError names an unknown one."""
        if group_or_host in self.groups:
            return list(self.groups[group_or_host])
        if group_or_host in self.addresses:
            return [group_or_host]
        raise StackError(f"{group_or_host!r} is neither a group nor a host of the inventory")

    def host_named(self, hostname: str) -> str | None:
        """The inventory host a machine calls itself ``hostname`` (short name or address)."""
        short = hostname.split(".")[0]
        for host, address in self.addresses.items():
            if short in (host, host.split(".")[0]) or hostname == address:
                return host
        return None


def read_endpoints(playbooks: Playbooks) -> Endpoints:
    with tempfile.TemporaryDirectory(prefix="r3e-") as folder:
        target = Path(folder) / "endpoints.json"
        playbooks.run("endpoints.yml", {"r3e_endpoints_file": str(target)})
        return Endpoints.from_mapping(json.loads(target.read_text()))


def healthy(document: Mapping[str, Any] | None) -> bool:
    """Every component of the monitor health document reports healthy."""
    if not document:
        return False
    return all(
        isinstance(part, Mapping) and part.get("status") == "healthy"
        for part in document.values()
        if isinstance(part, Mapping) and "status" in part
    )


def document(model: Any) -> dict[str, Any]:
    """One of the official client's models as the JSON Airflow sent: timestamps as ISO strings,
    states as plain strings, absent values as None (what results.json keeps)."""
    return model.model_dump(mode="json", by_alias=True)


class Stack:
    """The clients of one deployment, built from its endpoints.

    ``airflow`` is the project's one Airflow client (calls through ``airflow.call``, which fails
    with ``AirflowError``); the methods below are the few reads the harness makes, as plain
    documents (:func:`document`).
    """

    def __init__(self, endpoints: Endpoints, playbooks: Playbooks) -> None:
        from airflow_client import client as generated

        from r3e_testbed.clients.airflow import Airflow

        self.endpoints, self.playbooks = endpoints, playbooks
        self.airflow = Airflow(
            list(endpoints.airflow_urls) or endpoints.airflow_url,
            endpoints.airflow_user,
            endpoints.airflow_password,
            timeout_s=HTTP_TIMEOUT_S,
            patience_s=AIRFLOW_PATIENCE_S,
        )
        # APIs the client module does not hand out, on its authenticated ApiClient.
        self.tasks_api = generated.TaskApi(self.airflow.api_client)
        self.xcom_api = generated.XComApi(self.airflow.api_client)
        self.version_api = generated.VersionApi(self.airflow.api_client)

    @property
    def inventory(self) -> list[str]:
        return self.playbooks.inventory

    def run_playbook(
        self,
        playbook: str | os.PathLike[str],
        extra_vars: Mapping[str, Any] | None = None,
        limit: str | None = None,
    ) -> PlaybookRun:
        return self.playbooks.run(playbook, extra_vars, limit)

    def memory_in_use(self) -> dict[str, int]:
        """Bytes of memory each host's processes use now (playbooks/footprint.yml)."""
        with tempfile.TemporaryDirectory(prefix="r3e-") as folder:
            target = Path(folder) / "footprint.json"
            self.run_playbook("footprint.yml", {"r3e_footprint_file": str(target)})
            document = json.loads(target.read_text())
        return {host: int(measured["pss_bytes"]) for host, measured in document.items()}

    def store(self, bucket: str) -> ObjectStore:
        """One bucket of the deployment's object store, through the first S3 gateway that answers
        (a highly available deployment has one per object-store host; a lost host's is passed over)."""
        e = self.endpoints
        return s3_store(
            bucket,
            endpoint_url=self.live_s3_endpoint(),
            access_key=e.s3_access_key,
            secret_key=e.s3_secret_key,
        )

    def live_s3_endpoint(self) -> str:
        """The first S3 gateway that answers HTTP at all; the first one when none does."""
        import httpx

        endpoints = list(self.endpoints.s3_endpoints) or [self.endpoints.s3_endpoint]
        for endpoint in endpoints:
            try:
                httpx.get(endpoint, timeout=3, trust_env=False)
            except httpx.HTTPError:
                continue
            return endpoint
        return endpoints[0]

    def replication(self) -> Replication:
        """The replicated services' leaders, through their own interfaces (:mod:`.leaders`)."""
        from .leaders import Replication

        e, wiring = self.endpoints, dict(self.endpoints.replication)
        ports = ("patroni_port", "sentinel_port", "redis_port", "seaweedfs_master_port")
        texts = ("sentinel_master", "redis_password", "sentinel_password")
        return Replication(
            addresses=e.addresses,
            databases=e.groups.get("databases", []),
            brokers=e.groups.get("brokers", []),
            object_stores=e.groups.get("object_stores", []),
            **{name: int(wiring[name]) for name in ports if name in wiring},
            **{name: str(wiring[name]) for name in texts if name in wiring},
        )

    @property
    def forecast_services(self) -> list[str]:
        """The forecast service's URL on every host that runs it."""
        return list(self.endpoints.forecast_urls) or [self.endpoints.forecast_url]

    def forecast(
        self, series: str = "In", days: int = 7, urls: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """What the forecast service serves now, from the first of ``urls`` (default: every
        host's) that answers; None when none does."""
        import httpx

        for url in self.forecast_services if urls is None else urls:
            try:
                response = httpx.get(
                    f"{url}/forecast",
                    params={"series": series, "days": days},
                    timeout=5,
                    trust_env=False,  # the private network: never through the environment's proxy
                )
                if response.is_success:
                    return response.json()
            except (httpx.HTTPError, ValueError):
                continue
        return None

    def fault(
        self, fault: str, action: str, hosts: Sequence[str], duration_s: float, params: Mapping
    ) -> None:
        """Inject or revert a fault through playbooks/fault.yml on ``hosts``."""
        extra = {
            "r3e_fault_hosts": ",".join(hosts),
            "fault_injection_fault": fault,
            "fault_injection_action": action,
            "fault_injection_duration_s": round(duration_s),
            **{f"fault_injection_{name}": value for name, value in params.items()},
        }
        self.run_playbook("fault.yml", extra)

    # --- Airflow, as documents --------------------------------------------------------------------

    def _pages(self, operation: Callable[..., Any], items: str, *args: Any, **filters: Any) -> list[dict]:
        """Every item of a listing, page by page (offset pagination)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.airflow.call(operation, *args, limit=PAGE, offset=len(found), **filters)
            batch = getattr(page, items)
            found += [document(item) for item in batch]
            total = getattr(page, "total_entries", None)
            if not batch or (total is not None and len(found) >= total):
                return found

    def dag_run(self, dag_id: str, run_id: str, patience_s: float | None = None) -> dict[str, Any]:
        return document(
            self.airflow.call(self.airflow.dag_runs.get_dag_run, dag_id, run_id, patience_s=patience_s)
        )

    def dag_runs(self, dag_id: str, **filters: Any) -> list[dict[str, Any]]:
        """The runs of a DAG (``~``: of every DAG) that match the filters of ``get_dag_runs``."""
        return self._pages(self.airflow.dag_runs.get_dag_runs, "dag_runs", dag_id, **filters)

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> dict[str, Any]:
        from airflow_client.client import TriggerDAGRunPostBody

        from r3e_testbed.clients.airflow import AirflowError

        body = TriggerDAGRunPostBody(dag_run_id=run_id, logical_date=None, conf=dict(conf))
        try:
            return document(self.airflow.call(self.airflow.dag_runs.trigger_dag_run, dag_id, body))
        except AirflowError as error:
            if error.status != 409:
                raise
            # The run exists: an attempt that went unanswered was carried out (the harness's run
            # ids carry the moment they were made, so no other run has this one).
            return self.dag_run(dag_id, run_id)

    def task_instances(self, dag_id: str, run_id: str, patience_s: float | None = None) -> list[dict]:
        api = self.airflow.task_instances
        return self._pages(api.get_task_instances, "task_instances", dag_id, run_id, patience_s=patience_s)

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        """Every try of one task instance, the current one included."""
        api = self.airflow.task_instances
        if map_index >= 0:
            answer = self.airflow.call(api.get_mapped_task_instance_tries, dag_id, run_id, task_id, map_index)
        else:
            answer = self.airflow.call(api.get_task_instance_tries, dag_id, run_id, task_id)
        return [document(attempt) for attempt in answer.task_instances]

    def tasks(self, dag_id: str) -> list[dict[str, Any]]:
        return [document(task) for task in self.airflow.call(self.tasks_api.get_tasks, dag_id).tasks]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The value of one XCom entry (as the XCom backend stored it)."""
        entry = self.airflow.call(self.xcom_api.get_xcom_entry, dag_id, task_id, run_id, key)
        return entry.actual_instance.value if entry.actual_instance is not None else None

    def airflow_version(self) -> str:
        return self.airflow.call(self.version_api.get_version).version

    def asset_events(self, asset_name: str, since: dt.datetime) -> list[dict[str, Any]]:
        """The events of an asset created since ``since``, oldest first."""
        assets = self.airflow.call(self.airflow.assets.get_assets, name_pattern=asset_name, limit=PAGE).assets
        ids = [asset.id for asset in assets if asset.name == asset_name]
        if not ids:
            raise StackError(f"Airflow has no asset {asset_name!r}")
        api = self.airflow.assets
        return self._pages(
            api.get_asset_events, "asset_events", asset_id=ids[0], timestamp_gte=since, order_by=["timestamp"]
        )

    def close(self) -> None:
        self.airflow.close()

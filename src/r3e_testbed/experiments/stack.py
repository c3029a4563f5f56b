"""The running testbed as the harness sees it: its public interfaces and nothing else.

``Endpoints`` comes from ``playbooks/endpoints.yml`` run against an inventory (URLs,
credentials, hosts per group, settings); ``Stack`` wraps Airflow's REST API, the S3 object
store and the forecast service, and runs playbooks (fault injection) against the same
inventory. Nothing here knows whether the hosts are containers or machines.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[3]
PLAYBOOKS = PROJECT_ROOT / "playbooks"
HTTP_TIMEOUT_S = 15


class StackError(RuntimeError):
    """The testbed could not be reached or did something the harness cannot work with."""


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

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any]) -> Endpoints:
        missing = sorted(set(cls.__dataclass_fields__) - set(document))
        if missing:
            raise StackError(f"the endpoints file lacks {', '.join(missing)}")
        return cls(**{name: document[name] for name in cls.__dataclass_fields__})

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


def run_playbook(
    inventory: Sequence[str], playbook: str, extra_vars: Mapping[str, Any], limit: str | None = None
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook against the inventory; StackError with the failing output on failure."""
    command = ["ansible-playbook", str(PLAYBOOKS / playbook), "-e", json.dumps(dict(extra_vars))]
    for source in inventory:
        command += ["-i", source]
    if limit:
        command += ["--limit", limit]
    result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise StackError(f"{playbook} failed (exit {result.returncode}):\n{tail}")
    return result


def read_endpoints(inventory: Sequence[str]) -> Endpoints:
    with tempfile.TemporaryDirectory(prefix="r3e-") as folder:
        target = Path(folder) / "endpoints.json"
        run_playbook(inventory, "endpoints.yml", {"r3e_endpoints_file": str(target)})
        return Endpoints.from_mapping(json.loads(target.read_text()))


class AirflowClient:
    """Airflow 3's REST API (``/api/v2``) with a JWT from ``/auth/token``, renewed on a 401.

    Calls retry for a while when the api-server does not answer (it may be the fault).
    """

    def __init__(self, url: str, user: str, password: str, patience_s: float = 120.0) -> None:
        self.url, self._user, self._password = url.rstrip("/"), user, password
        self.patience_s = patience_s
        self._session = requests.Session()

    def _login(self) -> None:
        response = self._session.post(
            f"{self.url}/auth/token",
            json={"username": self._user, "password": self._password},
            timeout=HTTP_TIMEOUT_S,
        )
        response.raise_for_status()
        self._session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def request(
        self,
        method: str,
        path: str,
        ok: Sequence[int] = (200,),
        patience_s: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """The answer; retried while the api-server does not answer, for ``patience_s`` (0: once)."""
        patience = self.patience_s if patience_s is None else patience_s
        deadline = time.monotonic() + patience
        while True:
            try:
                if "Authorization" not in self._session.headers:
                    self._login()
                response = self._session.request(
                    method, f"{self.url}{path}", timeout=HTTP_TIMEOUT_S, **kwargs
                )
                if response.status_code == 401:
                    self._session.headers.pop("Authorization", None)
                    continue
                if response.status_code in ok:
                    return response
                if response.status_code < 500:
                    raise StackError(f"{method} {path}: {response.status_code} {response.text[:300]}")
                problem = f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as error:
                self._session.headers.pop("Authorization", None)
                problem = str(error)
            if time.monotonic() > deadline:
                raise StackError(f"{method} {path}: no answer for {patience:.0f} s ({problem})")
            time.sleep(2)

    def get(self, path: str, patience_s: float | None = None, **params: Any) -> Any:
        return self.request("GET", path, patience_s=patience_s, params=params).json()

    def health(self) -> dict[str, Any] | None:
        """The monitor health document, or None when the api-server does not answer right now."""
        try:
            response = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5)
            return response.json() if response.ok else None
        except (requests.RequestException, ValueError):
            return None

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> dict[str, Any]:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf)}
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body).json()

    def run(self, dag_id: str, run_id: str, patience_s: float | None = None) -> dict[str, Any]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", patience_s=patience_s)

    def task_instances(
        self, dag_id: str, run_id: str, patience_s: float | None = None
    ) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.get(path, patience_s=patience_s, limit=1000)["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        """Every try of one task instance, the current one included."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        return self.get(f"{path}/tries")["task_instances"]


def healthy(document: Mapping[str, Any] | None) -> bool:
    """Every component of the monitor health document reports healthy."""
    if not document:
        return False
    return all(
        isinstance(part, Mapping) and part.get("status") == "healthy"
        for part in document.values()
        if isinstance(part, Mapping) and "status" in part
    )


class Stack:
    """The clients of one deployment, built from its endpoints."""

    def __init__(self, endpoints: Endpoints, inventory: Sequence[str]) -> None:
        import boto3
        from botocore.config import Config

        self.endpoints, self.inventory = endpoints, list(inventory)
        self.airflow = AirflowClient(
            endpoints.airflow_url, endpoints.airflow_user, endpoints.airflow_password
        )
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoints.s3_endpoint,
            aws_access_key_id=endpoints.s3_access_key,
            aws_secret_access_key=endpoints.s3_secret_key,
            region_name="us-east-1",
            config=Config(
                retries={"max_attempts": 10, "mode": "standard"}, connect_timeout=5, read_timeout=30
            ),
        )

    def forecast(self, series: str = "In", days: int = 7) -> dict[str, Any] | None:
        """What the forecast service serves now; None when it does not answer."""
        try:
            response = requests.get(
                f"{self.endpoints.forecast_url}/forecast", params={"series": series, "days": days}, timeout=5
            )
            return response.json() if response.ok else None
        except (requests.RequestException, ValueError):
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
        run_playbook(self.inventory, "fault.yml", extra)

"""The DAG files as Airflow's dag-processor loads them, in a venv with the hosts' Airflow.

`make dags` runs these with .venv-airflow's pytest and R3E_REQUIRE_AIRFLOW=1; in the
controller's venv (no Airflow) they are not collected, and say so; where Airflow is required but
missing, loading this file fails. Nothing imports Airflow before the dagbag fixture gives it
its settings.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"


def airflow_installed() -> bool:
    try:
        importlib.metadata.distribution("apache-airflow-core")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if not airflow_installed():
    if os.environ.get("R3E_REQUIRE_AIRFLOW") == "1":
        raise RuntimeError("R3E_REQUIRE_AIRFLOW=1 but Airflow is not installed here (make airflow-venv)")
    collect_ignore_glob = ["test_*.py"]

    def pytest_terminal_summary(terminalreporter) -> None:
        terminalreporter.write_line("tests/dags not run: Airflow is not installed here (make dags runs them)")


#: Buckets and connection other than the defaults of r3e_testbed.pipeline.config, so a DAG that
#: ignored its environment would show.
PIPELINE_ENV = {
    "R3E_OBJECT_STORE_CONN_ID": "test_object_store",
    "R3E_DATA_BUCKET": "test-iot-data",
    "R3E_MODELS_BUCKET": "test-models",
}


@pytest.fixture(scope="session")
def shared_wiring() -> dict:
    """The playbooks' shared settings (playbooks/group_vars/all/main.yml)."""
    return yaml.safe_load((REPO / "playbooks/group_vars/all/main.yml").read_text())


@pytest.fixture(scope="session")
def deployed_routes(shared_wiring) -> dict[str, str]:
    """The routes the playbooks hand the DAGs as R3E_DATA_ROUTES."""
    return shared_wiring["pipeline_data_routes"]


@pytest.fixture(scope="session")
def pipeline_env() -> dict[str, str]:
    return dict(PIPELINE_ENV)


@pytest.fixture(scope="session")
def dags_folder() -> Path:
    return DAGS_FOLDER


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("airflow-home")


@pytest.fixture(scope="session")
def dagbag(airflow_home, deployed_routes):
    """The DAG folder loaded the dag-processor's way: a bundle DagBag, the folder on sys.path.

    Airflow gets a throwaway AIRFLOW_HOME and the R3E_* settings, set just while Airflow and the
    DAG files are imported (both read them then).
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_HOME", str(airflow_home))
        env.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS_FOLDER))
        env.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        for name, value in PIPELINE_ENV.items():
            env.setenv(name, value)
        env.setenv("R3E_DATA_ROUTES", json.dumps(deployed_routes))
        from airflow.dag_processing.dagbag import BundleDagBag

        return BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER, bundle_name="dags-folder")


@pytest.fixture(scope="session")
def dags(dagbag) -> dict:
    return dagbag.dags

"""The Airflow stand-in for the tests of the clients (tests/ is on the path: the rootdir conftest)."""

from collections.abc import Iterator

import pytest
from clients.airflow_stand_in import AirflowStandIn


@pytest.fixture
def stand_in() -> Iterator[AirflowStandIn]:
    server = AirflowStandIn()
    yield server
    server.close()
    assert not server.errors, "the stand-in sent answers Airflow would not send:\n" + "\n".join(server.errors)

"""r3e_testbed.clients.airflow against a stand-in api-server: the token, the errors, the retries."""

from __future__ import annotations

import socket

import pytest
from airflow_client.client.models import TaskInstanceCollectionResponse, TaskInstanceState
from clients.airflow_stand_in import Answer, health, task_instance, task_instances
from pydantic import ValidationError

from r3e_testbed.clients import airflow as airflow_module
from r3e_testbed.clients.airflow import Airflow, AirflowError

TASK_INSTANCES = "/api/v2/dags/~/dagRuns/~/taskInstances"


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(airflow_module, "RETRY_WAIT_MIN_S", 0.01)


def client(stand_in, **options) -> Airflow:
    return Airflow(stand_in.url, stand_in.user, stand_in.password, **options)


def list_queued(airflow: Airflow, **options):
    return airflow.call(
        airflow.task_instances.get_task_instances,
        dag_id="~",
        dag_run_id="~",
        queue=["default"],
        state=["queued"],
        limit=1,
        **options,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_call_logs_in_once_and_answers_the_clients_model(stand_in):
    stand_in.route(
        "GET",
        TASK_INSTANCES,
        Answer(200, task_instances([task_instance(state="queued")], total=7)),
        TaskInstanceCollectionResponse,
    )
    with client(stand_in) as airflow:
        first, second = list_queued(airflow), list_queued(airflow)
    assert isinstance(first, TaskInstanceCollectionResponse)
    assert first.total_entries == 7
    assert first.task_instances[0].state == TaskInstanceState.QUEUED
    assert second.total_entries == 7
    assert len(stand_in.calls("POST", "/auth/token")) == 1
    (call, _) = stand_in.calls("GET", TASK_INSTANCES)
    assert call.headers["authorization"] == "Bearer token-1"
    assert call.query == {"queue": ["default"], "state": ["queued"], "limit": ["1"]}


def test_list_arguments_are_sent_as_repeated_parameters(stand_in):
    stand_in.route(
        "GET", TASK_INSTANCES, Answer(200, task_instances([], total=0)), TaskInstanceCollectionResponse
    )
    airflow = client(stand_in)
    airflow.call(
        airflow.task_instances.get_task_instances, dag_id="~", dag_run_id="~", state=["queued", "running"]
    )
    (call,) = stand_in.calls("GET", TASK_INSTANCES)
    assert call.query["state"] == ["queued", "running"]


def test_an_expired_token_is_renewed_once(stand_in):
    stand_in.route(
        "GET", TASK_INSTANCES, Answer(200, task_instances([], total=0)), TaskInstanceCollectionResponse
    )
    airflow = client(stand_in)
    list_queued(airflow)
    stand_in.expire_tokens()
    assert list_queued(airflow).total_entries == 0
    assert len(stand_in.calls("POST", "/auth/token")) == 2
    assert stand_in.calls("GET", TASK_INSTANCES)[-1].headers["authorization"] == "Bearer token-2"


def test_a_401_after_a_new_token_is_an_error(stand_in):
    stand_in.route("GET", TASK_INSTANCES, Answer(401, {"detail": "Invalid JWT token"}))
    with pytest.raises(AirflowError) as refused:
        list_queued(client(stand_in))
    assert refused.value.status == 401
    assert not refused.value.transient
    assert len(stand_in.calls("POST", "/auth/token")) == 2


def test_a_wrong_password_is_refused_and_not_retried(stand_in, fast_retries):
    airflow = Airflow(stand_in.url, stand_in.user, "wrong", patience_s=5)
    with pytest.raises(AirflowError, match="getting a token for 'r3e' failed: HTTP 401") as refused:
        list_queued(airflow)
    assert (refused.value.status, refused.value.transient) == (401, False)
    assert len(stand_in.calls("POST", "/auth/token")) == 1
    assert stand_in.calls("GET", TASK_INSTANCES) == []


def test_login_alone_checks_the_credentials(stand_in):
    client(stand_in).login()
    with pytest.raises(AirflowError) as refused:
        Airflow(stand_in.url, "admin", "admin").login()
    assert refused.value.status == 401


def test_a_server_error_is_retried_within_the_patience(stand_in, fast_retries):
    answers = iter([Answer(503, {"detail": "busy"}), Answer(200, task_instances([], total=3))])
    stand_in.route("GET", TASK_INSTANCES, lambda _: next(answers), TaskInstanceCollectionResponse)
    assert list_queued(client(stand_in, patience_s=5)).total_entries == 3
    assert len(stand_in.calls("GET", TASK_INSTANCES)) == 2


def test_without_patience_a_server_error_is_raised_at_once(stand_in):
    stand_in.route("GET", TASK_INSTANCES, Answer(500, {"detail": "Internal Server Error"}))
    with pytest.raises(AirflowError, match="get_task_instances: HTTP 500") as failed:
        list_queued(client(stand_in))
    assert (failed.value.status, failed.value.transient, failed.value.uncertain) == (500, True, True)
    assert len(stand_in.calls("GET", TASK_INSTANCES)) == 1


def test_patience_runs_out(stand_in, fast_retries):
    stand_in.route("GET", TASK_INSTANCES, Answer(503, {"detail": "busy"}))
    with pytest.raises(AirflowError) as failed:
        list_queued(client(stand_in), patience_s=0.2)
    assert failed.value.status == 503
    assert len(stand_in.calls("GET", TASK_INSTANCES)) >= 2


def test_a_client_error_is_not_retried(stand_in, fast_retries):
    with pytest.raises(AirflowError) as missing:
        list_queued(client(stand_in, patience_s=5))
    assert (missing.value.status, missing.value.transient, missing.value.uncertain) == (404, False, False)
    assert "Not Found" in str(missing.value)
    assert len(stand_in.calls("GET", TASK_INSTANCES)) == 1


def test_no_server_is_no_answer_and_nothing_was_sent():
    airflow = Airflow(f"http://127.0.0.1:{free_port()}", "u", "p", timeout_s=2)
    with pytest.raises(AirflowError, match="no answer") as down:
        list_queued(airflow)
    assert (down.value.status, down.value.answered, down.value.transient) == (None, False, True)
    assert not down.value.uncertain


def test_a_slow_answer_times_out_and_may_have_been_carried_out(stand_in):
    stand_in.route("GET", TASK_INSTANCES, Answer(200, task_instances([], total=0)))
    airflow = client(stand_in, timeout_s=0.3)
    airflow.login()
    stand_in.delay_s = 1.0
    with pytest.raises(AirflowError, match="no answer") as slow:
        list_queued(airflow)
    assert (slow.value.status, slow.value.uncertain, slow.value.transient) == (None, True, True)


def test_an_answer_the_model_does_not_fit_is_an_error_with_its_status(stand_in):
    # The shape of an older API: no task_instances list.
    stand_in.route("GET", TASK_INSTANCES, Answer(200, {"instances": [], "total_entries": 0}))
    with pytest.raises(AirflowError, match="cannot read") as unreadable:
        list_queued(client(stand_in))
    assert (unreadable.value.status, unreadable.value.transient) == (200, False)


def test_an_answer_that_is_not_json_is_an_error_with_its_status(stand_in):
    stand_in.route("GET", TASK_INSTANCES, Answer(200, raw=b"{not json"))
    with pytest.raises(AirflowError, match="cannot read") as unreadable:
        list_queued(client(stand_in))
    assert unreadable.value.status == 200


def test_a_wrong_argument_is_a_bug_not_an_airflow_error(stand_in):
    airflow = client(stand_in)
    with pytest.raises(ValidationError):
        airflow.call(airflow.task_instances.get_task_instances, dag_id="~", dag_run_id="~", limit="one")
    assert stand_in.calls("GET", TASK_INSTANCES) == []


def test_the_environments_proxy_is_not_used(stand_in, monkeypatch):
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    stand_in.route("GET", TASK_INSTANCES, Answer(200, task_instances([], total=0)))
    assert list_queued(client(stand_in)).total_entries == 0


def test_health_needs_no_token_and_is_none_without_an_answer(stand_in):
    stand_in.route("GET", "/api/v2/monitor/health", Answer(200, health()))
    document = client(stand_in).health()
    assert document["scheduler"]["status"] == "healthy"
    assert document["metadatabase"] == {"status": "healthy"}
    assert stand_in.calls("POST", "/auth/token") == []
    assert Airflow(f"http://127.0.0.1:{free_port()}", "u", "p").health() is None


def test_a_tls_failure_is_no_answer(stand_in):
    # https to a plain-HTTP server: the generated client reports it as status 0, which is no answer.
    airflow = Airflow(stand_in.url.replace("http://", "https://"), stand_in.user, stand_in.password)
    airflow.configuration.access_token = "token-0"  # skips the login, which goes through httpx
    with pytest.raises(AirflowError, match="no answer") as failed:
        list_queued(airflow)
    assert (failed.value.status, failed.value.transient) == (None, True)


def test_several_api_servers_a_silent_one_is_passed_over(stand_in, fast_retries):
    stand_in.route(
        "GET", TASK_INSTANCES, Answer(200, task_instances([], total=3)), TaskInstanceCollectionResponse
    )
    dead = f"http://127.0.0.1:{free_port()}"
    with Airflow([dead, stand_in.url], stand_in.user, stand_in.password, patience_s=10) as airflow:
        assert list_queued(airflow).total_entries == 3
        assert airflow.url == stand_in.url
        # It stays on the live one: the next call does not go back to the dead one first.
        assert list_queued(airflow).total_entries == 3
    assert len(stand_in.calls("GET", TASK_INSTANCES)) == 2


def test_an_answering_api_server_is_not_passed_over(stand_in, fast_retries):
    stand_in.route("GET", TASK_INSTANCES, Answer(503, {"detail": "busy"}), TaskInstanceCollectionResponse)
    other = f"http://127.0.0.1:{free_port()}"
    with Airflow([stand_in.url, other], stand_in.user, stand_in.password, patience_s=0.3) as airflow:
        with pytest.raises(AirflowError) as failed:
            list_queued(airflow)
        assert failed.value.status == 503
        assert airflow.url == stand_in.url


def test_no_api_server_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        Airflow([], "admin", "secret")

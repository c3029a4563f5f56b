"""The one way this project talks to Airflow's REST API: the official ``apache-airflow-client``.

:class:`Airflow` holds one authenticated ``ApiClient`` and hands out its typed APIs
(``airflow.assets``, ``airflow.dag_runs``, ...). Every call goes through :meth:`Airflow.call`, which

- fetches a JWT from ``POST /auth/token`` (the one endpoint the generated client does not cover)
  and fetches it again once when a call answers 401 (expired);
- turns the client's and urllib3's exceptions into one :class:`AirflowError` that says whether
  Airflow answered (``status``) and whether the request may have been carried out
  (``uncertain``), which is what a caller needs to decide between retrying and looking first;
  an answer that does not fit the client's model is such an error too, with its status;
- retries, with tenacity, while Airflow does not answer or answers 5xx, for ``patience_s``
  (0: one attempt). One clock: tenacity's, monotonic.
- given several api-servers (a highly available deployment), moves on to the next one when the
  current one does not answer; they share the JWT secret, so the token stays valid.

Airflow is on the private network: requests never go through an HTTP(S)_PROXY of the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import httpx
import tenacity
import urllib3
from airflow_client import client as generated
from airflow_client.client.exceptions import ApiException
from airflow_client.client.rest import RESTResponse

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0
#: Seconds between attempts while Airflow does not answer: from the first, doubling up to the second.
RETRY_WAIT_MIN_S = 1.0
RETRY_WAIT_MAX_S = 5.0


class AirflowError(Exception):
    """A call to Airflow failed.

    ``status``: the HTTP status Airflow answered with, or None when it did not answer.
    ``uncertain``: the request may have reached Airflow and been carried out although it failed
    (a timeout or dropped connection after sending, a 5xx).
    """

    def __init__(self, message: str, *, status: int | None = None, uncertain: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.uncertain = uncertain

    @property
    def answered(self) -> bool:
        return self.status is not None

    @property
    def transient(self) -> bool:
        """Worth trying again as it is: no answer, or a server-side error."""
        return self.status is None or self.status >= 500 or self.status == 429


def _described(operation: Callable[..., Any], error: Exception) -> AirflowError:
    where = getattr(operation, "__name__", "call")
    # Status 0: the client gave up before an answer it could use (e.g. a TLS failure).
    if isinstance(error, ApiException) and error.status:
        detail = (error.body or error.reason or "").strip()[:300]
        status = int(error.status)
        return AirflowError(
            f"{where}: HTTP {status} {detail}".strip(), status=status, uncertain=status >= 500
        )
    # The request never left when the connection was not made (refused, unreachable, timed out).
    not_sent = (urllib3.exceptions.ConnectTimeoutError, httpx.ConnectError, httpx.ConnectTimeout)
    reason = error.reason if isinstance(error, ApiException) else error
    return AirflowError(f"{where}: no answer ({reason})", uncertain=not isinstance(error, not_sent))


def _transient(error: BaseException) -> bool:
    return isinstance(error, AirflowError) and error.transient


class _ApiClient(generated.ApiClient):
    """The generated client, except that an answer it cannot read (not JSON, or not what the
    client's model expects: another Airflow version) raises an ApiException with the answer's
    status instead of pydantic's or json's ValueError, which would look like a wrong argument."""

    def response_deserialize(self, response_data: RESTResponse, response_types_map: Any = None) -> Any:
        try:
            return super().response_deserialize(response_data, response_types_map)
        except ValueError as error:
            summary = " ".join(str(error).split())[:300] or type(error).__name__
            raise ApiException(
                status=response_data.status, reason=f"an answer the client cannot read: {summary}"
            ) from error


class Airflow:
    """An api-server, its token, and the official client's APIs."""

    def __init__(
        self,
        url: str | Sequence[str],
        user: str,
        password: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        patience_s: float = 0.0,
    ) -> None:
        self.urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url)]
        if not self.urls:
            raise ValueError("Airflow needs at least one api-server URL")
        self.user = user
        self._password = password
        self.timeout_s = timeout_s
        self.patience_s = patience_s
        # retries=False: urllib3 raises what happened instead of retrying on its own; this class
        # decides. no_proxy="*": never through the environment's proxy.
        self.configuration = generated.Configuration(host=self.urls[0], retries=False, no_proxy="*")
        self.api_client = _ApiClient(self.configuration)
        self.assets = generated.AssetApi(self.api_client)
        self.dags = generated.DAGApi(self.api_client)
        self.dag_runs = generated.DagRunApi(self.api_client)
        self.task_instances = generated.TaskInstanceApi(self.api_client)
        self.monitor = generated.MonitorApi(self.api_client)
        self.import_errors = generated.ImportErrorApi(self.api_client)

    @property
    def url(self) -> str:
        """The api-server the next call goes to."""
        return self.configuration.host

    def _next_server(self) -> None:
        """Move on to the next api-server (round robin); nothing changes with only one."""
        self.configuration.host = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]

    # --- token ----------------------------------------------------------------------------------

    def login(self) -> None:
        """Fetch a new token (``POST /auth/token``)."""
        try:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": self.user, "password": self._password},
                timeout=self.timeout_s,
                trust_env=False,
            )
        except httpx.HTTPError as error:
            raise _described(self.login, error) from None
        if response.status_code not in (200, 201):
            raise AirflowError(
                f"getting a token for {self.user!r} failed:"
                f" HTTP {response.status_code} {response.text[:200]}",
                status=response.status_code,
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise AirflowError("POST /auth/token: no access_token in the answer", status=response.status_code)
        self.configuration.access_token = token

    # --- calls ----------------------------------------------------------------------------------

    def _once(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("_request_timeout", self.timeout_s)
        for attempt in ("first", "after a new token"):
            if self.configuration.access_token is None:
                self.login()
            try:
                return operation(*args, **kwargs)
            except ApiException as error:
                if error.status == 401 and attempt == "first":
                    self.configuration.access_token = None
                    continue
                raise _described(operation, error) from None
            except urllib3.exceptions.HTTPError as error:
                raise _described(operation, error) from None
        raise AssertionError("unreachable")

    def call(
        self, operation: Callable[..., T], *args: Any, patience_s: float | None = None, **kwargs: Any
    ) -> T:
        """``operation(*args, **kwargs)`` (a method of one of the APIs), authenticated, retried while
        Airflow does not answer or answers 5xx for ``patience_s`` (default: the client's)."""
        patience = self.patience_s if patience_s is None else patience_s
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_delay(patience),
            wait=tenacity.wait_exponential(
                multiplier=RETRY_WAIT_MIN_S, min=RETRY_WAIT_MIN_S, max=RETRY_WAIT_MAX_S
            ),
            retry=tenacity.retry_if_exception(_transient),
            before_sleep=self._after_failure,
            reraise=True,
        )
        return retrying(self._once, operation, *args, **kwargs)

    def _after_failure(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, AirflowError) and not error.answered:
            self._next_server()

    def health(self) -> dict[str, Any] | None:
        """The monitor health document (no token needed), or None when there is no answer now."""
        try:
            return self.monitor.get_health(_request_timeout=min(self.timeout_s, 5.0)).to_dict()
        except (ApiException, urllib3.exceptions.HTTPError, ValueError):
            return None

    def close(self) -> None:
        self.api_client.rest_client.pool_manager.clear()

    def __enter__(self) -> Airflow:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""A small client of Airflow's REST API for the testbed's services: standard library only.

The services (the event bridge, the autoscaler) are installed without dependencies on hosts that
may not run Airflow, so this uses urllib. A token comes from ``POST /auth/token`` and is fetched
again once when a call answers 401 (expired). Airflow is on the private network: requests never
go through an HTTP(S)_PROXY of the environment.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from http import HTTPStatus
from typing import Any


class AirflowRequestError(Exception):
    """A call failed without an answer to act on (Airflow unreachable, timeout, bad answer).

    ``uncertain``: the request may have reached Airflow and been carried out although it failed.
    ``blocking``: for callers that queue work, every request would fail the same way now.
    """

    def __init__(self, message: str, *, blocking: bool = True, uncertain: bool = False) -> None:
        super().__init__(message)
        self.blocking = blocking
        self.uncertain = uncertain


class HTTPStatusError(Exception):
    """Airflow answered with an HTTP error status; the message names the endpoint and status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AirflowApi:
    """Authenticated JSON calls to one api-server."""

    def __init__(self, base_url: str, user: str, password: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self._password = password
        self.timeout = timeout
        self._token: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        where = f"{method} {path.split('?', 1)[0]}"  # errors name the endpoint, not the whole query
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                content = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode("utf-8", "replace")
            raise HTTPStatusError(error.code, f"{where}: HTTP {error.code} {detail}".strip()) from None
        except urllib.error.URLError as error:
            refused = isinstance(error.reason, ConnectionRefusedError)
            raise AirflowRequestError(f"{where}: {error.reason}", uncertain=not refused) from None
        except (TimeoutError, http.client.HTTPException, ConnectionError) as error:
            raise AirflowRequestError(f"{where}: {error!r}", uncertain=True) from None
        try:
            return json.loads(content) if content else None
        except ValueError:
            raise AirflowRequestError(f"{where}: the answer is not JSON", uncertain=True) from None

    def _login(self) -> None:
        try:
            answer = self._call(
                "POST", "/auth/token", {"username": self.user, "password": self._password}, auth=False
            )
        except HTTPStatusError as error:
            raise AirflowRequestError(f"getting a token for {self.user!r} failed: {error}") from None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise AirflowRequestError("POST /auth/token: no access_token in the answer")
        self._token = token

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """An authenticated call; a 401 (expired token) fetches a new token and tries once more."""
        if self._token is None:
            self._login()
        try:
            return self._call(method, path, body)
        except HTTPStatusError as error:
            if error.status != HTTPStatus.UNAUTHORIZED:
                raise
        self._token = None
        self._login()
        return self._call(method, path, body)

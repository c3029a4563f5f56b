"""Poll until something holds, or a deadline passes: the one poll loop of the project (tenacity,
on its monotonic clock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold in time; the message names what was awaited."""


def wait_until(
    probe: Callable[[], T],
    *,
    timeout_s: float,
    every_s: float = 2.0,
    what: str = "the condition",
    ignore: tuple[type[BaseException], ...] = (),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``probe`` every ``every_s`` until it returns something truthy, and return that.

    Exceptions of the ``ignore`` types count as "not yet"; any other exception propagates. After
    ``timeout_s`` (at least one call is always made), :class:`WaitTimeout` names ``what``.
    """
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout_s),
        wait=tenacity.wait_fixed(every_s),
        retry=tenacity.retry_if_result(lambda value: not value) | tenacity.retry_if_exception_type(ignore),
        sleep=sleep,
    )
    try:
        return retrying(probe)
    except tenacity.RetryError as error:
        last = error.last_attempt
        cause = f" (last: {last.exception()!r})" if last.failed else ""
        raise WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}{cause}") from None

"""How many Celery workers a queue should have, and when to change the pool: pure logic, no I/O.

The rule
    ``desired_workers`` is the rule of the Apache Airflow Helm chart's KEDA autoscaler, which asks
    the metadata database for ``ceil((count of queued + running task instances of the queue) /
    worker_concurrency)`` (a ``SELECT ceil(COUNT(*)::decimal / worker_concurrency) FROM
    task_instance`` over the queue's rows in state ``queued`` or ``running``), bounded by the
    minimum and maximum replica counts. It is evaluated per queue. Running task instances are part
    of the count on purpose: a worker busy with a task is needed until the task ends, so the rule
    never asks for fewer workers than the running tasks occupy (unless the maximum caps it).

The decisions
    ``Autoscaler.decide`` is called once per poll with the queue's counts and the pool's size as
    observed now. ``current`` is taken as the truth every time: workers may die, be added or be
    removed behind the autoscaler's back, and it never assumes its last target was reached.

    * Scale out: when the rule asks for more workers than ``current``, the target is the rule's
      value, at once (``scale_out_cooldown_s`` = 0) or once that many seconds have passed since the
      last change. A pool below the minimum is scaled out the same way.
    * Scale in: when the rule asks for fewer workers than ``current``, the pool is shrunk only once
      ``scale_in_cooldown_s`` has passed both since the last change (so a scale out is never
      followed at once by a scale in) and since the rule's value went below the pool without a
      break. The wait for the latter starts again at any poll where the rule's value reaches the
      pool's size (a spike), or where the pool, changed behind our back, no longer exceeds every
      value seen during the wait. The target is the highest value the rule gave during the wait,
      not merely the latest one, and never fewer workers than the running tasks need
      (``ceil(running / concurrency)``), which only matters for a pool above the maximum: such a
      pool comes down through this same path. A pool that has not shrunk after a scale in (its
      workers still draining) is asked again only after another cooldown.
    * Hold: anything else. ``target`` then equals ``current``: the caller leaves the pool alone and
      acts only on ``scale_out`` and ``scale_in``, so a pool still draining after a scale in is not
      resized back.

    A change is a decision that is not a hold. Times are seconds from a monotonic clock; a time
    earlier than the previous call's is an error. Every ``Decision`` carries its inputs and a
    sentence saying why, and ``Decision.as_dict`` gives them as one JSON log line's fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

Action = Literal["scale_out", "scale_in", "hold"]


def _require_int(name: str, value: object) -> None:
    # bool is an int subclass; True workers is a bug, not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")


def _require_seconds(name: str, value: object, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")


def _unbounded_workers(queued: int, running: int, concurrency: int) -> int:
    # Integer ceiling: no float rounding for large counts.
    return -(-(queued + running) // concurrency)


def desired_workers(queued: int, running: int, concurrency: int, minimum: int, maximum: int) -> int:
    """ceil((queued + running) / concurrency), raised to ``minimum`` and capped at ``maximum``."""
    for name, value in (
        ("queued", queued),
        ("running", running),
        ("concurrency", concurrency),
        ("minimum", minimum),
        ("maximum", maximum),
    ):
        _require_int(name, value)
    if queued < 0:
        raise ValueError(f"queued must be >= 0, got {queued}")
    if running < 0:
        raise ValueError(f"running must be >= 0, got {running}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if minimum < 0:
        raise ValueError(f"minimum must be >= 0, got {minimum}")
    if maximum < minimum:
        raise ValueError(f"maximum must be >= minimum ({minimum}), got {maximum}")
    return min(maximum, max(minimum, _unbounded_workers(queued, running, concurrency)))


@dataclass(frozen=True)
class Policy:
    """How one queue's worker pool is scaled."""

    queue: str
    concurrency: int
    minimum: int
    maximum: int
    poll_interval_s: float
    scale_out_cooldown_s: float = 0.0
    scale_in_cooldown_s: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not self.queue.strip():
            raise ValueError(f"queue must be a non-empty name, got {self.queue!r}")
        for name in ("concurrency", "minimum", "maximum"):
            _require_int(name, getattr(self, name))
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.minimum < 0:
            raise ValueError(f"minimum must be >= 0, got {self.minimum}")
        # A queue that can never have a worker would leave its tasks queued forever.
        if self.maximum < 1:
            raise ValueError(f"maximum must be >= 1, got {self.maximum}")
        if self.maximum < self.minimum:
            raise ValueError(f"maximum must be >= minimum ({self.minimum}), got {self.maximum}")
        _require_seconds("poll_interval_s", self.poll_interval_s, positive=True)
        _require_seconds("scale_out_cooldown_s", self.scale_out_cooldown_s, positive=False)
        _require_seconds("scale_in_cooldown_s", self.scale_in_cooldown_s, positive=False)


@dataclass(frozen=True)
class Decision:
    """One poll's outcome with the inputs it was made from."""

    at: float
    queue: str
    queued: int
    running: int
    current: int
    desired: int  # the rule's value
    target: int  # the pool size to set now; equals current for a hold
    action: Action
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """The fields of a JSON log line."""
        return dataclasses.asdict(self)


def _seconds(value: float) -> str:
    return f"{math.ceil(value)} s"


class Autoscaler:
    """Decides, poll after poll, the worker pool size of one queue under a ``Policy``."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._last_now: float | None = None
        self._last_change_at: float | None = None
        # The current wait for a scale in: since when every rule value was below the pool, and
        # the highest of those values.
        self._below_since: float | None = None
        self._below_peak = 0

    @property
    def last_change_at(self) -> float | None:
        """When the last scale out or scale in was decided (None before the first one)."""
        return self._last_change_at

    @property
    def below_since(self) -> float | None:
        """Since when the rule's value has stayed below the pool (None when it is not below)."""
        return self._below_since

    def decide(self, now: float, queued: int, running: int, current: int) -> Decision:
        """The decision for this poll: ``queued`` and ``running`` task instances of the queue,
        ``current`` workers in its pool, all observed at ``now`` (monotonic seconds)."""
        _require_seconds("now", now, positive=False)
        if self._last_now is not None and now < self._last_now:
            raise ValueError(f"now must not go backwards: got {now} after {self._last_now}")
        _require_int("current", current)
        if current < 0:
            raise ValueError(f"current must be >= 0, got {current}")
        policy = self.policy
        desired = desired_workers(queued, running, policy.concurrency, policy.minimum, policy.maximum)
        self._last_now = now

        def decision(target: int, action: Action, reason: str) -> Decision:
            if action != "hold":
                self._last_change_at = now
            return Decision(
                at=float(now),
                queue=policy.queue,
                queued=queued,
                running=running,
                current=current,
                desired=desired,
                target=target,
                action=action,
                reason=reason,
            )

        demand = f"{self._describe_demand(queued, running, desired)}, {current} in the pool"
        if desired > current:
            self._below_since = None
            wait = self._cooldown_left(now, self._last_change_at, policy.scale_out_cooldown_s)
            if wait > 0:
                return decision(current, "hold", f"{demand}; cooldown: scale out allowed in {_seconds(wait)}")
            return decision(desired, "scale_out", f"{demand}: scale out to {desired}")

        if desired == current:
            self._below_since = None
            return decision(current, "hold", f"{demand}: nothing to change")

        # desired < current. The wait restarts when a value it holds would not fit the pool as it
        # is now, e.g. because the pool shrank behind our back.
        if self._below_since is None or self._below_peak >= current:
            self._below_since = now
            self._below_peak = desired
        else:
            self._below_peak = max(self._below_peak, desired)
        wait = max(
            self._cooldown_left(now, self._below_since, policy.scale_in_cooldown_s),
            self._cooldown_left(now, self._last_change_at, policy.scale_in_cooldown_s),
        )
        if wait > 0:
            return decision(current, "hold", f"{demand}; cooldown: scale in allowed in {_seconds(wait)}")

        needed_by_running = _unbounded_workers(0, running, policy.concurrency)
        target = min(current, max(self._below_peak, needed_by_running))
        if target == current:
            return decision(current, "hold", f"{demand}; its {running} running tasks need all {current}")
        reason = f"{demand}; at most {self._below_peak} needed for {_seconds(now - self._below_since)}"
        if target > self._below_peak:
            reason += f", {target} kept for the {running} running tasks"
        return decision(target, "scale_in", f"{reason}: scale in to {target}")

    def _describe_demand(self, queued: int, running: int, desired: int) -> str:
        policy = self.policy
        unbounded = _unbounded_workers(queued, running, policy.concurrency)
        text = (
            f"{queued} queued + {running} running tasks at concurrency {policy.concurrency} "
            f"need {unbounded} workers"
        )
        if unbounded < desired:
            text += f" (raised to the minimum {desired})"
        elif unbounded > desired:
            text += f" (capped at the maximum {desired})"
        return text

    @staticmethod
    def _cooldown_left(now: float, since: float | None, cooldown_s: float) -> float:
        return 0.0 if since is None else max(0.0, since + cooldown_s - now)

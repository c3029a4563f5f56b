"""The autoscaler's rule and decisions (r3e_testbed.autoscaler.rule), over simulated timelines."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Any

import pytest

from r3e_testbed.autoscaler.rule import Autoscaler, Decision, Policy, desired_workers

CONCURRENCY = 4
COOLDOWN = 120.0
POLL = 10.0


def make_policy(**overrides: Any) -> Policy:
    fields: dict[str, Any] = {
        "queue": "default",
        "concurrency": CONCURRENCY,
        "minimum": 1,
        "maximum": 10,
        "poll_interval_s": POLL,
        "scale_in_cooldown_s": COOLDOWN,
    }
    fields.update(overrides)
    return Policy(**fields)


def tasks_for(workers: int) -> int:
    """Queued tasks that fill exactly ``workers`` workers."""
    return workers * CONCURRENCY


class Pool:
    """A worker pool that follows every change at once, as the caller would apply it."""

    def __init__(self, autoscaler: Autoscaler, size: int) -> None:
        self.autoscaler = autoscaler
        self.size = size

    def poll(self, now: float, queued: int, running: int = 0) -> Decision:
        decision = self.autoscaler.decide(now, queued, running, self.size)
        if decision.action != "hold":
            self.size = decision.target
        return decision


def polls(start: float, stop: float) -> list[float]:
    """Poll times from start up to and including stop."""
    return [start + POLL * i for i in range(int((stop - start) // POLL) + 1)]


# --- the rule ----------------------------------------------------------------------------------

RULE_CASES = [
    # queued, running, concurrency, minimum, maximum, expected
    pytest.param(0, 0, 16, 0, 10, 0, id="no tasks, minimum 0"),
    pytest.param(0, 0, 16, 2, 10, 2, id="no tasks gives the minimum"),
    pytest.param(1, 0, 16, 0, 10, 1, id="one task needs a worker"),
    pytest.param(16, 0, 16, 0, 10, 1, id="exactly one worker's worth"),
    pytest.param(32, 0, 16, 0, 10, 2, id="exactly divisible"),
    pytest.param(17, 0, 16, 0, 10, 2, id="one task more rounds up"),
    pytest.param(10, 6, 16, 0, 10, 1, id="queued plus running exactly divisible"),
    pytest.param(10, 7, 16, 0, 10, 2, id="running tasks count"),
    pytest.param(0, 33, 16, 0, 10, 3, id="running tasks alone"),
    pytest.param(5, 0, 16, 3, 10, 3, id="raised to the minimum"),
    pytest.param(160, 0, 16, 0, 10, 10, id="exactly the maximum"),
    pytest.param(161, 0, 16, 0, 10, 10, id="capped at the maximum"),
    pytest.param(7, 0, 1, 0, 10, 7, id="concurrency 1"),
    pytest.param(0, 0, 4, 3, 3, 3, id="minimum equals maximum, idle"),
    pytest.param(100, 0, 4, 3, 3, 3, id="minimum equals maximum, busy"),
]


@pytest.mark.parametrize(("queued", "running", "concurrency", "minimum", "maximum", "expected"), RULE_CASES)
def test_rule_table(queued, running, concurrency, minimum, maximum, expected):
    assert desired_workers(queued, running, concurrency, minimum, maximum) == expected


def test_rule_gives_the_fewest_workers_that_hold_every_task():
    for concurrency in (1, 3, 16):
        for queued in range(0, 40):
            for running in (0, 1, 5, 16):
                workers = desired_workers(queued, running, concurrency, 0, 1000)
                assert workers * concurrency >= queued + running
                assert (workers - 1) * concurrency < queued + running or workers == 0


BAD_RULE_ARGUMENTS = [
    pytest.param({"queued": -1}, "queued", "-1", id="negative queued"),
    pytest.param({"running": -2}, "running", "-2", id="negative running"),
    pytest.param({"concurrency": 0}, "concurrency", "0", id="zero concurrency"),
    pytest.param({"concurrency": -4}, "concurrency", "-4", id="negative concurrency"),
    pytest.param({"minimum": -1}, "minimum", "-1", id="negative minimum"),
    pytest.param({"minimum": 5, "maximum": 4}, "maximum", "4", id="maximum below minimum"),
]


@pytest.mark.parametrize(("overrides", "name", "value"), BAD_RULE_ARGUMENTS)
def test_rule_rejects_bad_arguments_by_name_and_value(overrides, name, value):
    arguments = {"queued": 3, "running": 1, "concurrency": 4, "minimum": 0, "maximum": 10, **overrides}
    with pytest.raises(ValueError, match=rf"^{name} .*got {value}$"):
        desired_workers(**arguments)


@pytest.mark.parametrize(("name", "value"), [("queued", 1.5), ("concurrency", True), ("maximum", "10")])
def test_rule_rejects_non_integers(name, value):
    arguments = {"queued": 3, "running": 1, "concurrency": 4, "minimum": 0, "maximum": 10, name: value}
    with pytest.raises(TypeError, match=rf"^{name} must be an int"):
        desired_workers(**arguments)


# --- the policy --------------------------------------------------------------------------------

BAD_POLICIES = [
    pytest.param({"queue": ""}, "queue", id="empty queue"),
    pytest.param({"queue": "  "}, "queue", id="blank queue"),
    pytest.param({"concurrency": 0}, "concurrency", id="zero concurrency"),
    pytest.param({"minimum": -1}, "minimum", id="negative minimum"),
    pytest.param({"minimum": 0, "maximum": 0}, "maximum", id="maximum 0"),
    pytest.param({"minimum": 3, "maximum": 2}, "maximum", id="maximum below minimum"),
    pytest.param({"poll_interval_s": 0}, "poll_interval_s", id="zero poll interval"),
    pytest.param({"poll_interval_s": -1.0}, "poll_interval_s", id="negative poll interval"),
    pytest.param({"poll_interval_s": math.nan}, "poll_interval_s", id="nan poll interval"),
    pytest.param({"scale_out_cooldown_s": -1.0}, "scale_out_cooldown_s", id="negative scale-out cooldown"),
    pytest.param({"scale_in_cooldown_s": -0.5}, "scale_in_cooldown_s", id="negative scale-in cooldown"),
    pytest.param({"scale_in_cooldown_s": math.inf}, "scale_in_cooldown_s", id="endless scale-in cooldown"),
]


@pytest.mark.parametrize(("overrides", "name"), BAD_POLICIES)
def test_policy_rejects_bad_fields_by_name(overrides, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        make_policy(**overrides)


@pytest.mark.parametrize(("name", "value"), [("concurrency", 2.0), ("poll_interval_s", "10")])
def test_policy_rejects_wrong_types_by_name(name, value):
    with pytest.raises(TypeError, match=rf"^{name} must be"):
        make_policy(**{name: value})


def test_policy_accepts_the_edges_and_is_frozen():
    policy = make_policy(
        minimum=0, maximum=1, poll_interval_s=0.5, scale_out_cooldown_s=0, scale_in_cooldown_s=0
    )
    assert (policy.minimum, policy.maximum, policy.scale_in_cooldown_s) == (0, 1, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.maximum = 5  # type: ignore[misc]


def test_default_policy_scales_out_at_once_but_waits_to_scale_in():
    policy = Policy(queue="default", concurrency=CONCURRENCY, minimum=1, maximum=10, poll_interval_s=POLL)
    pool = Pool(Autoscaler(policy), size=1)
    assert pool.poll(0.0, tasks_for(4)).action == "scale_out"
    assert pool.poll(POLL, tasks_for(8)).action == "scale_out"
    assert pool.poll(2 * POLL, 0).action == "hold"


# --- decisions over time -----------------------------------------------------------------------


def test_scale_out_is_immediate_even_right_after_a_change():
    pool = Pool(Autoscaler(make_policy()), size=1)
    first = pool.poll(0.0, tasks_for(5))
    assert (first.action, first.target) == ("scale_out", 5)
    second = pool.poll(1.0, tasks_for(8))
    assert (second.action, second.target) == ("scale_out", 8)
    assert pool.size == 8


def test_scale_out_cooldown_delays_the_next_scale_out():
    cooldown = 30.0
    pool = Pool(Autoscaler(make_policy(scale_out_cooldown_s=cooldown)), size=1)
    # The first change never waits: there is no earlier one.
    assert pool.poll(0.0, tasks_for(5)).action == "scale_out"
    early = pool.poll(10.0, tasks_for(8))
    assert (early.action, early.target, early.current) == ("hold", 5, 5)
    assert early.reason.endswith(f"cooldown: scale out allowed in {math.ceil(cooldown - 10.0)} s")
    due = pool.poll(cooldown, tasks_for(8))
    assert (due.action, due.target) == ("scale_out", 8)


def test_scale_in_only_after_the_cooldown():
    pool = Pool(Autoscaler(make_policy()), size=1)
    assert pool.poll(0.0, tasks_for(5)).action == "scale_out"
    drop_at = POLL
    allowed_at = drop_at + COOLDOWN
    for now in polls(drop_at, allowed_at - POLL):
        decision = pool.poll(now, tasks_for(1))
        assert (decision.action, decision.target) == ("hold", 5), now
        assert decision.reason.endswith(f"cooldown: scale in allowed in {math.ceil(allowed_at - now)} s")
    decision = pool.poll(allowed_at, tasks_for(1))
    assert (decision.action, decision.target, decision.desired) == ("scale_in", 1, 1)
    assert pool.poll(allowed_at + POLL, tasks_for(1)).action == "hold"


def test_cooldown_reason_rounds_the_wait_up_to_whole_seconds():
    pool = Pool(Autoscaler(make_policy()), size=5)
    pool.poll(0.0, tasks_for(1))
    decision = pool.poll(77.5, tasks_for(1))
    assert decision.reason.endswith(f"scale in allowed in {math.ceil(COOLDOWN - 77.5)} s")


@pytest.mark.parametrize("spike_workers", [5, 7], ids=["spike to the pool size", "spike above the pool"])
def test_a_spike_during_the_cooldown_restarts_it(spike_workers):
    pool = Pool(Autoscaler(make_policy()), size=1)
    pool.poll(0.0, tasks_for(5))
    for now in polls(POLL, 50.0):
        pool.poll(now, tasks_for(1))
    spike = pool.poll(60.0, tasks_for(spike_workers))
    assert spike.action == ("hold" if spike_workers == 5 else "scale_out")
    size_after_spike = pool.size
    drop_again_at = 70.0
    # These polls include POLL + COOLDOWN, when the scale in was due before the spike.
    for now in polls(drop_again_at, drop_again_at + COOLDOWN - POLL):
        assert pool.poll(now, tasks_for(1)).action == "hold", now
    decision = pool.poll(drop_again_at + COOLDOWN, tasks_for(1))
    assert (decision.action, decision.current, decision.target) == ("scale_in", size_after_spike, 1)


def test_scale_in_goes_to_the_highest_demand_seen_during_the_wait():
    pool = Pool(Autoscaler(make_policy()), size=6)
    pool.poll(0.0, tasks_for(4))
    for now in polls(POLL, COOLDOWN - POLL):
        assert pool.poll(now, tasks_for(1)).action == "hold"
    first = pool.poll(COOLDOWN, tasks_for(1))
    assert (first.action, first.desired, first.target) == ("scale_in", 1, 4)
    # The next step waits a full cooldown after the change.
    restart_at = COOLDOWN + POLL
    for now in polls(restart_at, restart_at + COOLDOWN - POLL):
        assert pool.poll(now, tasks_for(1)).action == "hold", now
    second = pool.poll(restart_at + COOLDOWN, tasks_for(1))
    assert (second.action, second.current, second.target) == ("scale_in", 4, 1)


def test_pool_still_draining_after_a_scale_in_is_asked_again_only_after_the_cooldown():
    autoscaler = Autoscaler(make_policy())
    autoscaler.decide(0.0, tasks_for(1), 0, current=5)
    assert autoscaler.decide(COOLDOWN, tasks_for(1), 0, current=5).target == 1
    # Its workers are finishing their tasks: the pool still says 5.
    for now in polls(COOLDOWN + POLL, 2 * COOLDOWN - POLL):
        decision = autoscaler.decide(now, tasks_for(1), 0, current=5)
        assert (decision.action, decision.target) == ("hold", 5), now
        assert decision.reason.endswith(f"scale in allowed in {math.ceil(2 * COOLDOWN - now)} s")
    again = autoscaler.decide(2 * COOLDOWN, tasks_for(1), 0, current=5)
    assert (again.action, again.target) == ("scale_in", 1)


def test_pool_shrunk_behind_its_back_is_scaled_out_at_once():
    autoscaler = Autoscaler(make_policy())
    assert autoscaler.decide(0.0, tasks_for(5), 0, current=1).target == 5
    # Three workers died: the pool says 2, not the 5 last asked for.
    decision = autoscaler.decide(POLL, tasks_for(5), 0, current=2)
    assert (decision.action, decision.current, decision.target) == ("scale_out", 2, 5)


def test_pool_grown_behind_its_back_is_scaled_in_after_the_cooldown():
    autoscaler = Autoscaler(make_policy())
    assert autoscaler.decide(0.0, tasks_for(2), 0, current=2).action == "hold"
    grown_at = POLL
    for now in polls(grown_at, grown_at + COOLDOWN - POLL):
        assert autoscaler.decide(now, tasks_for(2), 0, current=6).action == "hold", now
    decision = autoscaler.decide(grown_at + COOLDOWN, tasks_for(2), 0, current=6)
    assert (decision.action, decision.current, decision.target) == ("scale_in", 6, 2)


def test_pool_shrunk_below_the_waits_peak_restarts_the_wait():
    autoscaler = Autoscaler(make_policy())
    autoscaler.decide(0.0, tasks_for(4), 0, current=6)
    autoscaler.decide(POLL, tasks_for(1), 0, current=6)
    # The pool lost workers on its own: 3 is no longer above the 4 the wait has seen.
    shrunk_at = 60.0
    for now in polls(shrunk_at, shrunk_at + COOLDOWN - POLL):
        decision = autoscaler.decide(now, tasks_for(1), 0, current=3)
        assert decision.action == "hold", now
        assert "scale in allowed in" in decision.reason
    decision = autoscaler.decide(shrunk_at + COOLDOWN, tasks_for(1), 0, current=3)
    assert (decision.action, decision.target) == ("scale_in", 1)


def test_scale_in_keeps_the_workers_running_tasks_need():
    # A pool above the maximum (grown by hand) whose workers are busy.
    autoscaler = Autoscaler(make_policy(maximum=4))
    running = 24
    needed = math.ceil(running / CONCURRENCY)
    autoscaler.decide(0.0, 0, running, current=8)
    decision = autoscaler.decide(COOLDOWN, 0, running, current=8)
    assert decision.desired == 4
    assert (decision.action, decision.target) == ("scale_in", needed)
    assert f"{needed} kept for the {running} running tasks" in decision.reason
    # Still busy after the next wait: nothing can go.
    autoscaler.decide(COOLDOWN + POLL, 0, running, current=needed)
    busy = autoscaler.decide(2 * COOLDOWN + POLL, 0, running, current=needed)
    assert (busy.action, busy.target) == ("hold", needed)
    # The tasks end: down to the maximum.
    done = autoscaler.decide(2 * COOLDOWN + 2 * POLL, 0, 2, current=needed)
    assert (done.action, done.target) == ("scale_in", 4)


def test_pool_below_the_minimum_is_scaled_out_with_no_tasks():
    decision = Autoscaler(make_policy(minimum=2)).decide(0.0, 0, 0, current=0)
    assert (decision.action, decision.target) == ("scale_out", 2)
    assert "raised to the minimum 2" in decision.reason


def test_random_timeline_never_flaps_and_keeps_running_tasks():
    rng = random.Random(20240601)
    policy = make_policy(minimum=1, maximum=12, scale_in_cooldown_s=60.0)
    pool = Pool(Autoscaler(policy), size=3)
    history: list[tuple[float, int, int]] = []  # (now, desired, pool size)
    last_change_at: float | None = None
    level = 3
    actions = {"scale_out": 0, "scale_in": 0, "hold": 0}
    for step in range(3000):
        now = step * POLL
        if rng.random() < 0.08:
            level = rng.randint(0, 14)
        if rng.random() < 0.02:
            pool.size = rng.randint(0, 16)  # behind the autoscaler's back
        queued, running = tasks_for(level), rng.randint(0, 2 * CONCURRENCY)
        size = pool.size
        decision = pool.poll(now, queued, running)
        actions[decision.action] += 1
        assert decision.desired == desired_workers(
            queued, running, CONCURRENCY, policy.minimum, policy.maximum
        )
        history.append((now, decision.desired, size))
        if decision.action == "hold":
            assert decision.target == size
        elif decision.action == "scale_out":
            assert size < decision.target == decision.desired
        else:
            assert decision.desired <= decision.target < size
            assert decision.target >= min(size, math.ceil(running / CONCURRENCY))
            assert last_change_at is None or now - last_change_at >= policy.scale_in_cooldown_s
            window = [entry for entry in history if entry[0] >= now - policy.scale_in_cooldown_s]
            assert all(desired < pool_size for _, desired, pool_size in window)
            assert decision.target >= max(desired for _, desired, _ in window)
        if decision.action != "hold":
            last_change_at = now
    assert min(actions.values()) >= 20, actions


# --- inputs and logging ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "queued", "running", "current"),
    [(42.5, 7, 3, 1), (1000.0, 0, 0, 4), (3.0, 50, 9, 2)],
)
def test_decisions_carry_their_inputs(now, queued, running, current):
    policy = make_policy(queue="training")
    decision = Autoscaler(policy).decide(now, queued, running, current)
    assert (decision.at, decision.queue, decision.queued, decision.running, decision.current) == (
        now,
        "training",
        queued,
        running,
        current,
    )
    assert decision.desired == desired_workers(queued, running, CONCURRENCY, policy.minimum, policy.maximum)
    assert f"{queued} queued + {running} running tasks" in decision.reason
    fields = decision.as_dict()
    assert list(fields) == [field.name for field in dataclasses.fields(Decision)]
    assert fields == {field.name: getattr(decision, field.name) for field in dataclasses.fields(Decision)}
    assert json.loads(json.dumps(fields)) == fields


def test_decision_time_is_a_float_even_from_an_int_clock():
    decision = Autoscaler(make_policy()).decide(12, 0, 0, 1)
    assert isinstance(decision.at, float)
    assert decision.at == 12


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"current": -1}, "current"),
        ({"queued": -3}, "queued"),
        ({"running": -1}, "running"),
        ({"now": math.nan}, "now"),
        ({"now": -1.0}, "now"),
    ],
)
def test_decide_rejects_bad_inputs_by_name(arguments, name):
    inputs = {"now": 0.0, "queued": 0, "running": 0, "current": 1, **arguments}
    with pytest.raises(ValueError, match=rf"^{name} must"):
        Autoscaler(make_policy()).decide(**inputs)


def test_time_must_not_go_backwards_but_may_stand_still():
    autoscaler = Autoscaler(make_policy())
    autoscaler.decide(100.0, 0, 0, 1)
    autoscaler.decide(100.0, 0, 0, 1)
    with pytest.raises(ValueError, match=r"^now must not go backwards: got 99\.0 after 100\.0$"):
        autoscaler.decide(99.0, 0, 0, 1)

"""r3e_testbed.clients.wait: the one poll-until-deadline loop."""

from __future__ import annotations

import time

import pytest

from r3e_testbed.clients.wait import WaitTimeout, wait_until


class Probe:
    """Answers from a list, one per call; an exception in the list is raised."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> object:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_returns_the_first_truthy_value_sleeping_between_calls():
    probe, naps = Probe(None, [], {"state": "success"}), []
    assert wait_until(probe, timeout_s=60, every_s=3, sleep=naps.append) == {"state": "success"}
    assert probe.calls == 3
    assert naps == [3, 3]


def test_ignored_exceptions_count_as_not_yet():
    probe = Probe(ConnectionError("refused"), 0, "ready")
    assert wait_until(probe, timeout_s=60, ignore=(ConnectionError,), sleep=lambda _: None) == "ready"
    assert probe.calls == 3


def test_other_exceptions_propagate_at_once():
    probe = Probe(KeyError("state"), "ready")
    with pytest.raises(KeyError):
        wait_until(probe, timeout_s=60, ignore=(ConnectionError,), sleep=lambda _: None)
    assert probe.calls == 1


def test_a_timeout_names_what_was_awaited_and_the_last_error():
    probe = Probe(None, ConnectionError("refused"))
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"waiting for the run to finish \(last: ConnectionError") as late:
        wait_until(probe, timeout_s=0.2, every_s=0.01, what="the run to finish", ignore=(ConnectionError,))
    assert isinstance(late.value, TimeoutError)
    assert 0.2 <= time.monotonic() - started < 5
    assert probe.calls >= 2


def test_a_timeout_after_falsy_answers_says_only_what():
    with pytest.raises(WaitTimeout) as late:
        wait_until(Probe(False), timeout_s=0.05, every_s=0.01, what="a scale out decision")
    assert str(late.value) == "timed out after 0.05 s waiting for a scale out decision"


def test_the_probe_runs_at_least_once_even_without_time():
    probe = Probe("at once")
    assert wait_until(probe, timeout_s=0) == "at once"

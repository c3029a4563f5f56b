"""The background ticker the samplers of an experiment share."""

import time

from r3e_testbed.experiments.background import Periodic


class Counting(Periodic):
    period_s = 0.01

    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


def test_a_periodic_ticks_while_its_block_runs_and_stops_after_it():
    with Counting() as counting:
        time.sleep(0.2)
    after_exit = counting.ticks
    time.sleep(0.05)
    assert after_exit >= 2
    assert counting.ticks == after_exit
    assert not counting._thread.is_alive()


def test_a_periodic_ticks_once_at_once_even_for_a_short_block():
    class Slow(Counting):
        period_s = 60.0

    with Slow() as slow:
        pass
    assert slow.ticks == 1

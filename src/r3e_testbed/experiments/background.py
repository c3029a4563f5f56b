"""Observations that run beside an experiment: a thread that ticks once a period from `with`
until the block ends, so a fault can run in the foreground while they sample."""

from __future__ import annotations

import threading
from typing import Self


class Periodic:
    """Calls `tick` at once and then every `period_s` seconds, in a daemon thread, from entering
    the `with` block until leaving it; subclasses say what one tick observes."""

    period_s = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while True:
            self.tick()
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

"""Follow the SeaweedFS filer's persisted metadata log from the bridge's checkpoint.

The filer records every metadata change (under ``/topics/.system/log/``) and its
``SubscribeMetadata`` stream replays them from any time on; ``weed filer.meta.tail`` is that stream
as JSON, started ``-timeAgo`` before now. The follower starts it at the stored checkpoint minus a
margin (the tool's clock and the filer's may differ) and skips every message at or before the
checkpoint, so a restart of the bridge, of the filer or of Airflow delivers exactly the messages
not handled yet. ``-untilTimeAgo`` makes a bounded run that ends once it has caught up: the
bridge runs one of those before it reconciles, then follows live.

A message is handed to ``accept(ts_ns, parsed)``, which must store the event and move the
checkpoint to ``ts_ns`` in one transaction (``EventStore.add``).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable

from r3e_testbed.services.event_bridge.events import (
    FilerStream,
    Ignored,
    ObjectEvent,
    PayloadError,
    parse_filer_event,
)

log = logging.getLogger("r3e_testbed.event_bridge")

SOURCE = "seaweedfs"
#: weed prints this (on stdout) when the stream ends with an error, then exits 0.
WEED_ERROR_PREFIX = "tail "


class FilerLog:
    """Runs ``weed filer.meta.tail`` from the checkpoint and feeds its messages to ``accept``."""

    def __init__(
        self,
        weed: str,
        filer: str,
        path_prefix: str,
        checkpoint: Callable[[], int | None],
        accept: Callable[[int, ObjectEvent | Ignored | None], None],
        *,
        margin_s: float = 60.0,
    ) -> None:
        self.weed = weed
        self.filer = filer
        self.path_prefix = path_prefix
        self.checkpoint = checkpoint
        self.accept = accept
        self.margin_ns = int(margin_s * 1e9)
        self.last_error: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def command(self, *, until_now: bool, now_ns: int | None = None) -> list[str]:
        """The weed command line that replays from the checkpoint (minus the margin)."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        since_ns = (self.checkpoint() or now_ns) - self.margin_ns
        command = [
            self.weed,
            "-logtostderr",  # weed's own log to stderr (the journal), not to files in /tmp
            "filer.meta.tail",
            f"-filer={self.filer}",
            f"-pathPrefix={self.path_prefix}",
            f"-timeAgo={max(now_ns - since_ns, 1)}ns",
        ]
        return [*command, "-untilTimeAgo=1ns"] if until_now else command

    def handle(self, message: dict, handled_ns: int) -> int:
        """One message; returns the new handled mark (messages at or before it are skipped)."""
        try:
            ts_ns, parsed = parse_filer_event(message)
        except PayloadError as error:
            # Nothing to deliver from it; the reconcile finds the object if it was one.
            log.error("unreadable filer log message (left to the reconcile): %s", error)
            return handled_ns
        if ts_ns <= handled_ns:
            return handled_ns
        self.accept(ts_ns, parsed)
        return ts_ns

    def run(self, *, until_now: bool) -> bool:
        """One run of weed until it exits (caught up, the filer went away, or ``stop``); True when
        it ended without an error."""
        command = self.command(until_now=until_now)
        try:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                # Its own session: a signal to the bridge's process group (a terminal's Ctrl-C)
                # reaches the bridge, which then ends weed after handling what it read.
                start_new_session=True,
            )
        except OSError as error:
            self.last_error = f"cannot run {self.weed}: {error}"
            log.error("%s", self.last_error)
            return False
        with self._lock:
            self._process = process
        stderr = threading.Thread(target=self._log_stderr, args=(process,), daemon=True)
        stderr.start()
        stream, failed = FilerStream(), False
        handled_ns = self.checkpoint() or 0
        assert process.stdout is not None
        for line in process.stdout:
            for item in stream.feed(line):
                if isinstance(item, str):
                    failed = failed or item.startswith(WEED_ERROR_PREFIX)
                    self.last_error = item if item.startswith(WEED_ERROR_PREFIX) else self.last_error
                    log.warning("weed: %s", item)
                else:
                    handled_ns = self.handle(item, handled_ns)
        process.wait()
        stderr.join(5)
        with self._lock:
            self._process = None
        if not failed and process.returncode == 0:
            self.last_error = None
        return not failed and process.returncode == 0

    def _log_stderr(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            # glog's lines start with their severity: I(nfo), W(arning), E(rror), F(atal).
            if line.strip():
                log.log(logging.INFO if line[:1] in "WEF" else logging.DEBUG, "weed: %s", line.strip())

    def stop(self) -> None:
        """End the run in progress (its messages so far are handled)."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()

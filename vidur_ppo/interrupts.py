"""SIGTERM and Ctrl-C during training: finish the current update, write a checkpoint, say how to
resume in one line, exit with 128 + the signal. A second Ctrl-C aborts at once.

Only the process that installed the handler acts (and prints): a worker forked while it was installed
inherits it and ignores the signal; its parent closes it in order after the checkpoint."""

from __future__ import annotations

import logging
import os
import signal
from typing import Optional

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """Raised at a safe point after a stop signal; `signum` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """`with StopSignals() as stop:` ... `stop()` is True once SIGTERM/SIGINT arrived; `stop.check()`
    raises StopRequested then (for safe points outside the update loop)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous = {}
        self._owner = os.getpid()

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._owner:
            return  # a forked worker: one line, from the parent
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: abort now
            return  # already stopping: said once
        self.signum = signum
        log.warning(f"{signal.Signals(signum).name}: stopping after the current step, then writing a checkpoint "
                    "(Ctrl-C again aborts)")

    def __enter__(self) -> "StopSignals":
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def __call__(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        if self.signum is not None:
            raise StopRequested(self.signum)

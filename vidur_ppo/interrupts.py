"""SIGTERM and Ctrl-C during training: finish the current update, write a checkpoint, say how to
resume in one line, exit with 128 + the signal. A second Ctrl-C aborts at once."""

from __future__ import annotations

import signal
import sys
from typing import Optional


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

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: abort now
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after the current step, then writing a checkpoint "
              "(Ctrl-C again aborts)", file=sys.stderr)

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

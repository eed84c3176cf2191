"""Ctrl-C that waits for a clean point.

Inside :class:`StopRequest`, the first SIGINT only sets a flag; the training loop looks at
it between steps and then raises ``KeyboardInterrupt``, so the weights and the optimizer are
never caught half-updated. A second Ctrl-C interrupts at once. Outside the main thread
(where signal handlers cannot be set) nothing changes.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["StopRequest"]


class StopRequest:
    """A context manager turning the first SIGINT into ``requested = True``."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(signal.SIGINT, previous)
            self._installed = False

"""Graceful stop: the first Ctrl-C / SIGTERM asks the loop to save state and exit at the next step boundary;
a second Ctrl-C interrupts at once."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class StopRequest:
    """A flag the loop polls between optimizer steps."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = name
        logger.warning("%s received: saving state and stopping after the current step (Ctrl-C again to abort)", name)


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Install SIGINT/SIGTERM handlers for the duration of the loop (main thread only)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

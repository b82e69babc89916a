"""What every long-running component's ``main`` needs: one stop event that
SIGINT and SIGTERM reach, so a service manager and Ctrl-C stop it the same way."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """Install SIGINT/SIGTERM handlers that set (and return) ``stop``. Main thread only."""
    event = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return event

"""Stop signals (SIGTERM, SIGUSR1) during start-up: remembered, not fatal and not ignored.

Until the training loop installs its own handler (``callbacks.preemption.PreemptionCheckpoint``),
the default action of SIGUSR1 kills the process without a word and Lightning's SIGTERM handler
exits 0. ``unianimate`` calls :func:`remember` first thing; the callback asks :func:`received`
when training starts and stops with one line and a non-zero exit code.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_received: list[int] = []


def _remember(signum: int, frame: Any) -> None:
    _received.append(signum)


def remember() -> Callable[[], None]:
    """Record the stop signals from now on; returns the function that restores the previous handlers.
    Outside the main thread (where Python cannot set handlers) it does nothing."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {signum: signal.signal(signum, _remember) for signum in STOP_SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def received() -> int | None:
    """The first stop signal recorded since :func:`remember`, if any."""
    return _received[0] if _received else None

"""Which signals stop a foreground ``ticslab`` command, and the handler that unwinds it.

``ticslab up``, ``demo`` and ``experiment`` share these; they live apart from the launcher
and the dashboard so that ``ticslab experiment`` loads neither Textual nor the launcher's
command line just to handle SIGTERM.
"""

from __future__ import annotations

import signal
from types import FrameType


def stop_signals() -> list[signal.Signals]:
    """Ctrl+C, a polite kill, and the terminal closing (no SIGHUP on Windows)."""
    return [signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]


def leave(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGHUP: unwind like Ctrl+C (``finally`` blocks stop the stack), exiting
    with the signal's conventional status."""
    raise SystemExit(128 + signum)

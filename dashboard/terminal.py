"""Fill the terminal whatever it said first.

Textual reads the terminal's size once at start and then on SIGWINCH. ``docker-compose run``
(and ``docker run -t``) starts the process on a pty of 80x24 and resizes it a moment later: a
resize that lands between Textual's first read and its SIGWINCH handler is never seen, so the
dashboard stays 80x24 in a 150-column window (docker/cli#1529 added a retry loop to the client
for the same race). So the app compares the kernel's size of the pty with its own every
``CHECK_SECONDS`` (one ioctl) and posts a Resize when they differ.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from textual.app import App
from textual.geometry import Size

CHECK_SECONDS = 0.5


def terminal_size() -> Size | None:
    """The size the kernel has for the terminal Textual draws on (stdout, as its driver
    reads it); None when stdout is not a terminal."""
    stdout = sys.__stdout__
    if stdout is None:
        return None
    try:
        columns, lines = os.get_terminal_size(stdout.fileno())
    except (AttributeError, ValueError, OSError):
        return None
    return Size(columns, lines) if columns and lines else None


def reads_the_terminal(app: App[Any]) -> bool:
    """The app draws on a terminal whose pty size is the truth: not headless (tests), not
    in a browser (textual-serve's size comes over its WebSocket), not inline, and not told
    its size in-band by the terminal (mode 2048: then the pty's may lag behind it)."""
    driver = app._driver
    if driver is None or app.is_headless or app.is_web or app.is_inline:
        return False
    return not getattr(driver, "_in_band_window_resize", False)

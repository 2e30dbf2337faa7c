"""Background loops that never die silently: a crash is logged, put on the timeline and the
loop started again, so a bug in a health check or in discovery cannot quietly freeze what a
class is watching."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

RESTART_SECONDS = 1.0
logger = logging.getLogger("ticslab.balancer")

CrashReport = Callable[[str], None]


async def restarting(
    name: str,
    loop: Callable[[], Awaitable[None]],
    report: CrashReport,
    pause: float = RESTART_SECONDS,
) -> None:
    """Run ``loop`` until it returns or is cancelled; when it raises, log the traceback,
    ``report`` one line, and run it again after ``pause`` seconds."""
    while True:
        try:
            await loop()
            return
        except Exception as error:  # a bug, by definition: the loops handle what they expect
            logger.exception("%s failed; restarting in %g s", name, pause)
            report(f"{name} failed ({type(error).__name__}: {error}); restarted in {pause:g} s")
        await asyncio.sleep(pause)

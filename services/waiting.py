"""Waiting for a part to get ready, bounded by a deadline: the client waiting for the
balancer's ``/health``, ``ticslab up`` waiting for each process it starts and an experiment
waiting for every server UP all poll through ``wait_ready``, so none waits forever, gives up
before its time, or sleeps past its deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# A probe says whether the part is ready: None when it is, else why not yet (shown on giving up).
Probe = Callable[[], Awaitable[str | None]]


async def wait_ready(
    probe: Probe,
    seconds: float,
    every: float,
    on_first_miss: Callable[[str], None] | None = None,
) -> str | None:
    """Run ``probe`` every ``every`` seconds until it says ready (None is returned) or
    ``seconds`` have passed (the last probe's reason is returned). The probe runs once more at
    the deadline; ``on_first_miss`` hears the first reason when there is time to try again.
    A probe may raise to stop the wait at once (a process that exited)."""
    deadline = time.monotonic() + seconds
    missed = False
    while True:
        reason = await probe()
        if reason is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return reason
        if not missed and on_first_miss is not None:
            on_first_miss(reason)
        missed = True
        await asyncio.sleep(min(every, remaining))

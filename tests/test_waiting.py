"""services/waiting.py: the one bounded wait behind the client's wait for ``/health``,
``ticslab up``'s wait for each process and an experiment's wait for every server UP."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.waiting import wait_ready


async def test_ready_after_misses_returns_none_and_tells_the_first_miss_once() -> None:
    answers = iter(["starting", "still starting", None])
    heard: list[str] = []

    async def probe() -> str | None:
        return next(answers)

    assert await wait_ready(probe, 5.0, 0.01, heard.append) is None
    assert heard == ["starting"]


async def test_never_ready_gives_the_last_reason_at_the_deadline_not_sooner_or_much_later() -> None:
    tries: list[float] = []

    async def probe() -> str | None:
        tries.append(time.monotonic())
        return f"try {len(tries)}"

    began = time.monotonic()
    reason = await wait_ready(probe, 0.3, 0.05)
    took = time.monotonic() - began
    assert reason == f"try {len(tries)}"
    assert 0.3 <= took < 2.0  # bounded by the deadline (generous on a loaded machine)
    assert tries[-1] - began >= 0.3  # the last look is at the deadline, not one poll before


async def test_a_probe_that_raises_ends_the_wait_at_once() -> None:
    async def probe() -> str | None:
        raise ProcessLookupError("exited")

    with pytest.raises(ProcessLookupError):
        await asyncio.wait_for(wait_ready(probe, 30.0, 0.05), 5)


async def test_ready_at_once_tells_no_miss() -> None:
    heard: list[str] = []

    async def probe() -> str | None:
        return None

    assert await wait_ready(probe, 0.0, 0.05, heard.append) is None
    assert heard == []

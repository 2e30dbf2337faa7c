"""Where this server's writes wait their turn: in the event loop, not in worker threads.

A write waits for the shared file lock, which another process may hold for seconds (or
forever, if it is frozen). Waiting in a worker thread would let 40 queued writes take every
thread of the pool, and then no read or ``/health`` could run. So writes queue here, on an
asyncio lock, and only the one at the front occupies a thread.

A hold (``POST /admin/quiesce``) takes the same turn for a few seconds, and the store's
writer lock, which every taker of the file lock in this process holds first (a read that
must wait out another server's append too), so this process holds no file lock while it is
paused (``docker pause``, SIGSTOP).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# A hold waits this long for a write in progress; a longer one is waiting for another
# process's file lock, and the caller is better told than kept waiting.
HOLD_WAIT_SECONDS = 1.5


class QueueTimeout(Exception):
    """A write waited too long for the writes before it (they wait for the file lock)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"waited more than {seconds:g} s for the writes before it")
        self.seconds = seconds


class WriteQueue:
    """One write at a time per process; holds keep writes out for a while."""

    def __init__(self, writer_lock: threading.Lock) -> None:
        self._turn = asyncio.Lock()
        self._writer_lock = writer_lock
        self._held_until = 0.0  # monotonic end of a hold; 0: no hold
        self._release: asyncio.TimerHandle | None = None

    @asynccontextmanager
    async def turn(self, wait: float) -> AsyncIterator[None]:
        """This write's turn, or :class:`QueueTimeout` after ``wait`` seconds in the queue."""
        try:
            await asyncio.wait_for(self._turn.acquire(), wait)
        except TimeoutError:
            raise QueueTimeout(wait) from None
        try:
            yield
        finally:
            self._turn.release()

    async def hold(self, seconds: float, wait: float = HOLD_WAIT_SECONDS) -> float | None:
        """Keep writes out for ``seconds`` (a call during a hold extends it). Answers the
        seconds the hold has left, or None when a write did not finish within ``wait``.

        The release is a loop timer on the monotonic clock, which keeps running while the
        process is frozen, so a hold is over the moment a frozen process resumes."""
        if not self._held_until:
            deadline = time.monotonic() + wait
            try:
                await asyncio.wait_for(self._turn.acquire(), wait)
            except TimeoutError:
                return None
            left = max(0.0, deadline - time.monotonic())
            if not await self._take_writer_lock(left):
                self._turn.release()
                return None
        self._held_until = max(self._held_until, time.monotonic() + seconds)
        self._schedule_release()
        return self._held_until - time.monotonic()

    async def _take_writer_lock(self, wait: float) -> bool:
        """The store's writer lock, from a thread. Cancelled meanwhile (the caller gave up),
        the turn is given back and a lock the thread takes later is released, else every
        later write would wait for a turn nobody gives back."""
        taking = asyncio.ensure_future(asyncio.to_thread(self._writer_lock.acquire, True, wait))
        try:
            return await asyncio.shield(taking)
        except BaseException:
            self._turn.release()
            taking.add_done_callback(self._release_if_taken)
            raise

    def _release_if_taken(self, taking: asyncio.Future[bool]) -> None:
        if not taking.cancelled() and taking.exception() is None and taking.result():
            self._writer_lock.release()

    def end_hold(self) -> bool:
        """End a hold now (the process was resumed early); False when there was none."""
        if not self._held_until:
            return False
        self._held_until = time.monotonic()
        self._schedule_release()
        return True

    def _schedule_release(self) -> None:
        if self._release:
            self._release.cancel()
        delay = max(0.0, self._held_until - time.monotonic())
        self._release = asyncio.get_running_loop().call_later(delay, self._end)

    def _end(self) -> None:
        self._held_until = 0.0
        self._release = None
        self._writer_lock.release()
        self._turn.release()

"""Active health checks: ``GET /health`` on every server, each on its own timer.

A fresh connection per check (as HAProxy does) so a server that stopped accepting is seen at
once. Beside a passing check, every few seconds, the server's own ``/errors/stats`` is fetched
for ``/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from errno import ECONNRESET, EPIPE
from typing import TYPE_CHECKING

import aiohttp

from services.balancer.background import CrashReport, restarting
from services.balancer.server import Server
from services.balancer.upstream import ConnectFailed, CutShort
from services.common import KEYS_HEADER, KEYS_SHARED, MAINT, NEW, error_message

# Of a failing check's body, this much is read: enough for the server's own reason (a task
# server says why its storage cannot be used), never a whole body a server chose to send.
CHECK_BODY_BYTES = 4096

if TYPE_CHECKING:
    from services.balancer.config import BalancerConfig

# A check's verdict: the server, passed, the HTTP status (None: no answer), the detail shown
# in last_check and events, and its duration in ms. The balancer applies it (fall/rise).
Verdict = Callable[[Server, bool, int | None, str, float], None]


def connection_failure_text(error: BaseException, timeout: float) -> str:
    """Words for why a connection failed, as they appear in events and ``last_check``: of the
    health checks (aiohttp) and of the proxy (upstream.py) alike."""
    if isinstance(error, aiohttp.ClientConnectorError | ConnectFailed):
        if isinstance(error.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect: {error.os_error.strerror or error.os_error}"
    if isinstance(error, TimeoutError):
        return f"timeout after {timeout:g} s"
    if isinstance(error, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return "connection reset"
    if isinstance(error, aiohttp.ClientOSError) and error.errno in (ECONNRESET, EPIPE):
        return "connection reset"  # a reset while the answer was being read
    if isinstance(error, aiohttp.ClientPayloadError | CutShort):
        return "answer cut short"
    return f"connection error: {error.__class__.__name__}"


class HealthChecker:
    """One asyncio task per server; ``wake`` runs a check now. Verdicts go to ``on_verdict``
    and a crashed check loop is reported to ``on_crash`` and restarted (app.py wires both)."""

    def __init__(self, config: BalancerConfig, on_verdict: Verdict, on_crash: CrashReport) -> None:
        self.config = config
        self.on_verdict = on_verdict
        self.on_crash = on_crash
        self._session: aiohttp.ClientSession | None = None
        self._tasks: dict[Server, asyncio.Task[None]] = {}
        self._wakers: dict[Server, asyncio.Event] = {}

    async def start(self, servers: list[Server]) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            timeout=aiohttp.ClientTimeout(total=self.config.check_timeout),
        )
        for server in servers:
            self.watch(server)

    def forget_address(self, server: Server) -> None:
        """``server`` has a new container (a rollout): resolve its name again, not in 10 s."""
        if self._session is not None and isinstance(self._session.connector, aiohttp.TCPConnector):
            self._session.connector.clear_dns_cache(server.host, server.port)

    async def stop(self) -> None:
        """Cancel every check and wait for them to end before closing their session."""
        tasks = list(self._tasks.values())
        for server in list(self._tasks):
            self.unwatch(server)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def watch(self, server: Server) -> None:
        if self._session is None:  # not started yet: start() will pick it up
            return
        self._wakers[server] = asyncio.Event()
        name = f"health check of {server.name}"
        checks = restarting(name, lambda: self._run(server), self.on_crash)
        self._tasks[server] = asyncio.create_task(checks, name=name)

    def unwatch(self, server: Server) -> None:
        task = self._tasks.pop(server, None)
        self._wakers.pop(server, None)
        if task is not None:
            task.cancel()

    def wake(self, server: Server) -> None:
        waker = self._wakers.get(server)
        if waker is not None:
            waker.set()

    async def _run(self, server: Server) -> None:
        waker = self._wakers[server]
        while True:
            started = time.monotonic()
            if server.state != MAINT:
                passed = await self.check(server)
                stats_age = time.monotonic() - server.server_errors_at
                if passed and stats_age >= self.config.server_stats_interval:
                    await self.fetch_server_errors(server)
            with contextlib.suppress(TimeoutError):
                # Fixed rate: the interval runs from the start of a check, not from its end.
                pause = started + self._interval(server) - time.monotonic()
                await asyncio.wait_for(waker.wait(), max(0.0, pause))
            waker.clear()

    def _interval(self, server: Server) -> float:
        """Faster while the verdict is changing (HAProxy's ``fastinter``) or still to come."""
        changing = server.consecutive_failures if server.healthy else server.consecutive_successes
        if changing or server.state == NEW:
            return min(self.config.fast_check_interval, self.config.check_interval)
        return self.config.check_interval

    async def check(self, server: Server) -> bool:
        """One ``GET /health``; 200 passes, anything else (or no answer) fails."""
        assert self._session is not None
        started = time.perf_counter()
        status: int | None = None
        try:
            async with self._session.get(server.url + self.config.check_path) as response:
                body = await head_of(response.content, CHECK_BODY_BYTES)
                status = response.status
                declared = response.headers.get(KEYS_HEADER, "").strip().lower()
            ok = status == 200
            if ok:
                server.honours_keys = declared == KEYS_SHARED
            detail = f"{status} {response.reason or ''}".strip()
            if not ok and (why := error_message(body)):
                detail += f": {why[:200]}"
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            ok = False
            detail = connection_failure_text(error, self.config.check_timeout)
        duration_ms = (time.perf_counter() - started) * 1000
        if server in self._tasks:  # not removed while we waited
            self.on_verdict(server, ok, status, detail, duration_ms)
        return ok

    async def fetch_server_errors(self, server: Server) -> None:
        """Keep the server's own ``/errors/stats`` (errors it saw without us, too)."""
        assert self._session is not None
        server.server_errors_at = time.monotonic()
        try:
            async with self._session.get(server.url + "/errors/stats") as response:
                data = await response.json(content_type=None)
                if response.status == 200 and isinstance(data, dict) and "total_errors" in data:
                    server.server_errors = data
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            pass  # the next round tries again; /status shows the last good copy


async def head_of(body: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of a body, as they arrive."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await body.read(limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

"""Fault modes: break a running server on purpose, where containers cannot be stopped.

``error`` answers 500 to a fraction of requests, ``latency`` delays them, ``hang`` holds them
until the mode changes or its bound passes (then the mode clears itself), ``unhealthy`` makes
``/health`` answer 503 while the API keeps working, ``nolock`` creates tasks without the file
lock, so concurrent creates lose tasks (``nolock.py``; the route applies it, not this
middleware). The admin, metrics, statistics and info routes are never touched, so a broken
server can still be watched and repaired.

``error`` and ``latency`` are faults of the traffic, ``nolock`` one of the writes: they leave
``/health`` alone, so the class sees a server that fails (or is slow, or loses tasks) on part
of its requests stay in rotation while its errors are counted. ``hang`` takes ``/health`` too
(a hung process answers nothing), and ``unhealthy`` only it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common import FAULT_DEFAULTS, FAULT_MODES
from services.taskserver.validation import InputError
from services.web import asked_language, json_error

EXEMPT_PATHS = ("/admin/", "/metrics", "/errors/stats", "/info")
HEALTH_PATH = "/health"
NOLOCK = "nolock"
TRAFFIC_FAULTS = ("error", "latency", NOLOCK)  # they leave /health alone
NOLOCK_WARNING = (
    "creates read and write the tasks without the file lock (tasks.json) or a transaction "
    "(PostgreSQL): concurrent creates LOSE TASKS "
    "(on purpose, the race-condition lesson); Idempotency-Key is ignored"
)
MAX_LATENCY_MS = 60_000
MAX_HANG_SECONDS = 600.0


class FaultState:
    """The current mode of one server and its parameters."""

    def __init__(self) -> None:
        self.mode = "none"
        self.params: dict[str, Any] = {}
        self._until = 0.0  # monotonic deadline of a hang
        self._changed = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        """``{"mode": ...}`` plus the parameters; a hang also says how long it has left."""
        self._expire_hang()
        description = {"mode": self.mode, **self.params}
        if self.mode == "hang":
            description["remaining_seconds"] = round(self._until - time.monotonic(), 3)
        elif self.mode == NOLOCK:
            description["warning"] = NOLOCK_WARNING
        return description

    def set(self, body: dict[str, Any]) -> dict[str, Any]:
        """Switch to the mode described by ``body`` (validated); releases held requests."""
        mode = body.get("mode")
        if mode not in FAULT_MODES:
            raise InputError("bad_fault_mode", modes=", ".join(FAULT_MODES))
        params: dict[str, Any] = {}
        if mode == "error":
            params["rate"] = _number(body, "rate", 0.0, 1.0)
        elif mode == "latency":
            params["ms"] = int(_number(body, "ms", 0, MAX_LATENCY_MS))
        elif mode == "hang":
            params["max_seconds"] = _number(body, "max_seconds", 0.0, MAX_HANG_SECONDS)
        self.mode, self.params = mode, params
        self._until = time.monotonic() + params.get("max_seconds", 0.0)
        self._changed.set()
        self._changed = asyncio.Event()
        return self.describe()

    async def delay(self) -> None:
        """Wait as the mode says: a fixed latency, or a hang until it changes or expires."""
        if self.mode == "latency":
            await asyncio.sleep(self.params["ms"] / 1000)
        elif self.mode == "hang":
            remaining = self._until - time.monotonic()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
            self._expire_hang()

    def should_fail(self) -> bool:
        return self.mode == "error" and random.random() < self.params["rate"]

    def _expire_hang(self) -> None:
        if self.mode == "hang" and time.monotonic() >= self._until:
            self.mode, self.params = "none", {}


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float:
    value = body.get(name, FAULT_DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InputError("bad_fault_number", name=name, low=low, high=high)
    return value


class FaultMiddleware:
    """Applies the current fault mode before a request reaches its route."""

    def __init__(self, app: ASGIApp, faults: FaultState, lang: str) -> None:
        self.app = app
        self.faults = faults
        self.lang = lang  # of the answers to requests without Accept-Language

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        await self.faults.delay()
        if self.faults.should_fail():
            rate = self.faults.params["rate"]
            lang = asked_language(Headers(scope=scope), self.lang)
            response = json_error(500, code="fault_injected", lang=lang, rate=rate)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _exempt(self, path: str) -> bool:
        if path.startswith(EXEMPT_PATHS):
            return True
        return path == HEALTH_PATH and self.faults.mode in TRAFFIC_FAULTS

"""The workload: a list of calls sent through the balancer by a few workers, each timed.

Every call is bounded (a timeout per call, and no new call after the deadline), so an
experiment ends even when a server hangs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.common import percentile

CALL_TIMEOUT = 10.0  # seconds; past it the call counts as failed (status 0)


@dataclass(frozen=True)
class Call:
    """One request: sent by client number ``client`` (its own connections and address)."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    client: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one call got: its start (seconds into the load), latency, status (0: no answer),
    the server that answered (``X-Upstream-Server``) and the task it created, if any."""

    call: Call
    started: float
    seconds: float
    status: int
    server: str = ""
    task: dict[str, Any] | None = None


def run_load(
    base_url: str,
    calls: Iterable[Call],
    concurrency: int,
    sources: Sequence[str | None] = (None,),
    max_seconds: float = 60.0,
    actions: Sequence[tuple[float, Callable[[], object]]] = (),
) -> list[Outcome]:
    """Send ``calls`` with ``concurrency`` workers; client number i sends from ``sources[i]``
    (a loopback address, or None for the default one). Calls not begun by ``max_seconds``
    are not sent. Each ``(seconds, action)`` of ``actions`` runs (in a thread) that long
    after the first call, e.g. killing a server under load."""
    return asyncio.run(_run(base_url, calls, concurrency, sources, max_seconds, actions))


async def _run(
    base_url: str,
    calls: Iterable[Call],
    concurrency: int,
    sources: Sequence[str | None],
    max_seconds: float,
    actions: Sequence[tuple[float, Callable[[], object]]],
) -> list[Outcome]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = [
        httpx.AsyncClient(
            base_url=base_url,
            timeout=CALL_TIMEOUT,
            transport=httpx.AsyncHTTPTransport(local_address=source, limits=limits),
        )
        for source in sources
    ]
    queue = iter(calls)
    outcomes: list[Outcome] = []
    began = time.monotonic()

    async def worker() -> None:
        for call in queue:
            if time.monotonic() - began > max_seconds:
                return
            outcomes.append(await _send(clients[call.client], call, began))

    async def act(seconds: float, action: Callable[[], object]) -> None:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(action)

    try:
        await asyncio.gather(
            *(worker() for _ in range(concurrency)),
            *(act(seconds, action) for seconds, action in actions),
        )
    finally:
        for client in clients:
            await client.aclose()
    return sorted(outcomes, key=lambda outcome: outcome.started)


async def _send(client: httpx.AsyncClient, call: Call, began: float) -> Outcome:
    start = time.monotonic()
    try:
        answer = await client.request(call.method, call.path, json=call.body, headers=call.headers)
    except httpx.HTTPError:
        return Outcome(call, start - began, time.monotonic() - start, 0)
    task = None
    if answer.status_code == 201:
        try:
            task = answer.json()
        except ValueError:
            task = None
    server = answer.headers.get("x-upstream-server", "")
    return Outcome(call, start - began, time.monotonic() - start, answer.status_code, server, task)


def latency_ms(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """p50, p95 and p99 in milliseconds (nearest rank, as /status computes them)."""
    values = sorted(outcome.seconds * 1000 for outcome in outcomes)
    return {f"p{q}_ms": round(percentile(values, q), 2) for q in (50, 95, 99)}


def shares(outcomes: Sequence[Outcome], servers: Sequence[str]) -> dict[str, float]:
    """The fraction of answered calls each server answered."""
    answered = [outcome.server for outcome in outcomes if outcome.server]
    total = len(answered) or 1
    return {name: round(answered.count(name) / total, 4) for name in servers}


def failed(outcome: Outcome) -> bool:
    """Not what a client wanted: no answer, or an error status."""
    return outcome.status == 0 or outcome.status >= 400


def failures_by_status(outcomes: list[Outcome]) -> dict[str, int]:
    """How many failed, by status (``no answer`` when there was none): a report's table."""
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        if failed(outcome):
            key = str(outcome.status) if outcome.status else "no answer"
            statuses[key] = statuses.get(key, 0) + 1
    return statuses

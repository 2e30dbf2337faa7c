"""The balancer's last ten minutes, one sample per wall-clock second (``GET /history``).

A sampler reads, once a second, the cumulative counters the proxy already keeps (requests,
tries, errors by type, each server's latency ring) and stores their differences since the
previous second. Nothing is added to the hot path, and a dashboard started late, or a second
one, reads the same past as the first (docs/design/balancer.md, "History").
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.balancer.background import restarting
from services.balancer.server import LATENCY_WINDOW, ServerStats
from services.common import clock_stepped_back, percentile

if TYPE_CHECKING:
    from services.balancer.balancer import Balancer

INTERVAL_SECONDS = 1
CAPACITY = 600  # samples: ten minutes, for a chart of five


@dataclass(frozen=True)
class Mark:
    """What one server's counters read at a tick. ``stats`` is the object they were read
    from: a reset, or a server removed and added again, replaces it."""

    stats: ServerStats
    tries: int
    answers: int


@dataclass(frozen=True)
class Reading:
    """The balancer's cumulative counters at a tick."""

    resets: int
    requests: int
    errors: dict[str, int]
    servers: dict[str, Mark]


def read(balancer: Balancer) -> Reading:
    marks = {
        server.name: Mark(server.stats, server.stats.tries, server.stats.latency_count)
        for server in balancer.servers
    }
    return Reading(balancer.resets, balancer.requests_total, balancer.errors.by_type, marks)


def delta(new: int, old: int, reset: bool) -> int:
    """What a counter gained since the last tick. After a reset (or should it ever go
    backwards) it counts from zero again, so its new value is the delta: never negative,
    and what the second counted before the reset is lost."""
    return new if reset or new < old else new - old


def latest(stats: ServerStats, count: int) -> list[float]:
    """The latencies of the last ``count`` answers, oldest first; at most the ring's
    ``LATENCY_WINDOW``, so in a second with more answers than that only the last ones."""
    count = min(count, LATENCY_WINDOW, stats.latency_count)
    end = stats.latency_count
    return [stats.latencies[i % LATENCY_WINDOW] for i in range(end - count, end)]


def p95_ms(latencies: list[float]) -> float | None:
    """Nearest-rank p95 in milliseconds, as ``/status`` rounds it; None without answers."""
    if not latencies:
        return None
    return round(percentile(sorted(latencies), 95) * 1000, 3)


class TrafficHistory:
    """A ring of per-second samples (at most ``capacity``, oldest dropped), filled by
    ``run``; each sample is stored as ``/history`` sends it."""

    def __init__(
        self,
        balancer: Balancer,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.balancer = balancer
        self.capacity = capacity
        self.clock = clock
        self.samples: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._last = read(balancer)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        sampler = restarting("history sampler", self.run, self.balancer.record_failure)
        self._task = asyncio.create_task(sampler, name="history sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self) -> None:
        """Tick just after each wall-clock second ends. The counters read are kept between
        ticks, so a restarted loop (background.py) or a late tick loses no count: a tick more
        than a second late puts all it read in its last second, the ones before it have no
        sample."""
        while True:
            now = self.clock()
            await asyncio.sleep(math.floor(now) + 1 - now)
            self.tick(self.clock())

    def tick(self, now: float) -> None:
        """Store the sample of the second that ended before ``now``. When that second is
        not after the last sample's (the sleep woke a hair early) nothing is stored and the
        next tick counts it; when it is far behind, the clock was stepped back (NTP, a
        suspended laptop's resync): the samples are from another timeline, and are dropped,
        so the history goes on from now instead of stopping for the length of the step."""
        second = math.floor(now) - INTERVAL_SECONDS
        if self.samples and clock_stepped_back(second, self.samples[-1]["t"]):
            self.samples.clear()
        if self.samples and second <= self.samples[-1]["t"]:
            return
        reading = read(self.balancer)
        last = self._last
        reset = reading.resets != last.resets
        servers: dict[str, dict[str, Any]] = {}
        every: list[float] = []
        for server in self.balancer.servers:
            mark = reading.servers[server.name]
            before = last.servers.get(server.name)
            fresh = before is None or before.stats is not mark.stats
            old = before or mark
            latencies = latest(mark.stats, delta(mark.answers, old.answers, fresh))
            every += latencies
            servers[server.name] = {
                "tries": delta(mark.tries, old.tries, fresh),
                "p95_ms": p95_ms(latencies),
                "state": server.state,
            }
        errors = {
            kind: gained
            for kind, count in reading.errors.items()
            if (gained := delta(count, last.errors.get(kind, 0), reset))
        }
        self.samples.append(
            {
                "t": second,
                "requests": delta(reading.requests, last.requests, reset),
                "servers": servers,
                "errors": errors,
                "p95_ms": p95_ms(every),
            }
        )
        self._last = reading

    def since(self, after: float | None = None) -> list[dict[str, Any]]:
        """Samples whose second ``t`` is after ``after`` (all without it), oldest first."""
        if after is None:
            return list(self.samples)
        return [sample for sample in self.samples if sample["t"] > after]

    def payload(self, after: float | None = None) -> dict[str, Any]:
        """The ``/history`` answer (docs/api.md). ``servers``: the servers now, in
        ``/status`` order, then any the returned samples name that has since left."""
        samples = self.since(after)
        names = dict.fromkeys(server.name for server in self.balancer.servers)
        for sample in samples:
            names.update(dict.fromkeys(sample["servers"]))
        return {
            "interval_seconds": INTERVAL_SECONDS,
            "capacity": self.capacity,
            "now": round(self.clock(), 3),
            "servers": list(names),
            "samples": samples,
        }

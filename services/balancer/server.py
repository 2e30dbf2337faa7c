"""One backend as the balancer sees it: its state and the counters kept on every request.

Everything here runs on the event loop's single thread, so plain integers suffice, and the
per-request work is a handful of additions: percentiles, rates and shares are computed only
when someone asks (``/status``, ``/metrics``).
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections import Counter
from typing import Any

from yarl import URL

from services.common import (
    DOWN,
    UP,
    percentile,
    utc_now_iso,
)

DEFAULT_WEIGHT = 1  # and MAX_WEIGHT (services/common.py): HAProxy's 0-256
# A slow start begins at this share of the weight (never 0: the server must get some
# traffic to warm up) and grows linearly to all of it.
SLOW_START_FLOOR = 0.05

# Upper bounds (seconds) of the Prometheus latency histogram buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_WINDOW = 1024  # percentiles over the last 1024 answers, as HAProxy's averages
# ... of at most this age (seconds): an idle server shows no p95 rather than an old one.
LATENCY_MAX_AGE = 60.0
RATE_WINDOW = 10  # seconds, for requests per second and traffic share
MIN_RATE_SECONDS = 1.0  # a rate is never divided by less: one request just after a reset
# Peak EWMA (response_time algorithm): decay time constant, the cost of a server not yet
# measured, and the latency a 5xx answer counts as, so fast errors do not attract traffic.
# The value decays with time even when no answer comes (as Finagle's does), so a server that
# was slow and is no longer picked becomes cheap again and is tried now and then: with 1 s,
# one that measured 300 ms is tried again after about 5 s beside a 1.5 ms one.
EWMA_TAU = 1.0
EWMA_UNMEASURED = 0.005
EWMA_ERROR_PENALTY = 0.25


def ramped_weight(weight: int, ramp_from: float | None, slow_start: float, now: float) -> float:
    """``weight`` as a slow start begun at ``ramp_from`` (None: none) has ramped it by ``now``."""
    if ramp_from is None:
        return float(weight)
    progress = (now - ramp_from) / slow_start
    return float(weight) if progress >= 1.0 else weight * max(SLOW_START_FLOOR, progress)


def decayed_cost(ewma: float, ewma_at: float, now: float) -> float:
    """A peak EWMA measured at ``ewma_at``, decayed to ``now`` (toward 0)."""
    return ewma * math.exp(-(now - ewma_at) / EWMA_TAU)


class RateWindow:
    """Events in one-second slots over the last ``RATE_WINDOW`` seconds, and the time those
    slots really cover, so a steady workload reads back its own rate."""

    def __init__(self, started: float | None = None) -> None:
        self._started = time.monotonic() if started is None else started
        self._seconds = [0] * RATE_WINDOW
        self._counts = [0] * RATE_WINDOW

    def add(self, now: float) -> None:
        second = int(now)
        slot = second % RATE_WINDOW
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += 1

    def total(self, now: float) -> int:
        """Events in the last ``RATE_WINDOW`` seconds (the current partial one included)."""
        oldest = int(now) - RATE_WINDOW + 1
        return sum(c for s, c in zip(self._seconds, self._counts, strict=True) if s >= oldest)

    def per_second(self, now: float) -> float:
        """Events per second over what ``total`` counts: the nine whole seconds before this
        one plus this one so far (9 to 10 s), or since the counting began if that is later."""
        covered = now - max(int(now) - RATE_WINDOW + 1, self._started)
        return self.total(now) / max(MIN_RATE_SECONDS, covered)


class ServerStats:
    """Counters for one server since start (or the last reset)."""

    def __init__(self) -> None:
        self.tries = 0  # tries sent to this server, retries of a client request included
        self.responses = [0, 0, 0, 0, 0]  # by class: 1xx .. 5xx
        self.errors: Counter[str] = Counter()  # course error type -> count
        self.retries = 0  # failed here, sent again: elsewhere, or on a new connection
        self.connect_failures = 0
        self.timeouts = 0
        self.resets = 0
        self.rate = RateWindow()
        self.latencies = [0.0] * LATENCY_WINDOW
        self.answered = [0.0] * LATENCY_WINDOW  # monotonic time of each answer in latencies
        self.latency_count = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def record_latency(self, seconds: float, now: float | None = None) -> None:
        slot = self.latency_count % LATENCY_WINDOW
        self.latencies[slot] = seconds
        self.answered[slot] = time.monotonic() if now is None else now
        self.latency_count += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def percentiles_ms(self, now: float | None = None) -> dict[str, float | None]:
        """Nearest rank over the last ``LATENCY_WINDOW`` answers of the last
        ``LATENCY_MAX_AGE`` seconds, as the client reports them; None when there are none."""
        oldest = (time.monotonic() if now is None else now) - LATENCY_MAX_AGE
        kept = min(self.latency_count, LATENCY_WINDOW)
        pairs = zip(self.latencies[:kept], self.answered[:kept], strict=True)
        window = sorted(seconds for seconds, at in pairs if at >= oldest)
        if not window:
            return {"p50": None, "p95": None, "p99": None}
        return {f"p{q}": round(percentile(window, q) * 1000, 3) for q in (50, 95, 99)}


class Server:
    """A backend: name, URL, state (``SERVER_STATES``, common.py), health-check memory and stats."""

    def __init__(self, name: str, url: str, state: str = UP) -> None:
        self.name = name
        self.name_bytes = name.encode()  # the X-Upstream-Server value, encoded once
        self.url = url.rstrip("/")
        parsed = URL(self.url)
        # Every upstream URL is built from these three, never from what a client sent.
        self.scheme, self.host, self.port = parsed.scheme, parsed.raw_host or "", parsed.port
        # Declared by its health checks: it deduplicates Idempotency-Key across the pool, so
        # a POST that may have reached it can be sent again (docs/design/balancer.md).
        self.honours_keys = False
        # Configured servers start UP, as HAProxy's do (the first checks correct it quickly);
        # one found later starts NEW (no verdict yet), as Envoy's ignore_new_hosts_until_first_hc.
        self.state = state
        self.state_reason: str | None = None  # why it is in this state (its last state event)
        self.healthy = state == UP  # the health verdict, kept while DRAIN hides it from the state
        self.since = time.monotonic()
        self.since_iso = utc_now_iso()
        self.announced = False  # its first verdict (or any change) is on the timeline
        self.downtime_before = 0.0  # seconds DOWN before the current DOWN period
        self.in_flight = 0
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.live_failures = 0  # consecutive failures on real traffic (passive check)
        # The health verdict came from live traffic after the last check: READY keeps it.
        self.live_verdict = False
        self.answered_at = 0.0  # perf_counter() of the last answer on real traffic
        self.last_check: dict[str, Any] | None = None
        self.server_errors: dict[str, Any] | None = None
        self.server_errors_at = 0.0
        self.ewma = EWMA_UNMEASURED
        self.ewma_at = time.monotonic()
        self.weight = DEFAULT_WEIGHT
        self.slow_start = 0.0  # seconds a return to UP ramps over (--slow-start); 0: none
        self.ramp_from: float | None = None  # monotonic start of the current slow start
        self.consecutive_5xx = 0  # live answers in a row with a 5xx (outlier ejection)
        self.ejections = 0  # times ejected since start or reset: each lasts longer
        self.ejected_until = 0.0  # monotonic end of the current ejection
        self.ejection_timer: asyncio.TimerHandle | None = None  # ends the current ejection
        # Left the rotation (DOWN, MAINT, EJECTED) since it was last UP: its return resets
        # what it measured and starts a slow start, even when it passes through DRAIN.
        self.out_of_rotation = False
        self.stats = ServerStats()
        # The fault mode last set through /control (None: none), until its process restarts
        # or, for a hang, until it ends by itself: ``/status`` shows it in the server's row.
        self.fault: dict[str, Any] | None = None
        self.fault_until = math.inf

    def __repr__(self) -> str:
        return f"Server({self.name!r}, {self.url!r}, {self.state})"

    def downtime(self, now: float) -> float:
        current = now - self.since if self.state == DOWN else 0.0
        return round(self.downtime_before + current, 3)

    def enter(self, state: str) -> str:
        """Switch to ``state``; returns the previous one. Keeps ``since`` and downtime true."""
        now = time.monotonic()
        previous = self.state
        if previous == DOWN:
            self.downtime_before += now - self.since
        self.state = state
        self.since = now
        self.since_iso = utc_now_iso()
        return previous

    def effective_weight(self, now: float) -> float:
        """The weight algorithms use: the configured one, ramped during a slow start."""
        if self.ramp_from is not None and now - self.ramp_from >= self.slow_start:
            self.ramp_from = None  # the ramp is over: no more arithmetic on every request
        return ramped_weight(self.weight, self.ramp_from, self.slow_start, now)

    def latency_cost(self, now: float) -> float:
        """The peak EWMA as of ``now``: decayed since the last answer (toward 0), so a
        server no answer has measured for a while is tried again."""
        return decayed_cost(self.ewma, self.ewma_at, now)

    def restarted(self) -> None:
        """Its process or container was just replaced: what the old one earned must not
        decide its return, so it is unhealthy until ``rise`` checks of the new one pass (a
        single failed check of the gap, with the old verdict still standing, would otherwise
        send it DOWN the moment it is set READY), and its return resets what it measured."""
        self.healthy = False
        self.consecutive_failures = self.consecutive_successes = self.live_failures = 0
        self.live_verdict = False
        self.out_of_rotation = True

    def returned(self, now: float) -> None:
        """Back in rotation after DOWN, MAINT or an ejection: what it measured before says
        nothing now, and a slow start (if set) begins."""
        self.ewma, self.ewma_at = EWMA_UNMEASURED, now
        self.consecutive_5xx = 0
        if self.slow_start > 0:
            self.ramp_from = now

    def end_ejection_timer(self) -> None:
        if self.ejection_timer is not None:
            self.ejection_timer.cancel()
            self.ejection_timer = None

    def observe_latency(self, seconds: float, status: int) -> None:
        """Peak EWMA: jump to a slower sample at once, decay toward faster ones over time."""
        if status >= 500:
            seconds = max(seconds, EWMA_ERROR_PENALTY)
        now = time.monotonic()
        if seconds > self.ewma:
            self.ewma = seconds
        else:
            weight = math.exp(-(now - self.ewma_at) / EWMA_TAU)
            self.ewma = self.ewma * weight + seconds * (1.0 - weight)
        self.ewma_at = now

    def set_fault(self, fault: dict[str, Any] | None) -> None:
        """Remember the fault the task server took (``none`` is no fault); a hang clears
        itself on the server after ``remaining_seconds``, so it does here too."""
        mode = fault.get("mode") if fault else None
        self.fault = fault if isinstance(mode, str) and mode != "none" else None
        remaining = self.fault.get("remaining_seconds") if self.fault else None
        self.fault_until = math.inf
        if isinstance(remaining, int | float) and not isinstance(remaining, bool):
            self.fault_until = time.monotonic() + remaining

    def fault_now(self, now: float) -> dict[str, Any] | None:
        """The fault still on at ``now`` (monotonic), without the hang's countdown."""
        if self.fault is None or now >= self.fault_until:
            return None
        return {k: v for k, v in self.fault.items() if k != "remaining_seconds"}

    def reset_stats(self) -> None:
        self.stats = ServerStats()
        self.downtime_before = 0.0
        self.ejections = 0

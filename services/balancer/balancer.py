"""The balancer's state: its servers, the algorithm, the health verdicts and the timeline.

Proxying, health checking and the HTTP endpoints all act through this one object, so every
state change goes through ``_transition`` and becomes an event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from services.balancer import algorithms
from services.balancer.compression import CompressionStats
from services.balancer.config import BalancerConfig
from services.balancer.events import EventLog
from services.balancer.journal import Journal
from services.balancer.server import DEFAULT_WEIGHT, RateWindow, Server
from services.common import (
    ADMIN_STATES,
    DOWN,
    DRAIN,
    EJECTED,
    MAINT,
    MAX_WEIGHT,
    NEW,
    UP,
    ErrorLog,
    Uptime,
    count,
    utc_now_iso,
)

# A plugin's failed picks: each distinct one is an event, but at most one every this many
# seconds, so a pick that fails on every request floods neither the timeline nor the log.
ALGORITHM_ERROR_QUIET = 10.0
# A plugin's slow picks: told at most once every this many seconds (each one blocked the loop).
SLOW_PICK_QUIET = 10.0
# An ejection lasts --eject-time times the number of ejections so far, up to this many times.
MAX_EJECTION_FACTOR = 6


def is_weight(weight: object) -> bool:
    """A whole number from 0 to ``MAX_WEIGHT`` (JSON's true and false are not numbers here)."""
    return isinstance(weight, int) and not isinstance(weight, bool) and 0 <= weight <= MAX_WEIGHT


class Checks(Protocol):
    """What the balancer asks of its health checks (health.py's HealthChecker, wired in
    app.py, which sends its verdicts back to ``record_check``)."""

    def watch(self, server: Server) -> None: ...
    def unwatch(self, server: Server) -> None: ...
    def wake(self, server: Server) -> None: ...


class NoChecks:
    """Until app.py wires the health checker in (and in unit tests): nothing is checked."""

    def watch(self, server: Server) -> None:
        pass

    def unwatch(self, server: Server) -> None:
        pass

    def wake(self, server: Server) -> None:
        pass


class Balancer:
    """Servers in configured order, the live algorithm, events and the errors returned."""

    def __init__(self, config: BalancerConfig) -> None:
        self.config = config
        self.servers: list[Server] = []
        for name, url in config.backends:
            weight = config.weights.get(name, DEFAULT_WEIGHT)
            self.servers.append(self._new_server(name, url, weight))
        self._up: tuple[Server, ...] = ()
        self._refresh_up()
        self.journal = Journal(config.lang)  # every event is also a line of the log
        self.events = EventLog(listener=self.journal.event)
        self.errors = ErrorLog()
        self.compression = CompressionStats(config.compress)  # fed by compression.py's layer
        self.uptime = Uptime()
        self.requests_total = 0
        self.no_backend = 0
        self.resets = 0  # times reset_stats zeroed the counters (history.py's deltas)
        self.rate = RateWindow()
        self.checks: Checks = NoChecks()
        self.plugin = config.plugin
        self.algorithm_names = config.algorithm_names
        self.algorithm_errors = 0  # a plugin's picks that failed (round robin answered)
        self._reported: set[str] = set()
        self._quiet_until = 0.0
        self._slow_quiet_until = 0.0
        self.algorithm = config.algorithm
        self._pick = self._fresh(config.algorithm).pick

    def start(self) -> None:
        """Record the start on the timeline."""
        names = ", ".join(server.name for server in self.servers) or "none yet"
        self.events.add(
            "start",
            None,
            algorithm=self.algorithm,
            servers={server.name: server.url for server in self.servers},
            reason=f"balancer started: algorithm {self.algorithm}, servers {names}",
        )

    # Lookup and selection -------------------------------------------------------------------

    def get(self, name: str) -> Server:
        """The server called ``name``; KeyError if there is none."""
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    @property
    def servers_up(self) -> int:
        return len(self._up)

    def choose(
        self, tried: Sequence[Server], client: str, keyed_only: bool = False
    ) -> Server | None:
        """A server that is UP, of weight above 0 and not yet tried for this request, by the
        current algorithm; ``keyed_only``: only servers that deduplicate ``Idempotency-Key``."""
        candidates = self._up if not tried else [s for s in self._up if s not in tried]
        if keyed_only:
            candidates = [server for server in candidates if server.honours_keys]
        if not candidates:
            return None
        return self._pick(candidates, client)

    def _fresh(self, name: str) -> algorithms.Algorithm:
        """A new instance of ``name``; ValueError if unknown, PluginError (a ValueError) if
        the plugin's constructor raises."""
        if self.plugin is not None and name == self.plugin.name:
            return self.plugin.start(self.record_algorithm_error, self.record_slow_pick)
        return algorithms.make(name)

    def record_algorithm_error(self, where: str, error: str | None, returned: str | None) -> None:
        """A plugin's pick raised ``error`` or returned ``returned`` instead of one of its
        servers, at ``where`` (file:line); round robin answered. Counted every time; each
        distinct failure is logged and put on the timeline once (``ALGORITHM_ERROR_QUIET``)."""
        self.algorithm_errors += 1
        problem = error or f"pick returned {returned}, not one of the servers it was given"
        reason = f"{where}: {problem}; round robin answered instead"
        now = time.monotonic()
        if reason in self._reported or now < self._quiet_until:
            return
        self._reported.add(reason)
        self._quiet_until = now + ALGORITHM_ERROR_QUIET
        self.events.add(
            "algorithm_error",
            None,
            algorithm=self.algorithm,
            where=where,
            error=error,
            returned=returned,
            reason=reason,
        )

    def record_slow_pick(self, where: str, seconds: float) -> None:
        """A plugin's pick took ``seconds`` (over plugin.SLOW_PICK): the event loop, and every
        request, waited for it. Told at most once every ``SLOW_PICK_QUIET`` seconds."""
        now = time.monotonic()
        if now < self._slow_quiet_until:
            return
        self._slow_quiet_until = now + SLOW_PICK_QUIET
        milliseconds = round(seconds * 1000)
        self.events.add(
            "algorithm_slow",
            None,
            algorithm=self.algorithm,
            where=where,
            milliseconds=milliseconds,
            reason=f"{where}: one pick took {milliseconds} ms; every request waited for it",
        )

    def _refresh_up(self) -> None:
        """The servers that may take new traffic: UP, with a weight above 0."""
        self._up = tuple(s for s in self.servers if s.state == UP and s.weight > 0)

    def _new_server(self, name: str, url: str, weight: int, state: str = UP) -> Server:
        server = Server(name, url, state)
        server.weight = weight
        server.slow_start = self.config.slow_start
        return server

    # State changes ---------------------------------------------------------------------------

    def _transition(self, server: Server, to: str, reason: str, code: str, **fields: Any) -> None:
        """``reason`` in English for people, ``code`` and ``fields`` for the dashboard to say it
        in Spanish (events.py, REASON_CODES)."""
        previous = server.enter(to)
        server.state_reason = reason
        server.announced = True
        if previous == EJECTED:
            server.end_ejection_timer()
        if to in (DOWN, MAINT, EJECTED):
            server.out_of_rotation = True
        elif to == UP:
            server.live_failures = 0
            if server.out_of_rotation:  # also through DRAIN: DOWN -> DRAIN -> READY -> UP
                server.out_of_rotation = False
                server.returned(time.monotonic())
        self._refresh_up()
        self.events.add(
            "state",
            server.name,
            **{"from": previous, "to": to, "reason": reason, "reason_code": code},
            **fields,
        )

    def record_check(
        self, server: Server, ok: bool, status: int | None, detail: str, duration_ms: float
    ) -> None:
        """One active health check's verdict; applies fall/rise (HAProxy's semantics), except
        that a NEW server is UP at its first passing check.

        Busy is not dead: a check that timed out while the server kept answering real traffic
        (``busy``) is shown but not counted, so a loaded server is never taken out by a slow
        probe. A refused connection or a bad answer always counts.
        """
        busy = not ok and detail.startswith("timeout") and self.busy(server, duration_ms)
        if busy:
            detail += " (busy: answered live traffic meanwhile, not counted)"
        server.last_check = {
            "time": utc_now_iso(),
            "ok": ok,
            "status": status,
            "detail": detail,
            "duration_ms": round(duration_ms, 3),
        }
        if busy:
            return
        server.live_verdict = False
        if ok:
            server.consecutive_successes += 1
            server.consecutive_failures = 0
            if server.state == NEW:
                server.healthy = True
                reason = f"first verdict: check passed ({detail})"
                self._transition(server, UP, reason, "first_check_passed", detail=detail)
            elif not server.announced and server.state == UP:
                self._announce(server, f"first verdict: check passed ({detail})", detail)
            if not server.healthy and server.consecutive_successes >= self.config.rise:
                checks = server.consecutive_successes
                reason = f"{count(checks, 'check')} passed"
                self._set_health(server, True, reason, "checks_passed", checks=checks)
        else:
            server.consecutive_failures += 1
            server.consecutive_successes = 0
            checks = server.consecutive_failures
            if checks < self.config.fall:
                return
            reason = f"{count(checks, 'check')} failed: {detail}"
            fields = {"checks": checks, "detail": detail}
            if server.state == NEW:  # never in rotation: its first verdict, not a flap
                self._transition(server, DOWN, reason, "checks_failed", **fields)
            elif server.healthy:
                self._set_health(server, False, reason, "checks_failed", **fields)

    def busy(self, server: Server, duration_ms: float) -> bool:
        """Whether live traffic vouches for ``server`` over a check that took ``duration_ms``:
        it answered during the check, or within one check interval before it with nothing
        left waiting on it since (a hung server has requests in flight and answers none)."""
        started = time.perf_counter() - duration_ms / 1000
        if server.answered_at >= started:
            return True
        recent = server.answered_at >= started - self.config.check_interval
        return recent and server.in_flight == 0

    def _announce(self, server: Server, reason: str, detail: str) -> None:
        """A server's first verdict after start, when it confirms the assumed UP (``from``
        null): so the timeline shows every server at once, not only later changes."""
        server.announced = True
        self.events.add(
            "state",
            server.name,
            **{"from": None, "to": server.state},
            reason=reason,
            reason_code="first_check_passed",
            detail=detail,
        )

    def record_live_failure(self, server: Server, kind: str, detail: str) -> None:
        """A failure on real traffic: a refused connect is DOWN at once, resets and connect
        failures count to fall. Slow is not dead: a timed-out answer only asks for a health
        check now, so a server whose checks pass stays UP however slow one request was."""
        if kind == "timeout":
            self.checks.wake(server)
            return
        server.live_failures += 1
        if kind == "refused":
            server.live_verdict = True
            self._set_health(server, False, "connect refused on live traffic", "refused_live")
        elif (failures := server.live_failures) >= self.config.fall:
            server.live_verdict = True
            reason = f"{count(failures, 'failure')} on live traffic: {detail}"
            self._set_health(
                server, False, reason, "live_failures", failures=failures, detail=detail
            )

    def record_answer(self, server: Server, status: int) -> None:
        """A live answer: with ``--eject-after-5xx N``, the Nth 5xx in a row takes the server
        out for a while (Envoy's consecutive_5xx), unless no other server takes traffic."""
        server.consecutive_5xx = server.consecutive_5xx + 1 if status >= 500 else 0
        limit = self.config.eject_after_5xx
        if not limit or server.consecutive_5xx < limit or server.state != UP:
            return
        if not any(other is not server for other in self._up):
            return  # never the last server: answering errors beats answering nothing
        server.ejections += 1
        seconds = self.config.eject_time * min(server.ejections, MAX_EJECTION_FACTOR)
        server.ejected_until = time.monotonic() + seconds
        answers = server.consecutive_5xx
        reason = f"{answers} answers in a row were 5xx; out for {seconds:g} s"
        self._transition(
            server,
            EJECTED,
            reason,
            "ejected",
            ejections=server.ejections,
            answers=answers,
            seconds=seconds,
        )
        loop = asyncio.get_running_loop()
        server.ejection_timer = loop.call_later(seconds, self._end_ejection, server)

    def _end_ejection(self, server: Server) -> None:
        """The ejection's time is up (its timer is cancelled if it ended otherwise)."""
        server.ejection_timer = None
        self._transition(server, UP if server.healthy else DOWN, "ejection over", "ejection_over")

    def _set_health(
        self, server: Server, healthy: bool, reason: str, code: str, **fields: Any
    ) -> None:
        """Change the health verdict; the state follows unless DRAIN, MAINT or an ejection
        hides it (the verdict is applied when they end)."""
        if server.healthy == healthy:
            return
        server.healthy = healthy
        if not healthy:
            server.consecutive_successes = 0
        target = UP if healthy else DOWN
        if server.state in (UP, DOWN) and server.state != target:
            self._transition(server, target, reason, code, **fields)

    def set_admin_state(self, name: str, state: str, who: str | None = None) -> str:
        """DRAIN, MAINT or READY (back to UP/DOWN by the last check); returns the new state."""
        if state not in ADMIN_STATES:
            raise ValueError(f"unknown admin state {state!r}; one of {', '.join(ADMIN_STATES)}")
        server = self.get(name)
        if state == "READY":
            if server.state in (DRAIN, MAINT, EJECTED):  # READY also ends an ejection early
                last = server.last_check
                if last is not None and not server.live_verdict:  # else the newest is live
                    server.healthy = last["ok"]
                target = UP if server.healthy else DOWN
                self._transition(server, target, "set ready by control", "set_ready", who=who)
                self.request_check(name)
        elif server.state != state:
            code = f"set_{state.lower()}"
            self._transition(server, state, f"set {state.lower()} by control", code, who=who)
        return server.state

    def request_check(self, name: str) -> None:
        """Run an active check of ``name`` now rather than at its next interval."""
        self.checks.wake(self.get(name))

    def set_weight(self, name: str, weight: int, who: str | None = None) -> int:
        """Change a server's weight live (0 to 256; 0 takes no new traffic); returns the
        previous one. KeyError if no such server, ValueError if out of range."""
        if not is_weight(weight):
            raise ValueError(f"a weight is a whole number from 0 to {MAX_WEIGHT}")
        server = self.get(name)
        previous, server.weight = server.weight, weight
        self._refresh_up()
        self.events.add("weight", name, **{"from": previous, "to": weight}, who=who)
        return previous

    def set_algorithm(self, name: str, who: str | None = None) -> str:
        """Switch to a fresh instance of ``name`` live; returns the previous one. ValueError
        if unknown, PluginError if the plugin's constructor raises (nothing changes then)."""
        pick = self._fresh(name).pick
        previous, self.algorithm, self._pick = self.algorithm, name, pick
        self._reported.clear()  # a plugin switched to again tells its failures again
        self.events.add(
            "algorithm",
            None,
            **{"from": previous, "to": name},
            who=who,
            reason="set by control API",
        )
        return previous

    def reset_stats(self, who: str | None = None) -> None:
        """Zero every counter (requests, errors, latencies); states and events stay."""
        for server in self.servers:
            server.reset_stats()
        self.errors.reset()
        self.requests_total = 0
        self.no_backend = 0
        self.algorithm_errors = 0
        self.compression.reset()
        self._reported.clear()
        self.rate = RateWindow()
        self.resets += 1
        self.events.add("stats", None, action="reset", who=who)

    # Discovery -----------------------------------------------------------------------------

    def add_server(
        self, name: str, url: str, who: str | None = None, weight: int = DEFAULT_WEIGHT
    ) -> Server:
        """Add a backend (Docker discovery, or scaled out: scaling.py); it starts NEW, takes
        no traffic until its first check passes, and is checked at once."""
        if any(server.name == name for server in self.servers):
            raise ValueError(f"a server called {name!r} already exists")
        server = self._new_server(name, url, weight, NEW)
        # Its first UP is a return to rotation: with --slow-start it ramps up as HAProxy's
        # slowstart does for a server that comes up, instead of taking its share at once.
        server.out_of_rotation = True
        self.servers.append(server)
        self._refresh_up()
        self.checks.watch(server)
        self.events.add("discovery", name, action="added", url=server.url, who=who)
        return server

    def remove_server(self, name: str, who: str | None = None) -> Server:
        """Forget a backend; KeyError if unknown. Requests in flight to it finish."""
        server = self.get(name)
        self.servers.remove(server)
        server.end_ejection_timer()
        self._refresh_up()
        self.checks.unwatch(server)
        self.events.add("discovery", name, action="removed", url=server.url, who=who)
        return server

    def record_failure(self, reason: str) -> None:
        """A background loop of the balancer crashed and was restarted (background.py)."""
        self.events.add("failure", None, reason=reason)

    def states(self) -> dict[str, str]:
        return {server.name: server.state for server in self.servers}

    def count_request(self) -> None:
        self.requests_total += 1
        self.rate.add(time.monotonic())

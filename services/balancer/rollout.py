"""Rollouts: every task server restarted with no failed request (``rolling``), or all at once
(``restart``, the naive contrast), through the active driver.

``rolling`` is HAProxy's drain and ``slowstart``, Kubernetes' rolling update with one server
unavailable at a time, Swarm's ``update_config`` with parallelism 1: for each server in turn
it is drained (no new requests), its requests in flight end (bounded), it is restarted (a
new process, or a container recreated from its service's current image), it must answer its
health check and pass the balancer's checks (bounded), and it is handed back (a slow start
ramps its share, ``--slow-start``). A failure at any step stops the rollout there and says
why; the server is handed back only if it is healthy, the servers after it are not touched.
``restart`` restarts every server at once with no drain: the failures a class then sees are
what the rolling steps avoid. One rollout at a time; the last one stays readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import httpx

from services.balancer.balancer import Balancer
from services.balancer.drivers import Driver, DriverFailure, DriverUnsupported
from services.balancer.messages import CATALOGUE
from services.balancer.server import Server
from services.common import DRAIN, READY, utc_now_iso
from services.lang import Translator
from services.taskserver.options import options_problem

STRATEGIES = ("rolling", "restart")
# A rolling step of one server, in order (``step`` in GET /control/rollout and the events).
STEPS = ("drain", "settle", "restart", "health", "return")
RUNNING, DONE, FAILED = "running", "done", "failed"
# Each step's bound a request may set: (default, lowest, highest) seconds.
BOUNDS: dict[str, tuple[float, float, float]] = {
    "drain_seconds": (10.0, 0.5, 120.0),  # for the requests in flight to end
    "health_seconds": (20.0, 1.0, 300.0),  # for the new process to be healthy
}
BODY_FIELDS = frozenset({"strategy", "options", *BOUNDS})
POLL_SECONDS = 0.05
PROBE_TIMEOUT = httpx.Timeout(1.0)
WHO = "rollout"  # the drain and ready it sets are its own, on the timeline


class BadRollout(ValueError):
    """A rollout body that cannot be run: ``detail`` says what is wrong (HTTP 400)."""


@dataclass(frozen=True)
class Plan:
    """What a ``POST /control/rollout`` asked for. ``options`` None: each server keeps its
    command; a list: its new process gets these allowed flags (taskserver/options.py)."""

    strategy: str
    drain_seconds: float
    health_seconds: float
    options: tuple[str, ...] | None = None


def plan_from(body: dict[str, Any] | None) -> Plan:
    """The plan a body asks for; BadRollout naming the first thing wrong."""
    if body is None or body.get("strategy") not in STRATEGIES:
        raise BadRollout(f"strategy must be one of {', '.join(STRATEGIES)}")
    if unknown := sorted(body.keys() - BODY_FIELDS):
        raise BadRollout(f"unknown fields {', '.join(unknown)}")
    bounds: dict[str, float] = {}
    for name, (default, low, high) in BOUNDS.items():
        value = body.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRollout(f"{name} must be a number of seconds")
        if not low <= value <= high:  # NaN and infinities too
            raise BadRollout(f"{name} must be from {low:g} to {high:g}")
        bounds[name] = float(value)
    options = body.get("options")
    if options is not None and (problem := options_problem(options)):
        raise BadRollout(problem)
    kept = tuple(options) if options is not None else None
    return Plan(body["strategy"], options=kept, **bounds)


@runtime_checkable
class Recreates(Protocol):
    """A driver that can give a server a new process or container (local, docker), rather
    than restart the same one: a rollout uses it, so a new version is picked up."""

    async def recreate(self, server: str, options: Sequence[str] | None) -> dict[str, Any]: ...


class StepFailed(Exception):
    """A step that did not complete: ``why`` (``rollout_why_<why>`` in messages.py) and its
    fields; ``str()`` is the English sentence, the rollout's ``reason``."""

    def __init__(self, why: str, **fields: Any) -> None:
        self.why, self.fields = why, fields
        super().__init__(Translator(CATALOGUE, "en")(f"rollout_why_{why}", **fields))


class Rollout:
    """One rollout's state, as ``GET /control/rollout`` shows it."""

    def __init__(self, plan: Plan, servers: Sequence[str], who: str | None) -> None:
        self.plan = plan
        self.who = who
        self.servers = list(servers)
        self.state = RUNNING
        self.current: str | None = None
        self.step: str | None = None
        self.position = 0
        self.results: dict[str, dict[str, Any]] = {name: {"result": "pending"} for name in servers}
        self.started = utc_now_iso()
        self.finished: str | None = None
        self.reason: str | None = None
        self.why: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.plan.strategy,
            "state": self.state,
            "current": self.current,
            "step": self.step,
            "position": self.position,
            "total": len(self.servers),
            "servers": self.results,
            "options": list(self.plan.options) if self.plan.options is not None else None,
            "drain_seconds": self.plan.drain_seconds,
            "health_seconds": self.plan.health_seconds,
            "started": self.started,
            "finished": self.finished,
            "reason": self.reason,
            "why": self.why,
            "who": self.who,
        }


class Rollouts:
    """Starts rollouts one at a time and keeps the last; ``driver`` answers the active one."""

    def __init__(self, balancer: Balancer, driver: Callable[[], Driver]) -> None:
        self.balancer = balancer
        self.driver = driver
        self.last: Rollout | None = None
        # Told of each server given a new process or container: its address may have changed
        # (a recreated container's), so nothing keeps resolving its name to the old one.
        self.renewed: list[Callable[[Server], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def refusal(self, plan: Plan) -> str | None:
        """Why the active driver cannot carry ``plan`` out (HTTP 409), or None."""
        driver = self.driver()
        if plan.options is not None and not isinstance(driver, Recreates):
            return f"the {driver.name} driver cannot start a server with other options"
        if "restart" not in driver.actions and not isinstance(driver, Recreates):
            return f"the {driver.name} driver cannot restart servers"
        return None

    def start(self, plan: Plan, who: str | None) -> Rollout:
        """Begin ``plan`` in the background (the caller checked ``running`` and ``refusal``)."""
        rollout = Rollout(plan, [server.name for server in self.balancer.servers], who)
        self.last = rollout
        names = ", ".join(rollout.servers) or "-"
        self._event(rollout, None, "started", names=names, who=who)
        self._task = asyncio.create_task(self._run(rollout))
        return rollout

    async def stop(self) -> None:
        """End a running rollout (the balancer is stopping): it is recorded as failed."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()

    async def _run(self, rollout: Rollout) -> None:
        try:
            if rollout.plan.strategy == "rolling":
                for position, name in enumerate(rollout.servers, start=1):
                    await self._roll_one(rollout, name, position)
            else:
                await self._restart_all(rollout)
        except StepFailed as failure:
            self._finish(rollout, failure)
        except asyncio.CancelledError:
            self._finish(rollout, StepFailed("stopped"))
            raise
        except Exception as error:  # never a rollout left "running" for ever, nor silent
            self._finish(rollout, StepFailed("error", detail=f"{type(error).__name__}: {error}"))
        else:
            self._finish(rollout, None)

    def _finish(self, rollout: Rollout, failure: StepFailed | None) -> None:
        rollout.finished = utc_now_iso()
        rollout.state = FAILED if failure else DONE
        for result in rollout.results.values():
            if result["result"] == "pending":
                result["result"] = "untouched"
        if failure is None:
            self._event(rollout, None, "done")
            return
        rollout.reason, rollout.why = str(failure), failure.why
        self._event(
            rollout, rollout.current, "failed", step=rollout.step, why=failure.why,
            reason=str(failure), **{k: v for k, v in failure.fields.items() if k != "server"},
        )  # fmt: skip

    def _event(self, rollout: Rollout, server: str | None, phase: str, **fields: Any) -> None:
        self.balancer.events.add(
            "rollout", server, phase=phase, strategy=rollout.plan.strategy,
            position=rollout.position, total=len(rollout.servers), **fields,
        )  # fmt: skip

    def _enter(self, rollout: Rollout, name: str, step: str) -> None:
        rollout.current, rollout.step = name, step
        self._event(rollout, name, "step", step=step)

    def _server(self, name: str) -> Server:
        try:
            return self.balancer.get(name)
        except KeyError:
            raise StepFailed("removed", server=name) from None

    async def _roll_one(self, rollout: Rollout, name: str, position: int) -> None:
        """The rolling steps of one server; on a failure it is handed back only if healthy."""
        rollout.position = position
        began = time.monotonic()
        try:
            self._enter(rollout, name, "drain")
            self.balancer.set_admin_state(self._server(name).name, DRAIN, who=WHO)
            self._enter(rollout, name, "settle")
            await self._settled(self._server(name), rollout.plan.drain_seconds)
            self._enter(rollout, name, "restart")
            done = await self._recreate(name, rollout.plan.options)
            self._server(name).restarted()  # only checks of the new process count
            self._enter(rollout, name, "health")
            await self._healthy(self._server(name), rollout.plan.health_seconds)
            self._enter(rollout, name, "return")
            self.balancer.set_admin_state(name, READY, who=WHO)
        except StepFailed as failure:
            returned = await self._hand_back(name)
            rollout.results[name] = {
                "result": "failed", "step": rollout.step, "reason": str(failure),
                "returned": returned,
            }  # fmt: skip
            raise
        seconds = round(time.monotonic() - began, 2)
        rollout.results[name] = {"result": "restarted", **done, "seconds": seconds}

    async def _restart_all(self, rollout: Rollout) -> None:
        """Every server restarted at the same moment, then waited for: no drain, no order."""
        began = time.monotonic()
        rollout.position = len(rollout.servers)
        for name in rollout.servers:
            self._enter(rollout, name, "restart")
        outcomes = await asyncio.gather(
            *(self._recreate(name, rollout.plan.options) for name in rollout.servers),
            return_exceptions=True,
        )
        failure: StepFailed | None = None
        for name, outcome in zip(rollout.servers, outcomes, strict=True):
            if isinstance(outcome, StepFailed):
                rollout.results[name] = {"result": "failed", "step": "restart"}
                failure = failure or outcome
                rollout.current = name
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                rollout.results[name] = {"result": "restarted", **outcome}
        if failure is not None:
            raise failure
        for name in rollout.servers:
            self._enter(rollout, name, "health")
            await self._healthy(self._server(name), rollout.plan.health_seconds)
            rollout.results[name]["seconds"] = round(time.monotonic() - began, 2)

    async def _settled(self, server: Server, seconds: float) -> None:
        """Until the drained ``server`` has no request in flight, at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while server.in_flight > 0:
            if time.monotonic() >= deadline:
                raise StepFailed(
                    "busy", server=server.name, in_flight=server.in_flight, seconds=seconds
                )
            await asyncio.sleep(POLL_SECONDS)

    async def _recreate(self, name: str, options: Sequence[str] | None) -> dict[str, Any]:
        """A new process or container for ``name``; StepFailed with the driver's words."""
        driver = self.driver()
        try:
            if isinstance(driver, Recreates):
                done = await driver.recreate(name, options)
            else:
                done = await driver.perform(name, "restart")
        except (DriverFailure, DriverUnsupported) as error:
            raise StepFailed("driver", server=name, detail=str(error)) from error
        with contextlib.suppress(KeyError):  # a new process starts with no fault
            server = self.balancer.get(name)
            server.set_fault(None)
            for tell in self.renewed:
                tell(server)
        return done

    async def _healthy(self, server: Server, seconds: float) -> None:
        """Until ``server`` answers its health check and the balancer's checks call it
        healthy, at most ``seconds``; checks are asked for at once rather than at their
        interval (a rolled server's old verdict no longer counts: ``Server.restarted``)."""
        self.balancer.request_check(server.name)
        deadline = time.monotonic() + seconds
        while (detail := await self._probe(server)) is not None or not server.healthy:
            if time.monotonic() >= deadline:
                last = detail or "the balancer's checks have not passed yet"
                raise StepFailed("unhealthy", server=server.name, seconds=seconds, detail=last)
            await asyncio.sleep(POLL_SECONDS)
            if detail is None:
                self.balancer.request_check(server.name)

    async def _probe(self, server: Server) -> str | None:
        """None when ``server``'s health path answers 200, else what it answered."""
        try:
            answer = await self._http.get(server.url + self.balancer.config.check_path)
        except httpx.HTTPError as error:
            return str(error) or type(error).__name__
        return None if answer.status_code == 200 else f"{answer.status_code} {answer.reason_phrase}"

    async def _hand_back(self, name: str) -> bool:
        """After a failed step: ``name`` back in rotation if it is healthy; True if it was."""
        try:
            server = self.balancer.get(name)
        except KeyError:
            return False
        if not server.healthy or await self._probe(server) is not None:
            return False
        self.balancer.set_admin_state(name, READY, who=WHO)
        return True

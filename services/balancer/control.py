"""The ``/control`` API: break and mend task servers, switch the algorithm, inject faults.

Reads are open; every write needs ``Authorization: Bearer <token>``. Driver actions (stop,
start, kill, restart, pause, unpause) go to the active driver; drain, maint and ready are the
balancer's own states; faults are passed on to the task server's ``/admin/fault``. Every
action answers what was done and the resulting state, and becomes an event.

Before a pause the server is asked to hold its writes for a moment (``/admin/quiesce``), so
whatever driver freezes it, it is not frozen holding the shared tasks file lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from services.balancer.balancer import Balancer
from services.balancer.drivers import (
    Driver,
    DriverFailure,
    DriverUnsupported,
    NoneDriver,
    choose_driver,
)
from services.balancer.events import clipped
from services.balancer.plugin import PluginError
from services.balancer.rollout import STRATEGIES, BadRollout, Rollouts, plan_from
from services.balancer.routes import language_of
from services.common import (
    ADMIN_ACTIONS,
    CONTROL_ACTION_SECONDS,
    DASHBOARD_AGENT,
    DRIVER_ACTIONS,
    FAULT_MODES,
    MAX_WEIGHT,
    QUIESCE_WAIT,
    answer_text,
    default_token_file,
    write_token_file,
)
from services.errors import ERRORS
from services.lang import Translator
from services.taskserver.options import ALLOWED_OPTIONS
from services.web import BodyTooLarge, bounded_body, json_error, token_refusal

# What is kept of a fault, sent or answered (events, /status): only what the task server
# knows, numbers and short text, never the rest of a body (a 9 MB pad was once kept whole).
FAULT_FIELDS = ("mode", "rate", "ms", "max_seconds", "remaining_seconds", "warning")
# A control body is a few fields: past this many bytes it is refused (413), not read on.
CONTROL_BODY_BYTES = 64 * 1024
# Driver results after which the server's process is gone or new: its fault mode with it.
PROCESS_RESTARTS = frozenset({"stopped", "killed", "started", "restarted"})
FAULT_TIMEOUT = 5.0
# How long a server holds its writes before a pause: the driver must freeze it within this
# (Docker answers in tens of ms); longer only delays writes after a quick unpause.
QUIESCE_SECONDS = 2.0
# Best effort: a server that is frozen or hung already must not delay the pause for long.
QUIESCE_TIMEOUT = httpx.Timeout(QUIESCE_WAIT[1], connect=QUIESCE_WAIT[0])


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def admin_is_control(balancer: Balancer) -> Callable[[Request], Awaitable[Response]]:
    """404 for ``/admin/...`` on the balancer, naming the route to use instead."""

    async def answer(request: Request) -> Response:
        return json_error(404, code="admin_via_control", lang=language_of(request, balancer))

    return answer


class Control:
    """The control routes of one balancer; ``start()`` picks the driver."""

    def __init__(self, balancer: Balancer, token: str, driver_kind: str = "auto") -> None:
        self.balancer = balancer
        self.token = token
        self.driver_kind = driver_kind
        self.driver: Driver = NoneDriver()
        # Only for the task servers' /admin routes, which check the same token.
        self._http = httpx.AsyncClient(
            timeout=FAULT_TIMEOUT, headers={"Authorization": f"Bearer {token}"}
        )
        self._unfinished: set[asyncio.Task[Response]] = set()  # actions still running
        self.rollouts = Rollouts(balancer, lambda: self.driver)

    async def start(self) -> None:
        """Choose the driver (DriverFailure when an explicitly asked one cannot work here)."""
        self.driver = await choose_driver(self.driver_kind, self.token, self._server_urls)

    def _server_urls(self) -> dict[str, str]:
        """Backend name -> URL, as the balancer has them now (the Swarm driver's map)."""
        return {server.name: server.url for server in self.balancer.servers}

    async def stop(self) -> None:
        """Let the actions still running end (and be recorded), then close."""
        if self._unfinished:
            await asyncio.wait(self._unfinished, timeout=CONTROL_ACTION_SECONDS)
        await self.rollouts.stop()
        await self.driver.aclose()
        await self._http.aclose()

    async def _to_the_end(self, action: Coroutine[Any, Any, Response]) -> Response:
        """Run ``action`` to its end and its event, even when the caller gives up: a client
        that disconnects cancels its request (protocol.py), and a server stopped halfway
        through with nothing on the timeline is what a student must never see."""
        task = asyncio.create_task(action)
        self._unfinished.add(task)
        task.add_done_callback(self._unfinished.discard)
        return await asyncio.shield(task)

    def routes(self) -> list[BaseRoute]:
        """``/control`` and everything under it: a mistyped control path gets the balancer's
        404, never a trip (with the token) to a task server."""
        redirect = admin_is_control(self.balancer)
        return [
            Route("/control", self.overview, methods=["GET"]),
            Mount(
                "/control",
                routes=[
                    Route("/servers/{name}/fault", self.fault, methods=["PUT"]),
                    Route("/servers/{name}/weight", self.weight, methods=["PUT"]),
                    Route("/servers/{name}/{action}", self.server_action, methods=["POST"]),
                    Route("/algorithm", self.algorithm, methods=["PUT"]),
                    Route("/stats/reset", self.reset_stats, methods=["POST"]),
                    Route("/rollout", self.rollout_state, methods=["GET"]),
                    Route("/rollout", self.rollout, methods=["POST"]),
                ],
            ),
            # The task servers' own /admin routes are never reached through the balancer:
            # every change goes through /control, where it is checked and recorded.
            Route("/admin", redirect, methods=ALL_METHODS),
            Mount("/admin", routes=[Route("/{rest:path}", redirect, methods=ALL_METHODS)]),
        ]

    # Helpers --------------------------------------------------------------------------------

    def _refusal(self, request: Request) -> Response | None:
        """401 unless the request carries the right bearer token (constant-time comparison)."""
        return token_refusal(request, self.token, language_of(request, self.balancer))

    async def _server_and_body(
        self, request: Request
    ) -> Response | tuple[str, dict[str, Any] | None]:
        """For a route on one server: the token, then the server named in the path, then the
        body. A refusal, or the name and the body (None when it is not a JSON object)."""
        refusal = self._refusal(request)
        if refusal:
            return refusal
        name = request.path_params["name"]
        unknown = self._unknown_server(request, name)
        if unknown:
            return unknown
        return name, await _json_object(request, language_of(request, self.balancer))

    def _error(self, request: Request, status: int, code: str, /, **fields: Any) -> Response:
        """The error ``code`` in the request's language."""
        return json_error(status, code=code, lang=language_of(request, self.balancer), **fields)

    def _event(self, request: Request, server: str | None, action: str, **fields: Any) -> None:
        if request.headers.get("user-agent") == DASHBOARD_AGENT:
            fields["via"] = "dashboard"  # so the log says "from the dashboard"
        self.balancer.events.add("control", server, action=action, who=_who(request), **fields)

    def _admin_url(self, name: str, route: str) -> str:
        """``route`` of the task server ``name``'s ``/admin`` API."""
        return f"{self.balancer.get(name).url}/admin/{route}"

    def _unknown_server(self, request: Request, name: str) -> Response | None:
        try:
            self.balancer.get(name)
        except KeyError:
            return self._no_such_server(request, name)
        return None

    def _no_such_server(self, request: Request, name: str) -> Response:
        known = ", ".join(s.name for s in self.balancer.servers) or "-"
        return self._error(request, 404, "unknown_server", server=name, servers=known)

    # Routes ---------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Which driver is active and, per server, its state and the actions available."""
        driver_error = None
        try:
            processes = await self.driver.processes()
        except (DriverFailure, DriverUnsupported) as error:
            processes, driver_error = {}, str(error)
        servers = {}
        for server in self.balancer.servers:
            driven = list(self.driver.actions) if server.name in processes else []
            servers[server.name] = {
                "state": server.state,
                "process": processes.get(server.name),
                "actions": [*driven, *ADMIN_ACTIONS, "fault"],
            }
        none = self.driver if isinstance(self.driver, NoneDriver) else None
        return JSONResponse(
            {
                "driver": self.driver.name,
                "driver_error": driver_error,
                "driver_missing": none.reason if none else None,
                "servers": servers,
                "algorithm": self.balancer.algorithm,
                "algorithms": list(self.balancer.algorithm_names),
                "fault_modes": list(FAULT_MODES),
            }
        )

    async def server_action(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        name, action = request.path_params["name"], request.path_params["action"]
        if action not in DRIVER_ACTIONS and action not in ADMIN_ACTIONS:
            actions = ", ".join([*DRIVER_ACTIONS, *ADMIN_ACTIONS])
            return self._error(request, 400, "unknown_action", action=action, actions=actions)
        unknown = self._unknown_server(request, name)
        if unknown:
            return unknown
        if action in ADMIN_ACTIONS:
            state = self.balancer.set_admin_state(name, ADMIN_ACTIONS[action], who=_who(request))
            self._event(request, name, action, result=state, ok=True)
            return JSONResponse({"server": name, "action": action, "result": state, "state": state})
        return await self._to_the_end(self._drive(request, name, action))

    async def _drive(self, request: Request, name: str, action: str) -> Response:
        """Hand ``action`` to the driver; 409 when it cannot, 502 when it failed."""
        quiesce: dict[str, Any] = {}
        started = time.monotonic()
        if action == "pause" and action in self.driver.actions:
            quiesce = await self._quiesce(name)
        try:
            done = await self.driver.perform(name, action)
        except (DriverUnsupported, DriverFailure) as error:
            if quiesce.get("quiesced"):
                await self._end_quiesce(name)  # not frozen: let its writes go on now
            self._event(request, name, action, result=str(error), ok=False, **quiesce)
            status, code = (
                (409, "driver_unsupported")
                if isinstance(error, DriverUnsupported)
                else (502, "driver_failed")
            )
            fields = {"driver": self.driver.name, "detail": str(error), **quiesce}
            return self._error(request, status, code, **fields)
        if quiesce:
            quiesce = _frozen_in_time(quiesce, time.monotonic() - started)
        if action == "unpause":
            await self._end_quiesce(name)
        if done["result"] in PROCESS_RESTARTS:
            server = self.balancer.get(name)
            server.set_fault(None)  # a new process starts with no fault
            for tell in self.rollouts.renewed:  # and maybe at a new address (a Swarm task)
                tell(server)
        self.balancer.request_check(name)  # so /status follows within a moment
        self._event(request, name, action, result=done["result"], ok=True, **quiesce)
        state = self.balancer.get(name).state
        return JSONResponse({"server": name, "action": action, **done, "state": state, **quiesce})

    async def _quiesce(self, name: str) -> dict[str, Any]:
        """Ask ``name`` to hold its writes while it is frozen (best effort).

        Freezing a server inside a write would freeze the shared file lock with it and stall
        every server's writes; the driver cannot see that, the server can. Answers the
        ``quiesced`` flag and a ``quiesce`` sentence for the answer and the event.
        """
        try:
            answer = await self._http.post(
                self._admin_url(name, "quiesce"),
                json={"seconds": QUIESCE_SECONDS},
                timeout=QUIESCE_TIMEOUT,
            )
        except httpx.HTTPError as error:
            reason = f"it did not answer ({str(error) or type(error).__name__})"
        else:
            if answer.status_code == 200:
                held = f"{name} held its writes for {QUIESCE_SECONDS:g} s first"
                return {"quiesced": True, "quiesce": held}
            reason = f"it answered {answer.status_code}: {answer_text(answer, 'error')}"
        unsafe = "pausing anyway: if it is frozen inside a write, every write waits until unpause"
        return {"quiesced": False, "quiesce": f"{name} did not hold its writes, {reason}; {unsafe}"}

    async def _end_quiesce(self, name: str) -> None:
        """End a hold that is still running: unpaused sooner than it lasts, or not paused."""
        url = self._admin_url(name, "quiesce")
        with contextlib.suppress(httpx.HTTPError):  # it expires by itself anyway
            await self._http.delete(url, timeout=QUIESCE_TIMEOUT)

    async def fault(self, request: Request) -> Response:
        """Pass a fault mode on to the task server's ``/admin/fault``."""
        checked = await self._server_and_body(request)
        if isinstance(checked, Response):
            return checked
        name, body = checked
        if body is None or body.get("mode") not in FAULT_MODES:
            return self._error(request, 400, "bad_fault_body", modes=", ".join(FAULT_MODES))
        return await self._to_the_end(self._set_fault(request, name, body))

    async def _set_fault(self, request: Request, name: str, body: dict[str, Any]) -> Response:
        # The task server words its refusal in the language this request asked for.
        asked = {"Accept-Language": language_of(request, self.balancer)}
        try:
            answer = await self._http.put(self._admin_url(name, "fault"), json=body, headers=asked)
        except httpx.HTTPError as error:
            detail = str(error) or type(error).__name__
            message = f"{name} did not take the fault: {detail}"
            self._event(request, name, "fault", fault=fault_fields(body), result=message, ok=False)
            return self._error(request, 502, "fault_not_taken", server=name, detail=detail)
        if answer.status_code == 200:
            fault = fault_fields(answer.json())
            self.balancer.get(name).set_fault(fault)
            self._event(request, name, "fault", fault=fault, result=fault.get("mode"), ok=True)
            return JSONResponse({"server": name, "action": "fault", "fault": fault})
        message = clipped(answer_text(answer, "error"))
        self._event(request, name, "fault", fault=fault_fields(body), result=message, ok=False)
        if answer.status_code == 400:  # its own error body: sentence, code and fields
            return Response(answer.content, 400, media_type="application/json")
        fields = {"server": name, "upstream_status": answer.status_code, "detail": message}
        return self._error(request, 502, "fault_refused", **fields)

    async def algorithm(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        body = await _json_object(request, language_of(request, self.balancer))
        name = body.get("algorithm") if body else None
        names = self.balancer.algorithm_names  # only these: a file is never named over HTTP
        if name not in names:
            return self._error(request, 400, "bad_algorithm", algorithms=", ".join(names))
        try:
            previous = self.balancer.set_algorithm(name, who=_who(request))
        except PluginError as error:  # its constructor raised: the current one stays
            return self._error(request, 500, "algorithm_failed", detail=str(error))
        return JSONResponse({"algorithm": name, "previous": previous})

    async def weight(self, request: Request) -> Response:
        """``{"weight": N}``: the server's share of new traffic, live (HAProxy's weight)."""
        checked = await self._server_and_body(request)
        if isinstance(checked, Response):
            return checked
        name, body = checked
        if body is None or body.keys() != {"weight"}:
            return self._error(request, 400, "bad_weight_body")
        try:
            previous = self.balancer.set_weight(name, body["weight"], who=_who(request))
        except ValueError:
            return self._error(request, 400, "bad_weight", maximum=MAX_WEIGHT)
        except KeyError:  # removed (discovery) while the body was read
            return self._no_such_server(request, name)
        return JSONResponse({"server": name, "weight": body["weight"], "previous": previous})

    async def rollout_state(self, request: Request) -> Response:
        """The last rollout (services/balancer/rollout.py), or null before the first."""
        last = self.rollouts.last
        return JSONResponse({"rollout": last.describe() if last else None})

    async def rollout(self, request: Request) -> Response:
        """``{"strategy": "rolling" | "restart", ...}``: 202 and the rollout's state."""
        refusal = self._refusal(request)
        if refusal:
            return refusal
        try:
            plan = plan_from(await _json_object(request, language_of(request, self.balancer)))
        except BadRollout as error:
            fields = {"strategies": ", ".join(STRATEGIES), "flags": ", ".join(ALLOWED_OPTIONS)}
            return self._error(request, 400, "bad_rollout_body", detail=str(error), **fields)
        if self.rollouts.running and (last := self.rollouts.last) is not None:
            return self._error(request, 409, "rollout_running", rollout=last.describe())
        if (cannot := self.rollouts.refusal(plan)) is not None:
            return self._error(
                request, 409, "driver_unsupported", driver=self.driver.name, detail=cannot
            )
        rollout = self.rollouts.start(plan, _who(request))
        return JSONResponse({"rollout": rollout.describe()}, status_code=202)

    async def reset_stats(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal:
            return refusal
        self.balancer.reset_stats(who=_who(request))
        return JSONResponse({"reset": True})


def fault_fields(fault: Any) -> dict[str, Any]:
    """The ``FAULT_FIELDS`` of ``fault`` that are numbers or text (text cut to
    ``EVENT_TEXT``); anything else, and any other field, is dropped."""
    if not isinstance(fault, dict):
        return {}
    kept: dict[str, Any] = {}
    for name in FAULT_FIELDS:
        value = fault.get(name)
        if isinstance(value, str):
            kept[name] = clipped(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            kept[name] = value
    return kept


def _frozen_in_time(quiesce: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The hold protects only a freeze that lands within it: say so when the driver was slower."""
    if not quiesce.get("quiesced") or seconds < QUIESCE_SECONDS:
        return quiesce
    late = f"the pause took {seconds:.1f} s, longer than the {QUIESCE_SECONDS:g} s writes were held"
    return {"quiesced": False, "quiesce": f"{late}; it may have frozen inside a write"}


def _who(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _json_object(request: Request, lang: str) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one; a 413 (HTTPException, in
    ``lang``) past ``CONTROL_BODY_BYTES``, read no further."""
    try:
        raw = await bounded_body(request, CONTROL_BODY_BYTES)
    except BodyTooLarge:
        sentence = Translator(ERRORS, lang)("body_too_large", limit_bytes=CONTROL_BODY_BYTES)
        raise HTTPException(413, sentence) from None
    try:
        body = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:  # also past orjson's nesting limit, where json would recurse
        return None
    return body if isinstance(body, dict) else None


def ensure_token(token: str | None, url: str) -> str:
    """The given token, or a new one stored in the owner-only token file of the balancer at
    ``url``; a generated token is never printed, only where it is."""
    if token:
        return token
    token = secrets.token_urlsafe(24)
    path = write_token_file(token, default_token_file(url))
    print(f"ticslab balancer: control token generated, stored in {path}", file=sys.stderr)
    return token

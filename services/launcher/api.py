"""The supervisor's HTTP API on loopback: how the balancer's local driver reaches the processes.

HTTP on 127.0.0.1 (a port the kernel picks) rather than a unix socket or signals between
processes, so it works on Windows too; guarded by the stack's bearer token.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common import LOCAL_ACTIONS
from services.lang import Translator
from services.launcher.scaling import Scaler
from services.launcher.supervisor import ActionError, Supervisor
from services.web import BodyTooLarge, bounded_body, json_error, token_refusal

# The add body is at most a name: the balancer checked it, this is the bound for anyone else.
ADD_BODY_BYTES = 1024

OPTIONS_BODY_BYTES = 4096  # {"options": [...]}: a few short words


async def restart_options(request: Request) -> list[str] | None:
    """A restart's ``{"options": [...]}`` (a rollout's), or None without a body; ValueError
    when the body is too large or not that shape (the values are checked by the supervisor)."""
    try:
        raw = await bounded_body(request, OPTIONS_BODY_BYTES)
    except BodyTooLarge:
        raise ValueError(f"the body is larger than {OPTIONS_BODY_BYTES} bytes") from None
    if not raw:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    options = body.get("options") if isinstance(body, dict) and body.keys() == {"options"} else None
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError('send {"options": ["--flag=value", ...]} or no body')
    return options


def supervisor_app(supervisor: Supervisor, token: str, scaler: Scaler | None = None) -> Starlette:
    """Routes: ``GET /processes``, ``POST /processes/{name}/{action}``; with a ``scaler``,
    ``POST /processes`` (``{"name": ...}`` optional: one more task server, 201) and
    ``DELETE /processes/{name}`` (stop a task server and forget it)."""

    async def processes(request: Request) -> Response:
        if refusal := token_refusal(request, token):
            return refusal
        listed = {name: m.describe() for name, m in supervisor.processes.items()}
        return JSONResponse({"processes": listed, "actions": list(LOCAL_ACTIONS)})

    async def act(request: Request) -> Response:
        if refusal := token_refusal(request, token):
            return refusal
        name, action = request.path_params["name"], request.path_params["action"]
        try:
            options = await restart_options(request)
        except ValueError as error:
            return json_error(400, str(error))
        try:
            return JSONResponse(await supervisor.act(name, action, options))
        except ActionError as error:
            return json_error(error.status, str(error))
        except OSError as error:
            return json_error(
                502, supervisor.t("action_failed", action=action, name=name, error=error)
            )

    async def answered(
        change: Coroutine[Any, Any, dict[str, object]], action: str, name: str | None, status: int
    ) -> Response:
        """The scaler's answer with ``status``, or its refusal, or 502 when the OS failed."""
        try:
            return JSONResponse(await change, status_code=status)
        except ActionError as error:
            return json_error(error.status, str(error))
        except OSError as error:
            failed = supervisor.t("action_failed", action=action, name=name, error=error)
            return json_error(502, failed)

    async def add(request: Request) -> Response:
        if refusal := token_refusal(request, token):
            return refusal
        assert scaler is not None
        name = await _asked_name(request, supervisor.t)
        if isinstance(name, Response):
            return name
        return await answered(scaler.add(name), "add", name, 201)

    async def remove(request: Request) -> Response:
        if refusal := token_refusal(request, token):
            return refusal
        assert scaler is not None
        name = request.path_params["name"]
        return await answered(scaler.remove(name), "remove", name, 200)

    routes = [
        Route("/processes", processes, methods=["GET"]),
        Route("/processes/{name}/{action}", act, methods=["POST"]),
    ]
    if scaler is not None:
        routes += [
            Route("/processes", add, methods=["POST"]),
            Route("/processes/{name}", remove, methods=["DELETE"]),
        ]
    return Starlette(routes=routes)


async def _asked_name(request: Request, t: Translator) -> str | Response | None:
    """The ``name`` of an add body (None: the next ``serverN``), or a 400/413 refusal."""
    try:
        raw = await bounded_body(request, ADD_BODY_BYTES)
    except BodyTooLarge:
        return json_error(413, t("scale_body_too_large", limit=ADD_BODY_BYTES))
    try:
        body: Any = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        body = None
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(name, str | None):
        return json_error(400, t("scale_bad_body"))
    return name

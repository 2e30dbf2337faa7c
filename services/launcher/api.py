"""The supervisor's HTTP API on loopback: how the balancer's local driver reaches the processes.

HTTP on 127.0.0.1 (a port the kernel picks) rather than a unix socket or signals between
processes, so it works on Windows too; guarded by the stack's bearer token.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common import LOCAL_ACTIONS
from services.launcher.supervisor import ActionError, Supervisor
from services.web import BodyTooLarge, bounded_body, json_error, token_refusal

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


def supervisor_app(supervisor: Supervisor, token: str) -> Starlette:
    """Routes: ``GET /processes``, ``POST /processes/{name}/{action}``."""

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

    return Starlette(
        routes=[
            Route("/processes", processes, methods=["GET"]),
            Route("/processes/{name}/{action}", act, methods=["POST"]),
        ]
    )

"""The supervisor's HTTP API on loopback: how the balancer's local driver reaches the processes.

HTTP on 127.0.0.1 (a port the kernel picks) rather than a unix socket or signals between
processes, so it works on Windows too; guarded by the stack's bearer token.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common import LOCAL_ACTIONS
from services.launcher.supervisor import ActionError, Supervisor
from services.web import json_error, token_refusal


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
            return JSONResponse(await supervisor.act(name, action))
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

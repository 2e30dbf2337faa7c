"""The Starlette-bound pieces the task server, the balancer and the supervisor share.

JSON answers (errors in the request's language, orjson rendering), the bearer-token guard,
the 403 for a foreign ``Host``, the bounded body reader, and how uvicorn serves each app.
They live apart from services/common.py so that what needs no web framework (the dashboard,
the client, the launcher's command line) never loads Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse

from services.common import log_config
from services.errors import ERRORS
from services.lang import Translator, accepted_language

STARTUP_FAILURE = 3  # uvicorn.run's exit code when a server could not start


def json_error(
    status: int, message: str = "", /, *, code: str = "", lang: str = "en", **fields: Any
) -> JSONResponse:
    """A JSON error body a student can read and a script can parse: ``{"error": sentence,
    "code": code, **fields}``, the sentence ``code``'s in services/errors.py in ``lang``,
    filled in with ``fields`` (which stay in the body, for scripts). ``message`` without a
    code is the older form, a sentence as given."""
    if code:
        message = Translator(ERRORS, lang)(code, **fields)
        fields = {"code": code, **fields}
    return JSONResponse({"error": message, **fields}, status_code=status)


def asked_language(headers: Headers, default: str) -> str:
    """The language of an error answer: the request's ``Accept-Language``, else ``default``
    (the process's ``--lang`` / ``TICSLAB_LANG``)."""
    return accepted_language(headers.get("accept-language"), default)


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson, on the event loop without holding it long: the task server's
    10,000 tasks in ~2 ms instead of ~30, the balancer's full /history in ~3 ms, not 20."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def foreign_host_error(host: str | None, lang: str) -> JSONResponse:
    """The 403 answer to a control or admin request whose ``Host`` is not an allowed name."""
    return json_error(403, code="foreign_host", lang=lang, host=host)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison, so the token cannot be guessed byte by byte from timings."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def token_refusal(request: Request, token: str, lang: str = "en") -> JSONResponse | None:
    """The one guard of every token-protected route: None when the request carries
    ``Authorization: Bearer <token>``, else the 401 ``bad_token`` answer in ``lang``."""
    if token_matches(bearer_token(request), token):
        return None
    return json_error(401, code="bad_token", lang=lang)


class BodyTooLarge(Exception):
    """A request body over its route's limit (each caller answers it in its own way: 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


async def bounded_body(request: Request, limit: int) -> bytes:
    """The body, read no further than ``limit`` bytes: ``BodyTooLarge`` as soon as it is
    known to exceed them (a declared ``Content-Length`` is believed before anything is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def serve(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: str = "info",
    also: Sequence[Mapping[str, Any]] = (),
    **options: Any,
) -> None:
    """Run an ASGI app with uvicorn the way every ticslab service does: no access log, every
    log line escaped (``log_config``).

    ``options`` are more uvicorn settings (the balancer's limits, services/balancer/edge.py);
    each of ``also`` is one more listener in the same process and event loop, the settings it
    changes (the balancer's HTTPS port: ``port``, ``ssl_certfile``, ``ssl_keyfile``, ``app``).
    """
    import uvicorn

    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "log_config": log_config(),
        "server_header": False,
        "timeout_graceful_shutdown": 3,
        **options,
    }
    if not also:
        uvicorn.run(app, **settings)
        return
    # The first runs the app's lifespan; the others share what it started.
    servers = [uvicorn.Server(uvicorn.Config(app, **settings))]
    servers += [
        uvicorn.Server(uvicorn.Config(**{"app": app, **settings, "lifespan": "off", **more}))
        for more in also
    ]
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_together(servers))
    if not all(server.started for server in servers):
        sys.exit(STARTUP_FAILURE)


async def _serve_together(servers: list[Any]) -> None:
    """Serve until one stops (a signal, or a port it could not bind), then stop them all."""
    tasks = [asyncio.create_task(_serve_one(server)) for server in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks)


async def _serve_one(server: Any) -> None:
    # SystemExit: uvicorn's way to give up on a port it could not bind (it logged why).
    with contextlib.suppress(SystemExit):
        await server.serve()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed, as uvicorn's ``loop="auto"`` chooses."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop

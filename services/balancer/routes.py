"""The balancer's own endpoints: /health, /status, /history, /errors/stats, /events,
/metrics."""

from __future__ import annotations

import math

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.balancer.balancer import Balancer
from services.balancer.history import TrafficHistory
from services.balancer.metrics import exposition, registry_for
from services.balancer.status import errors_stats, status, status_html
from services.web import OrjsonResponse, asked_language, json_error


def wants_html(request: Request) -> bool:
    """``?format=html|json`` decides; else a browser asks for text/html first and programs
    (curl, httpx, the dashboard) do not. ValueError for any other ``format``."""
    chosen = request.query_params.get("format")
    if chosen is not None:
        if chosen not in ("html", "json"):
            raise ValueError(f"format must be html or json, got {chosen!r}")
        return chosen == "html"
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept.split(",")[0]


MAX_SINCE_CHARACTERS = 32


def since_seconds(text: str) -> float:
    """``/history``'s ``since``: unix seconds, a whole or decimal number from 0. ValueError
    for anything else (not a number, inf or nan, negative, over 32 characters)."""
    if len(text) > MAX_SINCE_CHARACTERS:
        raise ValueError(f"since must be unix seconds; got {len(text)} characters")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"since must be unix seconds (a number), got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"since must be unix seconds (a finite number, 0 or more), got {text!r}")
    return value


def language_of(request: Request, balancer: Balancer) -> str:
    """The language of this request's error answer (``Accept-Language``, else the class's)."""
    return asked_language(request.headers, balancer.config.lang)


def balancer_routes(balancer: Balancer, history: TrafficHistory) -> list[BaseRoute]:
    registry = registry_for(balancer)

    async def health(request: Request) -> JSONResponse:
        up, total = balancer.servers_up, len(balancer.servers)
        body = {"status": "ok" if up else "error", "servers_up": up, "servers_total": total}
        if not up:
            return json_error(503, code="no_server_up", lang=language_of(request, balancer), **body)
        return JSONResponse(body)

    async def status_page(request: Request) -> Response:
        try:
            html = wants_html(request)
        except ValueError:
            lang = language_of(request, balancer)
            value = request.query_params["format"][:32]
            return json_error(400, code="bad_format", lang=lang, value=value)
        data = status(balancer)
        return HTMLResponse(status_html(data)) if html else JSONResponse(data)

    async def history_page(request: Request) -> Response:
        text = request.query_params.get("since")
        after = None
        if text is not None:
            try:
                after = since_seconds(text)
            except ValueError:
                lang = language_of(request, balancer)
                return json_error(400, code="bad_history_since", lang=lang, value=text[:32])
        return OrjsonResponse(history.payload(after))

    async def errors(request: Request) -> JSONResponse:
        return JSONResponse(errors_stats(balancer))

    async def events(request: Request) -> JSONResponse:
        text = request.query_params.get("since", "0")
        try:
            since = int(text)
        except ValueError:
            lang = language_of(request, balancer)
            return json_error(400, code="bad_event_since", lang=lang, value=text[:32])
        return JSONResponse(
            {"last_id": balancer.events.last_id, "events": balancer.events.since(since)}
        )

    async def metrics(request: Request) -> Response:
        return Response(exposition(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/health", health, methods=["GET"]),
        Route("/status", status_page, methods=["GET"]),
        Route("/history", history_page, methods=["GET"]),
        Route("/errors/stats", errors, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

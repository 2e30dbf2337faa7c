"""Prometheus metrics and the error log, fed by one middleware that sees every answer.

Each app gets its own ``CollectorRegistry`` so several apps can live in one process (tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common import ErrorLog, error_message
from services.errors import ERRORS
from services.lang import Translator

UNMATCHED = "unmatched"  # the route label of requests no route matched (keeps labels bounded)
MAX_ERROR_BODY = 4096


class Metrics:
    """The server's Prometheus collectors, in a registry of its own."""

    def __init__(self, count_tasks: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ticslab_taskserver_requests_total",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ticslab_taskserver_request_duration_seconds",
            "Time to answer a request, by method and route.",
            ["method", "route"],
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "ticslab_taskserver_requests_in_progress",
            "Requests being answered right now (waiting for the tasks file included), by method.",
            ["method"],
            registry=self.registry,
        )
        self.replays = Counter(
            "ticslab_taskserver_idempotent_replays_total",
            "POSTs answered with an existing task because their Idempotency-Key was seen.",
            registry=self.registry,
        )
        tasks = Gauge(
            "ticslab_taskserver_tasks_stored",
            "Tasks in the shared file when this server last read it.",
            registry=self.registry,
        )
        tasks.set_function(count_tasks)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ObserveMiddleware:
    """Measures every request and records every 4xx/5xx answer in the error log."""

    def __init__(self, app: ASGIApp, metrics: Metrics, errors: ErrorLog) -> None:
        self.app = app
        self.metrics = metrics
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        error_body = bytearray()
        in_progress = self.metrics.in_progress.labels(scope["method"])
        in_progress.inc()
        failure: str | None = None

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif status >= 400 and len(error_body) < MAX_ERROR_BODY:
                error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        except Exception as error:
            # Answered by Starlette's outermost middleware (app.py's handler), after this one.
            status, failure = 500, unexpected_error_message(error)
            raise
        finally:
            in_progress.dec()
            route = scope["route"].path if "route" in scope else UNMATCHED
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            if status >= 400:
                endpoint = f"{method} {scope['path']}"
                message = failure or error_message(bytes(error_body)) or _phrase(status)
                self.errors.record(status, message, endpoint)


def unexpected_error_message(error: Exception) -> str:
    """The answer to a request that failed unexpectedly, and what the error log records."""
    return Translator(ERRORS, "en")("unexpected_error", type=type(error).__name__)


def _phrase(status: int) -> str:
    """What the error log records for an answer without a JSON ``error``."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"

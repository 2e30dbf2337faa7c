"""The task server's Starlette app: the seed's /tareas, the course's /api/tasks, monitoring.

Storage work blocks (file locks, database round trips), so every store call runs in a worker
thread (``anyio.to_thread``); the event loop stays free for health checks and fault modes
while a write waits. Writes queue in the event loop first (``writers.py``), so a write stuck
behind another process's file lock occupies one thread, never the whole pool. The store is
either backend (``storage/``, the :class:`Store` protocol); the app does not tell them apart
but in ``/health``, which keeps the file's ``tasks_file`` object.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio import to_thread
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services import __version__
from services.common import KEYS_HEADER, KEYS_SHARED, ErrorLog, Uptime, host_allowed
from services.taskserver.faults import NOLOCK, FaultMiddleware, FaultState
from services.taskserver.metrics import Metrics, ObserveMiddleware
from services.taskserver.storage import (
    LOCK_TIMEOUT_SECONDS,
    KeyReused,
    StorageError,
    Store,
    TaskNotFound,
    TaskStore,
    open_store,
)
from services.taskserver.validation import (
    InputError,
    idempotency_key,
    new_task_fields,
    page_query,
    parse_object,
    quiesce_seconds,
    read_body,
    read_json,
    task_changes,
    task_id,
)
from services.taskserver.writers import HOLD_WAIT_SECONDS, QueueTimeout, WriteQueue
from services.web import (
    OrjsonResponse,
    asked_language,
    foreign_host_error,
    json_error,
    token_refusal,
)

log = logging.getLogger("ticslab.taskserver")

# /health reports a write waiting this long for another process's file lock (a normal
# contended wait is milliseconds).
LOCK_WAIT_REPORTED_SECONDS = 0.5


@dataclass(frozen=True)
class TaskServerSettings:
    name: str
    tasks_file: Path
    port: int = 0
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()  # Host names for /admin besides services/common.py's
    lang: str = "en"  # of error answers to requests without Accept-Language
    fault: str = "none"  # the mode it starts in (faults.py, START_FAULTS)
    # --storage: a postgresql:// URL, file:PATH or a path; empty: the file ``tasks_file``
    storage: str = ""


class SimulatedFailure(Exception):
    """Raised on purpose by the simulate-error routes, so a real failure path answers 500."""


def create_app(settings: TaskServerSettings) -> Starlette:
    """A ready app for one server; the tasks file is created if missing, a database's
    schema made or brought up to date."""
    store: Store = open_store(settings.storage or settings.tasks_file, settings.name)
    try:
        store.prepare()
    except BaseException:
        store.close()
        raise
    faults = FaultState()
    faults.set({"mode": settings.fault})
    errors = ErrorLog()
    metrics = Metrics(store.count)
    uptime = Uptime()
    writes = WriteQueue(store.writer_lock)

    async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
        return await to_thread.run_sync(function, *args)

    async def write(function: Callable[..., Any], *args: Any) -> Any:
        async with writes.turn(LOCK_TIMEOUT_SECONDS):
            return await in_thread(function, *args)

    async def list_tasks(request: Request) -> Response:
        tasks, total = await in_thread(store.page, *page_query(request))
        return OrjsonResponse(tasks, headers={"X-Total-Count": str(total)})

    async def create_task(request: Request) -> Response:
        key = idempotency_key(request)
        title, completed = new_task_fields(await read_json(request))
        if faults.mode == NOLOCK:  # naive on purpose: read and write with no lock, no key
            read, task = await in_thread(store.read_naively, title, completed)
            await write(store.raise_last_id, task["id"])  # never hand this id out again
            await in_thread(store.write_naively, read, task)
            return OrjsonResponse(task, 201)
        task, replayed = await write(store.create, title, completed, key)
        if replayed:
            metrics.replays.inc()
            return OrjsonResponse(task, 201, headers={"Idempotent-Replayed": "true"})
        return OrjsonResponse(task, 201)

    async def get_task(request: Request) -> Response:
        return OrjsonResponse(await in_thread(store.get, _path_id(request)))

    async def update_task(request: Request) -> Response:
        changes = task_changes(await read_json(request))
        return OrjsonResponse(await write(store.update, _path_id(request), changes))

    async def complete_task(request: Request) -> Response:
        return OrjsonResponse(await write(store.update, _path_id(request), {"completed": True}))

    async def delete_task(request: Request) -> Response:
        return OrjsonResponse({"deleted": await write(store.delete, _path_id(request))})

    async def simulate_error(request: Request) -> Response:
        raise SimulatedFailure(f"{request.method} {request.url.path}")

    async def health(request: Request) -> Response:
        problem = await in_thread(store.problem)
        storage = {**store.describe(), "ok": problem is None}
        if (waited := store.lock_wait()) >= LOCK_WAIT_REPORTED_SECONDS:
            # Still 200: every server shares the lock (or the database), and reads answer.
            storage["lock_wait_seconds"] = round(waited, 1)
            storage["warning"] = (
                f"a write here has waited {waited:.1f} s for the lock, held by another "
                f"process; writes give up after {LOCK_TIMEOUT_SECONDS:g} s (503)"
                if isinstance(store, TaskStore)
                else f"a write here has waited {waited:.1f} s for a database connection"
            )
        body: dict[str, Any] = {
            "status": "ok",
            "server": settings.name,
            "uptime": uptime.seconds,
        }
        if isinstance(store, TaskStore):  # the dashboard and the course's checks read it
            body["tasks_file"] = {k: v for k, v in storage.items() if k != "kind"}
        body["storage"] = storage
        body["fault"] = faults.mode
        # Keys are checked in the shared tasks.json, except by nolock's naive creates: then
        # the balancer must not resend a POST that may have reached this server.
        declared = {KEYS_HEADER: KEYS_SHARED} if faults.mode != NOLOCK else {}
        if problem:
            return OrjsonResponse({**body, "status": "error", "error": problem}, 503, declared)
        if faults.mode == "unhealthy":
            reason = "fault mode 'unhealthy' is on"
            return OrjsonResponse({**body, "status": "error", "error": reason}, 503, declared)
        return OrjsonResponse(body, headers=declared)

    async def info(request: Request) -> Response:
        pid = os.getpid()
        return OrjsonResponse(
            {
                "server": settings.name,
                "port": settings.port,
                "pid": pid,
                "version": __version__,
                "fault": faults.mode,  # shown even while a hang holds /health
            }
        )

    async def error_stats(request: Request) -> Response:
        return OrjsonResponse(errors.stats())

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def get_fault(request: Request) -> Response:
        if refusal := _admin_refusal(request, settings):
            return refusal
        return OrjsonResponse(faults.describe())

    async def set_fault(request: Request) -> Response:
        if refusal := _admin_refusal(request, settings):
            return refusal
        before = faults.mode
        fault = faults.set(parse_object(await read_body(request)))
        if fault["mode"] == NOLOCK:
            where = store.describe()
            log.warning(
                "%s: fault mode nolock is ON: creates write %s without the %s and WILL "
                "LOSE TASKS (on purpose, the race-condition lesson); "
                'PUT /admin/fault {"mode": "none"} ends it',
                settings.name,
                where.get("path") or where.get("url"),
                "file lock" if where["kind"] == "file" else "transaction or sequence",
            )
        elif before == NOLOCK:
            log.info("%s: fault mode nolock is off (now %s)", settings.name, fault["mode"])
        return OrjsonResponse(fault)

    async def quiesce(request: Request) -> Response:
        """Hold this server's writes for a moment, so a pause cannot freeze the file lock."""
        if refusal := _admin_refusal(request, settings):
            return refusal
        seconds = quiesce_seconds(await read_body(request))
        left = await writes.hold(seconds)
        if left is None:
            lang = language_of(request)
            return json_error(503, code="writes_not_held", lang=lang, seconds=HOLD_WAIT_SECONDS)
        return OrjsonResponse({"server": settings.name, "writes_held_seconds": round(left, 3)})

    async def end_quiesce(request: Request) -> Response:
        if refusal := _admin_refusal(request, settings):
            return refusal
        return OrjsonResponse({"server": settings.name, "ended": writes.end_hold()})

    routes = [
        route("/tareas", GET=list_tasks, POST=create_task),
        route("/tareas/{id}", GET=get_task, PUT=update_task, DELETE=delete_task),
        route("/api/tasks", GET=list_tasks, POST=create_task),
        route("/api/tasks/simulate-error", POST=simulate_error),
        route("/api/tasks/{id}", GET=get_task, DELETE=delete_task),
        route("/api/tasks/{id}/complete", PUT=complete_task),
        route("/error500", GET=simulate_error),
        route("/health", GET=health),
        route("/info", GET=info),
        route("/errors/stats", GET=error_stats),
        route("/metrics", GET=prometheus),
        route("/admin/fault", GET=get_fault, PUT=set_fault),
        route("/admin/quiesce", POST=quiesce, DELETE=end_quiesce),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await in_thread(store.close)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(ObserveMiddleware, metrics=metrics, errors=errors),
            Middleware(FaultMiddleware, faults=faults, lang=settings.lang),
        ],
        exception_handlers={
            HTTPException: _http_error,
            InputError: _input_error,
            TaskNotFound: _not_found,
            KeyReused: _key_reused,
            QueueTimeout: _queue_timeout,
            StorageError: _storage_error,
            SimulatedFailure: _simulated_failure,
            Exception: _unexpected_error,
        },
    )
    app.state.lang = settings.lang
    app.state.busy_code = "tasks_file_busy" if isinstance(store, TaskStore) else "storage_busy"
    return app


Endpoint = Callable[[Request], Awaitable[Response]]


def route(path: str, **handlers: Endpoint) -> Route:
    """One route per path with a handler per method, so a wrong method's 405 names every
    method the path takes (with one route per method, Starlette names only the first's)."""

    async def by_method(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, by_method, methods=list(handlers))


def _path_id(request: Request) -> int:
    raw = request.path_params["id"]
    found = task_id(raw)
    if found is None:
        raise TaskNotFound(raw)
    return found


def language_of(request: Request) -> str:
    """The language of this request's error answer (``Accept-Language``, else the server's)."""
    return asked_language(request.headers, request.app.state.lang)


def _admin_refusal(request: Request, settings: TaskServerSettings) -> Response | None:
    """Admin routes answer an allowed Host (DNS rebinding guard) with the token, if set:
    None when this request may go on, else the answer refusing it."""
    host = request.headers.get("host")
    lang = language_of(request)
    if not host_allowed(host, settings.allowed_hosts):
        return foreign_host_error(host, lang)
    if not settings.token:
        return json_error(403, code="admin_off", lang=lang)
    return token_refusal(request, settings.token, lang)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method), as JSON."""
    assert isinstance(exc, HTTPException)
    where = {"method": request.method, "path": request.url.path}
    headers = dict(exc.headers or {})
    lang = language_of(request)
    if exc.status_code == 404:
        response = json_error(404, code="route_not_found", lang=lang, **where)
    elif exc.status_code == 405:
        # Starlette lists a route's methods in set order, which changes from run to run.
        headers["Allow"] = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
        allowed = headers["Allow"]
        response = json_error(405, code="method_not_allowed", lang=lang, allowed=allowed, **where)
    else:
        response = json_error(exc.status_code, exc.detail)
    response.headers.update(headers)
    return response


async def _input_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InputError)
    return json_error(exc.status, code=exc.code, lang=language_of(request), **exc.fields)


async def _not_found(request: Request, exc: Exception) -> Response:
    return json_error(404, code="task_not_found", lang=language_of(request), id=exc.args[0])


async def _key_reused(request: Request, exc: Exception) -> Response:
    """The IETF Idempotency-Key draft's answer to a key reused with a different request (the
    key is not repeated: error messages are shown on the public /errors/stats)."""
    return json_error(422, code="key_reused", lang=language_of(request))


async def _queue_timeout(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QueueTimeout)
    code = request.app.state.busy_code
    return json_error(503, code=code, lang=language_of(request), seconds=exc.seconds)


async def _storage_error(request: Request, exc: Exception) -> Response:
    """Storage that cannot be used now (a file that does not parse, a database away): 503,
    its code and fields (the file's ``tasks_file``, a database's redacted ``storage``)."""
    assert isinstance(exc, StorageError)
    return json_error(503, code=exc.code, lang=language_of(request), **exc.fields)


async def _simulated_failure(request: Request, exc: Exception) -> Response:
    lang = language_of(request)
    return json_error(500, code="simulated_error", lang=lang, endpoint=str(exc), simulated=True)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    lang = language_of(request)
    return json_error(500, code="unexpected_error", lang=lang, type=type(exc).__name__)

"""The hot path: forward one request to a server chosen by the algorithm, with failover.

A bare ASGI callable and a pool of upstream connections of our own (upstream.py: asyncio
Protocols, httptools parses the answers): half the CPU per request of the aiohttp client it
replaced, 1.6-1.9x its throughput (issue 28, docs/benchmarks.md), and an httpx hop was
slower still (docs/design/balancer.md). The rules, each with its reason, are in
docs/design/balancer.md ("The proxy"); in short (what of the heads is forwarded: headers.py):

- Only the path and query of the client's request target are used: the upstream connection
  goes to the chosen server's scheme, host and port, so nothing a client sends picks the host.
- The request body is buffered (up to ``max_body_bytes``), so a failed try can be resent.
- The answer is held until it is complete, ``HOLD_BYTES`` long or ``HOLD_SECONDS`` old, then
  streamed: small answers (all of the lab's) are retried cleanly if the server dies while
  sending them; large or slow ones flow to the client as they arrive, in bounded memory.
- A stream holds at most ~0.5 MiB, whatever its size and however slow its client: the
  upstream socket takes ``STREAM_PIECE`` per read, its reading pauses past two of them, and the
  client gets pieces of ``STREAM_PIECE`` only while its transport is under its high-water
  mark. Buffers that small go back to the system when a stream ends.
- Each phase has its own timeout: connect, then the longest the server may stay silent
  (before its headers, between two pieces of its body); a transfer that keeps going is
  never cut. The client's side is bounded by the protocol (services/protocol.py).
- A request that may have reached a server is sent again only if replaying it cannot
  duplicate it: idempotent methods, or servers that declared they deduplicate
  ``Idempotency-Key`` across the pool (``Idempotency-Key-Support: shared`` on health checks).
- Every try is the balancer's own, counted: the upstream client never re-sends on its own
  (aiohttp's did, for idempotent requests). A reused pooled connection that fails before any
  answer byte (the server closed it as idle) is tried once more on a new connection, whatever
  the method; pooled connections are dropped after ``upstream_keepalive`` idle seconds, before
  the servers drop them, and reused only after an answer read to its end and kept alive.
- A timed-out try is retried at most once, and only within the client's deadline:
  ``2 x response_timeout`` from the start of the request (10 s, the course client's timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from services.balancer.headers import (
    IDEMPOTENCY_KEY,
    ClientError,
    answer_headers,
    forward_headers,
    has_idempotency_key,
    request_target,
)
from services.balancer.health import connection_failure_text
from services.balancer.server import Server
from services.balancer.upstream import (
    STREAM_PIECE,
    BadAnswer,
    ConnectFailed,
    Connection,
    ConnectTimeout,
    Disconnected,
    Upstream,
    UpstreamError,
    request_head,
)
from services.common import error_message, error_type
from services.web import asked_language, json_error

if TYPE_CHECKING:
    from services.balancer.balancer import Balancer
    from services.balancer.config import BalancerConfig

log = logging.getLogger("ticslab.balancer")

# Methods that may be sent again after a reset or timeout (RFC 9110 section 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
# An answer is held (and so can still be retried) until it ends, reaches this size, or is
# this old after its headers arrived; then it is streamed. The lab's JSON answers end first.
HOLD_BYTES = 64 * 1024
HOLD_SECONDS = 0.02
# A streamed answer moves in pieces of at most STREAM_PIECE (upstream.py says why that size).
# The client's deadline, in response timeouts from the start of its request: a timed-out try
# is retried only before it, and the retry gets only what is left of it.
DEADLINE_TIMEOUTS = 2
# Everything an exchange with a server may raise (upstream.py's errors are among them).
UPSTREAM_FAILURES = (UpstreamError, OSError, TimeoutError)

CONNECT, REFUSED, TIMEOUT, RESET = "connect", "refused", "timeout", "reset"
# What the client gets when every try failed, by the last failure's kind: the status, the
# course's error type and the error code (services/errors.py).
GIVE_UP = {
    None: (503, "503_SERVICE_UNAVAILABLE", "no_server"),
    CONNECT: (503, "503_SERVICE_UNAVAILABLE", "no_server"),
    REFUSED: (503, "503_SERVICE_UNAVAILABLE", "no_server"),
    RESET: (502, "502_BAD_GATEWAY", "upstream_reset"),
    TIMEOUT: (504, "504_GATEWAY_TIMEOUT", "upstream_timeout"),
}


class UpstreamAborted(Exception):
    """The server broke off an answer that was already streaming: the client connection is
    closed, as HAProxy does, so the client sees a truncated answer and not a complete one."""


def classify(error: BaseException) -> str:
    """connect/refused (nothing was sent: always safe to retry), timeout or reset."""
    if isinstance(error, ConnectFailed):
        return REFUSED if isinstance(error.os_error, ConnectionRefusedError) else CONNECT
    if isinstance(error, ConnectTimeout):
        return CONNECT
    if isinstance(error, TimeoutError):
        return TIMEOUT
    return RESET


def unreadable_answer(error: BaseException) -> bool:
    """The server answered, but not in HTTP: a status past 999, a 1xx followed by more bytes,
    garbage. It was read, so it is never sent again: one 502, as HAProxy answers it."""
    return isinstance(error, BadAnswer)


def replay_is_harmless(kind: str, method: str) -> bool:
    """Nothing was sent (no connection), or sending again changes nothing (RFC 9110 9.2.2)."""
    return kind in (CONNECT, REFUSED) or method in IDEMPOTENT


def may_retry(kind: str, method: str, keyed: bool) -> bool:
    """Whether a failed try may be sent to another server. ``keyed``: the request carries an
    ``Idempotency-Key`` and the failed server declared it deduplicates keys across the pool
    (the retry then goes only to servers that declared it too)."""
    return replay_is_harmless(kind, method) or keyed


class Proxy:
    """Forwards requests the balancer does not answer itself."""

    def __init__(self, balancer: Balancer, config: BalancerConfig) -> None:
        self.balancer = balancer
        self.config = config
        self._upstream: Upstream | None = None

    async def start(self) -> None:
        self._upstream = Upstream(self.config.connect_timeout, self.config.upstream_keepalive)

    def forget_address(self, server: Server) -> None:
        """``server`` has a new container (a rollout): its name is resolved again at the next
        connection rather than in up to 10 s, and no idle connection to its old address is
        reused, so no request goes to its old address."""
        if self._upstream is not None:
            self._upstream.forget(server.host, server.port)

    async def stop(self) -> None:
        if self._upstream is not None:
            self._upstream.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        client = scope["client"][0] if scope.get("client") else ""
        self.balancer.count_request()  # before any answer, so errors never outnumber requests
        try:
            target = request_target(scope)
            headers = forward_headers(scope, client)
            body = await self._read_body(receive)
        except ClientError as error:
            await self._send_error(send, scope, None, error.status, error.code, **error.fields)
            return
        if body is None:  # the client went away
            return

        tried: list[Server] = []
        failure: str | None = None
        keyed_only = False  # a retry that may repeat a POST: only servers that deduplicate
        deadline = time.monotonic() + DEADLINE_TIMEOUTS * self.config.response_timeout
        timed_out = False
        while len(tried) <= self.config.max_retries:
            server = self.balancer.choose(tried, client, keyed_only)
            if server is None:
                break
            if tried:
                tried[-1].stats.retries += 1
            tried.append(server)
            keyable = method not in IDEMPOTENT and server.honours_keys
            if keyable and not has_idempotency_key(headers):
                headers.append((IDEMPOTENCY_KEY, uuid.uuid4().hex))
            failure = await self._try(scope, send, server, target, headers, body, deadline)
            if failure is None:
                if len(tried) > 1:  # a failure the client never saw: summed up in the log
                    self.balancer.journal.retried(tried[0].name, server.name)
                return
            keyed = server.honours_keys and has_idempotency_key(headers)
            if not may_retry(failure, method, keyed):
                break
            if failure == TIMEOUT:  # once at most, and only while the client still waits
                if timed_out or time.monotonic() >= deadline:
                    break
                timed_out = True
            keyed_only = keyed_only or not replay_is_harmless(failure, method)
        status, kind, code = GIVE_UP[failure]
        if status == 503:  # no server could take it: none was UP, or every one refused
            self.balancer.no_backend += 1
        last = tried[-1] if tried else None
        await self._send_error(send, scope, last, status, code, kind=kind)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole request body, None if the client went away; ClientError (413) past
        ``max_body_bytes``. A client that pauses too long is the protocol's to end (408)."""
        chunks: list[bytes] = []
        size, limit = 0, self.config.max_body_bytes
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ClientError(413, "body_too_large", limit_bytes=limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _try(
        self,
        scope: Scope,
        send: Send,
        server: Server,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        deadline: float,
    ) -> str | None:
        """One try on ``server``: None once its answer went to the client, else the kind of
        failure (already counted), with nothing sent to the client. The server may stay
        silent for ``response_timeout``, never past the client's ``deadline``."""
        method = scope["method"]
        head = request_head(method, target, server, headers, len(body))
        started = time.perf_counter()
        self._count_try(server)
        server.in_flight += 1
        connection: Connection | None = None
        silence = min(self.config.response_timeout, max(0.001, deadline - time.monotonic()))
        try:
            try:
                # A small body goes in the same buffer as the head; a large one is not copied.
                request = (head + body,) if len(body) < HOLD_BYTES else (head, body)
                connection = await self._send(server, request, silence, method == "HEAD")
                held, complete = await self._hold(connection)
            except UPSTREAM_FAILURES as error:
                if unreadable_answer(error):
                    await self._send_error(
                        send, scope, server, 502, "bad_upstream_answer", server=server.name
                    )
                    return None
                return self._failed(server, error)
            self._answered(server, time.perf_counter() - started, connection.status)
            if not 200 <= connection.status <= 599:  # 1xx (101 too) or beyond HTTP's range
                fields: dict[str, Any] = {
                    "server": server.name,
                    "upstream_status": connection.status,
                }
                await self._send_error(send, scope, server, 502, "bad_upstream_status", **fields)
                return None
            await self._send_answer(scope, send, server, connection, held, complete)
            return None
        finally:
            server.in_flight -= 1
            if connection is not None and self._upstream is not None:
                # Read to the end and keep-alive: back to the pool; else closed, never reused.
                self._upstream.release(connection)

    async def _send(
        self, server: Server, request: tuple[bytes, ...], silence: float, head_only: bool
    ) -> Connection:
        """The request on a pooled connection, until its answer's head; if that connection
        was reused and the server had closed it (it fails before any answer byte), once more
        on a new connection, as a counted try of its own. The first failure is not held
        against the server. Raises what the exchange raised, the connection closed."""
        upstream = self._upstream
        assert upstream is not None
        try:
            connection, _ = await upstream.exchange(server, request, silence, head_only, False)
            return connection
        except Disconnected as error:
            if not error.stale:
                raise
            self.balancer.journal.retried(server.name, server.name)  # told in the summary
        server.stats.retries += 1
        self._count_try(server)
        connection, _ = await upstream.exchange(server, request, silence, head_only, True)
        return connection

    def _count_try(self, server: Server) -> None:
        server.stats.tries += 1
        server.stats.rate.add(time.monotonic())

    async def _hold(self, connection: Connection) -> tuple[list[bytes], bool]:
        """Read the answer until it ends (True), passes ``HOLD_BYTES`` or ``HOLD_SECONDS``
        (False: stream the rest). Raises what the connection raised, to be retried."""
        chunks: list[bytes] = []
        size = 0
        deadline = connection.loop.time() + HOLD_SECONDS
        while True:
            chunk = connection.take()  # the whole of a small answer is usually here
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
                if size >= HOLD_BYTES:
                    return chunks, False
            if connection.at_eof():
                return chunks, True
            if not await connection.more(deadline):
                return chunks, False

    async def _send_answer(
        self,
        scope: Scope,
        send: Send,
        server: Server,
        connection: Connection,
        held: list[bytes],
        complete: bool,
    ) -> None:
        """The server's answer, unchanged but for hop-by-hop headers, plus
        ``X-Upstream-Server``: all at once if it was held whole, else streamed."""
        method, status = scope["method"], connection.status
        headers = answer_headers(connection.headers, keep_length=not complete or method == "HEAD")
        payload = b"".join(held)
        if complete and method != "HEAD" and status >= 200 and status not in (204, 304):
            headers.append((b"content-length", b"%d" % len(payload)))
        headers.append((b"x-upstream-server", server.name_bytes))
        if status >= 400:
            message = (error_message(payload) if complete else None) or f"HTTP {status}"
            self._record_error(scope, status, message, error_type(status), server)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if complete:
            await send({"type": "http.response.body", "body": payload})
            return
        await send({"type": "http.response.body", "body": payload, "more_body": True})
        await self._stream(scope, send, server, connection)

    async def _stream(
        self, scope: Scope, send: Send, server: Server, connection: Connection
    ) -> None:
        """The rest of the answer as it arrives, in pieces of ``STREAM_PIECE``: ``send``
        waits while the client's transport is past its high-water mark, so at most that mark
        and one piece wait for the client, and the connection's queue for them (its reading
        paused past two pieces). A server silent for
        longer than ``response_timeout``, or that breaks the connection, aborts the client
        connection."""
        while True:
            try:
                chunk = await connection.read(STREAM_PIECE)
            except UPSTREAM_FAILURES as error:
                kind = classify(error)
                detail = connection_failure_text(error, self.config.response_timeout)
                self._failed(server, error)
                where = endpoint(scope)
                log.warning("%s broke off an answer to %s: %s", server.name, where, detail)
                raise UpstreamAborted(f"{server.name}: {detail} ({kind})") from None
            if not chunk:
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # The write lands at the end of this turn of the loop (CorkedTransport): let it,
            # so that the transport can pause the next send past its high-water mark.
            await asyncio.sleep(0)

    def _answered(self, server: Server, elapsed: float, status: int) -> None:
        """Count an answer: latency is the time until it was complete or began to stream."""
        stats = server.stats
        server.answered_at = time.perf_counter()
        stats.responses[min(status // 100, 5) - 1] += 1
        stats.record_latency(elapsed)
        server.observe_latency(elapsed, status)
        server.live_failures = 0
        self.balancer.record_answer(server, status)

    def _failed(self, server: Server, error: BaseException) -> str:
        """Count a failed exchange with ``server``; returns its kind."""
        kind = classify(error)
        stats = server.stats
        if kind == TIMEOUT:
            stats.timeouts += 1
        elif kind == RESET:
            stats.resets += 1
        else:
            stats.connect_failures += 1
        detail = connection_failure_text(error, self.config.response_timeout)
        self.balancer.record_live_failure(server, kind, detail)
        return kind

    def _record_error(
        self, scope: Scope, status: int, message: str, kind: str, server: Server | None
    ) -> None:
        """An error answer, a server's or our own, in ``/errors/stats`` and the server's counts.

        Counted only: an HTTP answer, even a 5xx, is never held against the server's health.
        """
        name = server.name if server else None
        self.balancer.errors.record(status, message, endpoint(scope), kind=kind, server=name)
        if server is not None:
            server.stats.errors[kind] += 1

    async def _send_error(
        self,
        send: Send,
        scope: Scope,
        server: Server | None,
        status: int,
        code: str,
        /,
        kind: str | None = None,
        **fields: Any,
    ) -> None:
        """The balancer's own error answer, in the request's language; it names every
        server's state."""
        lang = asked_language(Headers(scope=scope), self.config.lang)
        answer = json_error(status, code=code, lang=lang, **fields, servers=self.balancer.states())
        message = orjson.loads(answer.body)["error"]
        self._record_error(scope, status, message, kind or error_type(status), server)
        body = answer.body
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if status == 413:  # the rest of the request was not read: the connection ends
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def endpoint(scope: Scope) -> str:
    """``METHOD /path`` as the course's ``recent_errors`` show it."""
    return f"{scope['method']} {scope['path']}"

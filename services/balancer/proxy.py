"""The hot path: forward one request to a server chosen by the algorithm, with failover.

A bare ASGI callable and one shared ``aiohttp.ClientSession`` (measured ~10x faster than an
httpx hop, see docs/design/balancer.md). The request body is buffered so that a failed try
can be resent; the response is buffered too, so a reset half-way through the body is also a
clean retry for requests that may be replayed.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from yarl import URL

from services.balancer.health import describe_failure
from services.balancer.server import Server
from services.common import error_type

if TYPE_CHECKING:
    from services.balancer.balancer import Balancer
    from services.balancer.config import BalancerConfig

Scope = dict[str, Any]

# Hop-by-hop headers (RFC 9110 section 7.6.1) are the proxy's own business, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Also recomputed by us: the length (bodies are buffered) and, on answers, uvicorn's own Date.
DROP_REQUEST = HOP_BY_HOP | {b"content-length", b"x-forwarded-for", b"x-forwarded-proto"}
DROP_RESPONSE = HOP_BY_HOP | {b"content-length", b"date"}
# Methods that may be sent again after a reset or timeout (RFC 9110 section 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
IDEMPOTENCY_KEY = "Idempotency-Key"

CONNECT, REFUSED, TIMEOUT, RESET = "connect", "refused", "timeout", "reset"
# What the client gets when every try failed, by the last failure's kind.
GIVE_UP = {
    None: (503, "503_SERVICE_UNAVAILABLE", "no task server available"),
    CONNECT: (503, "503_SERVICE_UNAVAILABLE", "no task server available"),
    REFUSED: (503, "503_SERVICE_UNAVAILABLE", "no task server available"),
    RESET: (502, "502_BAD_GATEWAY", "the task server closed the connection without answering"),
    TIMEOUT: (504, "504_GATEWAY_TIMEOUT", "the task server did not answer in time"),
}


class BodyTooLarge(Exception):
    pass


def classify(error: BaseException) -> str:
    """connect/refused (nothing was sent: always safe to retry), timeout or reset."""
    if isinstance(error, aiohttp.ClientConnectorError):
        return REFUSED if isinstance(error.os_error, ConnectionRefusedError) else CONNECT
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return CONNECT
    if isinstance(error, TimeoutError):
        return TIMEOUT
    return RESET


def may_retry(kind: str, method: str, headers: list[tuple[str, str]]) -> bool:
    """Connect failures always; resets and timeouts only if replaying cannot duplicate."""
    if kind in (CONNECT, REFUSED) or method in IDEMPOTENT:
        return True
    return method == "POST" and has_idempotency_key(headers)


def has_idempotency_key(headers: list[tuple[str, str]]) -> bool:
    return any(name.lower() == "idempotency-key" for name, _ in headers)


class Proxy:
    """Forwards requests the balancer does not answer itself."""

    def __init__(self, balancer: Balancer, config: BalancerConfig) -> None:
        self.balancer = balancer
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10),
            timeout=aiohttp.ClientTimeout(
                total=self.config.response_timeout, sock_connect=self.config.connect_timeout
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            body = await read_body(receive, self.config.max_body_bytes)
        except BodyTooLarge:
            limit = self.config.max_body_bytes
            await self._send_error(send, scope, None, 413, f"request body over {limit} bytes")
            return
        if body is None:  # the client went away
            return
        method: str = scope["method"]
        client = scope["client"][0] if scope.get("client") else ""
        headers = forward_headers(scope, client)
        if method == "POST" and not has_idempotency_key(headers):
            headers.append((IDEMPOTENCY_KEY, uuid.uuid4().hex))
        target = scope["raw_path"] or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        target_text = target.decode("latin-1")
        self.balancer.count_request()

        tried: list[Server] = []
        failure: str | None = None
        while len(tried) <= self.config.max_retries:
            server = self.balancer.choose(tried, client)
            if server is None:
                break
            if tried:
                tried[-1].stats.retries += 1
            tried.append(server)
            answer = await self._try(server, method, target_text, headers, body)
            if isinstance(answer, str):
                failure = answer
                if may_retry(failure, method, headers):
                    continue
                break
            status, raw_headers, payload = answer
            await send_answer(send, method, status, raw_headers, payload, server)
            if status >= 400:
                message = error_message(payload) or f"HTTP {status}"
                self._record_error(scope, status, message, error_type(status), server)
            return
        status, kind, message = GIVE_UP[failure]
        if failure is None:
            self.balancer.no_backend += 1
        await self._send_error(send, scope, tried[-1] if tried else None, status, message, kind)

    async def _try(
        self, server: Server, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, tuple[tuple[bytes, bytes], ...], bytes] | str:
        """One try on ``server``: the answer, or the kind of failure (already accounted)."""
        assert self._session is not None
        stats = server.stats
        started = time.perf_counter()
        stats.requests += 1
        stats.rate.add(time.monotonic())
        server.in_flight += 1
        try:
            async with self._session.request(
                method,
                URL(server.url + target, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
            ) as response:
                payload = await response.read()
                status = response.status
                raw_headers = response.raw_headers
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            kind = classify(error)
            if kind == TIMEOUT:
                stats.timeouts += 1
            elif kind == RESET:
                stats.resets += 1
            else:
                stats.connect_failures += 1
            detail = describe_failure(error, self.config.response_timeout)
            self.balancer.record_live_failure(server, kind, detail)
            return kind
        finally:
            server.in_flight -= 1
        server.answered_at = time.perf_counter()
        elapsed = server.answered_at - started
        stats.responses[min(status // 100, 5) - 1] += 1
        stats.record_latency(elapsed)
        server.observe_latency(elapsed, status)
        server.live_failures = 0
        return status, raw_headers, payload

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
        send: Any,
        scope: Scope,
        server: Server | None,
        status: int,
        message: str,
        kind: str | None = None,
    ) -> None:
        """The balancer's own error answer; it names every server's state."""
        self._record_error(scope, status, message, kind or error_type(status), server)
        body = orjson.dumps({"error": message, "servers": self.balancer.states()})
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body (None if the client disconnected)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def forward_headers(scope: Scope, client: str) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones, plus ``X-Forwarded-For``/``-Proto``."""
    drop = DROP_REQUEST
    forwarded_for = ""
    for name, value in scope["headers"]:
        if name == b"connection":
            drop = drop | {token.strip().lower().encode() for token in value.decode().split(",")}
        elif name == b"x-forwarded-for":
            forwarded_for = value.decode("latin-1") + ", "
    headers = [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope["headers"]
        if name not in drop
    ]
    headers.append(("X-Forwarded-For", forwarded_for + client))
    headers.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
    return headers


async def send_answer(
    send: Any,
    method: str,
    status: int,
    raw_headers: tuple[tuple[bytes, bytes], ...],
    payload: bytes,
    server: Server,
) -> None:
    """The server's answer, unchanged but for hop-by-hop headers, plus ``X-Upstream-Server``."""
    headers = []
    for name, value in raw_headers:
        lower = name.lower()
        if lower not in DROP_RESPONSE:
            headers.append((lower, value))
        elif lower == b"content-length" and method == "HEAD":
            headers.append((lower, value))  # a HEAD answer states the GET body's length
    if method != "HEAD" and status >= 200 and status not in (204, 304):
        headers.append((b"content-length", b"%d" % len(payload)))
    headers.append((b"x-upstream-server", server.name.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def error_message(payload: bytes) -> str | None:
    """The ``error`` field of a JSON error body, if it has one."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return None


def endpoint(scope: Scope) -> str:
    """``METHOD /path`` as the course's ``recent_errors`` show it."""
    return f"{scope['method']} {scope['path']}"

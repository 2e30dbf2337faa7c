"""The proxy's upstream client (services/balancer/upstream.py) against scripted servers.

Each server is a real asyncio server on 127.0.0.1 (an ephemeral port) running a script per
connection, and counting connections and requests: what is reused, when a connection is
closed, what a bad or slow answer gives, how much a stream holds while nobody reads it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import wait_until_async

from services.balancer.certificates import local_files
from services.balancer.proxy import CONNECT, REFUSED, classify, unreadable_answer
from services.balancer.server import Server
from services.balancer.upstream import (
    MAX_HEAD_BYTES,
    STREAM_PIECE,
    BadAnswer,
    ConnectFailed,
    Connection,
    ConnectTimeout,
    CutShort,
    Disconnected,
    ServerSilent,
    Upstream,
    request_head,
)

pytestmark = pytest.mark.smoke  # httptools' leniencies and callbacks at its floor too (.ci/run)

Script = Callable[["Scripted", asyncio.StreamReader, Any], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's head and Content-Length body; None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


class Scripted:
    """A server on 127.0.0.1 that runs ``script`` on each connection."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.ended = 0  # connections the client closed (seen by ``request``)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    def at(self, scheme: str = "http", host: str = "127.0.0.1") -> Server:
        return Server("s1", f"{scheme}://{host}:{self.port}")

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(self, reader, writer)  # then the server closes the connection
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def request(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request; None (counted in ``ended``) once the client closed."""
        request = await read_request(reader)
        if request is None:
            self.ended += 1
        else:
            self.requests.append(request)
        return request


def answering(*answers: bytes) -> Script:
    """Each request on a connection gets the next answer; then the server closes it."""

    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        for answer in answers:
            if await server.request(reader) is None:
                return
            writer.write(answer)
            await writer.drain()

    return script


def keep_answering(answer: bytes) -> Script:
    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        while await server.request(reader) is not None:
            writer.write(answer)
            await writer.drain()

    return script


async def start(
    upstream: Upstream, server: Server, method: str = "GET", silence: float = 5.0
) -> tuple[Connection, bool]:
    head = request_head(method, "/x", server, [("Host", "lab")], 0)
    return await upstream.exchange(server, (head, b""), silence, method == "HEAD", False)


async def body_of(connection: Connection) -> bytes:
    pieces = []
    while piece := await connection.read(STREAM_PIECE):
        assert len(piece) <= STREAM_PIECE
        pieces.append(piece)
    return b"".join(pieces)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# Reuse: only an answer read to its end and kept alive ------------------------------------


@pytest.mark.parametrize(
    ("answer", "body", "connections"),
    [
        (OK, b"ok", 1),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", 2),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", 2),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", b"ok", 1),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"ok", 1),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", 1),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", b"", 1),
    ],
    ids=["length", "close", "1.0", "1.0-keep-alive", "chunked", "204", "304"],
)
async def test_a_connection_is_reused_only_after_a_whole_keep_alive_answer(
    answer: bytes, body: bytes, connections: int
) -> None:
    async with Scripted(keep_answering(answer)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        for _ in range(2):
            connection, _ = await start(upstream, server.at())
            assert connection.status in (200, 204, 304)
            assert await body_of(connection) == body
            upstream.release(connection)
        assert server.connections == connections
        assert len(server.requests) == 2
        upstream.close()


async def test_an_answer_not_read_to_its_end_closes_its_connection() -> None:
    long = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
    async with Scripted(keep_answering(long)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        assert await connection.read(10) == b"x" * 10
        upstream.release(connection)  # the proxy gave up on it: never reused
        assert connection.closed
        connection, reused = await start(upstream, server.at())
        assert not reused and server.connections == 2
        upstream.release(connection)
        upstream.close()


async def test_an_answer_that_ends_with_its_connection_is_whole_and_not_reused() -> None:
    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall ")
        await writer.drain()
        writer.write(b"of it")
        writer.close()

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        assert await body_of(connection) == b"all of it"
        assert connection.at_eof() and not connection.reusable()
        upstream.release(connection)
        assert upstream.open_connections() == 0


async def test_a_body_cut_short_is_an_error_and_its_connection_is_closed() -> None:
    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        writer.close()

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        with pytest.raises(CutShort):
            await body_of(connection)
        upstream.release(connection)
        assert upstream.open_connections() == 0


async def test_bytes_after_a_whole_answer_spoil_its_connection() -> None:
    async with Scripted(keep_answering(OK + b"HTTP/1.1 200 OK\r\n")) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        for _ in range(2):
            connection, reused = await start(upstream, server.at())
            assert not reused and await body_of(connection) == b"ok"
            assert not connection.reusable()
            upstream.release(connection)
        assert server.connections == 2


async def test_a_second_answer_in_the_same_read_never_rewrites_the_first() -> None:
    """A server whose Content-Length undercounts (``len(str)`` of a UTF-8 body) sends what
    looks like a second answer: the client gets the first one's status and headers."""
    second = b"HTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\nContent-Length: 0\r\n\r\n"
    async with Scripted(keep_answering(OK + second)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        assert await body_of(connection) == b"ok"
        assert connection.status == 200
        assert connection.headers == [(b"Content-Length", b"2")]
        assert not connection.reusable()
        upstream.release(connection)
        assert connection.closed
        upstream.close()


async def test_trailer_fields_are_dropped_never_made_headers() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
        b"\r\n2\r\n{}\r\n0\r\nSet-Cookie: session=attacker\r\nContent-Type: text/html\r\n\r\n"
    )
    async with Scripted(keep_answering(answer)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        for _ in range(2):
            connection, _ = await start(upstream, server.at())
            assert await body_of(connection) == b"{}"
            names = [name.lower() for name, _ in connection.headers]
            assert names == [b"transfer-encoding", b"content-type"]
            assert connection.headers[1] == (b"Content-Type", b"application/json")
            upstream.release(connection)
        assert server.connections == 1  # a whole answer: its connection is reused
        upstream.close()


async def test_endless_trailer_fields_are_cut_at_the_bound_of_a_head() -> None:
    """httptools gathers a field whole before it says anything: a server that never ends
    one would grow it for ever, and each piece would keep the silence timer away."""

    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
        writer.write(b"X-Trailer: ")
        for _ in range(256):  # 4 MiB at most: far past the bound
            writer.write(b"a" * 16384)
            await writer.drain()

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        with pytest.raises(CutShort, match="trailer fields past"):
            await body_of(connection)
        assert connection.received <= MAX_HEAD_BYTES + 256 * 1024  # the bound and one read
        upstream.release(connection)
        assert upstream.open_connections() == 0


async def test_a_head_answer_is_whole_with_its_head_and_its_connection_reused() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
    async with Scripted(answering(head, OK)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at(), method="HEAD")
        assert connection.status == 200 and connection.at_eof()
        assert (b"Content-Length", b"5000") in connection.headers
        upstream.release(connection)
        connection, reused = await start(upstream, server.at())
        assert reused and await body_of(connection) == b"ok"
        upstream.release(connection)
        upstream.close()


# What is not a plain answer ------------------------------------------------------------


async def test_informational_answers_are_skipped_and_a_101_is_final() -> None:
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
    async with Scripted(answering(early, switching)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        assert connection.status == 200
        assert connection.headers == [(b"Content-Length", b"2")]  # not the 103's Link
        assert await body_of(connection) == b"ok"
        upstream.release(connection)
        connection, _ = await start(upstream, server.at())
        assert connection.status == 101 and not connection.reusable()
        upstream.release(connection)
        assert upstream.open_connections() == 0


def fields(count: int) -> bytes:
    return b"".join(b"X-%d: v\r\n" % i for i in range(count))


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 1000 Weird\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 2\r\n\r\nok",  # a 1xx, then not HTTP
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n" + fields(129) + b"Content-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 8191 + b"\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["status-1000", "1xx-then-body", "not-http", "nul", "129-fields", "8191-byte-value"],
)
async def test_what_is_not_http_is_a_bad_answer(answer: bytes) -> None:
    async with Scripted(answering(answer)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        with pytest.raises(BadAnswer) as raised:
            await start(upstream, server.at())
        assert unreadable_answer(raised.value)
        assert upstream.open_connections() == 0


async def test_the_bounds_admit_what_aiohttp_admitted() -> None:
    """128 fields, 8190-byte values, a DEL byte in a value (the proxy drops that header)."""
    answer = (
        b"HTTP/1.1 200 OK\r\nX-Bad: a\x7fb\r\nX-Big: "
        + b"a" * 8190
        + b"\r\n"
        + fields(125)
        + b"Content-Length: 2\r\n\r\nok"
    )
    async with Scripted(answering(answer)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        assert len(connection.headers) == 128 and await body_of(connection) == b"ok"
        upstream.release(connection)
        upstream.close()


async def test_an_endless_head_is_refused_past_its_bound() -> None:
    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(1000):  # 8 MB at most: far past the bound
            writer.write(b"X-%d: %s\r\n" % (i, b"a" * 8000))
            await writer.drain()

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await upstream.connect(server.at())
        connection.send((request_head("GET", "/", server.at(), [], 0), b""), 5, False)
        with pytest.raises(BadAnswer, match="head past"):
            await connection.head()
        assert connection.received <= MAX_HEAD_BYTES + 256 * 1024  # the bound and one read
        upstream.release(connection)
        assert upstream.open_connections() == 0


# Time: silence is bounded, a transfer that keeps going is not ------------------------------


async def test_a_silent_server_times_out_after_the_silence() -> None:
    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)
        await server.request(reader)  # silent until the client leaves

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        started = time.monotonic()
        with pytest.raises(ServerSilent) as raised:
            await start(upstream, server.at(), silence=0.3)
        assert 0.29 <= time.monotonic() - started < 2
        assert classify(raised.value) == "timeout"
        await wait_until_async(lambda: server.ended == 1, timeout=5, what="connection closed")


async def test_a_trickle_longer_than_the_silence_is_never_cut() -> None:
    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):  # 1 s in all, 0.1 s between bytes
            await asyncio.sleep(0.1)  # the pace under test, not a synchronisation
            writer.write(b"x")
            await writer.drain()

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at(), silence=0.3)
        assert await body_of(connection) == b"x" * 10
        upstream.release(connection)
        upstream.close()


# Back-pressure --------------------------------------------------------------------------


async def test_a_stream_nobody_reads_pauses_the_server_and_then_arrives_whole() -> None:
    size = 16 * 1024 * 1024
    written = 0

    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        nonlocal written
        await server.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        piece = bytes(range(256)) * 256  # 64 KiB
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()
            written += len(piece)

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at(), silence=2)
        await wait_until_async(lambda: connection.paused, timeout=10, what="reading paused")
        held = connection.buffered
        assert 2 * STREAM_PIECE < held <= 4 * STREAM_PIECE  # past two pieces, by one read
        assert connection.transport is not None
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 2 * STREAM_PIECE  # doubled
        await asyncio.sleep(0.3)  # the pause under test: nothing more is taken meanwhile
        assert connection.buffered == held and written < size // 2
        body = await body_of(connection)  # past the silence: a paused server is not silent
        assert len(body) == size and body[:512] == bytes(range(256)) * 2
        upstream.release(connection)
        upstream.close()


# The pool: stale connections, idle time, names, descriptors --------------------------------


async def test_a_request_is_sent_once_when_the_server_hangs_up() -> None:
    """No hidden re-send (aiohttp's client re-sent idempotent requests once on its own): the
    try fails, before any answer byte, and the proxy decides what comes next."""

    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        with pytest.raises(Disconnected) as raised:
            await start(upstream, server.at())
        assert raised.value.before_answer and not raised.value.stale  # a new connection
        assert (server.connections, len(server.requests)) == (1, 1)
        assert classify(raised.value) == "reset"


async def test_a_pooled_connection_the_server_closed_is_not_reused() -> None:
    async with Scripted(answering(OK)) as server:  # one answer, then it closes
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        assert await body_of(connection) == b"ok"
        upstream.release(connection)
        await wait_until_async(lambda: connection.closed, timeout=5, what="seen closed")
        again, reused = await start(upstream, server.at())
        assert not reused and server.connections == 2
        upstream.release(again)
        upstream.close()


async def test_a_reused_connection_the_server_drops_unanswered_says_so() -> None:
    """The stale case the proxy retries on a new connection: it fails before any byte."""

    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)
        writer.write(OK)
        await server.request(reader)  # then gone without a word

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        assert await body_of(connection) == b"ok"
        upstream.release(connection)
        with pytest.raises(Disconnected) as raised:
            await start(upstream, server.at())
        assert raised.value.before_answer and len(server.requests) == 2
        assert raised.value.stale  # reused: the request never ran, so the proxy sends it again


async def test_the_retry_connection_carries_one_exchange_only() -> None:
    """``fresh`` (the retry after a stale pooled connection) is never pooled: the server's next
    request comes on a new connection, as with aiohttp's force_close session before."""
    async with Scripted(keep_answering(OK)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, reused = await upstream.connect(server.at(), fresh=True)
        connection.send((request_head("GET", "/", server.at(), [], 0), b""), 5, False)
        await connection.head()
        assert not reused and await body_of(connection) == b"ok"
        upstream.release(connection)
        assert connection.closed and upstream.open_connections() == 0


async def test_closing_the_pool_wakes_an_exchange_waiting_for_its_answer() -> None:
    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await server.request(reader)
        await server.request(reader)  # silent until the client leaves

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        waiting = asyncio.ensure_future(start(upstream, server.at(), silence=30))
        await wait_until_async(lambda: len(server.requests) == 1, timeout=5, what="sent")
        upstream.close()
        with pytest.raises(Disconnected):
            await asyncio.wait_for(waiting, 5)
        assert upstream.open_connections() == 0


async def test_idle_connections_are_closed_after_the_keepalive() -> None:
    async with Scripted(keep_answering(OK)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=0.2)
        connection, _ = await start(upstream, server.at())
        assert await body_of(connection) == b"ok"
        upstream.release(connection)
        assert upstream.open_connections() == 1
        await wait_until_async(lambda: server.ended == 1, timeout=5, what="idle one closed")
        assert upstream.open_connections() == 0


async def test_names_are_kept_until_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolved once for ``DNS_SECONDS``; ``forget`` (a server's new container) resolves again
    at the next connection and closes the idle ones to the old address."""
    loop = asyncio.get_running_loop()
    lookups: list[str] = []

    async def resolve(host: str, port: int, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    async with Scripted(keep_answering(OK)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        named = server.at(host="server1.invalid")
        both = [await upstream.connect(named), await upstream.connect(named)]  # two at once
        for connection, _ in both:
            connection.send((request_head("GET", "/", named, [], 0), b""), 5, False)
            await connection.head()
            assert await body_of(connection) == b"ok"
            upstream.release(connection)
        assert lookups == ["server1.invalid"] and upstream.open_connections() == 2
        upstream.forget(named.host, named.port)
        assert upstream.open_connections() == 0
        connection, reused = await upstream.connect(named)
        assert not reused and lookups == ["server1.invalid"] * 2
        upstream.release(connection)
        upstream.close()


async def test_a_connection_carrying_an_answer_when_its_name_is_forgotten_is_not_pooled() -> None:
    async with Scripted(keep_answering(OK)) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await start(upstream, server.at())
        upstream.forget("127.0.0.1", server.port)  # a new container, during this answer
        assert await body_of(connection) == b"ok"
        upstream.release(connection)
        assert connection.closed
        _, reused = await upstream.connect(server.at())
        assert not reused
        upstream.close()


async def test_a_failed_exchange_with_its_request_unread_frees_its_socket_at_once() -> None:
    """A server that stops reading leaves the request's body in the write buffer: a graceful
    close would wait for it to drain, holding the socket and the body for ever."""
    release = asyncio.Event()

    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        await release.wait()  # reads nothing

    async with Scripted(script) as server:
        upstream = Upstream(connect_timeout=1, keepalive=30)
        connection, _ = await upstream.connect(server.at())
        assert connection.transport is not None
        fd = connection.transport.get_extra_info("socket").fileno()
        body = b"x" * (8 * 1024 * 1024)
        connection.send((request_head("POST", "/", server.at(), [], len(body)), body), 0.3, False)
        with pytest.raises(ServerSilent):
            await connection.head()
        assert connection.transport.get_write_buffer_size() > 0  # the body waits to be sent
        upstream.release(connection)
        await wait_until_async(
            lambda: not os.path.exists(f"/proc/self/fd/{fd}"), timeout=3, what="socket freed"
        )
        release.set()
        upstream.close()


async def test_a_refused_connection_and_a_connect_timeout_are_told_apart() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    upstream = Upstream(connect_timeout=0.3, keepalive=30)
    with pytest.raises(ConnectFailed) as refused:
        await upstream.connect(Server("s1", f"http://127.0.0.1:{port}"))
    assert classify(refused.value) == REFUSED
    # A listener whose queue is full drops new connections' SYNs: connecting hangs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        queued = []
        try:
            for _ in range(8):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(full.getsockname())
                queued.append(sock)
            started = time.monotonic()
            with pytest.raises(ConnectTimeout) as timed_out:
                await upstream.connect(Server("s2", f"http://127.0.0.1:{full.getsockname()[1]}"))
            assert 0.29 <= time.monotonic() - started < 2
            assert classify(timed_out.value) == CONNECT
        finally:
            for sock in queued:
                sock.close()
    assert upstream.open_connections() == 0


async def test_no_descriptor_outlives_its_use() -> None:
    """Answers whole, cut short, refused and silent, then the pool closed: every descriptor
    opened on the way is closed again."""

    async def script(server: Scripted, reader: asyncio.StreamReader, writer: Any) -> None:
        request = await server.request(reader)
        if request is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
            writer.close()

    async with Scripted(keep_answering(OK)) as good, Scripted(script) as bad:
        before = open_fds()
        upstream = Upstream(connect_timeout=1, keepalive=30)
        for _ in range(5):
            connection, _ = await start(upstream, good.at())
            upstream.release(connection)  # body not read: closed
            connection, _ = await start(upstream, good.at())
            await body_of(connection)
            upstream.release(connection)  # kept
            with pytest.raises(CutShort):
                connection, _ = await start(upstream, bad.at(), silence=0.05)
                try:
                    await body_of(connection)
                finally:
                    upstream.release(connection)
        assert upstream.open_connections() == 1
        upstream.close()
        await wait_until_async(lambda: open_fds() <= before, timeout=5, what="fds back")


async def test_an_https_server_is_verified_and_then_spoken_to(tmp_path: Path) -> None:
    files = local_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    async with Scripted(keep_answering(OK), tls=context) as server:
        target = server.at("https")
        upstream = Upstream(connect_timeout=2, keepalive=30)
        with pytest.raises(ConnectFailed) as untrusted:  # the system's CAs do not know ours
            await upstream.connect(target)
        assert isinstance(untrusted.value.os_error, ssl.SSLCertVerificationError)
        upstream._tls = ssl.create_default_context(cafile=str(files.ca))
        connection, _ = await start(upstream, target)
        assert await body_of(connection) == b"ok"
        upstream.release(connection)
        connection, reused = await start(upstream, target)
        assert reused and await body_of(connection) == b"ok"
        upstream.release(connection)
        upstream.close()


# The request's head ---------------------------------------------------------------------


def test_the_request_head_is_written_as_given() -> None:
    server = Server("s1", "http://10.1.2.3:5001")
    head = request_head("GET", "/a%20b?c=\xe9&&", server, [("X-Name", "José")], 0)
    assert (
        head
        == b"GET /a%20b?c=\xe9&& HTTP/1.1\r\nHost: 10.1.2.3:5001\r\nX-Name: Jos\xc3\xa9\r\n\r\n"
    )
    kept = request_head("POST", "/t", server, [("host", "lab")], 0)
    assert kept == b"POST /t HTTP/1.1\r\nhost: lab\r\nContent-Length: 0\r\n\r\n"
    sized = request_head("DELETE", "/t", Server("s2", "https://[::1]:443"), [], 3)
    assert sized == b"DELETE /t HTTP/1.1\r\nHost: [::1]\r\nContent-Length: 3\r\n\r\n"
    with pytest.raises(ValueError, match="line break"):
        request_head("GET", "/", server, [("X-A", "b\r\nX-Evil: 1")], 0)

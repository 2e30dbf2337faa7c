"""The proxy's side towards the servers: pooled HTTP/1.1 connections on asyncio Protocols.

Why not aiohttp's client: under load with fast servers it took over half of the balancer's CPU
(issue 28: 53 %, ``ClientSession._request`` 43 %) for features the proxy never uses (cookies,
redirects, URLs, multidicts, traces). This module does only what the proxy needs, and parses
nothing itself: httptools (llhttp, which aiohttp's parser is built on too) reads the answers,
with the leniencies aiohttp's client uses; we only write the request's head and body.

What it keeps (the reasons are in proxy.py and docs/design/balancer.md):

- Per-phase timeouts on loop timers, never a total: ``connect_timeout`` per address to reach
  the server, then ``silence``, the longest the server may stay silent before its answer's head
  and between two pieces of its body. A transfer that keeps going is never cut; while reading
  is paused for a slow client, the server is not held to it.
- Back-pressure: body pieces wait in a small queue; past ``2 x STREAM_PIECE`` the socket's
  reading pauses, and it resumes once the proxy has taken the queue under ``STREAM_PIECE``.
  The socket's receive buffer is ``STREAM_PIECE`` too, so one read is about that size.
- A connection goes back to its server's pool only if its answer was read to its end and
  was keep-alive; an idle one is closed after ``keepalive`` seconds, or when the server
  closes it or sends anything unasked. Every try is the proxy's own: nothing is sent again
  here.
- Bounded answers' heads (``MAX_HEAD_BYTES`` in all, ``MAX_FIELD_BYTES`` a field,
  ``MAX_HEADERS`` fields, as aiohttp bounds them); what is not HTTP is ``BadAnswer``.
- Host names are resolved with ``loop.getaddrinfo`` and kept ``DNS_SECONDS``; ``forget``
  drops a name (a server with a new container) and its idle connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import httptools

if TYPE_CHECKING:
    from services.balancer.server import Server

# A streamed answer moves in pieces of at most this size: the upstream socket's receive buffer
# (so one read is at most about this much), the pause threshold (two of them wait at most)
# and each write to the client. 256 KiB reads cost 2.3 MiB per slow reader, 1.9 of which
# stayed after it closed; 32 KiB ones ~0.4 MiB, 0.03 staying (bench/bench_stream_memory.py).
STREAM_PIECE = 32 * 1024
# An answer's head: aiohttp's bounds on one field and the number of fields, and in all the
# balancer's own bound on a request's head (nginx refuses upstream heads past 4-8 KiB).
MAX_HEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128
DNS_SECONDS = 10.0  # how long a resolved name is used (aiohttp's ttl_dns_cache, as before)
# Methods that carry no body by their meaning: no ``Content-Length: 0`` when they have none
# (what aiohttp wrote for an empty body; every other method gets one).
NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

Key = tuple[str, str, int]  # scheme, host, port: one pool each


class UpstreamError(Exception):
    """What the exchange with a server can raise besides ``OSError``/``TimeoutError``."""


class ConnectFailed(UpstreamError, OSError):
    """No connection: the name did not resolve, or the server refused or is unreachable.
    Nothing was sent. ``os_error`` is the system's reason."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(os_error.errno, os_error.strerror or str(os_error))
        self.os_error = os_error


class ConnectTimeout(UpstreamError, TimeoutError):
    """No connection within ``connect_timeout``: nothing was sent."""


class ServerSilent(UpstreamError, TimeoutError):
    """The server said nothing for ``silence`` seconds, before its head or within its body."""


class Disconnected(UpstreamError, ConnectionResetError):
    """The server closed or reset the connection before its answer's head was complete.
    ``before_answer``: not a byte of answer came (a stale pooled connection, if reused)."""

    def __init__(self, before_answer: bool) -> None:
        super().__init__("server disconnected")
        self.before_answer = before_answer
        # Before any answer byte, on a connection reused from the pool: the server had closed
        # it as idle, so the request never ran (set by ``Upstream.exchange``).
        self.stale = False


class CutShort(UpstreamError, ConnectionError):
    """The server broke off its answer's body (closed, reset, or sent a bad chunk)."""


class BadAnswer(UpstreamError):
    """The server answered, but not in HTTP (or past the bounds of a head)."""


class Connection(asyncio.Protocol):
    """One connection to a server, carrying one exchange at a time.

    ``send`` starts an exchange; ``head`` waits for the answer's status and headers; the body
    is taken with ``take`` (all that waits), ``read`` (a piece) and ``more`` (wait for some).
    Errors are raised by those calls, never by the protocol's callbacks.
    """

    __slots__ = (
        "_live",
        "_parser",
        "_silence",
        "_timer",
        "_unparsed",
        "_waiter",
        "buffered",
        "closed",
        "complete",
        "error",
        "head_done",
        "head_only",
        "headers",
        "heard_at",
        "idle_since",
        "keep_alive",
        "key",
        "loop",
        "paused",
        "pieces",
        "received",
        "single_use",
        "spoiled",
        "status",
        "transport",
        "until_close",
    )

    def __init__(self, key: Key, loop: asyncio.AbstractEventLoop, live: set[Connection]) -> None:
        self.key = key
        self.loop = loop
        self._live = live  # the pool's set of open connections: left on close
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._silence = 0.0
        self.heard_at = 0.0
        self.head_only = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = self.complete = self.keep_alive = self.until_close = False
        self.spoiled = False  # bytes beyond the answer: never reused
        self.single_use = False  # closed after its one exchange
        self.paused = False
        self.error: BaseException | None = None
        self.pieces: deque[bytes] = deque()
        self.buffered = 0
        self.received = 0
        # Bytes since the answer began or since its last piece of body: a head, or trailer
        # fields, which httptools gathers whole before it says anything (bounded by
        # MAX_HEAD_BYTES, plus one read).
        self._unparsed = 0

    # The exchange, as the proxy drives it ----------------------------------------------------

    def send(self, data: Iterable[bytes], silence: float, head_only: bool) -> None:
        """Write a request and start waiting for its answer (``head_only``: to a HEAD)."""
        assert self.transport is not None and self._parser is None
        parser = httptools.HttpResponseParser(self)
        # What aiohttp's client parser allows: odd bytes in a header value (the proxy drops
        # that header), a bare LF, spaces after a chunk size. Nothing about lengths.
        parser.set_dangerous_leniencies(
            lenient_headers=True,
            lenient_optional_cr_before_lf=True,
            lenient_spaces_after_chunk_size=True,
        )
        self._parser = parser
        self.head_only = head_only
        self._silence = silence
        if self.closed:  # lost between the pool and here: as if it failed at once
            self._fail(Disconnected(before_answer=True))
            return
        self.heard_at = self.loop.time()
        self._timer = self.loop.call_at(self.heard_at + silence, self._silent)
        self.transport.writelines(data)

    async def head(self) -> None:
        """Wait for the answer's head (``status``, ``headers``); raises what went wrong."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()
        if self.error is not None and not self.complete:
            raise self.error

    def take(self) -> bytes:
        """All of the body that waits here (b"" if none yet)."""
        if self.error is not None:
            raise self.error
        pieces = self.pieces
        if not pieces:
            return b""
        data = pieces.popleft() if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        self.buffered = 0
        if self.paused:
            self._resume()
        return data

    async def read(self, limit: int) -> bytes:
        """The next piece of the body, at most ``limit`` bytes; b"" at its end."""
        while not self.pieces:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()
        if self.error is not None:
            raise self.error
        piece = self.pieces.popleft()
        if len(piece) > limit:
            self.pieces.appendleft(piece[limit:])
            piece = piece[:limit]
        self.buffered -= len(piece)
        if self.paused and self.buffered <= STREAM_PIECE:
            self._resume()
        return piece

    async def more(self, until: float) -> bool:
        """Wait for more of the body, or its end, until the loop's time ``until``: False if
        none came by then. Raises what went wrong."""
        if not (self.pieces or self.complete or self.error):
            timer = self.loop.call_at(until, self._wake)
            try:
                await self._wait()
            finally:
                timer.cancel()
        if self.error is not None:
            raise self.error
        return bool(self.pieces) or self.complete

    def at_eof(self) -> bool:
        """The answer was read to its end."""
        return self.complete and not self.pieces

    def reusable(self) -> bool:
        """Read to its end, keep-alive, and nothing else came: it may carry another request."""
        return (
            self.complete
            and self.keep_alive
            and not self.single_use
            and not self.pieces
            and not self.spoiled
            and self.error is None
            and not self.paused
            and not self.closed
        )

    def finish(self) -> None:
        """Reset for the next exchange (the pool calls it before keeping the connection)."""
        self._parser = None
        self._stop_timer()
        self.head_done = self.complete = self.keep_alive = self.until_close = False
        self.status = self.received = self._unparsed = 0
        self.headers = []

    def close(self) -> None:
        """Close it and let go of what it holds: the parser refers back to this protocol, and
        that cycle would keep the queued body until the garbage collector's next full pass."""
        if self._parser is not None and not self.complete:  # anyone waiting is told
            self._fail(Disconnected(before_answer=self.received == 0))
        self._stop_timer()
        transport = self.transport
        if transport is not None and not self.closed:
            # Mid-exchange, or with a request the server has not read, a close would wait
            # for the write buffer (up to a whole request body) to drain: never, from a server
            # that stopped reading. So the connection is reset instead.
            if (self._parser is None or self.complete) and not transport.get_write_buffer_size():
                transport.close()
            else:
                transport.abort()
        self.closed = True
        self._live.discard(self)
        self._parser = None
        self.pieces.clear()
        self.buffered = 0

    # asyncio's callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.complete:  # nothing asked for: the connection is spoiled
            self.spoiled = True
            if parser is None:
                self.close()
            return
        if self.error is not None:  # failed: nothing more is parsed (or held) until it closes
            return
        self.heard_at = self.loop.time()
        self.received += len(data)
        self._unparsed += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101: the rest is another protocol
            self.keep_alive = False
            self._end()
        except httptools.HttpParserError as error:
            if self.complete:  # bytes after a whole answer (past ``Connection: close``)
                self.spoiled = True
            else:
                cause = error.__context__ if isinstance(error.__context__, BadAnswer) else error
                self._fail(BadAnswer(str(cause)) if not self.head_done else CutShort(str(cause)))
            return
        if self._unparsed > MAX_HEAD_BYTES:
            if self.head_done:  # trailer fields: dropped (on_header), but never gathered
                self._fail(CutShort(f"trailer fields past {MAX_HEAD_BYTES} bytes"))
            else:
                self._fail(BadAnswer(f"an answer's head past {MAX_HEAD_BYTES} bytes"))

    def eof_received(self) -> bool | None:
        return None  # close: connection_lost tells the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._live.discard(self)
        if self._parser is None or self.complete:
            self._stop_timer()
            return
        if self.head_done and self.until_close and exc is None:
            self.keep_alive = False  # an answer that ends with its connection: whole
            self._end()
        elif self.head_done:
            self._fail(CutShort("the server closed the connection within the answer"))
        else:
            self._fail(Disconnected(before_answer=self.received == 0))

    def pause_writing(self) -> None:
        pass  # requests are written whole: at most the body a client may send

    def resume_writing(self) -> None:
        pass

    # httptools' callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer nobody asked for: parsing stops here, so its
            raise BadAnswer("bytes after the answer")  # head never rewrites the first one's

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a trailer field (RFC 9110 6.5.1): dropped, never a header
            return
        headers = self.headers
        if (
            len(value) > MAX_FIELD_BYTES
            or len(name) > MAX_FIELD_BYTES
            or len(headers) >= MAX_HEADERS
            or b"\x00" in value  # llhttp in lenient mode lets it through; aiohttp refused it
        ):
            raise BadAnswer(unfit_field(name, value, len(headers)))
        headers.append((name, value.rstrip(b" \t")))  # llhttp strips only leading OWS

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        if self.complete:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # informational: the final answer follows (on_message_complete resets)
        self.status = status
        self.head_done = True
        if self.head_only:
            # httptools cannot be told the answer is to a HEAD: it is whole with its head.
            # Its parser expects a body now; each exchange has a new one.
            self.keep_alive = self._parser.should_keep_alive()
            self._end()
            return
        self.until_close = status not in (204, 304) and ends_with_connection(self.headers)
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:  # a body after a HEAD's head
            self.spoiled = True
            return
        self._unparsed = 0
        self.pieces.append(body)
        self.buffered += len(body)
        if self.buffered > 2 * STREAM_PIECE and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:  # the end of an informational answer: the next is due
            self.headers = []
            return
        if self.complete:
            return
        assert self._parser is not None
        self.keep_alive = self._parser.should_keep_alive()
        self._end()

    # Inside --------------------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self) -> None:
        self.head_done = self.complete = True
        self._stop_timer()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._stop_timer()
        self._wake()

    def _resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self.heard_at = self.loop.time()  # silence counts again from now
        if self._timer is None and not self.complete and self.error is None:
            self._timer = self.loop.call_at(self.heard_at + self._silence, self._silent)

    def _silent(self) -> None:
        """The silence timer: it is moved only when it fires, not at every read."""
        self._timer = None
        if self.complete or self.error is not None or self.paused:
            return  # paused: we stopped reading, the server is not silent
        due = self.heard_at + self._silence
        if self.loop.time() < due:
            self._timer = self.loop.call_at(due, self._silent)
            return
        self._fail(ServerSilent(f"no answer within {self._silence:g} s"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Upstream:
    """A pool of connections per server (scheme, host, port), newest reused first."""

    def __init__(self, connect_timeout: float, keepalive: float) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.closed = False
        self._idle: dict[Key, deque[Connection]] = {}
        self._live: set[Connection] = set()
        self._names: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._tls: ssl.SSLContext | None = None

    async def connect(self, server: Server, fresh: bool = False) -> tuple[Connection, bool]:
        """A connection to ``server`` and whether it was reused from the pool. ``fresh``: a
        new one for one exchange only, whatever the pool holds (the retry after a stale
        pooled connection; it is not pooled, as aiohttp's ``force_close`` session did not).
        Raises ``ConnectFailed`` or ``ConnectTimeout``."""
        key: Key = (server.scheme, server.host, server.port or 0)
        idle = self._idle.get(key)
        if idle and not fresh:
            loop = asyncio.get_running_loop()
            now = loop.time()
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < self.keepalive:
                    return connection, True
                connection.close()
        connection = await self._open(key)
        connection.single_use = fresh
        return connection, False

    async def exchange(
        self, server: Server, data: Iterable[bytes], silence: float, head_only: bool, fresh: bool
    ) -> tuple[Connection, bool]:
        """``data`` (a request) sent to ``server`` on a connection (``connect``), once its
        answer's head has come; and whether it was reused. On failure the connection is
        released (closed) and the error raised; a ``Disconnected`` says if it was ``stale``."""
        connection, reused = await self.connect(server, fresh)
        try:
            connection.send(data, silence, head_only)
            await connection.head()
        except BaseException as error:
            self.release(connection)
            if isinstance(error, Disconnected):
                error.stale = reused and error.before_answer
            raise
        return connection, reused

    def release(self, connection: Connection) -> None:
        """Back to the pool if it may carry another request, else closed."""
        if self.closed or not connection.reusable():
            connection.close()
            return
        connection.finish()
        loop = connection.loop
        connection.idle_since = loop.time()
        self._idle.setdefault(connection.key, deque()).append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_at(connection.idle_since + self.keepalive, self._sweep)

    def forget(self, host: str, port: int | None) -> None:
        """Resolve ``host`` again at the next connection; close idle connections to it, and
        those carrying an answer once it is done (they may reach its old address)."""
        self._names.pop((host, port or 0), None)
        for key, idle in self._idle.items():
            if key[1:] == (host, port or 0):
                while idle:
                    idle.pop().close()
        for connection in self._live:  # carrying an answer now: closed once it is done
            if connection.key[1:] == (host, port or 0):
                connection.single_use = True

    def close(self) -> None:
        """Close every connection, idle or carrying an answer."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        for connection in list(self._live):
            connection.close()

    def open_connections(self) -> int:
        return len(self._live)

    def _sweep(self) -> None:
        """Close connections idle for ``keepalive``; come back when the next one will be."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due: float | None = None
        for idle in self._idle.values():
            while idle and (idle[0].closed or now - idle[0].idle_since >= self.keepalive):
                idle.popleft().close()
            if idle:
                expires = idle[0].idle_since + self.keepalive
                due = expires if due is None else min(due, expires)
        if due is not None:
            self._sweeper = loop.call_at(due, self._sweep)

    async def _open(self, key: Key) -> Connection:
        _, host, port = key
        loop = asyncio.get_running_loop()
        try:
            addresses = await self._resolve(loop, host, port)
        except OSError as error:
            raise ConnectFailed(error) from None
        failure: UpstreamError = ConnectFailed(OSError(f"no address for {host}"))
        for family, kind, proto, _, address in addresses:
            try:
                return await self._connect(loop, key, family, kind, proto, address)
            except TimeoutError:
                failure = ConnectTimeout(f"cannot connect within {self.connect_timeout:g} s")
            except OSError as error:
                failure = ConnectFailed(error)
        raise failure

    async def _connect(
        self,
        loop: asyncio.AbstractEventLoop,
        key: Key,
        family: int,
        kind: int,
        proto: int,
        address: Any,
    ) -> Connection:
        """One address, within ``connect_timeout`` (a TLS handshake included)."""
        sock = socket.socket(family, kind, proto)
        connected = False
        try:
            sock.setblocking(False)
            # One read of a fast stream is then about STREAM_PIECE, not the 256 KiB the
            # event loop would take at once (set before connecting: the window follows it).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STREAM_PIECE)
            if family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            async with asyncio.timeout(self.connect_timeout):
                await loop.sock_connect(sock, address)
                connected = True  # from here the loop's transport owns the socket
                tls = self._tls_context() if key[0] == "https" else None
                _, connection = await loop.create_connection(
                    lambda: Connection(key, loop, self._live),
                    sock=sock,
                    ssl=tls,
                    server_hostname=key[1] if tls is not None else None,
                )
        except BaseException:
            if not connected:
                sock.close()
            raise
        if self.closed:
            connection.close()
            raise ConnectFailed(OSError("the balancer is stopping"))
        self._live.add(connection)
        return connection

    async def _resolve(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[Any]:
        """The addresses of ``host``, resolved at most every ``DNS_SECONDS`` (IPs: never)."""
        now = loop.time()
        known = self._names.get((host, port))
        if known is not None and known[0] > now:
            return known[1]
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses: list[Any] = list(found)
        else:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            addresses = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port))]
        if len(self._names) > 256:  # servers come and go: keep only live names
            self._names = {name: entry for name, entry in self._names.items() if entry[0] > now}
        self._names[(host, port)] = (now + DNS_SECONDS, addresses)
        return addresses

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


def unfit_field(name: bytes, value: bytes, before: int) -> str:
    """Why a header field of an answer is refused (``before``: the fields before it)."""
    if len(name) > MAX_FIELD_BYTES or len(value) > MAX_FIELD_BYTES:
        return f"a header field past {MAX_FIELD_BYTES} bytes"
    if before >= MAX_HEADERS:
        return f"more than {MAX_HEADERS} header fields"
    return "a NUL byte in a header value"


def ends_with_connection(headers: list[tuple[bytes, bytes]]) -> bool:
    """Neither a length nor chunks: the body is what comes until the server closes."""
    framed = False
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            framed = True
        elif lower == b"transfer-encoding":
            framed = value.rstrip(b" \t").lower().endswith(b"chunked")
    return not framed


def request_head(
    method: str, target: str, server: Server, headers: list[tuple[str, str]], length: int
) -> bytes:
    """A request's head: the request line (the target byte for byte), the headers as given
    (values UTF-8, as aiohttp wrote them), ``Host`` from the server if the client sent none,
    and ``Content-Length`` when there is a body or the method may carry one."""
    lines = [f"{name}: {value}\r\n" for name, value in headers]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.insert(0, f"Host: {authority(server)}\r\n")
    if length or method not in NO_BODY_METHODS:
        lines.append(f"Content-Length: {length}\r\n")
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise ValueError("a line break inside a header")  # never from a parsed request
    return f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + text.encode() + b"\r\n"


def authority(server: Server) -> str:
    """``host:port`` as aiohttp wrote ``Host``: IPv6 in brackets, the scheme's default port
    left out."""
    host = server.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    default = 443 if server.scheme == "https" else 80
    return host if server.port in (None, default) else f"{host}:{server.port}"

"""uvicorn's httptools protocol with the limits a server on a shared network needs (as HAProxy
and nginx have): the balancer and the task servers are both served with it (``serve_guarded``).

uvicorn parses HTTP with httptools, but on its own it bounds neither how long a client may take
to send a request's header section nor how large that section may be, it appends the trailer
fields of a chunked request to the request's headers, and it lets a request run on after its
client has gone. This subclass adds exactly that, and nothing else:

- the header section must be complete within ``request_timeout`` seconds of its first byte
  (HAProxy's ``timeout http-request``; any byte starts it, a bare CRLF too), and a body may
  not pause longer than that: else 408 and close. A new connection that sends nothing in that
  time is closed silently; idle keep-alive connections are uvicorn's ``timeout_keep_alive``. A
  pipelined request waits for the answer before it without its clock running out;
- a header section over ``max_header_bytes`` is answered 431 and closed, with no more read
  (bytes of a pipelined request that share a read with the one before are not counted: at
  most one read more);
- a body announced (``Content-Length``) or grown (chunked) past ``max_body_bytes`` is answered
  413 at once, before any ``100 Continue`` and before the app runs, and the connection lingers;
- at most ``max_connections`` connections are open at once: the next one is answered 503 and
  closed at once, so its file descriptor is freed;
- a refusal (400, 408, 413, 431) is never written into another request's answer, and the
  connection lingers so that the client reads it instead of a reset. Unparsable bytes after
  complete requests are refused only once those requests are answered: a request already
  parsed is never dropped;
- trailer fields are dropped, never merged into the headers (RFC 9110 section 6.5.1);
- when a client disconnects before its answer is complete, the request's task is cancelled with
  ``CLIENT_GONE``, so its upstream request is cancelled too and in-flight counts stay true;
- the writes of one turn of the event loop (an answer's head and body) leave in one packet
  (``CorkedTransport``);
- a request httptools cannot parse gets uvicorn's 400, as a JSON error like all others, and
  upgrade requests go on as plain HTTP without a log line (the proxy answers them);
- the raw request target is kept in ``scope["extensions"][REQUEST_TARGET]`` (uvicorn's scope
  loses an empty ``?``; the proxy forwards the target as the client sent it).

It reaches uvicorn's internals only through services/uvicorn_adapter.py (``start_request``
to know each request's task, ``upgrade_declined``, ``unparsable``, the request cycle's state);
tests/test_uvicorn_adapter.py fails, naming the uvicorn version, if a release moves one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from starlette.types import ASGIApp, Receive, Scope, Send

from services.common import raise_fd_limit
from services.uvicorn_adapter import (
    RequestCycle,
    UvicornHttpProtocol,
    answered,
    answering,
    client_gone,
    mark_client_gone,
    status_line,
    wake_receive,
)
from services.web import json_error, serve

CLIENT_GONE = "client disconnected"
REQUEST_TARGET = "ticslab.request_target"
LINGER_SECONDS = 2.0  # how long a refused client may go on sending before its reset
# Descriptors kept for everything but client connections (and the balancer's upstream ones):
# listening sockets, health checks, logs, the tasks file, the Docker socket.
RESERVED_FDS = 64
UNLIMITED = 1_000_000  # connections, where the descriptor limit is infinite
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory.max")  # a container's limit (cgroup v2)
log = logging.getLogger("ticslab.protocol")


@dataclass(frozen=True)
class Limits:
    """What one client may take: time and bytes for a header section, connections at once."""

    request_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int | None = None  # None: as many as the descriptors allow
    max_body_bytes: int | None = None  # a request body past this is answered 413
    lang: str = "en"  # of its refusals: no header of the request is read yet


class GuardedHttpProtocol(UvicornHttpProtocol):
    """uvicorn's HTTP/1.1 protocol plus the bounds listed in this module's docstring."""

    limits: ClassVar[Limits] = Limits()

    @classmethod
    def with_limits(cls, limits: Limits) -> type[GuardedHttpProtocol]:
        """A subclass bound to ``limits``: uvicorn builds protocols from a class, not a value."""
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a header section, or waiting for the next one
        self._head_bytes = 0
        self._timer: TimerHandle | None = None  # the header deadline, or the body's pause
        self._lingering = False  # refused: nothing more is read
        self._deferred: tuple[int, str, dict[str, Any]] | None = None  # refusal awaiting answers
        self._messages = 0  # requests read whole on this connection
        self._body_bytes = 0  # of the request being read
        self._declined: int | None = None  # body bytes still due of an upgrade not taken
        self._fed = b""  # what the parser is reading now
        self._after_upgrade: bytes | None = None  # what the parser left at an upgrade
        self._running: dict[asyncio.Task[None], RequestCycle] = {}  # request task -> its cycle
        self._cycles: set[RequestCycle] = set()  # every request started, from before its task runs

    # Connections -------------------------------------------------------------------------

    # asyncio types the argument as any transport, uvicorn as a socket's; CorkedTransport wraps
    # one and answers what uvicorn calls on it (it is not a subclass).
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
        cap = self.limits.max_connections
        if cap is not None and len(self.open_connections()) > cap and not self._free_a_slot():
            self._refuse(503, "too_many_connections")
            return
        self._start_timer(self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)
        for task, cycle in list(self._running.items()):
            if not answered(cycle):
                mark_client_gone(cycle)
                task.cancel(CLIENT_GONE)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: what the client still sends is read and dropped
        if self._declined:
            data = self._read_declined_body(data)
            if self._declined:  # more of it to come
                self._start_timer(self._body_timeout)
            if not data:
                return
        if self._in_head:
            if self._timer is None:  # any byte starts the header deadline (even a bare CRLF)
                self._start_timer(self._head_timeout)
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                self._head_bytes += room
                messages = self._messages
                self._parse(data[:room])  # the header section may end in the limit
                if self._in_head and self._messages == messages:
                    self._refuse(431, "headers_too_large", limit_bytes=self.limits.max_header_bytes)
                    return
                self.data_received(data[room:])  # the rest counts toward the next request's
                return
            self._head_bytes += len(data)
        self._parse(data)
        if not self._in_head and not self._lingering:  # a body that has not all arrived
            self._start_timer(self._body_timeout)

    def _parse(self, data: bytes) -> None:
        """uvicorn's parsing of ``data``, then of what the parser left at an upgrade."""
        self._fed = data
        super().data_received(data)
        rest, self._after_upgrade = self._after_upgrade, None
        if rest:
            self.data_received(rest)

    def upgrade_declined(self, offset: int | None) -> None:
        """An upgrade not taken (``Upgrade: h2c`` from ``curl --http2``; WebSocket on the
        balancer, which answers it 501) goes on in HTTP/1.1, as HAProxy and nginx do, and
        without a log line. httptools stops at an upgrade, before its body: the body and
        what follows are read by a new parser (``_parse``, ``_read_declined_body``)."""
        if offset is None:
            return
        self.new_parser()
        self._after_upgrade = self._fed[offset:]

    def _read_declined_body(self, data: bytes) -> bytes:
        """The body of an upgrade not taken, from ``data``; returns what follows it."""
        assert self._declined is not None
        body, rest = data[: self._declined], data[self._declined :]
        self._declined -= len(body)
        self.on_body(body)
        if self._declined == 0 and not self._lingering:
            self._declined = None
            self.on_message_complete()
        return rest

    def unparsable(self, msg: str) -> None:
        """httptools could not parse the request: the same 400, as JSON like every error."""
        self._refuse(400, "unparsable")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._deferred is not None and not self._waiting():
            status, code, fields = self._deferred
            self._deferred = None
            self._answer_and_close(status, code, fields)

    # Parser callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = max(self._head_bytes, 1)  # its first bytes may share a read
        if self._timer is None:
            self._start_timer(self._head_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # after the header section, httptools reports trailer fields
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._lingering:
            return  # the parser goes on through bytes read with the refused ones
        self._in_head = False
        self._body_bytes = 0
        self._stop_timer()
        limit = self.limits.max_body_bytes
        if limit is not None and announced_length(self.headers) > limit:
            self._refuse(413, "body_too_large", limit_bytes=limit)  # before any 100 Continue
            return
        # uvicorn types extensions as dicts (ASGI); the raw target is bytes, read by the proxy.
        self.scope["extensions"] = {REQUEST_TARGET: self.url}  # type: ignore[dict-item]
        if self.parser.should_upgrade() and not self.takes_upgrade():
            self._declined = announced_length(self.headers) or None  # httptools skips it
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._lingering:
            return
        self._body_bytes += len(body)
        limit = self.limits.max_body_bytes
        if limit is not None and self._body_bytes > limit:  # chunked: known only now
            self._refuse(413, "body_too_large", limit_bytes=limit)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._lingering or self._declined:
            return
        super().on_message_complete()
        self._stop_timer()
        self._in_head, self._head_bytes = True, 0
        self._messages += 1

    def start_request(self, cycle: RequestCycle, app: ASGIApp) -> None:
        """Start the request's task, known to this connection so that a disconnect cancels it."""

        async def tracked(scope: Scope, receive: Receive, send: Send) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running[task] = cycle
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                if not client_gone(cycle):
                    raise  # not ours: the server is shutting down
            finally:
                del self._running[task]
                self._cycles.discard(cycle)

        self._cycles.add(cycle)  # at once: a refusal in the same read waits for its answer
        super().start_request(cycle, tracked)

    # Bounds ----------------------------------------------------------------------------------

    def _start_timer(self, callback: Callable[[], None]) -> None:
        self._stop_timer()
        self._timer = self.loop.call_later(self.limits.request_timeout, callback)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_flight():
            self._start_timer(self._head_timeout)  # a pipelined request waits its turn
        elif self._head_bytes == 0:
            self.transport.close()  # a connection that never sent a byte
        else:
            self._refuse(408, "headers_timeout", seconds=self.limits.request_timeout)

    def _body_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.pipelined():
            self._start_timer(self._body_timeout)  # uvicorn stopped reading: not the client's
        else:
            self._refuse(408, "body_timeout", seconds=self.limits.request_timeout)

    def _in_flight(self) -> bool:
        """A request on this connection is not answered yet."""
        return self.pipelined() or any(not answered(c) for c in self._cycles)

    def _waiting(self) -> bool:
        """A request read whole on this connection still has an answer to get."""
        return self.pipelined() or any(not (answered(c) or client_gone(c)) for c in self._cycles)

    def _idle(self) -> bool:
        """A keep-alive connection between requests, with nothing of the next one read."""
        return self._messages > 0 and self._head_bytes == 0 and not self._in_flight()

    def _free_a_slot(self) -> bool:
        """Close an idle keep-alive connection for this new one (nginx reuses such
        connections so; an idle one must not keep a new client out). False: none is idle."""
        for other in self.open_connections():
            if isinstance(other, GuardedHttpProtocol) and other is not self and other._idle():
                other.transport.close()
                return True
        return False

    def _abandon_current(self) -> None:
        """The request being read is refused: its app is told its client is gone, and if it
        waits its turn in the pipeline, it never runs."""
        cycle = self.cycle
        if cycle is None or answered(cycle):
            return
        mark_client_gone(cycle)
        wake_receive(cycle)
        self.unqueue(cycle)

    def _writing(self) -> bool:
        """An answer has begun and is not complete: nothing else may be written now."""
        return any(answering(c) for c in self._cycles)

    def _refuse(self, status: int, code: str, **fields: Any) -> None:
        """Refuse with ``status`` and the JSON error ``code``, read nothing more, and close.

        The request being read (if its head is complete) is abandoned; requests read whole
        before it are answered first, and the refusal follows them (``on_response_complete``).
        """
        self._stop_timer()
        if self._lingering or self.transport.is_closing():
            return  # refused already
        self._lingering = True
        if not self._in_head:
            self._abandon_current()
        if self._waiting():
            self._deferred = (status, code, fields)
            return
        self._answer_and_close(status, code, fields)

    def _answer_and_close(self, status: int, code: str, fields: dict[str, Any]) -> None:
        """Write the refusal, unless an answer is being written, and close.

        A client still sending would get a reset that destroys the answer before it is read:
        so the connection lingers (as nginx's ``lingering_close``), its writing side shut,
        whatever arrives dropped, for at most ``LINGER_SECONDS``.
        """
        if self.transport.is_closing():
            return
        if not self._writing():
            body = json_error(status, code=code, lang=self.limits.lang, **fields).body
            head = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
            self.transport.write(status_line(status) + head + b"connection: close\r\n\r\n" + body)
        if (self._in_head and self._head_bytes == 0) or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def announced_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The ``Content-Length`` a request's head announces, 0 if none (httptools has checked
    that it is one number)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return 0


class CorkedTransport:
    """Writes made in one turn of the event loop go out in one ``write`` (one packet).

    uvicorn writes an answer's head and its body separately, two system calls and two packets
    for every small answer; gathered, the balancer serves ~15 % more requests per second for
    ~7 % less CPU each (bench/bench_proxy.py). Everything else is the real transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def connection_cap(
    wanted: int | None,
    fd_limit: int | None,
    fds_each: int,
    memory: int | None = None,
    bytes_each: int | None = None,
) -> int:
    """The most client connections that fit, or ``wanted`` if fewer: each costs ``fds_each``
    descriptors (the balancer's may hold an upstream connection too) and, where given,
    ``bytes_each`` of buffers in half of ``memory`` (HAProxy derives its ``maxconn`` from its
    memory limit likewise); a limit that is None bounds nothing."""
    fits = UNLIMITED if fd_limit is None else (fd_limit - RESERVED_FDS) // fds_each
    if memory is not None and bytes_each:
        fits = min(fits, memory // 2 // bytes_each)
    return max(1, min(fits, wanted or fits))


def memory_limit(cgroup: Path = CGROUP_MEMORY) -> int | None:
    """Bytes of memory this process may use: the machine's, or its container's if less;
    None where neither can be read."""
    try:
        limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        limits = []
    try:
        text = cgroup.read_text().strip()
    except OSError:
        text = "max"
    if text.isdigit():
        limits.append(int(text))
    return min(limits, default=None)


def serve_guarded(
    app: ASGIApp,
    host: str,
    port: int,
    limits: Limits,
    *,
    fds_each: int,
    bytes_each: int | None = None,
    keep_alive_timeout: float = 5.0,
    **options: Any,
) -> None:
    """Serve ``app`` with ``GuardedHttpProtocol``, the descriptor limit raised to the hard one
    (as HAProxy does) and the connection cap lowered, if need be, to fit in it (and in half
    the memory, at ``bytes_each`` a connection, where given)."""
    memory = memory_limit() if bytes_each else None
    cap = connection_cap(limits.max_connections, raise_fd_limit(), fds_each, memory, bytes_each)
    if limits.max_connections and cap < limits.max_connections:
        log.warning(
            "at most %d connections: the file-descriptor limit or the memory allows no more", cap
        )
    guarded = GuardedHttpProtocol.with_limits(dataclasses.replace(limits, max_connections=cap))
    serve(app, host, port, http=guarded, timeout_keep_alive=keep_alive_timeout, **options)

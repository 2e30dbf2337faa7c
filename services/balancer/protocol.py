"""uvicorn's httptools protocol with the limits an edge proxy needs (as HAProxy and nginx have).

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
- at most ``max_connections`` connections are open at once: the next one is answered 503 and
  closed at once, so its file descriptor is freed;
- a refusal (400, 408, 431) is never written into another request's answer, and the
  connection lingers so that the client reads it instead of a reset;
- trailer fields are dropped, never merged into the headers (RFC 9110 section 6.5.1);
- when a client disconnects before its answer is complete, the request's task is cancelled with
  ``CLIENT_GONE``, so its upstream request is cancelled too and in-flight counts stay true;
- the writes of one turn of the event loop (an answer's head and body) leave in one packet
  (``CorkedTransport``);
- a request httptools cannot parse gets uvicorn's 400, as a JSON error like all others, and
  upgrade requests go on as plain HTTP without a log line (the proxy answers them);
- the raw request target is kept in ``scope["extensions"][REQUEST_TARGET]`` (uvicorn's scope
  loses an empty ``?``; the proxy forwards the target as the client sent it).

It overrides uvicorn's ``_start_asgi_task`` (uvicorn >= 0.45) to know each request's task;
tests/test_balancer_conformance.py fails if a uvicorn release changes that.
"""

from __future__ import annotations

import asyncio
from asyncio import TimerHandle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from services.common import json_error

CLIENT_GONE = "client disconnected"
REQUEST_TARGET = "ticslab.request_target"
LINGER_SECONDS = 2.0  # how long a refused client may go on sending before its reset


@dataclass(frozen=True)
class Limits:
    """What one client may take: time and bytes for a header section, connections at once."""

    request_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 10_000
    lang: str = "en"  # of its refusals: no header of the request is read yet


class GuardedHttpProtocol(HttpToolsProtocol):
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
        self._lingering = False
        self._messages = 0  # requests read whole on this connection
        self._running: dict[asyncio.Task[None], Any] = {}  # request task -> its cycle

    # Connections -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "too_many_connections")
            return
        self._start_timer(self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)
        for task, cycle in list(self._running.items()):
            if not cycle.response_complete:
                cycle.disconnected = True  # uvicorn marks only the newest (a pipelined) one
                task.cancel(CLIENT_GONE)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # refused: what the client still sends is read and dropped
        if self._in_head:
            if self._timer is None:  # any byte starts the header deadline (even a bare CRLF)
                self._start_timer(self._head_timeout)
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                self._head_bytes += room
                messages = self._messages
                super().data_received(data[:room])  # the header section may end in the limit
                if self._in_head and self._messages == messages:
                    self._refuse(431, "headers_too_large", limit_bytes=self.limits.max_header_bytes)
                    return
                self.data_received(data[room:])  # the rest counts toward the next request's
                return
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._in_head and not self._lingering:  # a body that has not all arrived
            self._start_timer(self._body_timeout)

    def _unsupported_upgrade_warning(self) -> None:
        """Upgrades are answered by the proxy (501), not logged on every attempt."""

    def send_400_response(self, msg: str) -> None:
        """httptools could not parse the request: the same 400, as JSON like every error."""
        self._refuse(400, "unparsable")

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
        self._in_head = False
        self._stop_timer()
        self.scope["extensions"] = {REQUEST_TARGET: self.url}
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_timer()
        self._in_head, self._head_bytes = True, 0
        self._messages += 1

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """Start the request's task, known to this connection so that a disconnect cancels it."""

        async def tracked(scope: Any, receive: Any, send: Any) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running[task] = cycle
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                if not cycle.disconnected:
                    raise  # not ours: the server is shutting down
            finally:
                del self._running[task]

        super()._start_asgi_task(cycle, tracked)

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
        if self.pipeline:
            self._start_timer(self._body_timeout)  # uvicorn stopped reading: not the client's
        else:
            self._refuse(408, "body_timeout", own_body=True, seconds=self.limits.request_timeout)

    def _in_flight(self) -> bool:
        """A request on this connection is not answered yet."""
        return bool(self.pipeline) or any(not c.response_complete for c in self._running.values())

    def _writing(self) -> bool:
        """An answer has begun and is not complete: nothing else may be written now."""
        return any(c.response_started and not c.response_complete for c in self._running.values())

    def _refuse(self, status: int, code: str, own_body: bool = False, **fields: Any) -> None:
        """Answer ``status`` with the JSON error ``code``, unless an answer is being written,
        and close.

        A request running on this connection is told its client is gone. A client
        still sending would get a reset that destroys the answer before it is read: so the
        connection lingers (as nginx's ``lingering_close``), its writing side shut, whatever
        arrives dropped, for at most ``LINGER_SECONDS``.
        """
        self._stop_timer()
        if self._lingering or self.transport.is_closing():
            return  # refused already
        # The answer to the request whose body stalled, or to one no other request precedes.
        if (own_body and not self._writing()) or not self._in_flight():
            body = json_error(status, code=code, lang=self.limits.lang, **fields).body
            head = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
            self.transport.write(STATUS_LINE[status] + head + b"connection: close\r\n\r\n" + body)
        for cycle in self._running.values():
            cycle.disconnected = True
            cycle.message_event.set()
        if (self._in_head and self._head_bytes == 0) or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


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

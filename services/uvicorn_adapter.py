"""Every use of uvicorn's internals, in one place, each one named.

services/protocol.py bounds what a client may take by subclassing uvicorn's httptools protocol,
which uvicorn does not document as something to subclass: the methods it overrides or calls and
the attributes it reads are uvicorn's private business and may change in any release. So
protocol.py reaches uvicorn only through this module: the private hooks become methods of
ours (``start_request``, ``upgrade_declined``, ``unparsable``), the rest are named below.
tests/test_uvicorn_adapter.py checks each of them on the installed uvicorn and names its
version when one moved; pyproject.toml allows only the releases that test passed on
(docs/design/dependencies.md).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Set as AbstractSet

import httptools
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

# uvicorn's request-response cycle: one request's state, shared by its task and the protocol.
RequestCycle = RequestResponseCycle

# The methods of uvicorn's protocol that UvicornHttpProtocol and its subclass override or call,
# with the parameters they are called with.
PROTOCOL_METHODS: dict[str, tuple[str, ...]] = {
    "_start_asgi_task": ("self", "cycle", "app"),
    "_unsupported_upgrade_warning": ("self",),
    "_should_upgrade": ("self",),
    "send_400_response": ("self", "msg"),
    "on_message_begin": ("self",),
    "on_header": ("self", "name", "value"),
    "on_headers_complete": ("self",),
    "on_body": ("self", "body"),
    "on_message_complete": ("self",),
    "on_response_complete": ("self",),
}
# Attributes uvicorn sets on its protocol and this module or its subclass read as they are
# (a property would cost a call per request on the hot path): the event loop, the transport,
# the httptools parser, the server's open connections, the requests waiting in the pipeline,
# and the request being read (its ``cycle``, its head's ``url``, ``headers`` and ASGI ``scope``).
PROTOCOL_ATTRIBUTES = (
    "loop",
    "transport",
    "parser",
    "connections",
    "pipeline",
    "cycle",
    "url",
    "headers",
    "scope",
)
# Attributes of a RequestCycle read or set here.
CYCLE_ATTRIBUTES = ("response_started", "response_complete", "disconnected", "message_event")


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n`` as uvicorn writes it (its ``STATUS_LINE`` table)."""
    return STATUS_LINE[status]


def answered(cycle: RequestCycle) -> bool:
    """The request's answer has been written whole (uvicorn's ``response_complete``)."""
    return cycle.response_complete


def answering(cycle: RequestCycle) -> bool:
    """The request's answer has begun and is not complete: nothing else may be written."""
    return cycle.response_started and not cycle.response_complete


def client_gone(cycle: RequestCycle) -> bool:
    """The request's client is gone (uvicorn's ``disconnected``): its answer is dropped."""
    return cycle.disconnected


def mark_client_gone(cycle: RequestCycle) -> None:
    """Tell uvicorn the request's client is gone: what its app still sends is dropped, and
    ``receive()`` answers ``http.disconnect``. uvicorn marks only the newest request of a
    connection so (a pipelined one)."""
    cycle.disconnected = True


def wake_receive(cycle: RequestCycle) -> None:
    """Wake the request's app if it waits in ``receive()`` for more body: it reads again."""
    cycle.message_event.set()


class UvicornHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with its private hooks under names of ours.

    Without a subclass it behaves exactly as uvicorn's: each hook's default is uvicorn's own.
    """

    # uvicorn types the app with its own ASGI types, ours are Starlette's: the same callable.
    def _start_asgi_task(self, cycle: RequestCycle, app: ASGIApp) -> None:  # type: ignore[override]
        """uvicorn (>= 0.45) starts each request's task here, at once or when its turn in the
        pipeline comes."""
        self.start_request(cycle, app)

    def start_request(self, cycle: RequestCycle, app: ASGIApp) -> None:
        """Run ``app`` for the request of ``cycle`` in a task of its own, as uvicorn does."""
        super()._start_asgi_task(cycle, app)  # type: ignore[arg-type]  # as above

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn calls this for an upgrade it will not take, while it handles httptools'
        ``HttpParserUpgrade``, whose first argument is where the upgrade's body begins in the
        bytes last fed to the parser."""
        handled = sys.exc_info()[1]
        offset = handled.args[0] if isinstance(handled, httptools.HttpParserUpgrade) else None
        self.upgrade_declined(offset if isinstance(offset, int) else None)

    def upgrade_declined(self, offset: int | None) -> None:
        """An upgrade uvicorn does not take (``offset``: where its body begins in the bytes
        last parsed, None if unknown); uvicorn logs a warning and reads nothing more of it."""
        super()._unsupported_upgrade_warning()

    def takes_upgrade(self) -> bool:
        """uvicorn hands this request's upgrade to its WebSocket protocol."""
        return self._should_upgrade()

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this when httptools cannot parse the request (``msg``: why)."""
        self.unparsable(msg)

    def unparsable(self, msg: str) -> None:
        """A request httptools cannot parse: uvicorn answers a plain-text 400 and closes."""
        super().send_400_response(msg)

    def new_parser(self) -> None:
        """Parse what follows with a fresh httptools parser, set up as uvicorn sets its own
        (httptools stops for good at an upgrade)."""
        self.parser = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)

    def open_connections(self) -> AbstractSet[asyncio.BaseProtocol]:
        """Every connection open on this server (uvicorn's ``server_state.connections``)."""
        return self.connections

    def pipelined(self) -> bool:
        """Requests read whole wait for their turn (uvicorn's ``pipeline``)."""
        return bool(self.pipeline)

    def unqueue(self, cycle: RequestCycle) -> None:
        """A request waiting in the pipeline never runs."""
        for entry in list(self.pipeline):
            if entry[0] is cycle:
                self.pipeline.remove(entry)

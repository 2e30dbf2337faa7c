"""The uvicorn internals services/uvicorn_adapter.py relies on, checked on the installed uvicorn.

A release that moves, renames or re-signs one fails here, with the version named, instead of
as a protocol test that hangs or answers oddly. The attributes are read on a real protocol
serving a real connection on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from support import wait_until_async
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from services import uvicorn_adapter as adapter

pytestmark = pytest.mark.smoke  # also run at the lowest allowed versions (.ci/run)

UVICORN = f"uvicorn {uvicorn.__version__}"
ADAPTER = "services/uvicorn_adapter.py"


class Recording(adapter.UvicornHttpProtocol):
    """The adapter's hooks, recorded as uvicorn calls them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.started: list[adapter.RequestCycle] = []
        self.declined: list[int | None] = []
        self.refused: list[str] = []

    def start_request(self, cycle: adapter.RequestCycle, app: ASGIApp) -> None:
        self.started.append(cycle)
        super().start_request(cycle, app)

    def upgrade_declined(self, offset: int | None) -> None:
        self.declined.append(offset)

    def unparsable(self, msg: str) -> None:
        self.refused.append(msg)
        super().unparsable(msg)


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[Recording, asyncio.StreamWriter]]:
    """One connection to a real ``Recording`` protocol listening on 127.0.0.1."""
    config = uvicorn.Config(hello, http=Recording, ws="none", log_level="critical")
    config.load()
    loop = asyncio.get_running_loop()
    protocols: list[Recording] = []

    def build() -> Recording:
        protocol = Recording(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        protocols.append(protocol)
        return protocol

    server = await loop.create_server(build, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await wait_until_async(lambda: protocols, timeout=5, what="the connection")
        yield protocols[0], writer
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("name", sorted(adapter.PROTOCOL_METHODS))
def test_each_uvicorn_method_the_adapter_relies_on_keeps_its_name_and_parameters(
    name: str,
) -> None:
    expected = adapter.PROTOCOL_METHODS[name]
    method = getattr(HttpToolsProtocol, name, None)
    assert method is not None, f"{UVICORN}: HttpToolsProtocol.{name} is gone ({ADAPTER})"
    found = tuple(inspect.signature(method).parameters)
    assert found == expected, (
        f"{UVICORN}: HttpToolsProtocol.{name}{inspect.signature(method)} changed; "
        f"{ADAPTER} calls it with {expected}"
    )


@pytest.mark.parametrize("status", [400, 408, 413, 431, 503])
def test_the_status_lines_of_the_protocols_refusals_are_uvicorns(status: int) -> None:
    line = adapter.status_line(status)
    assert line.startswith(b"HTTP/1.1 %d " % status) and line.endswith(b"\r\n"), (
        f"{UVICORN}: STATUS_LINE[{status}] is {line!r} ({ADAPTER})"
    )


async def test_uvicorn_sets_the_attributes_read_and_starts_each_request_through_the_hook() -> None:
    async with connected() as (protocol, writer):
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        await wait_until_async(
            lambda: protocol.started, timeout=5, what=f"{UVICORN} to call start_request ({ADAPTER})"
        )
        missing = [name for name in adapter.PROTOCOL_ATTRIBUTES if not hasattr(protocol, name)]
        assert not missing, f"{UVICORN}: the protocol has no {missing} ({ADAPTER})"
        cycle = protocol.started[0]
        assert cycle is protocol.cycle, f"{UVICORN}: start_request got another cycle"
        missing = [name for name in adapter.CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
        assert not missing, f"{UVICORN}: the request cycle has no {missing} ({ADAPTER})"
        assert protocol.url == b"/x" and (b"host", b"a") in protocol.headers, UVICORN
        await wait_until_async(lambda: adapter.answered(cycle), timeout=5, what="the answer")
        assert not adapter.answering(cycle) and not adapter.client_gone(cycle), UVICORN


async def test_a_declined_upgrade_reaches_the_hook_with_where_its_body_begins() -> None:
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
    request = head + b"Content-Length: 4\r\n\r\n"
    async with connected() as (protocol, writer):
        writer.write(request + b"body")
        await wait_until_async(
            lambda: protocol.declined,
            timeout=5,
            what=f"{UVICORN} to call upgrade_declined ({ADAPTER})",
        )
        assert protocol.declined == [len(request)], (
            f"{UVICORN}: the declined upgrade's offset is {protocol.declined} ({ADAPTER})"
        )
        assert not protocol.takes_upgrade(), UVICORN


async def test_an_unparsable_request_reaches_the_hook() -> None:
    async with connected() as (protocol, writer):
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        await wait_until_async(
            lambda: protocol.refused, timeout=5, what=f"{UVICORN} to call unparsable ({ADAPTER})"
        )
        assert protocol.transport.is_closing(), f"{UVICORN}: uvicorn's 400 did not close"

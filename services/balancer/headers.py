"""What of a request's head the proxy forwards, and of an answer's head it sends back.

Out of the hot-path module (proxy.py) so that the rules for heads can be read, and unit
tested, on their own: the request target as the client wrote it, hop-by-hop headers dropped
both ways (and those a ``Connection`` header names), ``X-Forwarded-For``/``-Proto`` added, and
what cannot be forwarded refused with a ``ClientError``. The reasons are in
docs/design/balancer.md ("The proxy").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.types import Scope

from services.protocol import REQUEST_TARGET

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
# Also ours: the length (bodies are buffered, so no ``Expect: 100-continue`` either), the
# forwarding headers, and on answers uvicorn's own Date.
DROP_REQUEST = HOP_BY_HOP | {b"content-length", b"expect", b"x-forwarded-for", b"x-forwarded-proto"}
DROP_RESPONSE = HOP_BY_HOP | {b"content-length", b"date"}
IDEMPOTENCY_KEY = "Idempotency-Key"
# Control bytes a header value may not hold (RFC 9110 5.5); such a header is dropped.
INVALID_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Bytes that would end or split the request line upstream: httptools never lets them into a
# target, but a path rebuilt from another ASGI server's scope is percent-decoded.
UNSAFE_TARGET = re.compile(rb"[\x00-\x20\x7f]")


class ClientError(Exception):
    """The client's request cannot be forwarded: answered ``status`` with the error ``code``
    (services/errors.py), filled in with ``fields``."""

    def __init__(self, status: int, code: str, **fields: Any) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.fields = fields


def has_idempotency_key(headers: list[tuple[str, str]]) -> bool:
    """The forwarded headers carry an ``Idempotency-Key`` (the client's, kept as it is, or the
    one the proxy added for an earlier try)."""
    return any(name.lower() == "idempotency-key" for name, _ in headers)


def request_target(scope: Scope) -> str:
    """The path and query to send upstream, as the client wrote them.

    Origin-form (``/path?query``) is kept byte for byte (an empty ``?`` too); absolute-form
    (``http://host/path``) gives its path and query only, and its authority must be the
    ``Host`` header's (RFC 9112 section 3.2.2). Anything else (``*``, ``*@host:port/x``,
    authority-form) is a 400: the host always comes from the server.
    """
    raw: bytes | None = scope.get("extensions", {}).get(REQUEST_TARGET)
    if raw is None:  # served by another ASGI server: rebuild it from the parsed parts
        query = scope["query_string"]
        raw = (scope["raw_path"] or scope["path"].encode()) + (b"?" + query if query else b"")
    if raw[:1] != b"/":
        scheme, sep, rest = raw.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise ClientError(400, "bad_target")
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        hosts = [value for name, value in scope.get("headers", ()) if name == b"host"]
        if any(host.lower() != rest[:cut].lower() for host in hosts):
            raise ClientError(400, "target_host_differs")
        raw = rest[cut:]
        raw = raw if raw[:1] == b"/" else b"/" + raw
    if b"#" in raw:
        raise ClientError(400, "target_fragment")
    if UNSAFE_TARGET.search(raw):  # only from another ASGI server's decoded path
        raise ClientError(400, "bad_target")
    return raw.decode("latin-1")


def forward_headers(scope: Scope, client: str) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones, plus ``X-Forwarded-For``/``-Proto``;
    ClientError for an upgrade the balancer cannot carry (``upgrade_problem``).

    One pass over the client's headers (a second only when ``Connection`` names a header that
    is not hop-by-hop already). Taken before the body is read: trailer fields can never become
    headers here. Values are UTF-8 text (``header_text``), so each reaches the server byte for
    byte.
    """
    headers: list[tuple[str, str]] = []
    named: frozenset[bytes] = frozenset()
    forwarded_for = ""
    upgrade: bytes | None = None
    chunked = False
    for name, value in scope["headers"]:
        if name not in DROP_REQUEST:
            headers.append((name.decode("latin-1"), header_text(value)))
        elif name == b"connection":
            named |= connection_tokens(value)
        elif name == b"x-forwarded-for":
            forwarded_for += header_text(value) + ", "
        elif name == b"upgrade":
            upgrade = value
        elif name == b"transfer-encoding":
            chunked = True
    if upgrade is not None and (problem := upgrade_problem(upgrade, chunked)) is not None:
        raise problem
    if named := named - DROP_REQUEST:
        headers = [(name, value) for name, value in headers if name.encode() not in named]
    headers.append(("X-Forwarded-For", forwarded_for + client))
    headers.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
    return headers


def upgrade_problem(upgrade: bytes, chunked: bool) -> ClientError | None:
    """An ``Upgrade`` the balancer cannot carry: WebSocket (no tunnel), or another one
    (``Upgrade: h2c`` from ``curl --http2``) with a chunked body, which the protocol does not
    read (services/protocol.py reads a ``Content-Length`` one: it goes on in HTTP/1.1)."""
    if upgrade.strip().lower() == b"websocket":
        return ClientError(501, "websocket")
    if chunked:
        return ClientError(501, "upgrade_with_body")
    return None


def header_text(value: bytes) -> str:
    """A header value as the proxy writes it back (UTF-8, upstream.py): every byte reaches the
    server as the client sent it. Bytes that are not UTF-8 could not: ClientError 400, never
    rewritten."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ClientError(400, "header_not_utf8") from None


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The header names a ``Connection`` header lists (hop-by-hop too); any bytes allowed."""
    return frozenset(token.strip().lower() for token in value.split(b","))


def answer_headers(
    raw_headers: Sequence[tuple[bytes, bytes]], keep_length: bool
) -> list[tuple[bytes, bytes]]:
    """The server's headers minus hop-by-hop ones and those its ``Connection`` names.

    ``keep_length``: the server's ``Content-Length`` stays (a streamed answer, or a HEAD).
    """
    drop = DROP_RESPONSE
    for name, value in raw_headers:
        if name.lower() == b"connection":
            drop = drop | connection_tokens(value)
    headers = []
    for name, value in raw_headers:
        lower = name.lower()
        wanted = lower not in drop or (keep_length and lower == b"content-length")
        if wanted and INVALID_VALUE.search(value) is None:  # uvicorn would refuse to write it
            headers.append((lower, value))
    return headers

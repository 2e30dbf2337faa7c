"""Request targets and limits as pure functions: no client input ever chooses the host."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.balancer.config import parse_backend
from services.balancer.headers import ClientError, answer_headers, request_target
from services.balancer.server import Server
from services.balancer.upstream import request_head
from services.protocol import REQUEST_TARGET, RESERVED_FDS, connection_cap

pytestmark = pytest.mark.smoke  # also run at the lowest allowed versions (.ci/run)

SERVER = Server("server1", "http://10.0.0.5:5001")


def scope_for(raw: bytes) -> dict:
    return {"extensions": {REQUEST_TARGET: raw}}


def upstream(raw: bytes) -> tuple[bytes, bytes]:
    """The request line and the rest of the head the proxy would write for a client's raw
    target (the connection itself always goes to SERVER's address)."""
    head = request_head("GET", request_target(scope_for(raw)), SERVER, [], 0)
    line, _, rest = head.partition(b"\r\n")
    return line, rest


@given(st.binary(max_size=200))
def test_no_target_whatever_its_bytes_splits_the_request_or_names_another_host(
    raw: bytes,
) -> None:
    try:
        line, rest = upstream(raw)
    except ClientError as error:
        assert error.status == 400
        return
    method, target, version = line.split(b" ")  # exactly one request line of three parts
    assert (method, version) == (b"GET", b"HTTP/1.1") and target.startswith(b"/")
    assert rest == b"Host: 10.0.0.5:5001\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        (b"/tareas", "/tareas"),
        (b"/x?", "/x?"),  # kept byte for byte, the empty query too
        (b"//evil.example/x", "//evil.example/x"),  # a path, on our server
        (b"http://evil.example:9/a?b=1", "/a?b=1"),  # absolute-form: its path only
        (b"HTTPS://evil.example", "/"),
        (b"http://evil.example?q", "/?q"),
    ],
)
def test_origin_and_absolute_forms(raw: bytes, sent: str) -> None:
    line, rest = upstream(raw)
    assert line == b"GET " + sent.encode() + b" HTTP/1.1" and rest.startswith(b"Host: 10.0.0.5:")


@pytest.mark.parametrize(
    "raw", [b"*", b"*@127.0.0.1:9999/x", b"evil.example:80", b"ftp://x/y", b"/a#b", b""]
)
def test_anything_else_is_a_400(raw: bytes) -> None:
    with pytest.raises(ClientError) as caught:
        request_target(scope_for(raw))
    assert caught.value.status == 400


def test_without_the_raw_target_it_is_rebuilt_from_the_parsed_parts() -> None:
    scope = {"raw_path": b"/a%20b", "path": "/a b", "query_string": b"x=1"}
    assert request_target(scope) == "/a%20b?x=1"


@pytest.mark.parametrize("path", ["/a\r\nX-Injected: 1", "/a b", "/a\x00", "/a\nb"])
def test_a_decoded_path_that_would_split_the_request_line_is_a_400(path: str) -> None:
    """Another ASGI server's scope may hold only the percent-decoded path (``%0d%0a``)."""
    with pytest.raises(ClientError) as caught:
        request_target({"raw_path": None, "path": path, "query_string": b""})
    assert (caught.value.status, caught.value.code) == (400, "bad_target")


def test_answer_headers_drop_hop_by_hop_and_connection_named_ones() -> None:
    raw = (
        (b"Connection", b"X-Private, \xff"),
        (b"X-Private", b"secret"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Content-Length", b"10"),
        (b"X-Public", b"yes"),
    )
    assert answer_headers(raw, keep_length=False) == [(b"x-public", b"yes")]
    assert answer_headers(raw, keep_length=True) == [
        (b"content-length", b"10"),
        (b"x-public", b"yes"),
    ]


def test_backend_urls_are_scheme_host_port_only() -> None:
    assert parse_backend("s=http://127.0.0.1:5001/") == ("s", "http://127.0.0.1:5001", 1)
    for bad in ("s=http://127.0.0.1:5001/api", "s=http://u:p@h:1", "s=http://h:1?x=1"):
        with pytest.raises(ValueError, match="scheme://host:port only"):
            parse_backend(bad)


def test_connection_cap_fits_two_descriptors_per_connection() -> None:
    assert connection_cap(None, 1024, 2) == (1024 - RESERVED_FDS) // 2
    assert connection_cap(100, 1024, 2) == 100
    assert connection_cap(5000, 1024, 2) == (1024 - RESERVED_FDS) // 2

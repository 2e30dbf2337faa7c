"""Request targets and limits as pure functions: no client input ever chooses the host."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from services.balancer.config import parse_backend
from services.balancer.headers import ClientError, answer_headers, request_target
from services.balancer.server import Server
from services.protocol import REQUEST_TARGET, RESERVED_FDS, connection_cap

pytestmark = pytest.mark.smoke  # also run at the lowest allowed versions (.ci/run)

SERVER = Server("server1", "http://10.0.0.5:5001")


def scope_for(raw: bytes) -> dict:
    return {"extensions": {REQUEST_TARGET: raw}}


def upstream(raw: bytes) -> URL:
    """The URL the proxy would request for a client's raw target."""
    return URL.build(
        scheme=SERVER.scheme,
        host=SERVER.host,
        port=SERVER.port,
        path=request_target(scope_for(raw)),
        encoded=True,
    )


@given(st.binary(max_size=200))
def test_no_target_whatever_its_bytes_reaches_another_host(raw: bytes) -> None:
    try:
        url = upstream(raw)
    except ClientError as error:
        assert error.status == 400
        return
    assert (url.scheme, url.host, url.port) == ("http", "10.0.0.5", 5001)
    assert url.raw_path_qs.startswith("/")


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
    url = upstream(raw)
    assert url.raw_path_qs == sent and url.host == "10.0.0.5"


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

"""How requests are read (issue 23): the guarded protocol that the balancer and the task
servers share (services/protocol.py), and what the balancer makes of odd bytes, on real
processes over raw sockets.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from backends import OK, RawBackend
from support import ServiceProcess, taskserver, wait_until
from test_balancer_conformance import closed_by_peer, front, json_body, send_raw, upload

BODY_LIMIT = 1000
ANSWERS = {
    b"/s1000": b"HTTP/1.1 1000 Weird\r\ncontent-length: 2\r\n\r\nok",  # no HTTP status
    b"/s100": b"HTTP/1.1 100 Continue\r\ncontent-length: 2\r\n\r\nok",  # a 1xx as the final
}


@pytest.fixture(scope="module")
def backends() -> Iterator[list[RawBackend]]:
    started = [RawBackend(lambda request: ANSWERS.get(request.split(b" ")[1], OK)).start()]
    started.append(RawBackend(lambda request: ANSWERS.get(request.split(b" ")[1], OK)).start())
    yield started
    for backend in started:
        backend.close()


@pytest.fixture(scope="module")
def edge(backends: list[RawBackend]) -> Iterator[ServiceProcess]:
    servers = [(f"server{i}", b.url) for i, b in enumerate(backends, 1)]
    process = front(servers, "--max-body-size", str(BODY_LIMIT), "--request-timeout", "2")
    yield process
    process.close()


@pytest.fixture(autouse=True)
def forget(backends: list[RawBackend]) -> None:
    """Each test sees only the requests it made (``seen``)."""
    for backend in backends:
        backend.requests.clear()


def seen(backends: list[RawBackend]) -> list[bytes]:
    return [request for backend in backends for request in backend.requests]


def exchange(port: int, data: bytes, within: float = 5.0) -> bytes:
    """Everything the balancer answers to ``data`` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(data)
        return closed_by_peer(sock, within)


# Item 1: header bytes are never re-encoded ---------------------------------------------------


def test_utf8_header_bytes_reach_the_server_exactly(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    raw = "GET /name HTTP/1.1\r\nHost: x\r\nX-Name: café ñandú\r\n\r\n".encode()
    assert send_raw(edge.port, raw).status == 200
    (request,) = seen(backends)
    assert "x-name: café ñandú\r\n".encode() in request


def test_header_bytes_that_are_not_utf8_are_a_400_and_reach_nobody(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    answer = send_raw(edge.port, b"GET /name HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n")
    assert answer.status == 400
    assert json_body(answer)["code"] == "header_not_utf8"
    assert seen(backends) == []


# Item 2: a request already read is answered before the 400 for what follows it ---------------


def test_a_complete_request_is_answered_before_the_400_for_the_bytes_after_it(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    body = '{"t":"café"}'.encode()
    counted_in_characters = len(body.decode())  # one byte short: "é" is two
    head = f"POST /tareas HTTP/1.1\r\nHost: x\r\nContent-Length: {counted_in_characters}\r\n\r\n"
    received = exchange(edge.port, head.encode() + body)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.count(b"HTTP/1.1 400 ") == 1
    assert received.index(b"HTTP/1.1 400 ") > received.index(b"\r\n\r\nok")
    assert b'"code":"unparsable"' in received
    assert len(seen(backends)) == 1


def test_pipelined_requests_are_all_answered_before_the_400(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    get = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
    received = exchange(edge.port, get + get.replace(b"one", b"two") + b"\x01\x02 nonsense\r\n\r\n")
    assert received.count(b"HTTP/1.1 200 ") == 2
    assert received.rindex(b"HTTP/1.1 200 ") < received.index(b"HTTP/1.1 400 ")
    assert len(seen(backends)) == 2


# Item 3: a 413 the client can read ---------------------------------------------------------


def test_an_announced_body_over_the_limit_is_413_before_100_continue(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\nExpect: 100-continue\r\n"
    received = exchange(edge.port, head + b"\r\n")
    assert received.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in received
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["limit_bytes"] == BODY_LIMIT
    assert seen(backends) == []


@pytest.mark.parametrize("chunked", [False, True])
def test_a_client_uploading_past_the_limit_is_not_reset_and_reads_the_413(
    edge: ServiceProcess, backends: list[RawBackend], chunked: bool
) -> None:
    if chunked:
        head = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    else:
        head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n"
        piece = b"x" * 0x10000
    received = upload(edge.port, head, piece, 128)  # 8 MiB; a reset without the fix
    assert received.startswith(b"HTTP/1.1 413 ")
    assert seen(backends) == []


# Item 7: smaller cases ---------------------------------------------------------------------


def test_an_answer_that_is_not_http_is_one_502_never_retried(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    for path in ANSWERS:
        answer = send_raw(edge.port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        assert answer.status == 502
        assert json_body(answer)["code"] == "bad_upstream_answer"
    assert len(seen(backends)) == len(ANSWERS)


def test_a_percent_encoded_path_of_the_balancer_is_the_servers(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    answer = send_raw(edge.port, b"GET /%68ealth HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.status == 200 and answer.getheader("X-Upstream-Server")
    assert [r.split(b"\r\n")[0] for r in seen(backends)] == [b"GET /%68ealth HTTP/1.1"]


def test_an_absolute_target_whose_host_differs_from_host_is_a_400(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    answer = send_raw(edge.port, b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert answer.status == 400
    assert json_body(answer)["code"] == "target_host_differs"
    assert seen(backends) == []
    same = send_raw(edge.port, b"GET http://A.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert same.status == 200


H2C = (  # what curl --http2 adds to a request over http://
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)


def test_an_h2c_upgrade_with_a_body_is_answered_in_http_1_1(
    edge: ServiceProcess, backends: list[RawBackend]
) -> None:
    post = b"POST /up HTTP/1.1\r\nHost: x\r\n" + H2C + b"Content-Length: 5\r\n\r\nhello"
    get = b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    received = exchange(edge.port, post + get)  # curl --http2 -d hello, then one more
    assert received.count(b"HTTP/1.1 200 ") == 2
    first, second = sorted(seen(backends), key=lambda r: r.startswith(b"GET"))
    assert first.startswith(b"POST /up ") and first.endswith(b"\r\n\r\nhello")
    assert b"upgrade" not in first.lower() and second.startswith(b"GET /next ")


@pytest.mark.slow  # a balancer of its own (its cap): ~3 s
def test_idle_keep_alive_connections_make_room_for_new_clients(
    backends: list[RawBackend],
) -> None:
    process = front([("server1", backends[0].url)], "--max-connections", "3")
    idle = [socket.create_connection(("127.0.0.1", process.port)) for _ in range(3)]
    try:
        for sock in idle:  # each has had its answer and waits for its next request
            sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        answer = send_raw(process.port, b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.status == 200  # 503 while idle connections held every slot
    finally:
        for sock in idle:
            sock.close()
        process.close()


# Item 18 and 21: the task servers are read by the same protocol ------------------------------


@pytest.fixture(scope="module")
def guarded_taskserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tasks_file = tmp_path_factory.mktemp("protocol") / "tasks.json"
    process = taskserver("server1", tasks_file)
    process.command += ["--request-timeout", "1", "--max-connections", "40"]
    yield process.start()
    process.close()


def test_a_task_server_drops_slowloris_connections_and_stays_healthy(
    guarded_taskserver: ServiceProcess,
) -> None:
    slow = [socket.create_connection(("127.0.0.1", guarded_taskserver.port)) for _ in range(30)]
    try:
        for sock in slow:  # a header section that never ends
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answers = [closed_by_peer(sock, within=5) for sock in slow]  # 1 s each, in parallel
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers)
        health = send_raw(guarded_taskserver.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert health.status == 200
    finally:
        for sock in slow:
            sock.close()


def test_a_task_server_past_its_connection_cap_answers_503(
    guarded_taskserver: ServiceProcess,
) -> None:
    held = [socket.create_connection(("127.0.0.1", guarded_taskserver.port)) for _ in range(40)]
    try:
        wait_until(
            lambda: exchange(guarded_taskserver.port, b"", within=3).startswith(b"HTTP/1.1 503 "),
            timeout=5,
            what="a connection past the cap refused",
        )
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    "request_line",
    [b"GET /health HTTP/1.1 extra", b"\x01\x02 nonsense", b"GET /he alth HTTP/1.1"],
)
def test_a_malformed_request_line_gets_a_json_400_from_a_task_server(
    guarded_taskserver: ServiceProcess, request_line: bytes
) -> None:
    received = exchange(guarded_taskserver.port, request_line + b"\r\nHost: x\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["code"] == "unparsable"

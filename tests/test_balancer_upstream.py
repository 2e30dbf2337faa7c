"""The balancer's side towards the servers: pooled connections, and every try its own decision.

Each test counts what real backends on 127.0.0.1 received, so a re-send nobody decided (the
aiohttp client the proxy used before re-sent idempotent requests once on its own) or a request
lost on a stale pooled connection shows up as a number. The upstream client itself
(services/balancer/upstream.py) is tested piece by piece in test_balancer_upstream_client.py.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from backends import OK, RawBackend
from support import ServiceProcess
from test_balancer_helpers import balancer_process, status_of

from services.balancer.edge import FDS_PER_CONNECTION, STREAM_BYTES
from services.protocol import connection_cap, memory_limit


def hang_up(request: bytes) -> Callable[[socket.socket], None]:
    """Read the request and close the connection without a byte of answer."""
    return lambda sock: None


def tries_of(balancer: ServiceProcess) -> dict[str, int]:
    return {s["name"]: s["tries_total"] for s in status_of(balancer)["servers"]}


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_a_hung_up_get_reaches_each_server_once_per_counted_try() -> None:
    """Each try reaches its server once (aiohttp's client alone sent each twice: 4 GETs for 2
    tries): the proxy's client never re-sends (test_balancer_upstream_client.py, too)."""
    raws = [RawBackend(hang_up).start() for _ in range(2)]
    process = balancer_process([(f"raw{i}", r.url) for i, r in enumerate(raws)])
    try:
        balancer = process.start()
        response = httpx.get(balancer.url + "/hang-up", timeout=10)
        assert response.status_code == 502, response.text
        assert [len(raw.requests) for raw in raws] == [1, 1]
        assert tries_of(balancer) == {"raw0": 1, "raw1": 1}
    finally:
        process.close()
        for raw in raws:
            raw.close()


@pytest.mark.slow
def test_a_timeout_is_retried_once_within_the_clients_deadline() -> None:
    """Three silent servers, two retries allowed: two tries, both within the client's deadline
    (2 x the response timeout), not one response timeout per server."""
    slow = [RawBackend(lambda request: time.sleep(1.5) or OK).start() for _ in range(3)]
    timeout = 1.0
    flags = ("--response-timeout", str(timeout))
    servers = [(f"slow{i}", raw.url) for i, raw in enumerate(slow)]
    process = balancer_process(servers, "round_robin", *flags)
    try:
        balancer = process.start()
        started = time.monotonic()
        response = httpx.get(balancer.url + "/slow", timeout=10)
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert sum(len(raw.requests) for raw in slow) == 2
        assert sum(tries_of(balancer).values()) == 2
        assert elapsed < 2 * timeout + 0.6  # the retry had only what was left of the deadline
    finally:
        process.close()
        for raw in slow:
            raw.close()


class CountedConnections:
    """A raw backend that counts its connections; with ``one_answer``, it answers the first
    request of each connection with keep-alive, then hangs up on the next one unanswered: a
    server closing an idle connection just as a request arrives. ``RawBackend`` serves each
    connection in a thread of its own, so what a connection did so far is thread-local."""

    def __init__(self, one_answer: bool) -> None:
        self.one_answer = one_answer
        self.connections = 0
        self._connection = threading.local()
        self.raw = RawBackend(self.answer).start()

    def answer(self, request: bytes) -> bytes | Callable[[socket.socket], None]:
        if getattr(self._connection, "answered", False):
            return hang_up(request) if self.one_answer else OK
        self._connection.answered = True
        self.connections += 1
        return OK


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_a_post_on_a_pooled_connection_the_server_closed_goes_again_on_a_new_one() -> None:
    """The server never ran it: HAProxy would not have sent it there (``http-reuse safe``).
    Each such retry is a counted try, on the same server, on a new connection."""
    backend = CountedConnections(one_answer=True)
    flags = ("--retries", "0", "--upstream-keepalive", "30")
    process = balancer_process([("raw", backend.raw.url)], "round_robin", *flags)
    try:
        balancer = process.start()
        with httpx.Client(base_url=balancer.url, timeout=10) as client:
            answers = [client.post("/tasks", content=b"{}").status_code for _ in range(3)]
        assert answers == [200, 200, 200]
        server = status_of(balancer)["servers"][0]
        assert (server["tries_total"], server["retries"]) == (4, 1)
        assert backend.connections == 3
        process.close()  # the retry summary is said at the latest when the balancer stops
        said = "1 request sent again to raw on a new connection in the last 5 s"
        assert said in process.log()
    finally:
        process.close()
        backend.raw.close()


@pytest.mark.parametrize(
    ("keepalive", "connections"),
    [("0.2", 2), pytest.param("30", 1, marks=pytest.mark.slow)],  # the contrast: 1.8 s more
)
def test_pooled_connections_are_dropped_after_the_upstream_keepalive(
    keepalive: str, connections: int
) -> None:
    """Two GETs 0.6 s apart share a pooled connection only if it may idle that long."""
    backend = CountedConnections(one_answer=False)
    flags = ("--upstream-keepalive", keepalive)
    process = balancer_process([("raw", backend.raw.url)], "round_robin", *flags)
    try:
        balancer = process.start()
        httpx.get(balancer.url + "/x", timeout=10).raise_for_status()
        time.sleep(0.6)  # the idle time under test, not a synchronisation
        httpx.get(balancer.url + "/x", timeout=10).raise_for_status()
        assert backend.connections == connections
    finally:
        process.close()
        backend.raw.close()


def test_the_connection_cap_fits_half_the_memory_at_half_a_mebibyte_a_connection() -> None:
    gib = 1024**3
    balancer = (FDS_PER_CONNECTION, gib, STREAM_BYTES)  # descriptors, memory, bytes each
    assert connection_cap(None, None, *balancer) == gib // 2 // STREAM_BYTES == 1024
    assert connection_cap(None, 100_000, *balancer) == 1024  # memory is the tighter bound
    assert connection_cap(500, 100_000, *balancer) == 500
    assert connection_cap(None, 1024, *balancer) == (1024 - 64) // 2  # descriptors are


def test_the_memory_limit_is_the_containers_when_it_has_one(tmp_path: Path) -> None:
    machine = memory_limit(tmp_path / "absent")
    assert machine is not None and machine > 64 * 1024**2
    cgroup = tmp_path / "memory.max"
    cgroup.write_text("268435456\n")
    assert memory_limit(cgroup) == 256 * 1024**2
    cgroup.write_text("max\n")
    assert memory_limit(cgroup) == machine


@pytest.mark.slow
def test_slow_readers_hold_at_most_half_a_mebibyte_each_and_give_it_back() -> None:
    """50 clients stop reading 100 MB answers: the balancer's RSS per stream while they wait
    (2.3 MiB with 256 KiB reads), and, once they closed, their memory is reused by the next
    50 instead of growing (bench/bench_stream_memory.py measures the same, beside HAProxy).
    Whether the allocator hands freed memory back to the system at once varies from run to
    run (0.02-0.37 MiB a stream measured here), so what is checked is that nothing stays
    held: a second round leaves the process no bigger than the first did."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    from bench_stream_memory import measure, start_backend, start_balancer

    backends = [start_backend(), start_backend()]
    try:
        balancer = start_balancer([backend.port for backend in backends])
        assert balancer.proc is not None
        try:
            first = measure(balancer.port, balancer.proc.pid, 50)
            second = measure(balancer.port, balancer.proc.pid, 50)
        finally:
            balancer.close()
    finally:
        for backend in backends:
            backend.close()
    assert first["per_stream"] <= 0.5 and second["per_stream"] <= 0.5, (first, second)
    assert second["after"] - first["after"] <= 0.1 * 50, (first, second)  # MiB

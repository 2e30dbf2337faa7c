"""Scaling out and in while traffic runs (issue 25): ``POST /control/servers`` and
``DELETE /control/servers/{name}`` on a real ``ticslab up`` stack, its processes and ports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support import wait_until
from test_balancer_helpers import TOKEN, EchoBackend, balancer_process
from test_control import Background, state
from test_launcher import UpStack, alive, listening

from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.common import MAX_SERVERS, NEW, UP
from services.launcher.ports import holder

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="checks processes through Linux /proc"
)


class Writers(Background):
    """Creates tasks through the balancer (bounded by ``Background``'s limit), recording each
    answer's status, the server that answered, and the id of each task created."""

    def __init__(self, url: str) -> None:
        super().__init__(url, limit=1500)
        self.answers: list[tuple[int, str | None]] = []
        self.created: list[int] = []

    def step(self, client: httpx.Client) -> None:
        try:
            answer = client.post(self.url + "/tareas", json={"title": "escala"})
        except httpx.HTTPError as error:
            self.answers.append((0, repr(error)))
            return
        self.answers.append((answer.status_code, answer.headers.get("x-upstream-server")))
        if answer.status_code == 201:
            self.created.append(answer.json()["id"])


def control(
    stack: UpStack, method: str, path: str, lang: str = "en", **kwargs: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.token}", "Accept-Language": lang}
    return httpx.request(method, stack.url + path, headers=headers, timeout=40, **kwargs)  # type: ignore[arg-type]


def servers_of(stack: UpStack) -> list[str]:
    return [s["name"] for s in httpx.get(stack.url + "/status").json()["servers"]]


def assert_kept(stack: UpStack, created: list[int]) -> None:
    """Every task created is there, whichever server answers the read."""
    with httpx.Client(timeout=10) as client:
        missing = [
            i for i in created if client.get(f"{stack.url}/api/tasks/{i}").status_code != 200
        ]
    assert missing == [], f"{len(missing)} of {len(created)} tasks lost"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[UpStack]:
    up = UpStack(tmp_path, servers=2).start()
    try:
        yield up
    finally:
        up.close()


@pytest.mark.slow
def test_a_server_added_under_traffic_serves_after_its_first_check_and_nothing_fails(
    stack: UpStack,
) -> None:
    with Writers(stack.url) as writers:
        wait_until(lambda: len(writers.answers) > 20, what="traffic to flow")
        taken = socket.socket()  # the next port is someone else's: the one after it is used
        with contextlib.suppress(OSError):
            taken.bind(("127.0.0.1", stack.server_ports[-1] + 1))
            taken.listen()
        answer = control(stack, "POST", "/control/servers", json={})
        taken.close()
        assert answer.status_code == 201, answer.text
        added = answer.json()
        assert added["server"] == "server3" and added["state"] in (NEW, UP)
        port = int(added["url"].rsplit(":", 1)[1])
        assert port > stack.server_ports[-1] + 1
        assert listening(port) and added["process"] == "running"
        wait_until(lambda: state(stack, "server3") == UP, what="server3 UP after its check")
        wait_until(
            lambda: ("201", "server3") in {(str(s), n) for s, n in writers.answers},
            what="server3 to answer traffic",
        )
    assert [a for a in writers.answers if a[0] != 201] == []
    assert_kept(stack, writers.created)
    # The same server as `ticslab up --servers 3` would start: same tasks file, same health.
    first = httpx.get(f"http://127.0.0.1:{stack.server_ports[0]}/health").json()
    third = httpx.get(f"http://127.0.0.1:{port}/health").json()
    assert third.keys() == first.keys() and third["server"] == "server3"
    assert third["tasks_file"] == first["tasks_file"]
    assert "server3   |" in stack.output()  # its log, prefixed like the others'
    events = httpx.get(stack.url + "/events").json()["events"]
    assert any(e["kind"] == "discovery" and e["action"] == "added" for e in events)

    # Stopped with the stack: nothing outlives it, its port is free again.
    pid = holder(port)
    assert pid is not None
    assert stack.interrupt() == 0
    assert not alive(pid[0]) and not listening(port)


@pytest.mark.slow
def test_a_server_removed_under_traffic_drains_stops_and_is_forgotten(stack: UpStack) -> None:
    port = stack.server_ports[1]
    found = holder(port)
    assert found is not None
    pid = found[0]
    with Writers(stack.url) as writers:
        wait_until(lambda: len(writers.answers) > 20, what="traffic to flow")
        answer = control(stack, "DELETE", "/control/servers/server2")
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == "removed" and answer.json()["drained"] is True
        assert answer.json()["servers"] == ["server1"]
        mark = len(writers.answers)
        wait_until(lambda: len(writers.answers) > mark + 20, what="traffic after the removal")
    assert [a for a in writers.answers if a[0] != 201] == []
    assert {server for _, server in writers.answers[mark:]} == {"server1"}
    assert not alive(pid) and not listening(port)
    assert servers_of(stack) == ["server1"]
    assert_kept(stack, writers.created)
    events = httpx.get(stack.url + "/events").json()["events"]
    assert [e["to"] for e in events if e["kind"] == "state" and e["server"] == "server2"][-1] == (
        "DRAIN"
    )
    assert any(e["kind"] == "discovery" and e["action"] == "removed" for e in events)

    # The last one stays, and the removed name can be added again, on a free port.
    refused = control(stack, "DELETE", "/control/servers/server1")
    assert refused.status_code == 409 and refused.json()["code"] == "last_server"
    again = control(stack, "POST", "/control/servers", json={"name": "server2", "weight": 2})
    assert again.status_code == 201 and again.json()["weight"] == 2
    wait_until(lambda: state(stack, "server2") == UP, what="server2 back")


@pytest.mark.slow
def test_bad_scaling_requests_get_clear_errors(stack: UpStack) -> None:
    assert httpx.post(stack.url + "/control/servers", json={}).status_code == 401
    assert httpx.delete(stack.url + "/control/servers/server1").status_code == 401
    cases = [
        ({"content": b"[1]"}, 400, "bad_scale_body"),
        ({"json": {"name": "x", "colour": "red"}}, 400, "bad_scale_body"),
        ({"json": {"name": "../etc"}}, 400, "bad_server_name"),
        ({"json": {"name": "a" * 40}}, 400, "bad_server_name"),
        ({"json": {"name": 7}}, 400, "bad_server_name"),
        ({"json": {"weight": 999}}, 400, "bad_weight"),
        ({"json": {"weight": True}}, 400, "bad_weight"),
        ({"json": {"name": "server1"}}, 409, "server_exists"),
    ]
    for body, status, code in cases:
        answer = control(stack, "POST", "/control/servers", **body)
        assert (answer.status_code, answer.json().get("code")) == (status, code), body
        assert "{{" not in answer.json()["error"]  # a sentence, its example filled in
    too_big = control(stack, "POST", "/control/servers", content=b"{" + b" " * 70_000 + b"}")
    assert too_big.status_code == 413 and "error" in too_big.json()
    missing = control(stack, "DELETE", "/control/servers/server9")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_server"
    spanish = control(stack, "POST", "/control/servers", "es", json={"name": "!"})
    assert "un nombre de servidor" in spanish.json()["error"]
    assert servers_of(stack) == ["server1", "server2"]  # no refusal started anything
    assert "server3" not in stack.output()

    # Two removals at once: one at a time, so the second finds the last server and refuses.
    with ThreadPoolExecutor(2) as pool:
        paths = ["/control/servers/server1", "/control/servers/server2"]
        answers = list(pool.map(lambda path: control(stack, "DELETE", path), paths))
    assert sorted(a.status_code for a in answers) == [200, 409]
    assert len(servers_of(stack)) == 1


def test_the_bound_and_a_balancer_without_driver_refuse_before_starting_anything() -> None:
    echo = EchoBackend("echo").start()
    balancer = balancer_process([(f"s{i}", echo.url) for i in range(MAX_SERVERS)]).start()
    try:
        url, headers = balancer.url + "/control/servers", {"Authorization": f"Bearer {TOKEN}"}
        full = httpx.post(url, json={}, headers=headers, timeout=10)
        assert full.status_code == 409 and full.json()["code"] == "too_many_servers"
        assert full.json()["maximum"] == MAX_SERVERS
        removed = httpx.delete(url + "/s3", headers=headers, timeout=10)
        assert removed.status_code == 409 and removed.json()["code"] == "driver_unsupported"
        states = httpx.get(balancer.url + "/status", timeout=5).json()["servers"]
        assert len(states) == MAX_SERVERS  # the refused removal put s3 back in rotation
        assert "DRAIN" not in {s["state"] for s in states}
    finally:
        balancer.close()
        echo.close()


def test_a_new_server_ramps_in_with_slow_start() -> None:
    async def scenario() -> None:
        config = BalancerConfig(backends=[("server1", "http://127.0.0.1:5001")], slow_start=30)
        balancer = Balancer(config)
        server = balancer.add_server("server2", "http://127.0.0.1:5002", weight=4)
        assert server.state == NEW and server.weight == 4
        balancer.record_check(server, True, 200, "200 OK", 1.0)
        assert server.state == UP and server.ramp_from is not None
        assert server.effective_weight(server.ramp_from + 3) < 1

    asyncio.run(scenario())

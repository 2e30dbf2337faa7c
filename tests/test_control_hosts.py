"""Control and admin routes answer only this lab's own Host names (DNS rebinding), and the
task servers' /admin routes are never reached through the balancer (issue 12, part 4)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support import ServiceProcess, taskserver
from test_balancer_helpers import TOKEN, balancer_process, status_of

from services.common import host_allowed

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REBIND = "rebind.attacker.example"


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    tasks_file = tmp_path_factory.mktemp("hosts") / "tasks.json"
    server = taskserver("server1", tasks_file, env={"TICSLAB_TOKEN": TOKEN}).start()
    flags = ["--allowed-host", "lab.school.example"]
    balancer = balancer_process([("server1", server.url)], "round_robin", *flags).start()
    yield balancer, server
    balancer.close()
    server.close()


def test_control_refuses_a_foreign_host_even_with_the_token(lab) -> None:
    balancer, _ = lab
    answer = httpx.put(
        balancer.url + "/control/algorithm",
        json={"algorithm": "random"},
        headers={**AUTH, "Host": f"{REBIND}:8080"},
    )
    assert answer.status_code == 403
    assert REBIND in answer.json()["error"]
    assert status_of(balancer)["algorithm"] == "round_robin"  # nothing changed
    assert httpx.get(balancer.url + "/control", headers={"Host": REBIND}).status_code == 403


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8080", "localhost:8080", "balancer:8080", "lab.school.example"]
)
def test_control_answers_loopback_compose_and_allowed_names(lab, host: str) -> None:
    balancer, _ = lab
    answer = httpx.put(
        balancer.url + "/control/algorithm",
        json={"algorithm": "round_robin"},
        headers={**AUTH, "Host": host},
    )
    assert answer.status_code == 200, answer.text


def test_read_only_routes_and_the_proxy_answer_any_host(lab) -> None:
    balancer, _ = lab
    assert httpx.get(balancer.url + "/status", headers={"Host": REBIND}).status_code == 200
    assert httpx.get(balancer.url + "/tareas", headers={"Host": REBIND}).status_code == 200


def test_admin_routes_through_the_balancer_are_its_own_404(lab) -> None:
    balancer, server = lab
    before = httpx.get(server.url + "/admin/fault", headers=AUTH).json()
    for method, path in (("PUT", "/admin/fault"), ("POST", "/admin/quiesce"), ("GET", "/admin")):
        answer = httpx.request(method, balancer.url + path, json={"mode": "error"}, headers=AUTH)
        assert answer.status_code == 404
        assert "/control" in answer.json()["error"]
        assert "x-upstream-server" not in answer.headers
    assert httpx.get(server.url + "/admin/fault", headers=AUTH).json() == before


def test_a_task_servers_admin_routes_refuse_a_foreign_host(lab) -> None:
    _, server = lab
    foreign = httpx.put(
        server.url + "/admin/fault", json={"mode": "error"}, headers={**AUTH, "Host": REBIND}
    )
    assert foreign.status_code == 403
    assert REBIND in foreign.json()["error"]
    assert httpx.get(server.url + "/admin/fault", headers=AUTH).json()["mode"] == "none"


def test_host_names_are_compared_without_port_case_or_trailing_dot() -> None:
    assert host_allowed("LocalHost.:8080") and host_allowed("[::1]:80")
    assert host_allowed("172.18.0.3:5001")  # any IP address: no page can rebind to one
    assert not host_allowed("evil.localhost") and not host_allowed("127.0.0.1.nip.io")
    assert host_allowed("lab.school.example:80", ["Lab.School.Example"])


def test_compose_default_token_alone_is_no_longer_enough(lab) -> None:
    """The scenario of the report: a page rebinding its own name to the balancer."""
    balancer, _ = lab
    answer = httpx.post(
        balancer.url + "/control/servers/server1/drain", headers={**AUTH, "Host": REBIND}
    )
    assert answer.status_code == 403
    assert status_of(balancer)["servers"][0]["state"] == "UP"

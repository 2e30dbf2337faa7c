"""Fault modes: each one observable from outside, and only with the admin token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import ServiceProcess, taskserver, wait_until
from test_taskserver_api import metric

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    path = tmp_path_factory.mktemp("faults") / "tasks.json"
    process = taskserver("server1", path, env={"TICSLAB_TOKEN": TOKEN}).start()
    yield process
    process.close()


@pytest.fixture
def client(server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http
        http.put("/admin/fault", json={"mode": "none"}, headers=AUTH)


def set_fault(client: httpx.Client, **body: object) -> dict:
    response = client.put("/admin/fault", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_admin_refuses_a_missing_or_wrong_token(client: httpx.Client, headers: dict) -> None:
    for response in (
        client.get("/admin/fault", headers=headers),
        client.put("/admin/fault", json={"mode": "error", "rate": 1}, headers=headers),
    ):
        assert response.status_code == 401
        assert "token" in response.json()["error"]
        assert client.get("/errors/stats").json()["recent_errors"][0]["status"] == 401
    assert client.get("/admin/fault", headers=AUTH).json() == {"mode": "none"}


def test_admin_is_off_without_a_configured_token(tmp_path: Path) -> None:
    process = taskserver("server1", tmp_path / "tasks.json", env={"TICSLAB_TOKEN": ""}).start()
    try:
        for response in (
            httpx.get(process.url + "/admin/fault", headers=AUTH),
            httpx.post(process.url + "/admin/quiesce", json={"seconds": 2}, headers=AUTH),
        ):
            assert response.status_code == 403
            assert "TICSLAB_TOKEN" in response.json()["error"]
        stats = httpx.get(process.url + "/errors/stats").json()
        assert stats["by_status"] == {"403": 2}
    finally:
        process.close()


@pytest.mark.parametrize(
    "body",
    [{"mode": "explode"}, {"mode": "error", "rate": 2}, {"mode": "latency", "ms": "slow"}, {}],
)
def test_bad_fault_bodies_get_400(client: httpx.Client, body: dict) -> None:
    response = client.put("/admin/fault", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]


def test_error_mode_fails_requests_with_500_but_keeps_monitoring(client: httpx.Client) -> None:
    assert set_fault(client, mode="error", rate=1.0) == {"mode": "error", "rate": 1.0}
    response = client.get("/tareas")
    assert response.status_code == 500
    assert "fault injected" in response.json()["error"]
    stats = client.get("/errors/stats")
    assert stats.status_code == 200
    assert stats.json()["recent_errors"][0]["message"] == response.json()["error"]
    # A fault of the traffic: the health check passes, so the server stays in rotation.
    assert [client.get("/health").status_code for _ in range(10)] == [200] * 10
    set_fault(client, mode="error", rate=0.5)
    statuses = {client.get("/tareas").status_code for _ in range(60)}
    assert statuses == {200, 500}  # a fraction fails (all alike: a chance of 2 in 10^18)
    set_fault(client, mode="error", rate=0.0)
    assert client.get("/tareas").status_code == 200


def test_latency_mode_delays_requests_but_not_the_health_check(client: httpx.Client) -> None:
    set_fault(client, mode="latency", ms=300)
    started = time.monotonic()
    assert client.get("/tareas").status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert client.get("/health").status_code == 200
    assert time.monotonic() - started < 0.3
    assert client.get("/admin/fault", headers=AUTH).json() == {"mode": "latency", "ms": 300}


def test_hang_mode_holds_requests_until_cleared(
    client: httpx.Client, server: ServiceProcess
) -> None:
    set_fault(client, mode="hang", max_seconds=30)
    answers: list[int] = []
    held = threading.Thread(
        target=lambda: answers.append(httpx.get(server.url + "/health", timeout=30).status_code)
    )
    held.start()
    gets = 'ticslab_taskserver_requests_in_progress{method="GET"}'
    wait_until(  # the held one and this /metrics itself: the request reached the server
        lambda: metric(client.get("/metrics").text, gets) >= 2, what="the request held"
    )
    held.join(timeout=0.5)
    assert held.is_alive() and not answers  # still held half a second after it arrived
    assert client.get("/admin/fault", headers=AUTH).json()["remaining_seconds"] > 25
    for watched in ("/info", "/metrics", "/errors/stats"):  # a hung server can be watched
        assert client.get(watched, timeout=2).status_code == 200
    set_fault(client, mode="none")
    wait_until(lambda: answers == [200], timeout=5, what="the held request to be released")
    held.join(timeout=5)


def test_hang_mode_ends_by_itself_after_max_seconds(client: httpx.Client) -> None:
    set_fault(client, mode="hang", max_seconds=0.5)
    started = time.monotonic()
    assert client.get("/tareas").status_code == 200
    assert time.monotonic() - started >= 0.45
    assert client.get("/admin/fault", headers=AUTH).json() == {"mode": "none"}


def test_unhealthy_mode_fails_health_but_not_the_api(client: httpx.Client) -> None:
    set_fault(client, mode="unhealthy")
    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "error"
    assert "unhealthy" in health.json()["error"]
    assert client.post("/tareas", json={"title": "sigue"}).status_code == 201
    set_fault(client, mode="none")
    assert client.get("/health").status_code == 200

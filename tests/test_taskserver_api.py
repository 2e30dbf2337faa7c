"""The task server's routes on a real uvicorn process: tasks, monitoring, JSON errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from support import ServiceProcess, free_port, taskserver

pytestmark = pytest.mark.smoke  # also run at the lowest allowed versions (.ci/run)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = taskserver("server1", tmp_path_factory.mktemp("api") / "tasks.json").start()
    yield process
    process.close()


@pytest.fixture
def client(server: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


def test_missing_file_is_created_as_an_empty_list(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tasks.json"
    process = taskserver("server1", path).start()
    try:
        assert orjson.loads(path.read_bytes()) == []
        assert httpx.get(process.url + "/tareas").json() == []
    finally:
        process.close()


def test_tareas_create_read_update_delete(client: httpx.Client) -> None:
    created = client.post("/tareas", json={"title": "  comprar pan  "})
    assert created.status_code == 201
    task = created.json()
    assert task["title"] == "comprar pan"
    assert task["completed"] is False
    assert task["server"] == "server1"
    assert task["created_at"] == task["updated_at"]
    assert task["created_at"].endswith("Z")
    assert isinstance(task["id"], int)

    assert client.get(f"/tareas/{task['id']}").json() == task
    assert task in client.get("/tareas").json()

    updated = client.put(f"/tareas/{task['id']}", json={"title": "pan", "completed": True})
    assert updated.status_code == 200
    assert updated.json()["title"] == "pan"
    assert updated.json()["completed"] is True
    assert updated.json()["id"] == task["id"]

    deleted = client.delete(f"/tareas/{task['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["deleted"]["title"] == "pan"
    assert client.get(f"/tareas/{task['id']}").status_code == 404


def test_course_api_tasks_routes(client: httpx.Client) -> None:
    created = client.post("/api/tasks", json={"title": "leer", "completed": False})
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert any(task["id"] == task_id for task in client.get("/api/tasks").json())
    assert client.get(f"/api/tasks/{task_id}").json() == created.json()

    completed = client.put(f"/api/tasks/{task_id}/complete")
    assert completed.status_code == 200
    assert completed.json()["completed"] is True

    assert client.delete(f"/api/tasks/{task_id}").json()["deleted"]["id"] == task_id
    assert client.delete(f"/api/tasks/{task_id}").status_code == 404


def test_a_task_read_can_be_sent_back_whole_with_a_change(client: httpx.Client) -> None:
    """The fields the server sets (id, server, created_at, ...) are ignored in a body."""
    task = client.post("/tareas", json={"title": "ida"}).json()
    answer = client.put(f"/tareas/{task['id']}", json={**task, "title": "vuelta", "id": 0})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == task["id"]
    assert answer.json()["title"] == "vuelta"


def test_ids_are_increasing_integers(client: httpx.Client) -> None:
    ids = [client.post("/tareas", json={"title": f"t{n}"}).json()["id"] for n in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_deleting_the_newest_task_does_not_free_its_id(client: httpx.Client) -> None:
    newest = client.post("/tareas", json={"title": "borrada"}).json()["id"]
    assert client.delete(f"/tareas/{newest}").status_code == 200
    assert client.post("/tareas", json={"title": "nueva"}).json()["id"] == newest + 1


def test_simulated_errors_answer_500_json(client: httpx.Client) -> None:
    for response in (client.post("/api/tasks/simulate-error"), client.get("/error500")):
        assert response.status_code == 500
        assert "simulated" in response.json()["error"]


def test_course_error_script_counts_one_of_each(tmp_path: Path) -> None:
    process = taskserver("server2", tmp_path / "tasks.json").start()
    try:
        with httpx.Client(base_url=process.url) as http:
            http.post("/api/tasks", json={})
            http.delete("/api/tasks/999")
            http.get("/error500")
            stats = http.get("/errors/stats").json()
    finally:
        process.close()
    assert stats["total_errors"] == 3
    assert stats["error_types"] == {
        "400_BAD_REQUEST": 1,
        "404_NOT_FOUND": 1,
        "500_INTERNAL_ERROR": 1,
    }
    assert stats["by_status"] == {"400": 1, "404": 1, "500": 1}
    newest = stats["recent_errors"][0]
    assert newest["type"] == "500_INTERNAL_ERROR"
    assert newest["endpoint"] == "GET /error500"
    assert set(newest) >= {"timestamp", "type", "message", "endpoint"}


@pytest.mark.parametrize(
    ("method", "path", "status", "fragment"),
    [
        ("GET", "/no/such/route", 404, "no route"),
        ("DELETE", "/tareas", 405, "use GET, HEAD, POST"),
        ("PATCH", "/api/tasks", 405, "use GET, HEAD, POST"),
        ("PUT", "/api/tasks/1", 405, "use DELETE, GET, HEAD"),
    ],
)
def test_router_errors_are_json_and_recorded(
    client: httpx.Client, method: str, path: str, status: int, fragment: str
) -> None:
    before = client.get("/errors/stats").json()["by_status"].get(str(status), 0)
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["error"]
    after = client.get("/errors/stats").json()
    assert after["by_status"][str(status)] == before + 1
    assert after["recent_errors"][0]["endpoint"] == f"{method} {path}"


def test_oversized_chunked_body_is_refused_with_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):  # 100 x 1 KiB, no Content-Length
            yield b"x" * 1024

    response = client.post("/tareas", content=chunks())
    assert response.status_code == 413
    assert "65536 bytes" in response.json()["error"]
    assert client.get("/errors/stats").json()["recent_errors"][0]["status"] == 413


def test_health_and_info(server: ServiceProcess, client: httpx.Client) -> None:
    answer = client.get("/health")
    # Keys live in the shared tasks.json: the balancer may resend a keyed POST elsewhere.
    assert answer.headers["idempotency-key-support"] == "shared"
    health = answer.json()
    assert health["status"] == "ok"
    assert health["server"] == "server1"
    assert health["tasks_file"]["ok"] is True
    assert health["fault"] == "none"
    assert health["uptime"] >= 0
    info = client.get("/info").json()
    assert info["server"] == "server1"
    assert info["port"] == server.port
    assert server.proc is not None
    assert info["pid"] == server.proc.pid
    assert info["version"]


def metric(text: str, sample: str) -> float:
    """The value of one sample line (name with labels) of a Prometheus exposition; 0 if absent."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_and_status(client: httpx.Client) -> None:
    created = 'ticslab_taskserver_requests_total{method="POST",route="/tareas",status="201"}'
    timed = 'ticslab_taskserver_request_duration_seconds_count{method="POST",route="/tareas"}'
    missing = 'ticslab_taskserver_requests_total{method="GET",route="/tareas/{id}",status="404"}'
    unmatched = 'ticslab_taskserver_requests_total{method="GET",route="unmatched",status="404"}'
    before = client.get("/metrics").text
    client.post("/tareas", json={"title": "medido"})
    client.get("/tareas/999999")
    client.get("/no/such/route/for/metrics")
    after = client.get("/metrics").text
    for sample in (created, timed, missing, unmatched):
        assert metric(after, sample) == metric(before, sample) + 1, sample
    assert "no/such/route" not in after  # unknown paths do not make new labels
    assert metric(after, 'ticslab_taskserver_requests_in_progress{method="GET"}') == 1  # itself
    assert metric(after, 'ticslab_taskserver_requests_in_progress{method="POST"}') == 0
    stored = len(client.get("/tareas").json())
    assert metric(client.get("/metrics").text, "ticslab_taskserver_tasks_stored") == stored


def test_options_come_from_environment_variables(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "TICSLAB_NAME": "envserver",
        "TICSLAB_PORT": str(port),
        "TICSLAB_HOST": "127.0.0.1",
        "TICSLAB_TASKS_FILE": str(tmp_path / "env-tasks.json"),
    }
    process = ServiceProcess(["taskserver"], port, env).start()
    try:
        assert httpx.get(process.url + "/info").json()["server"] == "envserver"
        assert (tmp_path / "env-tasks.json").exists()
    finally:
        process.close()

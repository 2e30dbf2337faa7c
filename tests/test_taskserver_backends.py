"""What the API promises whichever backend holds the tasks (``--storage``: the shared file or
PostgreSQL): two real servers on one store, keys replayed across them and refused when
reused, ids never handed out twice, an honest ``/health``, and 503 when the storage fails."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from storage_backends import BACKENDS, storage_for, taskserver_on
from support import ServiceProcess


@pytest.fixture(scope="module", params=BACKENDS)
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, ServiceProcess, str]]:
    storage = storage_for(request, tmp_path_factory.mktemp("backends"))
    servers = (taskserver_on("server1", storage), taskserver_on("server2", storage))
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ServiceProcess.start, servers))
        yield servers[0], servers[1], storage
    finally:
        for server in servers:
            server.close()


def test_create_read_update_delete_through_either_server(
    pair: tuple[ServiceProcess, ServiceProcess, str],
) -> None:
    one, two, _ = pair
    created = httpx.post(one.url + "/tareas", json={"title": "  comprar pan  "})
    assert created.status_code == 201
    task = created.json()
    assert task["title"] == "comprar pan" and task["server"] == "server1"
    assert httpx.get(two.url + f"/tareas/{task['id']}").json() == task
    changed = httpx.put(two.url + f"/tareas/{task['id']}", json={"completed": True}).json()
    assert changed["completed"] is True and changed["updated_at"] >= task["updated_at"]
    completed = httpx.put(one.url + f"/api/tasks/{task['id']}/complete").json()
    assert completed["completed"] is True
    assert httpx.delete(two.url + f"/api/tasks/{task['id']}").json()["deleted"] == completed
    assert httpx.get(one.url + f"/tareas/{task['id']}").status_code == 404
    assert httpx.get(one.url + "/tareas/9007199254740993").status_code == 404


def test_a_key_replays_its_task_on_the_other_server_and_is_refused_reused(
    pair: tuple[ServiceProcess, ServiceProcess, str],
) -> None:
    one, two, _ = pair
    headers = {"Idempotency-Key": "both-1"}
    first = httpx.post(one.url + "/tareas", json={"title": "una vez"}, headers=headers)
    again = httpx.post(two.url + "/api/tasks", json={"title": "una vez"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    reused = httpx.post(two.url + "/tareas", json={"title": "otra"}, headers=headers)
    assert reused.status_code == 422
    assert reused.json()["code"] == "key_reused"
    assert "both-1" not in reused.text
    listed = httpx.get(one.url + "/tareas").json()
    assert [t["id"] for t in listed].count(first.json()["id"]) == 1
    assert "both-1" not in httpx.get(two.url + "/tareas").text  # keys are never shown


def test_ids_are_never_reused_even_after_deleting_the_newest(
    pair: tuple[ServiceProcess, ServiceProcess, str],
) -> None:
    one, two, _ = pair
    newest = httpx.post(one.url + "/tareas", json={"title": "borrada"}).json()["id"]
    assert httpx.delete(two.url + f"/tareas/{newest}").status_code == 200
    assert httpx.post(two.url + "/tareas", json={"title": "nueva"}).json()["id"] == newest + 1


def test_pages_and_the_total_agree_across_servers(
    pair: tuple[ServiceProcess, ServiceProcess, str],
) -> None:
    one, two, _ = pair
    for n in range(3):
        assert httpx.post(one.url + "/tareas", json={"title": f"p{n}"}).status_code == 201
    everything = httpx.get(two.url + "/tareas")
    total = int(everything.headers["x-total-count"])
    assert total == len(everything.json())
    newest = httpx.get(two.url + "/tareas?order=desc&limit=2")
    assert newest.headers["x-total-count"] == str(total)
    assert newest.json() == everything.json()[::-1][:2]
    assert httpx.get(one.url + "/tareas?limit=1&offset=1").json() == everything.json()[1:2]


def test_health_says_where_the_tasks_are(pair: tuple[ServiceProcess, ServiceProcess, str]) -> None:
    one, _, storage = pair
    answer = httpx.get(one.url + "/health")
    assert answer.status_code == 200
    assert answer.headers["idempotency-key-support"] == "shared"
    health = answer.json()
    if storage.startswith("file:"):
        path = str(Path(storage.removeprefix("file:")).resolve())
        assert health["storage"] == {"kind": "file", "path": path, "ok": True}
        assert health["tasks_file"] == {"path": path, "ok": True}
    else:
        assert health["storage"] == {"kind": "postgresql", "url": storage, "ok": True}
        assert "tasks_file" not in health


def break_storage(storage: str) -> None:
    if storage.startswith("file:"):
        Path(storage.removeprefix("file:")).write_text("[{broken")
    else:
        with psycopg.connect(storage, autocommit=True) as conn:
            conn.execute("ALTER TABLE tasks RENAME TO tasks_away")


def mend_storage(storage: str, saved: bytes) -> None:
    if storage.startswith("file:"):
        Path(storage.removeprefix("file:")).write_bytes(saved)
    else:
        with psycopg.connect(storage, autocommit=True) as conn:
            conn.execute("ALTER TABLE tasks_away RENAME TO tasks")


def test_a_storage_fault_answers_503_with_a_reason_and_then_recovers(
    pair: tuple[ServiceProcess, ServiceProcess, str],
) -> None:
    one, two, storage = pair
    kept = httpx.post(one.url + "/tareas", json={"title": "guardada"}).json()
    is_file = storage.startswith("file:")
    saved = Path(storage.removeprefix("file:")).read_bytes() if is_file else b""
    break_storage(storage)
    try:
        health = httpx.get(two.url + "/health")
        assert health.status_code == 503
        assert health.json()["status"] == "error" and health.json()["storage"]["ok"] is False
        for method, path in (("POST", "/tareas"), ("GET", "/tareas")):
            answer = httpx.request(
                method, one.url + path, json={"title": "x"}, headers={"Accept-Language": "es"}
            )
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["code"] == ("tasks_file_error" if is_file else "storage_error")
            assert body["problem"]
            assert ("archivo de tareas" if is_file else "base de datos de tareas") in body["error"]
    finally:
        mend_storage(storage, saved)
    assert httpx.get(two.url + "/health").status_code == 200
    assert httpx.get(two.url + f"/tareas/{kept['id']}").json() == kept

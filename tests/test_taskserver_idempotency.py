"""Exactly once: one Idempotency-Key makes at most one task, whichever server gets it; a key
is never shown, and a key reused for a different task is refused (it cannot be squatted)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from support import ServiceProcess, taskserver_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, ...]]:
    with taskserver_pair(tmp_path_factory.mktemp("idempotency") / "tasks.json") as servers:
        yield servers


def stored(server: ServiceProcess) -> list[dict]:
    return orjson.loads(Path(server.args[-1]).read_bytes())


def test_repeat_answers_the_original_task_marked_as_replay(
    pair: tuple[ServiceProcess, ...],
) -> None:
    one, two = pair
    headers = {"Idempotency-Key": "repeat-1"}
    first = httpx.post(one.url + "/tareas", json={"title": "una vez"}, headers=headers)
    again = httpx.post(two.url + "/api/tasks", json={"title": "una vez"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert first.json()["server"] == "server1"
    assert [t["id"] for t in stored(one) if t.get("idempotency_key") == "repeat-1"] == [
        first.json()["id"]
    ]
    assert "ticslab_taskserver_idempotent_replays_total 1.0" in httpx.get(two.url + "/metrics").text


@pytest.mark.slow
def test_same_key_sent_concurrently_and_repeatedly_to_both_servers_makes_one_task(
    pair: tuple[ServiceProcess, ...],
) -> None:
    urls = [server.url + "/tareas" for server in pair]
    before = len(stored(pair[0]))

    def send(n: int) -> httpx.Response:
        headers = {"Idempotency-Key": f"race-{n % 3}"}
        return httpx.post(urls[n % 2], json={"title": f"race {n % 3}"}, headers=headers, timeout=15)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, range(60)))
    assert all(response.status_code == 201 for response in responses)
    for n in range(3):
        answers = [r for r in responses if r.json()["title"] == f"race {n}"]
        assert len({r.json()["id"] for r in answers}) == 1
        originals = [r for r in answers if "idempotent-replayed" not in r.headers]
        assert len(originals) == 1
    assert len(stored(pair[0])) == before + 3


def test_requests_without_a_key_are_never_merged(pair: tuple[ServiceProcess, ...]) -> None:
    one = pair[0]
    ids = {httpx.post(one.url + "/tareas", json={"title": "igual"}).json()["id"] for _ in range(3)}
    assert len(ids) == 3


def test_keys_are_never_shown_by_the_api(pair: tuple[ServiceProcess, ...]) -> None:
    one, two = pair
    headers = {"Idempotency-Key": "secreto-1"}
    created = httpx.post(one.url + "/tareas", json={"title": "con clave"}, headers=headers)
    shown = [
        created.text,
        httpx.get(two.url + "/tareas").text,
        httpx.get(two.url + "/api/tasks?order=desc&limit=5").text,
        httpx.get(two.url + f"/tareas/{created.json()['id']}").text,
        httpx.put(two.url + f"/api/tasks/{created.json()['id']}/complete").text,
    ]
    assert not [text for text in shown if "secreto-1" in text or "idempotency" in text]
    assert any(t.get("idempotency_key") == "secreto-1" for t in stored(one))  # kept in the file


def test_a_key_reused_for_a_different_task_is_refused_with_422(
    pair: tuple[ServiceProcess, ...],
) -> None:
    """A squatter who sends a client's future key first gets the task; the client is told,
    never answered 201 for a task it did not create."""
    one, two = pair
    headers = {"Idempotency-Key": "future-key"}
    squatted = httpx.post(one.url + "/tareas", json={"title": "del atacante"}, headers=headers)
    before = len(stored(one))
    for body in ({"title": "de la clienta"}, {"title": "del atacante", "completed": True}):
        refused = httpx.post(two.url + "/tareas", json=body, headers=headers)
        assert refused.status_code == 422
        assert "already used" in refused.json()["error"]
    same = httpx.post(two.url + "/tareas", json={"title": "del atacante"}, headers=headers)
    assert same.status_code == 201 and same.json() == squatted.json()
    assert len(stored(one)) == before


def test_keys_stored_before_digests_compare_the_task_itself(tmp_path: Path) -> None:
    """A tasks.json from before this version has keys but no digests: a repeat with the
    task's own title is a replay, any other task is refused."""
    from services.taskserver.storage import KeyReused, TaskStore

    path = tmp_path / "tasks.json"
    old = {"id": 1, "title": "viejo", "completed": False, "idempotency_key": "k1", "server": "s"}
    path.write_bytes(orjson.dumps([old]))
    store = TaskStore(path, "server1")
    task, replayed = store.create("viejo", idempotency_key="k1")
    assert replayed and task["id"] == 1 and "idempotency_key" not in task
    with pytest.raises(KeyReused):
        store.create("nuevo", idempotency_key="k1")


def test_two_idempotency_keys_are_refused_not_the_first_one_taken(
    pair: tuple[ServiceProcess, ...],
) -> None:
    one, _ = pair
    headers = [("Idempotency-Key", "twice-a"), ("Idempotency-Key", "twice-b")]
    answer = httpx.post(one.url + "/tareas", json={"title": "dos claves"}, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["code"] == "two_idempotency_keys"
    assert "2" in answer.json()["error"]
    assert not [t for t in stored(one) if t.get("title") == "dos claves"]

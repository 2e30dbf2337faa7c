"""Exactly once: one Idempotency-Key makes at most one task, whichever server gets it."""

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
    assert first.json()["idempotency_key"] == "repeat-1"
    assert first.json()["server"] == "server1"
    assert [t["id"] for t in stored(one) if t["idempotency_key"] == "repeat-1"] == [
        first.json()["id"]
    ]
    assert "ticslab_taskserver_idempotent_replays_total 1.0" in httpx.get(two.url + "/metrics").text


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
    for key in ("race-0", "race-1", "race-2"):
        answers = [r for r in responses if r.json()["idempotency_key"] == key]
        assert len({r.json()["id"] for r in answers}) == 1
        originals = [r for r in answers if "idempotent-replayed" not in r.headers]
        assert len(originals) == 1
    assert len(stored(pair[0])) == before + 3


def test_requests_without_a_key_are_never_merged(pair: tuple[ServiceProcess, ...]) -> None:
    one = pair[0]
    ids = {httpx.post(one.url + "/tareas", json={"title": "igual"}).json()["id"] for _ in range(3)}
    assert len(ids) == 3

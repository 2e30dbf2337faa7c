"""The shared tasks.json: no task lost under concurrency or crashes, a corrupt file untouched."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest
from filelock import FileLock
from support import ServiceProcess, taskserver, taskserver_pair, wait_until

from services.taskserver.storage import TaskStore
from services.taskserver.storage import file as file_store
from services.taskserver.storage.disk import replace_file


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    with taskserver_pair(tmp_path / "tasks.json") as servers:
        yield servers


def post_many(urls: list[str], prefix: str, count: int) -> list[dict]:
    """``count`` tasks, alternating between ``urls``; returns the created tasks."""
    created = []
    with httpx.Client(timeout=15) as http:
        for n in range(count):
            response = http.post(urls[n % len(urls)] + "/tareas", json={"title": f"{prefix}-{n}"})
            assert response.status_code == 201, response.text
            created.append(response.json())
    return created


def check_file(path: Path, expected: int) -> None:
    tasks = orjson.loads(path.read_bytes())
    assert len(tasks) == expected
    assert len({task["id"] for task in tasks}) == expected
    assert len({task["title"] for task in tasks}) == expected


def run_posters(servers: tuple[ServiceProcess, ...], posters: int, each: int) -> list[dict]:
    urls = [server.url for server in servers]
    with ThreadPoolExecutor(posters) as pool:
        batches = pool.map(
            lambda n: post_many(urls[n % 2 :] + urls[: n % 2], f"c{n}", each), range(posters)
        )
        return [task for batch in batches for task in batch]


@pytest.mark.smoke
def test_two_clients_post_100_each_through_two_servers(
    pair: tuple[ServiceProcess, ServiceProcess], tmp_path: Path
) -> None:
    created = run_posters(pair, posters=2, each=100)
    assert len({task["id"] for task in created}) == 200
    assert {task["server"] for task in created} == {"server1", "server2"}
    check_file(tmp_path / "tasks.json", 200)
    assert len(httpx.get(pair[1].url + "/tareas").json()) == 200


@pytest.mark.slow
def test_32_posters_1000_tasks_through_two_servers(
    pair: tuple[ServiceProcess, ServiceProcess], tmp_path: Path
) -> None:
    created = run_posters(pair, posters=32, each=1000 // 32 + 1)
    total = 32 * (1000 // 32 + 1)
    assert len({task["id"] for task in created}) == total
    check_file(tmp_path / "tasks.json", total)


def test_reads_follow_changes_made_by_another_server(
    pair: tuple[ServiceProcess, ServiceProcess], tmp_path: Path
) -> None:
    one, two = pair
    assert httpx.get(one.url + "/tareas").json() == []  # server1 caches the empty file
    task = httpx.post(two.url + "/tareas", json={"title": "from two"}).json()
    assert httpx.get(one.url + f"/tareas/{task['id']}").json() == task
    (tmp_path / "tasks.json").write_text("[]\n")  # the handout's reset
    assert httpx.get(one.url + "/tareas").json() == []
    again = httpx.post(one.url + "/tareas", json={"title": "again"}).json()
    assert httpx.get(two.url + "/tareas").json() == [again]
    assert again["id"] > task["id"]  # ids are never reused, even across a reset


def test_same_size_rewrite_within_one_mtime_tick_is_not_served_from_cache(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(orjson.dumps([{"id": 1, "title": "aaaa"}]))
    mtime = os.stat(path).st_mtime_ns
    store = TaskStore(path, "server1")
    assert store.page()[0][0]["title"] == "aaaa"
    path.write_bytes(orjson.dumps([{"id": 1, "title": "bbbb"}]))  # same inode and size
    os.utime(path, ns=(mtime, mtime))  # and the same coarse mtime, as within one tick
    assert store.page()[0][0]["title"] == "bbbb"


def test_an_emptied_file_reads_as_an_empty_list(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(b"")  # `> tasks.json`
    store = TaskStore(path, "server1")
    assert store.page()[0] == []
    assert store.problem() is None
    assert store.create("x")[0]["id"] == 1


CORRUPT = b'[{"id": 1, "title": "half a task"'


def test_corrupt_file_is_left_untouched_and_writes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(CORRUPT)
    server = taskserver("server1", path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            refused_before = http.get("/errors/stats").json()["by_status"].get("503", 0)
            writes = [
                http.post("/tareas", json={"title": "x"}),
                http.put("/tareas/1", json={"completed": True}),
                http.delete("/tareas/1"),
            ]
            reads = [http.get("/tareas"), http.get("/api/tasks")]
            health = http.get("/health")
            stats = http.get("/errors/stats").json()
            for response in [*writes, *reads]:
                assert response.status_code == 503
                assert str(path) in response.json()["error"]
                assert "not valid JSON" in response.json()["error"]
            assert health.status_code == 503
            assert health.json()["tasks_file"]["ok"] is False
            assert "not valid JSON" in health.json()["error"]
            assert stats["by_status"]["503"] == refused_before + 6  # health too
            assert path.read_bytes() == CORRUPT

            path.write_text("[]\n")  # a person fixes it: the server recovers without restart
            assert http.post("/tareas", json={"title": "x"}).status_code == 201
            assert http.get("/health").status_code == 200
    finally:
        server.close()


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b'{"id": 1}', "JSON array"), (b'[{"title": "no id"}]', "integer id")],
)
def test_file_of_the_wrong_shape_is_refused_and_kept(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(content)
    store = TaskStore(path, "server1")
    assert problem in (store.problem() or "")
    with pytest.raises(Exception, match=problem):
        store.create("x")
    assert path.read_bytes() == content


@pytest.mark.slow
def test_sigkill_while_posting_never_loses_an_acknowledged_task(
    pair: tuple[ServiceProcess, ServiceProcess], tmp_path: Path
) -> None:
    path = tmp_path / "tasks.json"
    acknowledged: list[dict] = []
    stop = threading.Event()

    def poster(n: int) -> None:
        urls = [pair[n % 2].url, pair[(n + 1) % 2].url]
        with httpx.Client(timeout=5) as http:
            for count in range(2000):
                if stop.is_set():
                    return
                try:
                    url = urls[count % 2] + "/tareas"
                    response = http.post(url, json={"title": f"p{n}-{count}"})
                except httpx.HTTPError:
                    continue  # the server died mid-request: nothing was promised
                if response.status_code == 201:
                    acknowledged.append(response.json())

    threads = [threading.Thread(target=poster, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for kill in range(6):
            victim = pair[kill % 2]
            seen = len(acknowledged)
            wait_until(lambda seen=seen: len(acknowledged) > seen + 20, timeout=30, what="posts")
            victim.kill()
            promised = list(acknowledged)
            # Read as the next lock holder would: it undoes an append the kill cut short.
            stored = {task["id"]: task for task in TaskStore(path, "check").page()[0]}
            for task in promised:
                assert stored.get(task["id"]) == task
            victim.start()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert len(acknowledged) > 100
    check_file(path, len(orjson.loads(path.read_bytes())))
    assert not list(tmp_path.glob(".tasks.json.*.tmp"))  # restarts removed crash leftovers


@pytest.mark.smoke
def test_reads_and_health_do_not_wait_for_a_held_file_lock(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    server = taskserver("server1", path).start()
    lock = FileLock(tmp_path / "tasks.json.lock")
    answers: list[int] = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            http.get("/tareas")
            with lock:  # another process is in the middle of a write
                writer = threading.Thread(
                    target=lambda: answers.append(
                        http.post("/tareas", json={"title": "w"}).status_code
                    )
                )
                writer.start()
                assert http.get("/health").status_code == 200
                assert http.get("/tareas").json() == []
                assert answers == []  # the write is still waiting for the lock
            wait_until(lambda: answers == [201], timeout=5, what="the write after the lock is free")
            writer.join(timeout=5)
    finally:
        server.close()


def test_tasks_another_server_appended_are_read_without_a_full_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tasks.json"
    mine, theirs = TaskStore(path, "server1"), TaskStore(path, "server2")
    mine.prepare()
    mine.create("first")
    theirs.create("second", idempotency_key="k-2")
    theirs.create("third")
    full_parses: list[bytes] = []
    real_parse = file_store.parse_tasks

    def counting_parse(raw: bytes, where: Path) -> list[dict]:
        full_parses.append(raw)
        return real_parse(raw, where)

    monkeypatch.setattr(file_store, "parse_tasks", counting_parse)

    assert [task["title"] for task in mine.page()[0]] == ["first", "second", "third"]
    assert full_parses == []
    replay, replayed = mine.create("second", idempotency_key="k-2")  # index extended too
    assert replayed and replay["server"] == "server2"
    assert mine.create("fourth")[0]["id"] == 4
    in_file = orjson.loads(path.read_bytes())
    assert mine.page()[0] == [
        {k: v for k, v in t.items() if "idempotency" not in k and k != "request_digest"}
        for t in in_file
    ]


def test_changes_other_than_appends_are_parsed_in_full(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    mine, theirs = TaskStore(path, "server1"), TaskStore(path, "server2")
    mine.prepare()
    mine.create("first")
    mine.page()[0]
    theirs.update(1, {"completed": True})
    assert mine.get(1)["completed"] is True
    raw = path.read_bytes()
    path.write_bytes(raw[: -len(b"\n]\n")] + b',\n  {"id": 1, "title": "twin"}\n]\n')
    assert "appears twice" in (mine.problem() or "")


def test_a_file_replaced_between_a_creates_read_and_its_append_is_never_torn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a writer without the lock (fault mode nolock) can replace the file there; an
    append at the old size would then land inside the new file. The create reads it again."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("first")
    real_load = store._load
    replaced: list[bool] = []

    def load_then_replace(exact: bool = False) -> None:
        real_load(exact)
        if not replaced:  # once: a longer file, so an append at the old size would tear it
            replaced.append(True)
            rest = [{"id": 7, "title": "written without the lock, longer than the first one"}]
            replace_file(path, orjson.dumps([*orjson.loads(path.read_bytes()), *rest]))

    monkeypatch.setattr(store, "_load", load_then_replace)
    task, _ = store.create("second")
    assert task["id"] == 8  # above the id the replaced file holds
    assert [t["id"] for t in orjson.loads(path.read_bytes())] == [1, 7, 8]
    assert [t["id"] for t in TaskStore(path, "server2").page()[0]] == [1, 7, 8]


def test_replaced_every_time_the_create_rewrites_the_file_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("first")
    real_load = store._load
    loads: list[int] = []

    def load_then_replace(exact: bool = False) -> None:
        real_load(exact)
        loads.append(1)
        replace_file(path, path.read_bytes())  # same content, another inode

    monkeypatch.setattr(store, "_load", load_then_replace)
    task, _ = store.create("second")
    assert len(loads) == file_store.APPEND_ATTEMPTS
    stored = orjson.loads(path.read_bytes())
    assert [(t["id"], t["title"]) for t in stored] == [(1, "first"), (task["id"], "second")]
    assert task["id"] > 1  # each attempt took a new id: gaps, never a repeat


def test_a_high_water_mark_raised_elsewhere_is_honoured_without_a_full_read(
    tmp_path: Path,
) -> None:
    """Fault mode nolock raises tasks.json.lastid for ids it gave clients and may have lost;
    a store whose memory still matches the file must not hand those ids out again."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    assert store.create("first")[0]["id"] == 1
    (tmp_path / "tasks.json.lastid").write_text("41")
    assert store.create("second")[0]["id"] == 42
    assert (tmp_path / "tasks.json.lastid").read_text().split()[0] == "42"

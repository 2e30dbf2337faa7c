"""Fault mode nolock: creates without the file lock lose tasks on purpose, never tear the
file, and leave nothing behind once the mode is back to none."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from support import ServiceProcess, taskserver_pair, wait_until
from test_balancer_helpers import TOKEN, balancer_process

from services.common import KEYS_HEADER
from services.taskserver.faults import NOLOCK_WARNING
from services.taskserver.nolock import read_naively, write_naively
from services.taskserver.storage import Task, TasksFileError, TaskStore
from services.taskserver.storage.format import DIGEST_FIELD, KEY_FIELD
from services.taskserver.storage.journal import JournalRecord
from services.taskserver.storage.model import MAX_TASK_ID

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    with taskserver_pair(tmp_path / "tasks.json", env={"TICSLAB_TOKEN": TOKEN}) as servers:
        yield servers


def set_mode(server: ServiceProcess, mode: str) -> dict:
    answer = httpx.put(server.url + "/admin/fault", json={"mode": mode}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def post_at_once(urls: list[str], clients: int, each: int, tag: str) -> list[httpx.Response]:
    """``clients`` clients, each sending ``each`` POSTs at once, spread over ``urls``."""

    async def client(number: int) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=each)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            return await asyncio.gather(
                *(
                    http.post(urls[n % len(urls)] + "/tareas", json={"title": f"{tag}{number}-{n}"})
                    for n in range(each)
                )
            )

    batches = await asyncio.gather(*(client(number) for number in range(clients)))
    return [answer for batch in batches for answer in batch]


def stored(path: Path) -> list[dict]:
    """The file's tasks, checked: valid JSON in the store's own format, no id twice."""
    raw = path.read_bytes()
    tasks = orjson.loads(raw)
    assert raw == orjson.dumps(tasks, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    ids = [task["id"] for task in tasks]
    assert len(ids) == len(set(ids)), "an id appears twice in the file"
    return tasks


def losses(answers: list[httpx.Response], path: Path, before: int = 0) -> int:
    """How many tasks answered 201 are missing from the file; each stored one but the first
    ``before`` was answered."""
    assert [answer.status_code for answer in answers] == [201] * len(answers), {
        answer.status_code: answer.text for answer in answers if answer.status_code != 201
    }
    created = {(task["id"], task["title"]) for task in (answer.json() for answer in answers)}
    kept = {(task["id"], task["title"]) for task in stored(path)[before:]}
    assert kept <= created
    return len(answers) - len(kept)


@pytest.mark.parametrize(
    "mode",
    ["nolock", pytest.param("none", marks=pytest.mark.slow)],  # none: as every write test
)
async def test_two_servers_on_one_file_lose_tasks_only_without_the_lock(
    pair: tuple[ServiceProcess, ServiceProcess], tmp_path: Path, mode: str
) -> None:
    """Every POST answered 201 and the file always whole; without the lock some are gone."""
    for server in pair:
        set_mode(server, mode)
    answers = await post_at_once([server.url for server in pair], clients=2, each=100, tag=mode)
    lost = losses(answers, tmp_path / "tasks.json")
    if mode == "nolock":
        assert lost > 0
    else:
        assert lost == 0
        assert len({answer.json()["id"] for answer in answers}) == len(answers)


@pytest.mark.slow  # 1.2-3 s; .ci/run runs it: the default run stays near 3 minutes
async def test_back_to_none_every_id_is_new_and_nothing_is_refused(
    pair: tuple[ServiceProcess, ServiceProcess], tmp_path: Path
) -> None:
    path = tmp_path / "tasks.json"
    urls = [server.url for server in pair]
    httpx.post(urls[0] + "/tareas", json={"title": "before"}, headers={"Idempotency-Key": "k1"})
    for server in pair:
        set_mode(server, "nolock")
    racy = await post_at_once(urls, clients=2, each=30, tag="racy")
    assert losses(racy, path, before=1) > 0
    given = {answer.json()["id"] for answer in racy}
    for server in pair:
        set_mode(server, "none")
    survivors = len(stored(path))
    calm = await post_at_once(urls, clients=2, each=20, tag="calm")
    assert losses(calm, path, before=survivors) == 0
    new_ids = [answer.json()["id"] for answer in calm]
    assert len(set(new_ids)) == len(new_ids)
    assert min(new_ids) > max(given)  # no id a client was given in nolock comes back
    tasks = stored(path)
    private = (KEY_FIELD, DIGEST_FIELD)
    public = [{k: v for k, v in task.items() if k not in private} for task in tasks]
    for url in urls:  # each server's memory follows the replaced file
        assert httpx.get(url + "/tareas").json() == public
        health = httpx.get(url + "/health")
        assert health.status_code == 200 and health.json()["fault"] == "none"
        assert health.headers[KEYS_HEADER] == "shared"
    # The key stored before nolock still replays: nolock wrote its fields back unchanged.
    again = httpx.post(
        urls[1] + "/tareas", json={"title": "before"}, headers={"Idempotency-Key": "k1"}
    )
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    last = new_ids[-1]
    assert httpx.put(f"{urls[0]}/tareas/{last}", json={"completed": True}).status_code == 200
    assert httpx.delete(f"{urls[1]}/tareas/{last}").status_code == 200
    assert len(stored(path)) == len(tasks) - 1


def test_the_mode_is_set_shown_and_warned_about(
    pair: tuple[ServiceProcess, ServiceProcess],
) -> None:
    server = pair[0]
    assert set_mode(server, "nolock") == {"mode": "nolock", "warning": NOLOCK_WARNING}
    shown = httpx.get(server.url + "/admin/fault", headers=AUTH).json()
    assert shown == {"mode": "nolock", "warning": NOLOCK_WARNING}
    health = httpx.get(server.url + "/health")
    assert health.status_code == 200  # a fault of the writes: it stays in rotation
    assert health.json()["fault"] == "nolock"
    assert KEYS_HEADER.lower() not in health.headers  # it no longer deduplicates keys
    assert httpx.get(server.url + "/info").json()["fault"] == "nolock"
    wait_until(lambda: "fault mode nolock is ON" in server.log(), timeout=5, what="the warning")
    assert "WARNING" in next(line for line in server.log().splitlines() if "nolock is ON" in line)
    # Naive code keeps no keys: the same key twice makes two tasks.
    keyed = [
        httpx.post(
            server.url + "/tareas", json={"title": "twice"}, headers={"Idempotency-Key": "k"}
        )
        for _ in range(2)
    ]
    assert [answer.status_code for answer in keyed] == [201, 201]
    assert keyed[0].json()["id"] != keyed[1].json()["id"]
    assert "idempotent-replayed" not in keyed[1].headers
    # Only creates are naive: reads, updates, deletes and input checks are as ever.
    task_id = keyed[1].json()["id"]
    assert httpx.put(f"{server.url}/api/tasks/{task_id}/complete").json()["completed"] is True
    assert httpx.post(server.url + "/api/tasks", json={}).status_code == 400
    assert httpx.delete(f"{server.url}/tareas/{task_id}").status_code == 200
    assert httpx.get(f"{server.url}/tareas/{task_id}").status_code == 404
    # Never a default, and unknown modes are still refused.
    bad = httpx.put(server.url + "/admin/fault", json={"mode": "nolocks"}, headers=AUTH)
    assert bad.status_code == 400 and "nolock" in bad.json()["error"]
    assert httpx.get(pair[1].url + "/health").json()["fault"] == "none"
    set_mode(server, "none")
    wait_until(lambda: "fault mode nolock is off" in server.log(), timeout=5, what="the end")


def test_the_balancer_passes_the_mode_on_and_still_refuses_unknown_ones(
    pair: tuple[ServiceProcess, ServiceProcess],
) -> None:
    backends = [("server1", pair[0].url), ("server2", pair[1].url)]
    balancer = balancer_process(backends).start()
    try:
        url = balancer.url + "/control/servers/server2/fault"
        answer = httpx.put(url, json={"mode": "nolock"}, headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json()["fault"] == {"mode": "nolock", "warning": NOLOCK_WARNING}
        assert httpx.get(pair[1].url + "/health").json()["fault"] == "nolock"
        assert "nolock" in httpx.get(balancer.url + "/control", headers=AUTH).json()["fault_modes"]
        refused = httpx.put(url, json={"mode": "no-lock"}, headers=AUTH)
        assert refused.status_code == 400 and "nolock" in refused.json()["error"]
        events = httpx.get(balancer.url + "/events").json()["events"]
        faults = [event for event in events if event["kind"] == "control"]
        assert [event["fault"]["mode"] for event in faults] == ["nolock"]
    finally:
        balancer.close()


# -- in one process: the store's side -------------------------------------------------------


def create_without_lock(store: TaskStore, title: str, completed: bool) -> Task:
    """The three steps the task server takes for a create in mode nolock."""
    entries, task = read_naively(store, title, completed)
    store.raise_last_id(task["id"])
    write_naively(store, entries, task)
    return task


def test_a_nolock_create_keeps_the_stores_format_and_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    normal = TaskStore(path, "server1")
    normal.prepare()
    normal.create("keyed", idempotency_key="k1")
    assert normal.page()[0]  # memory now holds the file
    stale = JournalRecord(path.stat().st_ino + 1, 9, 0, b",\n  {}\n]\n")
    normal._journal.write(stale)  # a stale record (another inode): emptied by nolock
    naive = create_without_lock(TaskStore(path, "server2"), "naive", completed=True)
    assert naive["id"] == 2 and naive["server"] == "server2"
    assert (tmp_path / "tasks.json.journal").read_bytes() == b""
    assert (tmp_path / "tasks.json.lastid").read_text().split()[0] == "2"
    tasks = stored(path)
    assert tasks[0][KEY_FIELD] == "k1"  # the first task's key and digest kept
    assert [task["title"] for task in normal.page()[0]] == ["keyed", "naive"]
    assert normal.create("keyed", idempotency_key="k1") == (normal.get(1), True)
    assert normal.create("normal")[0]["id"] == 3
    assert not list(tmp_path.glob(".tasks.json.*.tmp"))


def test_a_nolock_create_never_writes_over_a_file_that_does_not_parse(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text('[{"id": 1, "title": "half')
    with pytest.raises(TasksFileError, match="not valid JSON"):
        create_without_lock(TaskStore(path, "server1"), "lost", completed=False)
    assert path.read_text() == '[{"id": 1, "title": "half'


def test_a_nolock_create_past_the_id_range_is_refused_in_the_locked_creates_words(
    tmp_path: Path,
) -> None:
    """Naive or locked, a create past 2^53 - 1 answers the same refusal, and writes nothing."""
    path = tmp_path / "tasks.json"
    path.write_bytes(orjson.dumps([{"id": MAX_TASK_ID, "title": "last"}]))
    before = path.read_bytes()
    for create in (create_without_lock, TaskStore.create):
        with pytest.raises(TasksFileError) as refused:
            create(TaskStore(path, "server1"), "one too many", False)
        assert refused.value.problem == (
            f"every task id up to {MAX_TASK_ID} is used; renumber or reset it"
        )
    assert path.read_bytes() == before


@pytest.mark.slow
async def test_nolock_creates_waiting_for_the_lock_hold_no_thread(
    pair: tuple[ServiceProcess, ServiceProcess],
) -> None:
    """Their one locked step waits in the write queue: 60 of them behind a held lock (more
    than the thread pool's 40) leave /health answering at once."""
    server = pair[0]
    set_mode(server, "nolock")
    held = httpx.post(server.url + "/admin/quiesce", json={"seconds": 8}, headers=AUTH)
    assert held.status_code == 200, held.text
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        posts = [
            asyncio.create_task(http.post("/tareas", json={"title": f"held {n}"}))
            for n in range(60)
        ]
        try:
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:  # while the 60 arrive and wait
                assert (await http.get("/health", timeout=1)).status_code == 200
        finally:
            await http.delete("/admin/quiesce", headers=AUTH)
            answers = await asyncio.gather(*posts)
    assert [answer.status_code for answer in answers] == [201] * 60
    set_mode(server, "none")

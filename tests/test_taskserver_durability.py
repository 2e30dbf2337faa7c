"""Storage windows a hostile review found (issue 23): ids never given twice, a failed append
never kept, a nolock write's temporary file left alone, a cancelled hold giving its turn
back, and /health telling that another process holds the lock."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from filelock import FileLock
from support import taskserver, wait_until, wait_until_async

from services.taskserver.storage import TasksFileError, TaskStore
from services.taskserver.storage.file import LEFTOVER_SECONDS, NOLOCK_SUFFIX
from services.taskserver.storage.journal import JournalRecord
from services.taskserver.writers import WriteQueue


def fd_name(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def test_lastid_is_durable_before_the_append_relies_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without fsyncs a power cut can bring back an older high-water mark, or none, and an id
    answered 201 before it would be handed out again (after a reset, or a delete)."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    steps: list[str] = []
    real_fsync, real_replace, real_pwrite = os.fsync, os.replace, os.pwrite

    def recording_fsync(fd: int) -> None:
        name = fd_name(fd)
        steps.append("fsync folder" if name == str(tmp_path) else f"fsync {Path(name).name}")
        real_fsync(fd)

    def recording_replace(source: str | Path, target: str | Path) -> None:
        steps.append(f"rename over {Path(target).name}")
        real_replace(source, target)

    def recording_pwrite(fd: int, data: bytes, offset: int) -> int:
        steps.append(f"write {Path(fd_name(fd)).name}")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    monkeypatch.setattr(os, "pwrite", recording_pwrite)
    store.create("one")  # the record is new: its folder entry too
    written = steps.index("write tasks.json.lastid")
    synced = steps.index("fsync tasks.json.lastid")
    folder = steps.index("fsync folder", synced)
    assert written < synced < folder < steps.index("rename over tasks.json"), steps
    steps.clear()
    store.create("two")  # appended: the record is rewritten in place
    written = steps.index("write tasks.json.lastid")
    synced = steps.index("fsync tasks.json.lastid")
    assert written < synced < steps.index("write tasks.json"), steps
    assert (tmp_path / "tasks.json.lastid").read_text().split()[0] == "2"


@pytest.mark.parametrize("mark_fails", [False, True], ids=["another server", "this server"])
def test_an_append_whose_undo_failed_is_never_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mark_fails: bool
) -> None:
    """The client got a 503; if the whole append stayed, a keyless retry made two tasks.
    The next lock holder cuts it: another server (the journal says ``cut``), or this one
    when even that mark could not be written."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("one")
    real_fsync, real_write_journal = os.fsync, store._journal.write

    def fsync_failing_on_the_file(fd: int) -> None:
        if fd_name(fd) == str(path):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    def undo_failing(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    def journal_failing_after_the_first(record: JournalRecord) -> None:
        if not record.keep:
            raise OSError(5, "Input/output error")
        real_write_journal(record)

    monkeypatch.setattr(os, "fsync", fsync_failing_on_the_file)
    monkeypatch.setattr(store._journal, "undo", undo_failing)
    if mark_fails:
        monkeypatch.setattr(store._journal, "write", journal_failing_after_the_first)
    with pytest.raises(TasksFileError, match="Input/output error"):
        store.create("retried")
    monkeypatch.undo()
    assert b"retried" in path.read_bytes()  # the whole append is there, unanswered
    next_holder = store if mark_fails else TaskStore(path, "server2")
    next_holder.create("retried")  # the client's retry, without a key
    titles = [task["title"] for task in orjson.loads(path.read_bytes())]
    assert titles == ["one", "retried"]


def test_a_server_starting_mid_lesson_leaves_a_young_nolock_file(tmp_path: Path) -> None:
    """A nolock write in flight on another server, without the lock, must not lose its file;
    a crash's leftovers are still removed: any old one, and any of a writer that held the lock
    (``prepare``, what a starting server does, holds it)."""
    path = tmp_path / "tasks.json"
    path.write_text("[]\n")
    young = tmp_path / f".tasks.json.young{NOLOCK_SUFFIX}"
    old = tmp_path / f".tasks.json.old{NOLOCK_SUFFIX}"
    locked = tmp_path / ".tasks.json.lastid.dead.tmp"
    for leftover in (young, old, locked):
        leftover.write_text("[]\n")
    long_ago = time.time() - 2 * LEFTOVER_SECONDS
    os.utime(old, (long_ago, long_ago))
    TaskStore(path, "server1").prepare()
    assert young.exists()
    assert not old.exists()
    assert not locked.exists()


def test_a_hold_cancelled_while_waiting_for_the_writer_lock_gives_its_turn_back() -> None:
    """Else every later write of the process waits for a turn nobody gives back."""
    lock = threading.Lock()

    async def cancel_a_waiting_hold() -> None:
        queue = WriteQueue(lock)
        lock.acquire()  # a write in progress, in its thread
        hold = asyncio.create_task(queue.hold(5.0, wait=3.0))
        await wait_until_async(queue._turn.locked, timeout=5, what="the hold to take the turn")
        await asyncio.sleep(0.05)  # let it reach the writer lock (an extra wait cannot hurt)
        hold.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hold
        lock.release()  # the write ends
        async with queue.turn(2.0):  # before: QueueTimeout
            pass
        # The thread the hold left behind took the lock when it came free: given back too.
        await wait_until_async(lambda: not lock.locked(), timeout=5, what="the writer lock")

    asyncio.run(cancel_a_waiting_hold())


def post(url: str, title: str) -> httpx.Response:
    return httpx.post(url + "/tareas", json={"title": title}, timeout=15)


@pytest.mark.parametrize("damage", ["3x", "", "-1", str(2**63), "3 00000000", "3 ab 1"])
def test_a_corrupt_lastid_never_gives_a_deleted_newest_tasks_id_again(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "tasks.json"
    lastid = tmp_path / "tasks.json.lastid"
    first = TaskStore(path, "server1")
    first.prepare()
    for title in ("a", "b", "c"):
        first.create(title)
    first.delete(3)
    lastid.write_text(damage)  # a hand edit
    following = TaskStore(path, "server2")  # the next server to start
    with pytest.raises(TasksFileError, match=r"tasks\.json\.lastid") as refused:
        following.create("d")  # before: id 3 again
    assert refused.value.code == "task_ids_unrecorded"
    assert "tasks.json.lastid" in (following.problem() or "")
    assert len(following.page()[0]) == 2  # reads still answer
    lastid.write_text("3")  # what the message asks for
    assert following.create("d")[0]["id"] == 4


@pytest.mark.slow  # a server process: 1-3 s
def test_a_lastid_that_cannot_be_written_refuses_creates(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    lastid = tmp_path / "tasks.json.lastid"
    server = taskserver("server1", path).start()
    try:
        assert post(server.url, "a").status_code == 201
        lastid.unlink()
        lastid.mkdir()  # cannot be replaced, even by root
        refused = post(server.url, "b")
        assert refused.status_code == 503, refused.text  # before: 201, the mark not stored
        assert refused.json()["code"] == "task_ids_unrecorded"
        health = httpx.get(server.url + "/health")
        assert health.status_code == 503 and "tasks.json.lastid" in health.json()["error"]
        lastid.rmdir()
        assert post(server.url, "b").json()["id"] == 2
        assert lastid.read_text().split()[0] == "2"
    finally:
        server.close()


def test_the_floor_is_the_files_highest_id_too(tmp_path: Path) -> None:
    """A file from before the id record (or edited by hand): deleting its newest task must
    not free that id."""
    path = tmp_path / "tasks.json"
    path.write_bytes(orjson.dumps([{"id": n, "title": f"t{n}"} for n in (1, 2, 3)]))
    store = TaskStore(path, "server1")
    store.delete(3)
    assert TaskStore(path, "server2").create("new")[0]["id"] == 4


@pytest.mark.slow  # a server process and a wait: 2-4 s
def test_health_says_when_another_process_holds_the_lock(tmp_path: Path) -> None:
    """It stays 200 (every server shares the lock; reads answer), but says so; the write
    waits as documented and goes through once the lock is free."""
    path = tmp_path / "tasks.json"
    server = taskserver("server1", path).start()
    answers: list[int] = []
    try:
        assert "warning" not in httpx.get(server.url + "/health").json()["tasks_file"]
        with FileLock(str(path) + ".lock"):  # another process, frozen mid-write
            writer = threading.Thread(
                target=lambda: answers.append(post(server.url, "x").status_code)
            )
            writer.start()

            def warned() -> dict | None:
                health = httpx.get(server.url + "/health", timeout=2)
                assert health.status_code == 200
                found = health.json()["tasks_file"]
                return found if "warning" in found else None

            tasks_file = wait_until(warned, timeout=8, what="/health to tell")
            assert tasks_file["lock_wait_seconds"] >= 0.5
            assert "held by another process" in tasks_file["warning"]
        writer.join(timeout=15)
        assert answers == [201]
        assert "warning" not in httpx.get(server.url + "/health").json()["tasks_file"]
    finally:
        server.close()


@pytest.mark.slow  # a server process: 1-3 s
def test_a_server_with_a_damaged_journal_starts_and_answers_503_naming_it(
    tmp_path: Path,
) -> None:
    """The issue's case: a record cut short (``"<inode> 3"``) used to cut 19 tasks down to
    ``\\n]\\n``. Now the server starts, touches nothing, and every write and /health say why."""
    path = tmp_path / "tasks.json"
    path.write_bytes(orjson.dumps([{"id": n, "title": f"t{n}"} for n in range(1, 20)]))
    before = path.read_bytes()
    (tmp_path / "tasks.json.journal").write_text(f"{path.stat().st_ino} 3")
    server = taskserver("server1", path).start()
    try:
        refused = post(server.url, "x")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "tasks_journal_damaged"
        assert "journal record" in refused.json()["problem"]
        health = httpx.get(server.url + "/health")
        assert health.status_code == 503 and "journal record" in health.json()["error"]
        assert len(httpx.get(server.url + "/tareas").json()) == 19  # reads still answer
        assert path.read_bytes() == before
        (tmp_path / "tasks.json.journal").write_bytes(b"")  # what the message asks
        assert post(server.url, "x").json()["id"] == 20
        assert httpx.get(server.url + "/health").status_code == 200
    finally:
        server.close()

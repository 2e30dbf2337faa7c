"""Creating a task appends it in place (no rewrite of the file), an append a crash cut short
is undone, and nothing about storage is hidden from /health or starves it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest
from filelock import FileLock
from support import ServiceProcess, taskserver, wait_until

from services.taskserver.storage import KeyReused, TasksFileError, TaskStore
from services.taskserver.storage import file as file_store
from services.taskserver.storage.format import CLOSING, append_bytes
from services.taskserver.storage.journal import JournalRecord, prefix_crc
from services.taskserver.storage.model import MAX_TASK_ID, new_task
from services.taskserver.writers import WriteQueue

FORMAT = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def test_creates_append_in_place_in_the_format_of_a_full_write(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("first")  # the first task turns `[]` into the array format
    inode = path.stat().st_ino
    for n in range(5):
        store.create(f"t{n}", idempotency_key=f"k{n}" if n % 2 else None)
        raw = path.read_bytes()
        assert raw == orjson.dumps(orjson.loads(raw), option=FORMAT)  # `cat`-able, json.load-able
    assert path.stat().st_ino == inode  # never renamed over: appended
    assert [task["title"] for task in orjson.loads(path.read_bytes())] == [
        "first",
        *(f"t{n}" for n in range(5)),
    ]
    assert not TaskStore(path, "x")._journal.pending()


def journal_record(path: Path, added: bytes, size: int | None = None) -> JournalRecord:
    """The record a writer makes before appending ``added`` to ``path`` at ``size``."""
    raw = path.read_bytes()[:size]
    before = raw[: -len(CLOSING)]
    return JournalRecord(path.stat().st_ino, len(raw), prefix_crc(before), added)


def a_task_appended(task_id: int) -> bytes:
    return append_bytes(new_task(task_id, "dying", False, "dying"))


def die_mid_append(path: Path, written: Callable[[bytes], bytes]) -> None:
    """What a writer that dies mid-append leaves: the journal, and ``written(append)`` over
    the closing bracket (part of the task, or zeros after a power cut)."""
    added = a_task_appended(3)
    record = journal_record(path, added)
    with FileLock(str(path) + ".lock"):
        TaskStore(path, "dying")._journal.write(record)
        with open(path, "r+b") as handle:
            handle.seek(record.size - len(CLOSING))
            handle.write(written(added))


@pytest.mark.parametrize(
    "written",
    [
        lambda added: added[:40],
        lambda added: added[:4],
        lambda added: b"\0" * len(added),
        lambda added: added[:2],
        lambda added: added[:30] + b"\0" * 20 + added[50:-1],
    ],
    ids=["half a task", "a bracket", "zeros", "a comma", "a torn page"],
)
def test_an_append_cut_short_is_undone_by_the_next_lock_holder(
    tmp_path: Path, written: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("one")
    store.create("two")
    before = path.read_bytes()
    die_mid_append(path, written)
    assert store.create("three")[0]["id"] == 3
    assert [task["title"] for task in orjson.loads(path.read_bytes())] == ["one", "two", "three"]
    assert path.read_bytes().startswith(before[: -len(CLOSING)])


def test_a_whole_append_whose_journal_survived_is_kept(tmp_path: Path) -> None:
    """A crash after the append's fsync and before the journal was cleared loses nothing."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("one")
    size = path.stat().st_size
    store.create("two")
    appended = path.read_bytes()[size - len(CLOSING) :]
    store._journal.write(journal_record(path, appended, size))  # as if never cleared
    other = TaskStore(path, "server2")
    assert [task["title"] for task in other.page()[0]] == ["one", "two"]
    other.create("three")
    assert [task["title"] for task in orjson.loads(path.read_bytes())] == ["one", "two", "three"]


def test_a_read_during_another_servers_append_answers_the_version_before(
    tmp_path: Path,
) -> None:
    """Half an append is never an error for a reader: while the writer holds the lock it gets
    the version it had; once the writer is gone it repairs the file and reads it."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("one")
    reader = TaskStore(path, "server2")
    assert [task["title"] for task in reader.page()[0]] == ["one"]
    added = a_task_appended(2)
    record = journal_record(path, added)
    with FileLock(str(path) + ".lock"):  # the writer, still alive, mid-append
        TaskStore(path, "writer")._journal.write(record)
        with open(path, "r+b") as handle:
            handle.seek(record.size - len(CLOSING))
            handle.write(added[:20])
        assert [task["title"] for task in reader.page()[0]] == ["one"]
        assert reader.problem() is None
    fresh = TaskStore(path, "server3")  # nothing in memory: it must repair to answer
    assert [task["title"] for task in fresh.page()[0]] == ["one"]
    assert orjson.loads(path.read_bytes())[0]["title"] == "one"


@pytest.mark.slow  # 2.5-3 s: the default run stays near 3 minutes
def test_writes_stuck_behind_a_frozen_peer_do_not_starve_reads_or_health(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.json"
    server = taskserver("server1", path).start()
    writers = 60  # more than the worker-thread pool (40)
    answers: list[int] = []

    def post(n: int) -> None:
        response = httpx.post(server.url + "/tareas", json={"title": f"w{n}"}, timeout=30)
        answers.append(response.status_code)

    try:
        with FileLock(str(path) + ".lock"):  # another process froze holding it
            threads = [threading.Thread(target=post, args=(n,)) for n in range(writers)]
            for thread in threads:
                thread.start()
            wait_until(lambda: in_progress(server) >= writers, timeout=10, what="queued writes")
            assert httpx.get(server.url + "/health", timeout=2).status_code == 200
            assert httpx.get(server.url + "/tareas?limit=1", timeout=2).status_code == 200
        for thread in threads:
            thread.join(timeout=30)
        assert answers == [201] * writers
    finally:
        server.close()


def in_progress(server: ServiceProcess) -> float:
    text = httpx.get(server.url + "/metrics", timeout=2).text
    lines = [
        line for line in text.splitlines() if line.startswith("ticslab_taskserver_requests_in")
    ]
    return sum(float(line.split()[-1]) for line in lines if 'method="POST"' in line)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root and mount, as on CI and these machines)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here: " + mounted.stderr.decode().strip())
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


def test_health_tells_the_truth_about_a_full_disk(tiny_disk: Path) -> None:
    server = taskserver("server1", tiny_disk / "tasks.json").start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.post("/tareas", json={"title": "antes"}).status_code == 201
            filler = fill(tiny_disk)
            health = http.get("/health")
            assert health.status_code == 503
            assert "disk is full" in health.json()["error"]
            assert health.json()["tasks_file"]["ok"] is False
            written = http.post("/tareas", json={"title": "x" * 200})
            assert written.status_code == 503 and "cannot be written" in written.json()["error"]
            assert http.get("/tareas").status_code == 200  # reads still answer
            filler.unlink()
            assert http.get("/health").status_code == 200
            assert http.post("/tareas", json={"title": "después"}).status_code == 201
            titles = [
                task["title"] for task in orjson.loads((tiny_disk / "tasks.json").read_bytes())
            ]
            assert titles == ["antes", "después"]
    finally:
        server.close()


def test_health_tells_the_truth_about_an_unusable_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    server = taskserver("server1", path).start()
    lock = tmp_path / "tasks.json.lock"
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/health").status_code == 200
            lock.unlink(missing_ok=True)
            lock.mkdir()  # unopenable even for root, like a lock file of another user
            health = http.get("/health")
            assert health.status_code == 503
            assert "lock file" in health.json()["error"]
            assert http.post("/tareas", json={"title": "x"}).status_code == 503
            lock.rmdir()
            assert http.get("/health").status_code == 200
    finally:
        server.close()


def test_ids_stay_in_the_range_every_json_reader_holds(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    (tmp_path / "tasks.json.lastid").write_text(str(2**63 - 2))  # edited by hand
    store = TaskStore(path, "server1")
    store.prepare()
    with pytest.raises(TasksFileError, match="not an id from 0 to"):
        store.create("a")  # an impossible high-water mark is refused, not guessed low
    (tmp_path / "tasks.json.lastid").write_text(str(MAX_TASK_ID - 1))
    store._forget()
    assert store.create("b")[0]["id"] == MAX_TASK_ID
    assert store.get(MAX_TASK_ID)["title"] == "b"
    with pytest.raises(TasksFileError, match="every task id"):
        store.create("c")
    path.write_bytes(orjson.dumps([{"id": 2**63, "title": "too big"}]))
    assert "is not between 1 and" in (store.problem() or "")


def test_a_huge_id_in_a_path_is_not_found(tmp_path: Path) -> None:
    server = taskserver("server1", tmp_path / "tasks.json").start()
    try:
        for path in (f"/tareas/{2**63}", f"/tareas/{2**64 + 1}", f"/api/tasks/{10**30}/complete"):
            method = "PUT" if path.endswith("complete") else "GET"
            answer = httpx.request(method, server.url + path)
            assert answer.status_code == 404 and "no task" in answer.json()["error"]
    finally:
        server.close()


def test_a_full_read_that_races_an_append_is_never_taken_for_a_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader takes no lock: if another server appends between its stat and its read, the
    bytes it read are not the version it stat'ed, and it must not remember them as such."""
    path = tmp_path / "tasks.json"
    writer, reader = TaskStore(path, "server1"), TaskStore(path, "server2")
    writer.prepare()
    writer.create("one")
    real_pread = file_store.pread
    raced: list[bool] = []

    def pread_after_an_append(fd: int, length: int, offset: int, where: Path) -> bytes:
        if offset == 0 and not raced:
            raced.append(True)
            writer.create("appended meanwhile")
        return real_pread(fd, length, offset, where)

    monkeypatch.setattr(file_store, "pread", pread_after_an_append)
    assert [task["title"] for task in reader.page()[0]] == ["one", "appended meanwhile"]
    monkeypatch.setattr(file_store, "pread", real_pread)
    writer.create("three")
    assert [task["title"] for task in reader.page()[0]] == ["one", "appended meanwhile", "three"]
    assert reader.problem() is None
    assert reader.create("four")[0]["id"] == 4


def test_an_append_whose_fsync_fails_is_cut_back_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was never answered 201, and its bytes may never reach the disk."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("one")
    before = path.read_bytes()
    real_fsync, calls = os.fsync, []

    def failing_second_fsync(fd: int) -> None:  # the journal's passes, the file's fails
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_second_fsync)
    with pytest.raises(TasksFileError, match="Input/output error"):
        store.create("two")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == before
    assert store.create("three")[0]["id"] == 3  # id 2 stays reserved: never given twice


def test_a_rewrite_makes_the_journal_durably_empty_before_it_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Emptying the journal after an append is not fsynced, so a power cut can bring back a
    record; it must never outlive the version it names, since a rewrite may reuse that inode
    number and the record would then cut the new file."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    assert (tmp_path / "tasks.json.journal").exists()  # created by prepare, durably
    store.create("one")
    store.create("two")
    opened: dict[int, str] = {}
    steps: list[str] = []
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace

    def recording_open(name: str | Path, *args: object) -> int:
        fd = real_open(name, *args)  # type: ignore[arg-type]
        opened[fd] = Path(name).name
        return fd

    def recording_fsync(fd: int) -> None:
        steps.append(f"fsync {opened.get(fd, '?')}")
        real_fsync(fd)

    def recording_replace(source: str | Path, target: str | Path) -> None:
        steps.append(f"rename over {Path(target).name}")
        real_replace(source, target)

    monkeypatch.setattr(os, "open", recording_open)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    store.update(1, {"title": "uno"})
    assert steps.index("fsync tasks.json.journal") < steps.index("rename over tasks.json")
    assert (tmp_path / "tasks.json.journal").read_bytes() == b""


def test_a_stale_journal_record_is_ignored(tmp_path: Path) -> None:
    """A whole record naming another inode (the file was replaced since) or a longer file
    than there is (emptied by hand since) cuts nothing."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    store.create("one")
    record = journal_record(path, a_task_appended(2))
    for stale in (replace(record, inode=record.inode + 1), replace(record, size=10**6)):
        store._journal.write(stale)
        assert store.problem() is None
        store.create("again")
    assert [task["title"] for task in store.page()[0]] == ["one", "again", "again"]


DAMAGED_RECORDS = {
    "cut short": lambda record: record.encode()[:-10],
    "inode and size only": lambda record: b"%d 3" % record.inode,
    "half a size": lambda record: record.encode().replace(
        b" %d " % record.size, b" %d " % (record.size // 2), 1
    ),
    "the old format": lambda record: b"%d %d\n" % (record.inode, record.size),
    "garbage": lambda record: b"x y",
}


@pytest.mark.parametrize("damage", DAMAGED_RECORDS.values(), ids=DAMAGED_RECORDS.keys())
def test_a_damaged_journal_record_never_cuts_the_file(
    tmp_path: Path, damage: Callable[[JournalRecord], bytes]
) -> None:
    """It used to cut 19 tasks down to `\n]\n`: now the file is left as it is, every write
    and /health name the problem, and emptying the journal is the way on."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    for n in range(19):
        store.create(f"t{n}")
    before = path.read_bytes()
    (tmp_path / "tasks.json.journal").write_bytes(damage(journal_record(path, b"")))
    with pytest.raises(TasksFileError, match="journal record") as refused:
        TaskStore(path, "server2").create("x")
    assert refused.value.code == "tasks_journal_damaged"
    assert "journal record" in (TaskStore(path, "server3").problem() or "")
    assert path.read_bytes() == before
    (tmp_path / "tasks.json.journal").write_bytes(b"")  # what the message asks a person to do
    assert TaskStore(path, "server2").create("x")[0]["id"] == 20


def test_a_record_whose_cut_does_not_land_on_its_append_leaves_the_file(tmp_path: Path) -> None:
    """Whole records that do not match the file: the bytes before the cut are not the ones
    the append followed, or the bytes after it are not one partial task, the journal's."""
    path = tmp_path / "tasks.json"
    store = TaskStore(path, "server1")
    store.prepare()
    sizes = []
    for title in ("one", "two", "three"):
        sizes.append(path.stat().st_size)
        store.create(title)
    whole = path.read_bytes()
    three = whole[sizes[2] - len(CLOSING) :]
    cases = {
        "not there": replace(journal_record(path, three, sizes[2]), prefix_crc=0),
        "are not the journal's append": journal_record(path, a_task_appended(3), sizes[2]),
        "bytes after": journal_record(path, three, sizes[1]),  # two tasks after the cut
    }
    for words, record in cases.items():
        store._journal.write(record)
        with pytest.raises(TasksFileError, match=words) as refused:
            TaskStore(path, "server2").create("x")
        assert refused.value.code == "tasks_journal_damaged"
        assert path.read_bytes() == whole, words
    store._journal.write(journal_record(path, three, sizes[2]))  # the true record: kept
    assert TaskStore(path, "server2").create("four")[0]["id"] == 4


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"id": 1, "title": "a", "idempotency_key": [1]}, "idempotency_key that is not text"),
        ({"id": 1, "title": "a", "idempotency_key": "k", "request_digest": 7}, "request_digest"),
    ],
)
def test_odd_private_fields_in_a_hand_edited_file_are_a_clear_503(
    tmp_path: Path, entry: dict, problem: str
) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(orjson.dumps([entry]))
    store = TaskStore(path, "server1")
    assert problem in (store.problem() or "")
    with pytest.raises(TasksFileError, match=problem):
        store.page()[0]


def test_a_key_on_a_hand_edited_task_without_fields_is_compared_not_a_crash(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tasks.json"
    path.write_bytes(orjson.dumps([{"id": 1, "idempotency_key": "k"}]))
    store = TaskStore(path, "server1")
    with pytest.raises(KeyReused):
        store.create("a", idempotency_key="k")


def test_a_hold_also_holds_the_stores_writer_lock() -> None:
    """So a read that would take the file lock to wait out another server's append cannot
    take it while this process is about to be frozen."""
    lock = threading.Lock()

    async def hold_then_end() -> list[bool]:
        queue = WriteQueue(lock)
        seen = [lock.locked()]
        assert await queue.hold(5.0) is not None
        seen.append(lock.locked())
        queue.end_hold()
        await asyncio.sleep(0)  # the release timer runs on the next loop turn
        await asyncio.sleep(0.01)
        seen.append(lock.locked())
        return seen

    assert asyncio.run(hold_then_end()) == [False, True, False]

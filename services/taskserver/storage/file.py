"""The file backend: the shared ``tasks.json``, one JSON array that several servers read and
write safely.

Every change happens under a lock held across processes (``tasks.json.lock``). Creating a
task, by far the most common change, appends it in place before the closing bracket, so its
cost does not grow with the file; a journal (``tasks.json.journal``, ``journal.py``) records
where the file ended before each append, so an append cut short by a crash is undone by the
next lock holder. Updates and deletes, which are rare, rewrite the file: a temporary file,
fsynced, renamed over the old one. A file that does not parse is never written: every call
answers :class:`TasksFileError` until a person fixes it. The design and the crash argument
are in docs/design/taskserver.md.

Each store keeps the tasks it last saw, in memory, and checks before each use that the file
has not changed in a way it has not seen, reading only the bytes another server appended.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from services.common import utc_now_iso
from services.taskserver import nolock
from services.taskserver.storage.disk import pread, pwrite_all, replace_file, write_problem
from services.taskserver.storage.format import (
    CLOSING,
    DIGEST_FIELD,
    KEY_FIELD,
    append_bytes,
    appended_tasks,
    parse_tasks,
    render_tasks,
)
from services.taskserver.storage.journal import Journal, JournalRecord, prefix_crc
from services.taskserver.storage.lastid import IdRecord
from services.taskserver.storage.model import (
    KeyReused,
    Task,
    TaskNotFound,
    TasksFileError,
    check_new_id,
    new_task,
    request_digest,
)

LOCK_TIMEOUT_SECONDS = 10.0
# flock has no blocking call with a timeout, so waiters poll; filelock's default (50 ms) would
# add tens of ms to every contended write. One waiter per process, so 1 ms polls are cheap.
LOCK_POLL_SECONDS = 0.001
# A read that finds an append half-written waits this long for the lock before it answers
# with the version it already has (the writer may be a frozen process).
READ_LOCK_WAIT_SECONDS = 0.2
# A create that finds the file replaced since it read it (only fault mode nolock replaces it
# without the lock) reads it again; the last attempt rewrites it instead of appending.
APPEND_ATTEMPTS = 3
# The last bytes of the file each store remembers: an unchanged tail (which holds the newest
# task, so the highest id) is part of the proof that the file is the version in memory.
TAIL_BYTES = 4096
# A server that starts removes fault mode nolock's temporary files (named with this suffix)
# only when older than this: a younger one may be a write in flight on another server, without
# the lock, which takes milliseconds. Every other temporary file is a dead lock holder's.
NOLOCK_SUFFIX = ".nolock.tmp"
LEFTOVER_SECONDS = 60.0

Signature = tuple[int, int, int]  # st_ino, st_size, st_mtime_ns
NOTHING_READ: Signature = (0, 0, 0)


class TaskStore:
    """Tasks in one JSON file shared by every server given the same path.

    Methods block (file I/O, locks): call them from a worker thread, not the event loop.
    Returned tasks are never mutated afterwards; a change builds new dicts.
    """

    def __init__(self, path: Path, server: str) -> None:
        self.path = path
        self.server = server
        # Every taker of the file lock in this process holds this first; holding it (a
        # quiesce, writers.py) therefore means this process will not take the file lock.
        self.writer_lock = threading.Lock()
        self._cache_lock = threading.Lock()  # guards what follows; never held while waiting
        self._file_lock = FileLock(path.with_name(path.name + ".lock"), timeout=0)
        # The highest id ever handed out: deleting the newest task must not free its id.
        self._ids = IdRecord(path)
        self._journal = Journal(path)
        self._lock_wait_since = 0.0  # monotonic start of a wait for the file lock; 0: none
        self._forget()

    # -- the public operations -------------------------------------------------------------

    def prepare(self) -> None:
        """Create the folder and an empty ``[]`` file when missing; undo a crash's leftovers."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TasksFileError(self.path, f"cannot create its folder: {error.strerror}") from None
        try:
            with self._exclusive():
                self._tidy()
        except TasksFileError as error:
            if error.code != "tasks_journal_damaged":
                raise
            # Start anyway, touching nothing: every write and /health name it until a person
            # looks (a server that refused to start would say it once, in a log).

    def _tidy(self) -> None:
        """A starting server's work under the lock: a crash's leftovers, a missing file."""
        # Every writer but nolock's holds the lock, so their files are a dead writer's; a young
        # nolock file may be another server's write in flight.
        old = time.time() - LEFTOVER_SECONDS
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if not leftover.name.endswith(NOLOCK_SUFFIX) or leftover.stat().st_mtime < old:
                    leftover.unlink()
        if not self.path.exists():
            self._rewrite([])
        self._journal.ensure()

    def page(
        self, offset: int = 0, limit: int | None = None, newest_first: bool = False
    ) -> tuple[list[Task], int]:
        """``limit`` tasks from ``offset`` (counted from the oldest, or from the newest when
        ``newest_first``) and how many there are in all."""
        with self._cache_lock:
            self._refresh()
            tasks, total = self._tasks, len(self._tasks)
            if not newest_first:
                end = total if limit is None else offset + limit
                return tasks[offset:end], total
            stop = max(0, total - offset)
            start = 0 if limit is None else max(0, stop - limit)
            return tasks[start:stop][::-1], total

    def get(self, task_id: int) -> Task:
        with self._cache_lock:
            self._refresh()
            return self._find(task_id)

    def count(self) -> int:
        """Tasks in the last version read; no I/O, for metrics."""
        return len(self._tasks)

    def create(
        self, title: str, completed: bool = False, idempotency_key: str | None = None
    ) -> tuple[Task, bool]:
        """Add a task; with a key already used for the same task, return that task and
        ``True`` instead. A key used for a different task raises :class:`KeyReused`."""
        digest = request_digest(title, completed)
        private = {KEY_FIELD: idempotency_key, DIGEST_FIELD: digest} if idempotency_key else {}
        with self._exclusive():
            attempt = 1
            while True:
                self._load()
                if idempotency_key and (earlier := self._earlier(idempotency_key, digest)):
                    return earlier, True
                # Also the high-water mark as it is now: a server in fault mode nolock raises
                # it without touching this one's memory (docs/design/taskserver.md).
                task_id = max(self._next_id, self._ids.read() + 1)
                check_new_id(task_id, self.path)
                task = new_task(task_id, title, completed, self.server)
                self._ids.write(task_id)  # first: a crash after the write cannot free it
                if not self._appendable() or attempt == APPEND_ATTEMPTS:
                    self._rewrite([*self._stored(), {**task, **private}])
                    return task, False
                if self._append(task, private):
                    return task, False
                # Replaced since it was read, by a writer without the lock (fault mode nolock):
                # read it again, and after a few such rounds rewrite it, which is always safe.
                attempt += 1

    def update(self, task_id: int, changes: dict[str, Any]) -> Task:
        """Apply ``changes`` (title and/or completed) and stamp ``updated_at``."""
        with self._exclusive():
            self._load(exact=True)
            old = self._find(task_id)
            new = {**old, **changes, "updated_at": utc_now_iso()}
            self._rewrite(
                [self._with_private(new if task is old else task) for task in self._tasks]
            )
            return new

    def delete(self, task_id: int) -> Task:
        with self._exclusive():
            self._load(exact=True)
            old = self._find(task_id)
            # The floor is the file's highest id too (a file from before the record, or a
            # hand edit): store it before the newest task, and the proof of its id, is gone.
            if (highest := self._next_id - 1) > self._ids.read():
                self._ids.write(highest)
            self._rewrite([self._with_private(task) for task in self._tasks if task is not old])
            return old

    def raise_last_id(self, task_id: int) -> None:
        """Make ``tasks.json.lastid`` at least ``task_id``, under the lock: fault mode nolock
        hands out ids without it, and no id a client was given may be handed out again."""
        with self._exclusive():
            if task_id > self._ids.read():
                self._ids.write(task_id)

    def replace_without_lock(self, entries: list[Task]) -> None:
        """Fault mode nolock's write: ``entries`` (as stored) become the whole file, WITHOUT
        the file lock. Never a torn or foreign-format file: a temporary file renamed over it,
        as :meth:`_rewrite` does. The journal is emptied first, as a rewrite does: it names
        the version being replaced, and a stale one could cut a later file that gets its
        inode number back. The version in memory is left alone (it is not locked here); the
        next use sees a new file and reads it."""
        try:
            self._journal.clear(durable=True)
            replace_file(self.path, render_tasks(entries), NOLOCK_SUFFIX)
        except OSError as error:
            raise TasksFileError(self.path, f"cannot be written: {error.strerror}") from None

    def read_naively(self, title: str, completed: bool) -> tuple[list[Task], Task]:
        """Fault mode nolock's read (``nolock.py``): the whole file, no lock."""
        return nolock.read_naively(self, title, completed)

    def write_naively(self, read: list[Task], task: Task) -> None:
        """Fault mode nolock's write (``nolock.py``): the file replaced, no lock."""
        nolock.write_naively(self, read, task)

    def describe(self) -> dict[str, Any]:
        return {"kind": "file", "path": str(self.path)}

    def close(self) -> None:
        """Nothing is held between calls."""

    def problem(self) -> str | None:
        """Why reads or writes cannot proceed right now, or None; for ``/health``."""
        try:
            with self._cache_lock:
                self._refresh()
            self._ids.check()
            self._journal.check()
        except TasksFileError as error:
            return str(error)
        return write_problem(self.path, self._file_lock.lock_file)

    def lock_wait(self) -> float:
        """Seconds a write here has been waiting for another process's file lock (0: none)."""
        since = self._lock_wait_since
        return time.monotonic() - since if since else 0.0

    # -- the version in memory -------------------------------------------------------------

    def _forget(self) -> None:
        """No version in memory: the next use reads the file whole."""
        self._signature = NOTHING_READ
        self._tail = b""
        self._tasks: list[Task] = []  # public fields only, oldest first; appended in place
        self._by_id: dict[int, Task] = {}
        self._private: dict[int, dict[str, str]] = {}  # id -> key and digest
        self._by_key: dict[str, int] = {}
        self._next_id = 1

    def _index(self, entries: list[Task]) -> None:
        """Take ``entries`` (as stored) as what follows the tasks in memory."""
        for entry in entries:
            private = {f: entry.pop(f) for f in (KEY_FIELD, DIGEST_FIELD) if f in entry}
            task_id = entry["id"]
            self._tasks.append(entry)
            self._by_id[task_id] = entry
            if private.get(KEY_FIELD):
                self._private[task_id] = private
                self._by_key[private[KEY_FIELD]] = task_id
            self._next_id = max(self._next_id, task_id + 1)

    def _seen(self, signature: Signature, tail: bytes) -> None:
        self._signature, self._tail = signature, tail[-TAIL_BYTES:]

    def _find(self, task_id: int) -> Task:
        try:
            return self._by_id[task_id]
        except KeyError:
            raise TaskNotFound(task_id) from None

    def _earlier(self, key: str, digest: str) -> Task | None:
        """The task created with ``key``, if any; :class:`KeyReused` for another task's key."""
        task_id = self._by_key.get(key)
        if task_id is None or task_id not in self._by_id:
            return None
        task, stored = self._by_id[task_id], self._private[task_id].get(DIGEST_FIELD)
        # Tasks stored before digests were kept: compare with what the task still says.
        if (stored or request_digest(task.get("title"), task.get("completed"))) != digest:
            raise KeyReused
        return task

    def _with_private(self, task: Task) -> Task:
        private = self._private.get(task["id"])
        return {**task, **private} if private else task

    def _stored(self) -> list[Task]:
        return [self._with_private(task) for task in self._tasks]

    def _appendable(self) -> bool:
        """True when the file is in this module's format with a task to append after."""
        return bool(self._tasks) and self._tail.endswith(CLOSING)

    # -- reading the file ------------------------------------------------------------------

    def _refresh(self) -> None:
        """Bring memory up to the file for a read (caller holds the cache lock). A read that
        fails may have caught another server's append half-written, so it is tried again under
        the lock; while that writer holds the lock, the version in memory is the answer."""
        try:
            self._load()
            return
        except TasksFileError as error:
            first = error
        self._cache_lock.release()
        try:
            with self._exclusive(wait=READ_LOCK_WAIT_SECONDS):
                self._load()
        except TasksFileError:
            if self._signature == NOTHING_READ or not self._journal.pending():
                raise first from None
        finally:
            self._cache_lock.acquire()

    def _load(self, exact: bool = False) -> None:
        """Make memory match the file. Cheap when nothing changed (a stat and a 4 KiB read)
        or another server appended (only its bytes are parsed); ``exact`` reads it whole."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self._forget()
            return
        except OSError as error:
            raise TasksFileError(self.path, f"cannot be opened: {error.strerror}") from None
        try:
            stat = os.fstat(fd)
            signature = _signature(stat)
            if not exact and self._unchanged(fd, signature):
                return
            if not exact and self._read_appended(fd, signature):
                return
            raw = pread(fd, stat.st_size, 0, self.path)
            if _signature(os.fstat(fd)) != signature:  # another server appended meanwhile
                raise TasksFileError(self.path, "changed while it was read; read it again")
        finally:
            os.close(fd)
        entries = parse_tasks(raw, self.path)  # before forgetting: a failed read keeps memory
        self._forget()
        self._index(entries)
        self._seen(signature, raw)
        with contextlib.suppress(TasksFileError):  # reads go on; writes check it themselves
            self._next_id = max(self._next_id, self._ids.read() + 1)

    def _unchanged(self, fd: int, signature: Signature) -> bool:
        """Same inode, size and mtime, and the same last bytes (so the same newest task)."""
        if signature != self._signature:
            return False
        return pread(fd, len(self._tail), signature[1] - len(self._tail), self.path) == self._tail

    def _read_appended(self, fd: int, signature: Signature) -> bool:
        """Take in the tasks another server appended since the version in memory. Sound
        because the inode is the same, the old tail is still there byte for byte up to its
        closing bracket, and what follows parses as new tasks (an append's exact shape)."""
        old_inode, old_size, _ = self._signature
        inode, size, _ = signature
        if not self._appendable() or inode != old_inode or size <= old_size:
            return False
        start = old_size - len(self._tail)
        if start < 0:  # never: the tail is the file's last bytes; but never read before 0
            return False
        data = pread(fd, size - start, start, self.path)
        head = len(self._tail) - len(CLOSING)
        if data[:head] != self._tail[:head] or data[head : head + 1] != b",":
            return False
        if not data.endswith(CLOSING):
            return False
        added = appended_tasks(data[head + 1 :], self._by_id)
        if added is None:
            return False
        self._index(added)
        self._seen(signature, data)
        return True

    # -- changing the file -----------------------------------------------------------------

    @contextmanager
    def _exclusive(self, wait: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
        """The right to change the file: this process's writers queue on a thread lock, then
        the cross-process file lock, then the cache lock (so readers wait only for the change).
        An append a crash left half-done is undone first."""
        if not self.writer_lock.acquire(timeout=wait):
            raise TasksFileError(self.path, f"a write here waited more than {wait:g} s")
        try:
            self._lock_wait_since = time.monotonic()
            try:
                self._file_lock.acquire(timeout=wait, poll_interval=LOCK_POLL_SECONDS)
            except Timeout:
                problem = f"is locked by another process for more than {wait:g} s"
                raise TasksFileError(self.path, problem) from None
            except OSError as error:
                problem = f"its lock file cannot be opened: {error.strerror}"
                raise TasksFileError(self.path, problem) from None
            finally:
                self._lock_wait_since = 0.0
            try:
                with self._cache_lock:
                    if self._journal.recover():
                        self._forget()
                    yield
            finally:
                self._file_lock.release()
        finally:
            self.writer_lock.release()

    def _append(self, task: Task, private: dict[str, str]) -> bool:
        """Write ``task`` before the closing bracket, in place (the journal makes it undoable).
        False, with nothing written, when the file is no longer the version in memory: only
        a writer without the lock (fault mode nolock) can have replaced it since it was read,
        and writing at the old size into the new file would tear it."""
        added = append_bytes({**task, **private})
        inode, size, _ = self._signature
        before = self._tail[: -len(CLOSING)]
        record = JournalRecord(inode, size, prefix_crc(before), added)
        try:
            fd = os.open(self.path, os.O_WRONLY)
            try:
                opened = os.fstat(fd)
                if (opened.st_ino, opened.st_size) != (inode, size):
                    self._forget()
                    return False
                # Replaced from here on, this writes to the old inode, which nobody reads any
                # more: the task is lost (the nolock lesson), the file is never torn. Nobody
                # changes an inode in place without the lock.
                self._journal.write(record)
                pwrite_all(fd, added, size - len(CLOSING))
                os.fsync(fd)
                stat = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as error:
            self._forget()
            self._journal.cut_back(record)
            raise TasksFileError(self.path, f"cannot be written: {error.strerror}") from None
        self._journal.clear()
        self._index([{**task, **private}])
        self._seen(_signature(stat), self._tail[: -len(CLOSING)] + added)
        return True

    def _rewrite(self, entries: list[Task]) -> None:
        """Replace the file atomically (temporary file, fsync, rename, fsync the folder) and
        take ``entries`` as the version in memory."""
        raw = render_tasks(entries)
        try:
            # A journal must never outlive the version it names: the new file may even get
            # the old inode number back, and a stale journal would then cut it.
            self._journal.clear(durable=True)
            stat = replace_file(self.path, raw)
        except OSError as error:
            self._forget()
            raise TasksFileError(self.path, f"cannot be written: {error.strerror}") from None
        next_id = self._next_id
        self._forget()
        self._index(entries)  # pops the private fields, which only copies carry
        self._next_id = max(self._next_id, next_id)
        self._seen(_signature(stat), raw)


def _signature(stat: os.stat_result) -> Signature:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns

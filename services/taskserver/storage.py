"""The shared ``tasks.json``: one JSON array that several servers read and write safely.

Every change happens under a lock held across processes (``tasks.json.lock``). Creating a
task, by far the most common change, appends it in place before the closing bracket, so its
cost does not grow with the file; a journal (``tasks.json.journal``) records where the file
ended before each append, so an append cut short by a crash is undone by the next lock holder.
Updates and deletes, which are rare, rewrite the file: a temporary file, fsynced, renamed over
the old one. A file that does not parse is never written: every call answers
:class:`TasksFileError` until a person fixes it. The design and the crash argument are in
docs/design/taskserver.md.

Each store keeps the tasks it last saw, in memory, and checks before each use that the file
has not changed in a way it has not seen, reading only the bytes another server appended.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock, Timeout

from services.common import utc_now_iso

Task = dict[str, Any]

LOCK_TIMEOUT_SECONDS = 10.0
# flock has no blocking call with a timeout, so waiters poll; filelock's default (50 ms) would
# add tens of ms to every contended write. One waiter per process, so 1 ms polls are cheap.
LOCK_POLL_SECONDS = 0.001
# A read that finds an append half-written waits this long for the lock before it answers
# with the version it already has (the writer may be a frozen process).
READ_LOCK_WAIT_SECONDS = 0.2
WINDOWS_RENAME_ATTEMPTS = 50
# A create that finds the file replaced since it read it (only fault mode nolock replaces it
# without the lock) reads it again; the last attempt rewrites it instead of appending.
APPEND_ATTEMPTS = 3
CLOSING = b"\n]\n"  # how every version this module writes ends (orjson, indent 2, newline)
# The last bytes of the file each store remembers: an unchanged tail (which holds the newest
# task, so the highest id) is part of the proof that the file is the version in memory.
TAIL_BYTES = 4096
# The largest integer every JSON reader (JavaScript's included) holds exactly.
MAX_TASK_ID = 2**53 - 1
# Stored with a task created with an Idempotency-Key, never shown in the API.
KEY_FIELD, DIGEST_FIELD = "idempotency_key", "request_digest"
# Free space below which /health reports the disk as full: an append needs well under 1 KiB,
# but the journal, a rewrite and the file system's own metadata need room too.
MIN_FREE_BYTES = 1 << 20
# A server that starts removes fault mode nolock's temporary files (named with this suffix)
# only when older than this: a younger one may be a write in flight on another server, without
# the lock, which takes milliseconds. Every other temporary file is a dead lock holder's.
NOLOCK_SUFFIX = ".nolock.tmp"
LEFTOVER_SECONDS = 60.0
# A journal record names the bytes just before its append's start (their CRC-32), so a cut
# can only land where that append began.
JOURNAL_PREFIX_BYTES = 64
JOURNAL_VERSION = b"j2"
# Far above any record (a task is well under 2 KiB); a longer journal is not one we wrote,
# and reading it whole would be unbounded.
JOURNAL_MAX_BYTES = 1 << 16


class TasksFileError(Exception):
    """The tasks file cannot be used (does not parse, cannot be read or written, is locked)."""

    def __init__(self, path: Path, problem: str, code: str = "tasks_file_error") -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.code = code  # of services/errors.py


class TaskNotFound(LookupError):
    """No task with that id in the file."""


class KeyReused(Exception):
    """An Idempotency-Key sent again with a different task: refused, never merged."""


Signature = tuple[int, int, int]  # st_ino, st_size, st_mtime_ns
NOTHING_READ: Signature = (0, 0, 0)


@dataclass(frozen=True)
class JournalRecord:
    """``tasks.json.journal`` while an append is in flight: the file (inode) and its size
    before it, the CRC-32 of the bytes just before the append's start, the bytes appended,
    and whether a whole append may be kept (not when its writer failed and could not undo
    it: it was never answered, and keeping it would let a keyless retry make two tasks).
    A checksum over it all tells a whole record from one cut short or edited."""

    inode: int
    size: int
    prefix_crc: int
    added: bytes
    keep: bool = True

    def encode(self) -> bytes:
        mode = b"keep" if self.keep else b"cut"
        fields = [b"%d" % self.inode, b"%d" % self.size, mode, b"%08x" % self.prefix_crc]
        body = b" ".join([JOURNAL_VERSION, *fields, base64.b64encode(self.added)])
        return body + b" %08x\n" % zlib.crc32(body)

    @classmethod
    def decode(cls, raw: bytes) -> JournalRecord:
        """The record in ``raw``; ValueError saying why it is not one this module wrote."""
        fields = raw.split(b" ")
        if len(fields) != 7 or fields[0] != JOURNAL_VERSION or not raw.endswith(b"\n"):
            raise ValueError("is not a whole record (cut short, or not written by ticslab)")
        try:
            checksum = int(fields[6], 16)
            if checksum != zlib.crc32(b" ".join(fields[:6])) or fields[3] not in (b"keep", b"cut"):
                raise ValueError
            return cls(
                int(fields[1]),
                int(fields[2]),
                int(fields[4], 16),
                base64.b64decode(fields[5], validate=True),
                fields[3] == b"keep",
            )
        except ValueError:
            raise ValueError("does not match its checksum (cut short or edited)") from None


def request_digest(title: Any, completed: Any) -> str:
    """What a create asked for, so a repeated key can be told from a reused one."""
    canonical = orjson.dumps({"completed": completed, "title": title})
    return hashlib.sha256(canonical).hexdigest()[:32]


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
        self._last_id_path = path.with_name(path.name + ".lastid")
        self._journal_path = path.with_name(path.name + ".journal")
        self._cut_pending: JournalRecord | None = None  # an append failed here, not yet cut
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
        if not self._journal_path.exists():  # created once, its folder entry made durable
            self._clear_journal(durable=True)
            _fsync_folder(self.path.parent)

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

    def list(self) -> list[Task]:
        return self.page()[0]

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
                task_id = max(self._next_id, self._last_id() + 1)
                if task_id > MAX_TASK_ID:
                    problem = f"every task id up to {MAX_TASK_ID} is used; renumber or reset it"
                    raise TasksFileError(self.path, problem)
                task = new_task(task_id, title, completed, self.server)
                self._remember_last_id(task_id)  # first: a crash after the write cannot free it
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
            if (highest := self._next_id - 1) > self._last_id():
                self._remember_last_id(highest)
            self._rewrite([self._with_private(task) for task in self._tasks if task is not old])
            return old

    def raise_last_id(self, task_id: int) -> None:
        """Make ``tasks.json.lastid`` at least ``task_id``, under the lock: fault mode nolock
        hands out ids without it, and no id a client was given may be handed out again."""
        with self._exclusive():
            if task_id > self._last_id():
                self._remember_last_id(task_id)

    def replace_without_lock(self, entries: list[Task]) -> None:
        """Fault mode nolock's write: ``entries`` (as stored) become the whole file, WITHOUT
        the file lock. Never a torn or foreign-format file: a temporary file renamed over it,
        as :meth:`_rewrite` does. The journal is emptied first, as a rewrite does: it names
        the version being replaced, and a stale one could cut a later file that gets its
        inode number back. The version in memory is left alone (it is not locked here); the
        next use sees a new file and reads it."""
        raw = orjson.dumps(entries, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        try:
            self._clear_journal(durable=True)
            _replace_file(self.path, raw, NOLOCK_SUFFIX)
        except OSError as error:
            raise TasksFileError(self.path, f"cannot be written: {error.strerror}") from None

    def problem(self) -> str | None:
        """Why reads or writes cannot proceed right now, or None; for ``/health``."""
        try:
            with self._cache_lock:
                self._refresh()
            self._check_last_id()
            self._check_journal()
        except TasksFileError as error:
            return str(error)
        return _storage_problem(self.path, self._file_lock.lock_file)

    def _check_last_id(self) -> None:
        """``_last_id`` for /health, without the lock: a record read while a create writes it
        may look torn, so it counts only if a read 10 ms later fails too."""
        try:
            self._last_id()
        except TasksFileError:
            time.sleep(0.01)
            self._last_id()

    def _check_journal(self) -> None:
        """Raise if the journal is damaged, without the lock: a record read while a writer
        writes it may look cut short, so it counts only if a second read finds the same."""
        try:
            with open(self._journal_path, "rb") as handle:
                first = handle.read(JOURNAL_MAX_BYTES)
            if not first:
                return
            with contextlib.suppress(ValueError):
                JournalRecord.decode(first)
                return
            time.sleep(0.01)
            with open(self._journal_path, "rb") as handle:
                again = handle.read(JOURNAL_MAX_BYTES)
            if again == first:
                self._journal_record(first)
        except OSError:
            return  # gone or unreadable meanwhile: the next lock holder will say

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
            if self._signature == NOTHING_READ or not self._journal_pending():
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
            raw = _pread(fd, stat.st_size, 0, self.path)
            if _signature(os.fstat(fd)) != signature:  # another server appended meanwhile
                raise TasksFileError(self.path, "changed while it was read; read it again")
        finally:
            os.close(fd)
        entries = _parse(raw, self.path)  # before forgetting: a failed read keeps memory
        self._forget()
        self._index(entries)
        self._seen(signature, raw)
        with contextlib.suppress(TasksFileError):  # reads go on; writes check it themselves
            self._next_id = max(self._next_id, self._last_id() + 1)

    def _unchanged(self, fd: int, signature: Signature) -> bool:
        """Same inode, size and mtime, and the same last bytes (so the same newest task)."""
        if signature != self._signature:
            return False
        return _pread(fd, len(self._tail), signature[1] - len(self._tail), self.path) == self._tail

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
        data = _pread(fd, size - start, start, self.path)
        head = len(self._tail) - len(CLOSING)
        if data[:head] != self._tail[:head] or data[head : head + 1] != b",":
            return False
        if not data.endswith(CLOSING):
            return False
        added = _new_tasks(data[head + 1 :], self._by_id)
        if added is None:
            return False
        self._index(added)
        self._seen(signature, data)
        return True

    def _last_id(self) -> int:
        """The id high-water mark; 0 when none was stored yet. One that cannot be read or is
        not an id refuses new ids: guessing low could give a deleted newest task's id again."""
        try:
            with open(self._last_id_path, "rb") as handle:
                raw = handle.read(64)
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise self._unrecorded(f"cannot be read: {error.strerror}") from None
        last = _id_record(raw)
        if not 0 <= last <= MAX_TASK_ID:
            raise self._unrecorded(f"holds {raw[:24]!r}, not an id from 0 to {MAX_TASK_ID}")
        return last

    def _unrecorded(self, why: str) -> TasksFileError:
        problem = (
            f"its id record {self._last_id_path.name} {why}; write in it the highest id "
            "ever given (at least the highest in the file)"
        )
        return TasksFileError(self.path, problem, "task_ids_unrecorded")

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
                    self._recover()
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
        added = _append_bytes({**task, **private})
        inode, size, _ = self._signature
        before = self._tail[: -len(CLOSING)]
        record = JournalRecord(inode, size, _prefix_crc(before), added)
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
                self._write_journal(record)
                written = os.pwrite(fd, added, size - len(CLOSING))
                if written != len(added):
                    raise OSError(28, "short write (is the disk full?)")
                os.fsync(fd)
                stat = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as error:
            self._cut_back(record)
            raise TasksFileError(self.path, f"cannot be written: {error.strerror}") from None
        self._clear_journal()
        self._index([{**task, **private}])
        self._seen(_signature(stat), self._tail[: -len(CLOSING)] + added)
        return True

    def _rewrite(self, entries: list[Task]) -> None:
        """Replace the file atomically (temporary file, fsync, rename, fsync the folder) and
        take ``entries`` as the version in memory."""
        raw = orjson.dumps(entries, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        try:
            # A journal must never outlive the version it names: the new file may even get
            # the old inode number back, and a stale journal would then cut it.
            self._clear_journal(durable=True)
            stat = _replace_file(self.path, raw)
        except OSError as error:
            self._forget()
            raise TasksFileError(self.path, f"cannot be written: {error.strerror}") from None
        next_id = self._next_id
        self._forget()
        self._index(entries)  # pops the private fields, which only copies carry
        self._next_id = max(self._next_id, next_id)
        self._seen(_signature(stat), raw)

    def _cut_back(self, record: JournalRecord) -> None:
        """Undo an append that failed here: it was never answered, so it is cut even if
        whole. If that fails too, the journal is marked ``cut`` (and this process remembers
        it), so the next lock holder cuts it instead of keeping a task nobody was given."""
        self._forget()
        try:
            self._undo_append(record, keep_whole=False)
            self._clear_journal()
            return
        except (OSError, TasksFileError):
            pass
        self._cut_pending = replace(record, keep=False)
        with contextlib.suppress(OSError):
            self._write_journal(self._cut_pending)

    def _remember_last_id(self, task_id: int) -> None:
        """Store the id high-water mark durably before the id is used; a mark that cannot be
        stored refuses the write, since ids must never repeat. Written in place and fsynced
        (one fsync, as the journal: a rename would need two), with a checksum, so a torn
        record reads as damaged (creates refused), never as a lower id; the folder is fsynced
        when the file is new."""
        record = b"%d %08x\n" % (task_id, zlib.crc32(b"%d" % task_id))
        try:
            created = not self._last_id_path.exists()
            fd = os.open(self._last_id_path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if os.pwrite(fd, record, 0) != len(record):
                    raise OSError(28, "short write (is the disk full?)")
                if os.fstat(fd).st_size != len(record):  # a longer hand-written one
                    os.ftruncate(fd, len(record))
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_folder(self._last_id_path.parent)
        except OSError as error:
            raise self._unrecorded(f"cannot be written: {error.strerror}") from None

    # -- the journal: undoing an append a crash cut short ----------------------------------

    def _write_journal(self, entry: JournalRecord) -> None:
        """Record, durably and before the append, the file as it is without it."""
        fd = os.open(self._journal_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            record = entry.encode()
            os.ftruncate(fd, 0)
            if os.pwrite(fd, record, 0) != len(record):
                raise OSError(28, "short write (is the disk full?)")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _clear_journal(self, durable: bool = False) -> None:
        """An empty journal: no append in flight. After an append it is not fsynced (a journal
        that survives a power cut only makes the next lock holder check that whole append);
        ``durable`` before a rewrite, which must leave no journal behind."""
        if not durable:
            with contextlib.suppress(OSError):  # the next append overwrites it anyway
                os.truncate(self._journal_path, 0)
            return
        fd = os.open(self._journal_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _journal_pending(self) -> bool:
        try:
            return self._journal_path.stat().st_size > 0
        except OSError:
            return False

    def _recover(self) -> None:
        """Finish what a writer that died mid-append left (caller holds the file lock): keep
        the append if it is whole, else cut the file back to where it ended before it. A
        record that is not whole, or does not match the file, leaves the file as it is."""
        try:
            with open(self._journal_path, "rb") as handle:
                raw = handle.read(JOURNAL_MAX_BYTES)
        except FileNotFoundError:
            return
        except OSError as error:
            raise TasksFileError(
                self.path, f"its journal cannot be read: {error.strerror}"
            ) from None
        if not raw:
            return
        record = self._journal_record(raw)
        if (pending := self._cut_pending) and (pending.inode, pending.size) == (
            record.inode,
            record.size,
        ):
            record = pending  # this process failed that append: never keep it
        try:
            self._undo_append(record, keep_whole=record.keep)
        except OSError as error:
            raise TasksFileError(self.path, f"cannot be repaired: {error.strerror}") from None
        self._cut_pending = None
        self._clear_journal()

    def _journal_record(self, raw: bytes) -> JournalRecord:
        try:
            return JournalRecord.decode(raw)
        except ValueError as error:
            raise self._damaged(f"its journal record {error}") from None

    def _damaged(self, why: str) -> TasksFileError:
        """A journal that cannot be trusted: the file is left as it is for a person."""
        problem = (
            f"{why}; the file was left as it is: check that it ends with a whole task, "
            f"then empty {self._journal_path.name}"
        )
        return TasksFileError(self.path, problem, "tasks_journal_damaged")

    def _undo_append(self, record: JournalRecord, keep_whole: bool) -> None:
        """Cut the file back to ``record.size`` bytes, unless ``keep_whole`` and the append
        after them is whole (a crash after its write: it is kept, and made durable). Only
        when the cut lands on that append's start and removes nothing but part of it."""
        with contextlib.suppress(FileNotFoundError), open(self.path, "r+b") as handle:
            stat = os.fstat(handle.fileno())
            cut = record.size - len(CLOSING)
            if cut < 0 or stat.st_ino != record.inode or stat.st_size < cut:
                return  # replaced or emptied since: the record is stale
            start = max(0, cut - JOURNAL_PREFIX_BYTES)
            handle.seek(start)
            before = handle.read(cut - start)
            after = handle.read(len(record.added) + 1)  # one more: more is never one task
            if _prefix_crc(before) != record.prefix_crc:
                raise self._damaged(f"the journal names an append at byte {cut}, not there")
            if not _part_of(after, record.added):
                raise self._damaged(
                    f"the {len(after)} bytes after byte {cut} are not the journal's append"
                )
            if keep_whole and after == record.added:
                os.fsync(handle.fileno())  # the writer may have died before its fsync
                return
            handle.seek(cut)
            handle.write(CLOSING)
            handle.truncate(record.size)
            handle.flush()
            os.fsync(handle.fileno())
        self._forget()


def _id_record(raw: bytes) -> int:
    """The id in a ``tasks.json.lastid`` record (``<id> <crc32>``, or an id written by
    hand); -1 when it is neither."""
    fields = raw.split()
    try:
        last = int(fields[0])
    except (IndexError, ValueError):
        return -1
    if len(fields) == 1 and raw.strip() == fields[0]:
        return last
    if len(fields) == 2 and fields[1] == b"%08x" % zlib.crc32(fields[0]):
        return last
    return -1


def _append_bytes(entry: Task) -> bytes:
    """What an append writes over the closing bracket: exactly a full write's bytes there."""
    rendered = orjson.dumps(entry, option=orjson.OPT_INDENT_2)
    return b",\n  " + rendered.replace(b"\n", b"\n  ") + CLOSING


def _prefix_crc(before: bytes) -> int:
    """CRC-32 of the last bytes before an append's start, which fix where it began."""
    return zlib.crc32(before[-JOURNAL_PREFIX_BYTES:])


def _part_of(after: bytes, added: bytes) -> bool:
    """True when ``after`` (the bytes from an append's start) can be what a crash left of
    ``added``: no longer, and each byte the append's own, zero (a power cut's unwritten
    page) or, in the first three, the closing bracket it wrote over."""
    if len(after) > len(added):
        return False
    return all(
        byte in (added[i], 0) or (i < len(CLOSING) and byte == CLOSING[i])
        for i, byte in enumerate(after)
    )


def new_task(task_id: int, title: str, completed: bool, server: str) -> Task:
    """A task's public fields, in the order the file holds them."""
    now = utc_now_iso()
    return {
        "id": task_id,
        "title": title,
        "completed": completed,
        "created_at": now,
        "updated_at": now,
        "server": server,
    }


def read_tasks(path: Path) -> list[Task]:
    """Every task in ``path`` as stored (private fields too), read whole and checked like any
    read (:class:`TasksFileError` when it does not parse); a missing file holds none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise TasksFileError(path, f"cannot be read: {error.strerror}") from None
    return _parse(raw, path)


def _replace_file(path: Path, raw: bytes, suffix: str = ".tmp") -> os.stat_result:
    """``raw`` becomes ``path``'s content at once: a uniquely named temporary file in the
    same folder, fsynced, renamed over it, then the folder fsynced so the rename survives a
    power cut too. Readers see the old file or the new one, never a mix. Answers the new
    file's stat; raises OSError (the temporary file removed)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}{suffix}")
    try:
        with open(temporary, "xb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
            stat = os.fstat(handle.fileno())
        _rename_over(temporary, path)
        _fsync_folder(path.parent)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    return stat


def _new_tasks(data: bytes, known: dict[int, Task]) -> list[Task] | None:
    """The tasks in ``data`` (an array's elements after its first, then ``]``), or None
    unless they are whole tasks with new, distinct ids in range."""
    try:
        added = orjson.loads(b"[" + data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(added, list) or not added or _problem_in(added):
        return None
    return added if all(task["id"] not in known for task in added) else None


def _signature(stat: os.stat_result) -> Signature:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _pread(fd: int, length: int, offset: int, path: Path) -> bytes:
    """``length`` bytes from ``offset``, or fewer if the file is shorter."""
    chunks: list[bytes] = []
    try:
        while length > 0 and (chunk := os.pread(fd, min(length, 1 << 20), offset)):
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
    except OSError as error:
        raise TasksFileError(path, f"cannot be read: {error.strerror}") from None
    return b"".join(chunks)


def _parse(raw: bytes, path: Path) -> list[Task]:
    """The tasks in ``raw``; a blank file counts as ``[]`` (``> tasks.json`` empties it)."""
    if not raw.strip():
        return []
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise TasksFileError(path, f"is not valid JSON ({error}); fix or reset it") from None
    if not isinstance(data, list):
        raise TasksFileError(path, "must hold a JSON array of tasks, like []")
    if problem := _problem_in(data):
        raise TasksFileError(path, problem)
    return data


def _problem_in(entries: list[Any]) -> str | None:
    """What makes ``entries`` not a list of stored tasks, or None."""
    seen: set[int] = set()
    for position, task in enumerate(entries):
        task_id = task.get("id") if isinstance(task, dict) else None
        if type(task_id) is not int:
            return f"item {position} is not a task with an integer id"
        if not 0 < task_id <= MAX_TASK_ID:
            return f"task id {task_id} is not between 1 and {MAX_TASK_ID}"
        if task_id in seen:
            return f"task id {task_id} appears twice"
        seen.add(task_id)
        for field in (KEY_FIELD, DIGEST_FIELD):
            if not isinstance(task.get(field, ""), str | None):
                return f"task {task_id} has a {field} that is not text"
    return None


def _storage_problem(path: Path, lock_file: str) -> str | None:
    """What would make the next write fail though reads work: the folder, the lock file or
    the disk. Checked by doing what a write does, since permissions alone can mislead (root)."""
    if not os.access(path.parent, os.W_OK):
        return f"{path}: its folder is not writable"
    try:
        os.close(os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as error:
        return f"{path}: its lock file {lock_file} cannot be opened: {error.strerror}"
    try:
        os.close(os.open(path, os.O_WRONLY))
    except FileNotFoundError:
        pass  # the next write creates it
    except OSError as error:
        return f"{path}: cannot be opened for writing: {error.strerror}"
    try:
        disk = os.statvfs(path.parent)
    except OSError:
        return None
    free = disk.f_bavail * disk.f_frsize
    if free < MIN_FREE_BYTES:
        return f"{path}: the disk is full ({free // 1024} KiB free)"
    return None


def _rename_over(source: Path, target: Path) -> None:
    """``os.replace``; on Windows it fails while a reader has the target open, so retry briefly
    there (readers hold it for a few ms)."""
    for attempt in range(WINDOWS_RENAME_ATTEMPTS):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if os.name != "nt" or attempt == WINDOWS_RENAME_ATTEMPTS - 1:
                raise
            time.sleep(0.01)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (it lives in the folder's entry list). Windows cannot
    open a folder as a file; NTFS journals the rename itself."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The shared ``tasks.json``: one JSON array that several servers read and write safely.

Every change is a read-modify-write under a lock held across processes (``tasks.json.lock``),
and the new content replaces the old by an fsynced temporary file renamed over it, so a crash
at any instant leaves either the old or the new complete file. A file that does not parse is
never written: every call answers :class:`TasksFileError` until a person fixes it.

Parsing 10,000 tasks takes ~20 ms, so the parsed list is cached and reused while the file is
unchanged. "Unchanged" is decided like git's index: the ``os.stat`` signature (inode, size,
mtime) must match and, because mtimes are coarse, a file modified too recently to trust its
mtime is also compared byte for byte with the bytes the cache came from.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
WINDOWS_RENAME_ATTEMPTS = 50
CLOSING = b"\n]\n"  # how every version this module writes ends (orjson, indent 2, newline)
# File mtimes come from a coarse kernel clock (a tick of up to ~10 ms); anything modified more
# recently than this may share its mtime with a later write, so its bytes are compared.
RACY_WINDOW_NS = 100_000_000
# A hold (``hold_writes``) waits this long for a write in progress; a longer one is waiting for
# another process's file lock, and the caller is better told than kept waiting.
HOLD_WAIT_SECONDS = 1.5


class TasksFileError(Exception):
    """The tasks file cannot be used (does not parse, cannot be read or written, is locked)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class TaskNotFound(LookupError):
    """No task with that id in the file."""


Signature = tuple[int, int, int]  # st_ino, st_size, st_mtime_ns


class Snapshot:
    """One version of the file: its bytes, its tasks and the indexes the hot paths need."""

    def __init__(self, signature: Signature, raw: bytes, tasks: list[Task], settled: bool) -> None:
        self.signature = signature
        self.raw = raw
        self.tasks = tasks
        self.settled = settled  # True when the mtime is old enough to trust the signature alone
        self.by_id = {task["id"]: task for task in tasks}
        self.by_key = {
            task["idempotency_key"]: task for task in tasks if task.get("idempotency_key")
        }
        self.next_id = max(self.by_id, default=0) + 1

    def plus(self, added: list[Task], signature: Signature, raw: bytes, settled: bool) -> Snapshot:
        """The version ``raw`` that holds these tasks and then ``added``: takes over these
        indexes instead of rebuilding them (10,000 tasks take ~5 ms to index), so ``self``
        must not be used afterwards."""
        successor = copy.copy(self)
        successor.signature, successor.raw, successor.settled = signature, raw, settled
        successor.tasks = [*self.tasks, *added]
        for task in added:
            successor.by_id[task["id"]] = task
            if task.get("idempotency_key"):
                successor.by_key[task["idempotency_key"]] = task
            successor.next_id = max(successor.next_id, task["id"] + 1)
        return successor

    def added_in(self, raw: bytes) -> list[Task] | None:
        """The tasks ``raw`` adds at the end of this version (another server's creates), or
        None when ``raw`` is any other change. Parsing only that tail spares two servers that
        alternate writes a full parse each time. Sound because ``raw`` starts with this
        version's text up to its closing bracket, and the rest parses as an array by itself."""
        head = len(self.raw) - len(CLOSING)
        if not self.tasks or not self.raw.endswith(CLOSING) or raw[head : head + 1] != b",":
            return None
        if not raw.startswith(self.raw[:head]):
            return None
        try:
            added = orjson.loads(b"[" + raw[head + 1 :])
        except orjson.JSONDecodeError:
            return None
        ids = [task.get("id") if isinstance(task, dict) else None for task in added]
        if not ids or len(set(ids)) != len(ids):
            return None
        return added if all(type(i) is int and i not in self.by_id for i in ids) else None


def _nothing_read() -> Snapshot:
    """The version of a missing file, or before the first read: no tasks."""
    return Snapshot((0, 0, 0), b"", [], settled=False)


class TaskStore:
    """Tasks in one JSON file shared by every server given the same path.

    Methods block (file I/O, locks): call them from a worker thread, not the event loop.
    Returned tasks are never mutated afterwards; a change builds new dicts and a new list.
    """

    def __init__(self, path: Path, server: str) -> None:
        self.path = path
        self.server = server
        self._writer_lock = threading.Lock()  # writers of this process queue here, cheaply
        self._cache_lock = threading.Lock()  # guards the snapshot; never held while waiting
        self._hold = threading.Condition()  # guards _held_until; one hold_writes at a time
        self._held_until = 0.0  # monotonic end of a hold of the writer lock; 0: no hold
        lock_path = path.with_name(path.name + ".lock")
        # The highest id ever handed out: deleting the newest task must not free its id.
        self._last_id_path = path.with_name(path.name + ".lastid")
        self._file_lock = FileLock(lock_path, timeout=LOCK_TIMEOUT_SECONDS)
        self._snapshot = _nothing_read()

    # -- the public operations -------------------------------------------------------------

    def prepare(self) -> None:
        """Create the folder and an empty ``[]`` file when missing; drop temporaries of crashes."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TasksFileError(self.path, f"cannot create its folder: {error.strerror}") from None
        with self._exclusive():
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                leftover.unlink(missing_ok=True)
            if not self.path.exists():
                self._replace([])

    def list(self) -> list[Task]:
        with self._cache_lock:
            return self._load().tasks

    def get(self, task_id: int) -> Task:
        with self._cache_lock:
            return _find(self._load(), task_id)

    def count(self) -> int:
        """Tasks in the last version read; no I/O, for metrics."""
        return len(self._snapshot.tasks)

    def create(
        self, title: str, completed: bool = False, idempotency_key: str | None = None
    ) -> tuple[Task, bool]:
        """Add a task; with a key already in the file, return that task and ``True`` instead."""
        with self._exclusive():
            snapshot = self._load()
            if idempotency_key and idempotency_key in snapshot.by_key:
                return snapshot.by_key[idempotency_key], True
            now = utc_now_iso()
            task: Task = {
                "id": max(snapshot.next_id, self._last_id() + 1),
                "title": title,
                "completed": completed,
                "created_at": now,
                "updated_at": now,
                "server": self.server,
                "idempotency_key": idempotency_key,
            }
            signature, raw = self._write([*snapshot.tasks, task])
            self._snapshot = snapshot.plus([task], signature, raw, settled=False)
            self._remember_last_id(task["id"])
            return task, False

    def update(self, task_id: int, changes: dict[str, Any]) -> Task:
        """Apply ``changes`` (title and/or completed) and stamp ``updated_at``."""
        with self._exclusive():
            snapshot = self._load()
            old = _find(snapshot, task_id)
            new = {**old, **changes, "updated_at": utc_now_iso()}
            self._replace([new if task is old else task for task in snapshot.tasks])
            return new

    def delete(self, task_id: int) -> Task:
        with self._exclusive():
            snapshot = self._load()
            old = _find(snapshot, task_id)
            self._replace([task for task in snapshot.tasks if task is not old])
            return old

    def hold_writes(self, seconds: float, wait: float = HOLD_WAIT_SECONDS) -> float | None:
        """Keep this process's writers out for ``seconds``, so it holds no file lock meanwhile.

        Takes the writer lock (a write in progress finishes first and releases the file lock)
        and leaves a thread to release it when the time is up. A process frozen within that
        time (SIGSTOP, ``docker pause``) therefore never holds the file lock, and since the
        monotonic clock keeps running while it is frozen, the hold is over the moment it
        resumes. Reads are not held. A call during a hold extends it. Answers the seconds the
        hold has left, or None when a write did not finish within ``wait`` (it waits for
        another process's file lock).
        """
        with self._hold:
            if not self._held_until:
                if not self._writer_lock.acquire(timeout=wait):
                    return None
                threading.Thread(target=self._release_when_due, daemon=True).start()
            self._held_until = max(self._held_until, time.monotonic() + seconds)
            return self._held_until - time.monotonic()

    def end_hold(self) -> bool:
        """End a hold now (the process was resumed early); False when there was none."""
        with self._hold:
            if not self._held_until:
                return False
            self._held_until = time.monotonic()
            self._hold.notify()
            return True

    def _release_when_due(self) -> None:
        with self._hold:
            while (left := self._held_until - time.monotonic()) > 0:
                self._hold.wait(left)
            self._held_until = 0.0
            self._writer_lock.release()

    def problem(self) -> str | None:
        """Why the file is unusable right now, or None when reads and writes can proceed."""
        try:
            with self._cache_lock:
                self._load()
        except TasksFileError as error:
            return str(error)
        if not os.access(self.path.parent, os.W_OK):
            return f"{self.path}: its folder is not writable"
        return None

    # -- reading and writing the file ------------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The right to change the file: this process's writers queue on a thread lock, then
        the cross-process file lock, then the cache (so readers wait only for the change)."""
        with self._writer_lock:
            try:
                self._file_lock.acquire(poll_interval=LOCK_POLL_SECONDS)
            except Timeout:
                problem = f"is locked by another process for more than {LOCK_TIMEOUT_SECONDS} s"
                raise TasksFileError(self.path, problem) from None
            except OSError as error:
                problem = f"its lock file cannot be created: {error.strerror}"
                raise TasksFileError(self.path, problem) from None
            try:
                with self._cache_lock:
                    yield
            finally:
                self._file_lock.release()

    def _load(self) -> Snapshot:
        """The file's current content; the cache when it is provably unchanged. Missing: []."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self._snapshot = _nothing_read()
            return self._snapshot
        except OSError as error:
            raise TasksFileError(self.path, f"cannot be opened: {error.strerror}") from None
        try:
            stat = os.fstat(fd)
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            cached = self._snapshot
            if cached.settled and signature == cached.signature:
                return cached
            raw = _read_all(fd, self.path)
        finally:
            os.close(fd)
        settled = time.time_ns() - stat.st_mtime_ns > RACY_WINDOW_NS
        if raw == cached.raw:
            cached.signature, cached.settled = signature, settled
            return cached
        added = cached.added_in(raw)
        if added is not None:
            self._snapshot = cached.plus(added, signature, raw, settled)
        else:
            self._snapshot = Snapshot(signature, raw, _parse(raw, self.path), settled)
        return self._snapshot

    def _last_id(self) -> int:
        """The id high-water mark; 0 when its file is missing or unreadable."""
        try:
            return int(self._last_id_path.read_bytes())
        except (OSError, ValueError):
            return 0

    def _remember_last_id(self, task_id: int) -> None:
        """Best effort: without it, ids stay unique among stored tasks (max id + 1)."""
        with contextlib.suppress(OSError):
            self._last_id_path.write_bytes(str(task_id).encode())

    def _replace(self, tasks: list[Task]) -> None:
        """Write ``tasks`` and remember them as the current version."""
        signature, raw = self._write(tasks)
        self._snapshot = Snapshot(signature, raw, tasks, settled=False)

    def _write(self, tasks: list[Task]) -> tuple[Signature, bytes]:
        """Replace the file atomically: temporary file, fsync, rename, fsync the folder."""
        raw = orjson.dumps(tasks, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "xb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
                stat = os.fstat(handle.fileno())
            _rename_over(temporary, self.path)
            _fsync_folder(self.path.parent)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            self._snapshot = _nothing_read()
            raise TasksFileError(self.path, f"cannot be written: {error.strerror}") from None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns), raw


def _find(snapshot: Snapshot, task_id: int) -> Task:
    try:
        return snapshot.by_id[task_id]
    except KeyError:
        raise TaskNotFound(task_id) from None


def _read_all(fd: int, path: Path) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
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
    seen: set[int] = set()
    for position, task in enumerate(data):
        task_id = task.get("id") if isinstance(task, dict) else None
        if type(task_id) is not int:
            raise TasksFileError(path, f"item {position} is not a task with an integer id")
        if task_id in seen:
            raise TasksFileError(path, f"task id {task_id} appears twice")
        seen.add(task_id)
    return data


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

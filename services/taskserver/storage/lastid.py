"""``tasks.json.lastid``: the highest id ever handed out, so that no id is given twice, not
even a deleted newest task's or one fault mode nolock gave. Stored durably before the id is
used; one that cannot be read or trusted refuses new ids rather than guess low.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

from services.taskserver.storage.disk import fsync_folder, pwrite_all
from services.taskserver.storage.model import MAX_TASK_ID, TasksFileError


class IdRecord:
    """The id high-water mark beside one tasks file."""

    def __init__(self, tasks_path: Path) -> None:
        self.tasks_path = tasks_path
        self.path = tasks_path.with_name(tasks_path.name + ".lastid")

    def read(self) -> int:
        """The mark; 0 when none was stored yet. One that cannot be read or is not an id
        refuses new ids: guessing low could give a deleted newest task's id again."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read(64)
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise self._unrecorded(f"cannot be read: {error.strerror}") from None
        last = _parse_record(raw)
        if not 0 <= last <= MAX_TASK_ID:
            raise self._unrecorded(f"holds {raw[:24]!r}, not an id from 0 to {MAX_TASK_ID}")
        return last

    def check(self) -> None:
        """:meth:`read` for /health, without the lock: a record read while a create writes it
        may look torn, so it counts only if a read 10 ms later fails too."""
        try:
            self.read()
        except TasksFileError:
            time.sleep(0.01)
            self.read()

    def write(self, task_id: int) -> None:
        """Store the mark durably before the id is used; a mark that cannot be stored refuses
        the write, since ids must never repeat. Written in place and fsynced (one fsync, as
        the journal: a rename would need two), with a checksum, so a torn record reads as
        damaged (creates refused), never as a lower id; the folder is fsynced when the file
        is new."""
        record = b"%d %08x\n" % (task_id, zlib.crc32(b"%d" % task_id))
        try:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                pwrite_all(fd, record, 0)
                if os.fstat(fd).st_size != len(record):  # a longer hand-written one
                    os.ftruncate(fd, len(record))
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_folder(self.path.parent)
        except OSError as error:
            raise self._unrecorded(f"cannot be written: {error.strerror}") from None

    def _unrecorded(self, why: str) -> TasksFileError:
        problem = (
            f"its id record {self.path.name} {why}; write in it the highest id "
            "ever given (at least the highest in the file)"
        )
        return TasksFileError(self.tasks_path, problem, "task_ids_unrecorded")


def _parse_record(raw: bytes) -> int:
    """The id in a record (``<id> <crc32>``, or an id written by hand); -1 when it is
    neither."""
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

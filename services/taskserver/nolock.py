"""Fault mode ``nolock``: create a task the way naive code does, and lose tasks on purpose.

The lesson of the shared ``tasks.json``: every server reads the file, adds its task and writes
the file back. Without the lock, two of them (or two threads of one) read the same version,
and the second write replaces the first::

    server1 reads [1, 2]
                                   server2 reads [1, 2]
    server1 writes [1, 2, 3 "a"]   -> 201 {"id": 3, "title": "a"}
                                   server2 writes [1, 2, 3 "b"]   -> 201 {"id": 3, "title": "b"}

Task "a" was answered 201 and is gone; both were given id 3. That is all this mode changes:
creates skip the file lock and this server's write queue (``writers.py``), and ignore
``Idempotency-Key`` (naive code keeps no keys). Reads, updates and deletes stay normal.

What it keeps, so that the lesson costs nothing afterwards:

- **The file is never torn nor left in another format**: the new version goes to a uniquely
  named temporary file in the same folder that is renamed over ``tasks.json``
  (:meth:`TaskStore.replace_without_lock`), in the exact format the normal store writes. A
  file that does not parse is never written (503, as always).
- **No id a client was given is handed out again** once the mode is back to ``none``: the
  high-water mark (``tasks.json.lastid``) is raised under the lock before the write, the one
  step that takes it (through the server's write queue, so a held lock holds no thread), and
  normal creates take the next id above it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from services.taskserver.storage.format import read_tasks
from services.taskserver.storage.model import Task, TasksFileError, check_new_id, new_task

# A read may catch a normal server's append half-written (a server in mode none beside this
# one): read again, briefly, before answering 503 with what does not parse.
READ_ATTEMPTS = 3
READ_RETRY_SECONDS = 0.002


class TaskStore(Protocol):
    """What of the file store (``storage/file.py``, whose ``read_naively`` and
    ``write_naively`` call these) a naive create uses."""

    path: Path
    server: str

    def replace_without_lock(self, entries: list[Task]) -> None: ...


def read_naively(store: TaskStore, title: str, completed: bool) -> tuple[list[Task], Task]:
    """Steps 1 and 2 of a naive create: read the whole file (no lock), and make the task with
    the highest id in it + 1. The caller raises ``tasks.json.lastid`` to that id, the one
    step under the lock (queued as every write, so waiting for it holds no thread), then
    writes the file back with ``write_naively``."""
    entries = _read(store)
    task_id = max((entry["id"] for entry in entries), default=0) + 1
    check_new_id(task_id, store.path)
    return entries, new_task(task_id, title, completed, store.server)


def write_naively(store: TaskStore, entries: list[Task], task: Task) -> None:
    """Steps 3 and 4: append the task to what was read and write it all back, no lock: a
    create that read the same version meanwhile is overwritten."""
    store.replace_without_lock([*entries, task])


def _read(store: TaskStore) -> list[Task]:
    attempt = 1
    while True:
        try:
            return read_tasks(store.path)
        except TasksFileError:
            if attempt == READ_ATTEMPTS:
                raise
        attempt += 1
        time.sleep(READ_RETRY_SECONDS)

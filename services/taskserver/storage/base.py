"""What the app asks of a task store, whichever backend holds the tasks (``file.py``, the
shared ``tasks.json``; ``postgres.py``, a PostgreSQL database).

Every method but ``count``, ``lock_wait`` and ``describe`` may block (file locks, network
round trips): the app calls them from worker threads, and the writes through its write queue
(``writers.py``), which takes ``writer_lock`` for a quiesce.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from services.taskserver.storage.model import Task


class Store(Protocol):
    writer_lock: threading.Lock
    server: str

    def prepare(self) -> None:
        """Make the storage ready to use (an empty file, the database's schema)."""

    def page(
        self, offset: int = 0, limit: int | None = None, newest_first: bool = False
    ) -> tuple[list[Task], int]:
        """``limit`` tasks from ``offset`` (from the oldest, or the newest when
        ``newest_first``) and how many there are in all."""
        ...

    def get(self, task_id: int) -> Task:
        """The task with that id, or :class:`TaskNotFound`."""
        ...

    def count(self) -> int:
        """Tasks as last seen; no I/O (metrics call it in the event loop)."""
        ...

    def create(
        self, title: str, completed: bool = False, idempotency_key: str | None = None
    ) -> tuple[Task, bool]:
        """A new task and False; with a key already used for the same task, that task and
        True; :class:`KeyReused` for a key used for another task."""
        ...

    def update(self, task_id: int, changes: dict[str, Any]) -> Task: ...

    def delete(self, task_id: int) -> Task: ...

    def raise_last_id(self, task_id: int) -> None:
        """No id up to ``task_id`` is handed out again by a normal create."""

    def read_naively(self, title: str, completed: bool) -> tuple[Any, Task]:
        """Fault mode nolock, steps 1 and 2: read with no lock or transaction, and make the
        task with the highest id + 1; what was read comes back for ``write_naively``."""
        ...

    def write_naively(self, read: Any, task: Task) -> None:
        """Fault mode nolock, steps 3 and 4: write ``task`` over what was read, overwriting
        a create that read the same version meanwhile (the race-condition lesson)."""

    def problem(self) -> str | None:
        """Why reads or writes cannot proceed right now, or None; for ``/health``."""
        ...

    def lock_wait(self) -> float:
        """Seconds a write here has been waiting for the storage (0: none)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ``/health`` shows as ``storage``: the kind and where, never a password."""
        ...

    def close(self) -> None:
        """Give back what the store holds (connections)."""

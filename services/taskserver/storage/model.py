"""What any task store shares, whatever holds the tasks: a task's fields, the id range, the
digest that tells a repeated Idempotency-Key from a reused one, and the errors the app turns
into answers. The file backend (``file.py``) and the PostgreSQL one (``postgres.py``) build
on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from services.common import utc_now_iso

Task = dict[str, Any]

# The largest integer every JSON reader (JavaScript's included) holds exactly.
MAX_TASK_ID = 2**53 - 1


class StorageError(Exception):
    """The tasks cannot be read or written right now, whatever holds them: the app answers
    503 with ``code`` (services/errors.py) and ``fields``, which fill its sentence in."""

    def __init__(self, where: str, problem: str, code: str, fields: dict[str, str]) -> None:
        super().__init__(f"{where}: {problem}")
        self.problem = problem
        self.code = code  # of services/errors.py
        self.fields = fields


class TasksFileError(StorageError):
    """The tasks file cannot be used (does not parse, cannot be read or written, is locked)."""

    def __init__(self, path: Path, problem: str, code: str = "tasks_file_error") -> None:
        super().__init__(str(path), problem, code, {"tasks_file": str(path), "problem": problem})
        self.path = path


class StorageUnavailable(StorageError):
    """The task database cannot be used (unreachable, timed out, refused the statement);
    ``where`` is its URL with the password redacted."""

    def __init__(self, where: str, problem: str, code: str = "storage_unavailable") -> None:
        super().__init__(where, problem, code, {"storage": where, "problem": problem})


class StorageConfigError(Exception):
    """A storage setting that names no usable backend: refused before anything starts."""


class TaskNotFound(LookupError):
    """No task with that id in the file."""


class KeyReused(Exception):
    """An Idempotency-Key sent again with a different task: refused, never merged."""


ID_RANGE_USED = f"every task id up to {MAX_TASK_ID} is used; renumber or reset it"


def check_new_id(task_id: int, path: Path) -> None:
    """Refuse an id past the range: every create, locked or naive, says it in these words."""
    if task_id > MAX_TASK_ID:
        raise TasksFileError(path, ID_RANGE_USED)


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


def request_digest(title: Any, completed: Any) -> str:
    """What a create asked for, so a repeated key can be told from a reused one."""
    canonical = orjson.dumps({"completed": completed, "title": title})
    return hashlib.sha256(canonical).hexdigest()[:32]

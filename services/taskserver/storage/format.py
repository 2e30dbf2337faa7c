"""The shape of ``tasks.json``: one JSON array, indented so ``cat`` reads it, ending in
``\\n]\\n``. How a version is rendered, what an append writes over the closing bracket (the
same bytes a full write holds there), and what makes bytes a list of stored tasks. Kept apart
from the locks and the journal so that every writer, fault mode nolock's included, writes
and checks exactly this format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from services.taskserver.storage.model import MAX_TASK_ID, Task, TasksFileError

CLOSING = b"\n]\n"  # how every version this package writes ends (orjson, indent 2, newline)
# Stored with a task created with an Idempotency-Key, never shown in the API.
KEY_FIELD, DIGEST_FIELD = "idempotency_key", "request_digest"


def render_tasks(entries: list[Task]) -> bytes:
    """A whole version of the file holding ``entries`` (as stored)."""
    return orjson.dumps(entries, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def append_bytes(entry: Task) -> bytes:
    """What an append writes over the closing bracket: exactly a full write's bytes there."""
    rendered = orjson.dumps(entry, option=orjson.OPT_INDENT_2)
    return b",\n  " + rendered.replace(b"\n", b"\n  ") + CLOSING


def read_tasks(path: Path) -> list[Task]:
    """Every task in ``path`` as stored (private fields too), read whole and checked like any
    read (:class:`TasksFileError` when it does not parse); a missing file holds none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as error:
        raise TasksFileError(path, f"cannot be read: {error.strerror}") from None
    return parse_tasks(raw, path)


def parse_tasks(raw: bytes, path: Path) -> list[Task]:
    """The tasks in ``raw``; a blank file counts as ``[]`` (``> tasks.json`` empties it)."""
    if not raw.strip():
        return []
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise TasksFileError(path, f"is not valid JSON ({error}); fix or reset it") from None
    if not isinstance(data, list):
        raise TasksFileError(path, "must hold a JSON array of tasks, like []")
    if problem := problem_in(data):
        raise TasksFileError(path, problem)
    return data


def appended_tasks(data: bytes, known: dict[int, Task]) -> list[Task] | None:
    """The tasks in ``data`` (an array's elements after its first, then ``]``), or None
    unless they are whole tasks with new, distinct ids in range."""
    try:
        added = orjson.loads(b"[" + data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(added, list) or not added or problem_in(added):
        return None
    return added if all(task["id"] not in known for task in added) else None


def problem_in(entries: list[Any]) -> str | None:
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

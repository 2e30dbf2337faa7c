"""Where the task server keeps its tasks: what the app uses, whichever backend holds them.

Two backends meet the :class:`Store` protocol (``base.py``): the shared ``tasks.json``
(``file.py``, built from ``format.py``, ``journal.py``, ``lastid.py`` and ``disk.py``) and a
PostgreSQL database (``postgres.py``, imported only when a ``postgresql://`` URL is given, so
the file path never needs psycopg). ``model.py`` holds what both share. ``--storage`` names
one (:func:`storage_kind` reads it); :func:`open_store` opens it.
"""

from __future__ import annotations

from pathlib import Path

from services.taskserver.storage.base import Store
from services.taskserver.storage.file import LOCK_TIMEOUT_SECONDS, TaskStore
from services.taskserver.storage.model import (
    KeyReused,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    Task,
    TaskNotFound,
    TasksFileError,
)

__all__ = [
    "LOCK_TIMEOUT_SECONDS",
    "POSTGRES_INSTALL",
    "KeyReused",
    "StorageConfigError",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "Task",
    "TaskNotFound",
    "TaskStore",
    "TasksFileError",
    "open_store",
    "safe_storage",
    "storage_kind",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
POSTGRES_INSTALL = "pip install -e '.[postgres]'"


def storage_kind(value: str) -> tuple[str, str]:
    """``("file", path)`` or ``("postgresql", url)`` for a ``--storage`` value: ``file:PATH``,
    a bare path, or a ``postgresql://`` / ``postgres://`` URL. Anything else (another scheme,
    an empty value) raises :class:`StorageConfigError`, in one line with no password."""
    value = value.strip()
    if value.lower().startswith(POSTGRES_SCHEMES):
        return "postgresql", value
    if value.startswith("file:"):
        path = value.removeprefix("file:").removeprefix("//")
        if path:
            return "file", path
    elif value and "://" not in value:
        return "file", value
    shown = value.split("://", 1)[0] + "://…" if "://" in value else value
    raise StorageConfigError(
        f"--storage {shown!r} is not a storage: use file:PATH, a path, or postgresql://…"
    )


def safe_storage(value: str) -> str:
    """The ``--storage`` value as it may be shown: a URL's password redacted."""
    kind, where = storage_kind(value)
    if kind == "file":
        return where
    from services.taskserver.storage.postgres_url import redacted

    return redacted(where)


def open_store(storage: str | Path, server: str) -> Store:
    """The store ``storage`` names (a path: the file backend), not yet prepared. Without
    psycopg, a PostgreSQL URL raises :class:`StorageConfigError` saying how to install it."""
    if isinstance(storage, Path):
        return TaskStore(storage, server)
    kind, where = storage_kind(storage)
    if kind == "file":
        return TaskStore(Path(where).resolve(), server)
    try:
        from services.taskserver.storage.postgres import PostgresStore
    except ImportError as error:
        raise StorageConfigError(
            f"PostgreSQL storage needs psycopg and psycopg-pool ({error.name} is missing): "
            f"{POSTGRES_INSTALL}"
        ) from None
    return PostgresStore(where, server)

"""Both task stores for one test: ``--storage`` for each backend, and task servers on it."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from support import ServiceProcess, free_port

BACKENDS = ["file", "postgres"]
_databases = itertools.count(1)


def storage_for(request: pytest.FixtureRequest, folder: Path) -> str:
    """A ``--storage`` value for a fresh, empty store of the backend ``request.param``: a
    file in ``folder``, or a new database of the session's PostgreSQL (skipped, saying why,
    where none can run). Usable from fixtures of any scope."""
    if request.param == "file":
        return f"file:{folder / 'tasks.json'}"
    return request.getfixturevalue("postgres").create_database(f"backend{next(_databases)}")


def taskserver_on(
    name: str, storage: str, port: int | None = None, env: dict[str, str] | None = None
) -> ServiceProcess:
    """A task server process (not yet started) on ``storage``, given as ``--storage`` (empty:
    none, for a ``TICSLAB_STORAGE`` in ``env``)."""
    port = port or free_port()
    args = ["taskserver", "--name", name, "--host", "127.0.0.1", "--port", str(port)]
    return ServiceProcess([*args, "--storage", storage] if storage else args, port, env)

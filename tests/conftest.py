"""Fixtures shared by every test module."""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pgserver import PostgresServer, postgres_problem
from test_balancer_helpers import EchoBackend

_databases = itertools.count(1)


def pytest_configure() -> None:
    """Keep tests hermetic: no TICSLAB_* setting of the developer's leaks in, and no test (or
    server process it starts) reads or overwrites the developer's real token file."""
    for name in [name for name in os.environ if name.startswith("TICSLAB_")]:
        del os.environ[name]
    state = Path(tempfile.mkdtemp(prefix="ticslab-test-state-"))
    os.environ["TICSLAB_TOKEN_FILE"] = str(state / "token")


@pytest.fixture(scope="module")
def echoes() -> Iterator[list[EchoBackend]]:
    """Two echo backends, server1 and server2, for a module's balancer tests."""
    backends = [EchoBackend("server1").start(), EchoBackend("server2").start()]
    yield backends
    for backend in backends:
        backend.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (tests/pgserver.py); the tests that need it
    skip, saying why, where none can run."""
    if problem := postgres_problem():
        pytest.skip(problem)
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A new empty database of the session's server, for one test."""
    return postgres.create_database(f"test{next(_databases)}")

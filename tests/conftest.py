"""Fixtures shared by every test module."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_balancer_helpers import EchoBackend


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

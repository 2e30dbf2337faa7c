"""Fixtures shared by every test module."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure() -> None:
    """Keep tests hermetic: no TICSLAB_* setting of the developer's leaks in, and no test (or
    server process it starts) reads or overwrites the developer's real token file."""
    for name in [name for name in os.environ if name.startswith("TICSLAB_")]:
        del os.environ[name]
    state = Path(tempfile.mkdtemp(prefix="ticslab-test-state-"))
    os.environ["TICSLAB_TOKEN_FILE"] = str(state / "token")

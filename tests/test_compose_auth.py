"""Authentication at the edge under Compose: docker-compose.auth.yml gives the balancer the same
``--auth-users`` as ``ticslab up`` (a file made by ``ticslab passwd``), reached only through the
published port. Needs a Docker engine (``-m docker``), as tests/test_compose_e2e.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest
from support import TICSLAB
from test_compose_e2e import Stack, compose_for, skip_reason, start_stack

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if reason := skip_reason():
        pytest.skip(reason)
    tool = compose_for("v2")
    if isinstance(tool, str):
        pytest.skip(tool)
    users = tmp_path_factory.mktemp("compose-auth") / "users.htpasswd"
    command = [*TICSLAB, "passwd", str(users), "ana", "--cost", "4"]
    subprocess.run(command, input="secreto\n", text=True, check=True, capture_output=True)
    files = ["docker-compose.yml", "docker-compose.override.yml", "docker-compose.auth.yml"]
    stack = start_stack(tool, "auth", files, TICSLAB_AUTH_FILE=str(users), TICSLAB_CLIENT_TASKS="5")
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def test_compose_asks_for_credentials_and_passes_the_user_on(guarded: Stack) -> None:
    refused = httpx.get(guarded.url + "/tareas", timeout=10)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Basic realm="ticslab"'
    good = httpx.get(guarded.url + "/tareas", auth=("ana", "secreto"), timeout=10)
    assert good.status_code == 200
    assert httpx.get(guarded.url + "/status", timeout=10).status_code == 200
    stats = httpx.get(guarded.url + "/errors/stats", timeout=10).json()
    assert stats["error_types"]["401_UNAUTHORIZED"] >= 1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_compose_refuses_to_start_without_the_file(version: str) -> None:
    """Read by Compose itself: no engine needed."""
    tool = compose_for(version)
    if isinstance(tool, str):
        pytest.skip(tool)
    stack = start_stack(tool, "noauth", ["docker-compose.yml", "docker-compose.auth.yml"])
    stack.env.pop("TICSLAB_AUTH_FILE", None)
    done = stack.compose("config", "--quiet")
    assert done.returncode != 0 and "TICSLAB_AUTH_FILE" in done.stderr

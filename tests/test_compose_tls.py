"""TLS termination under Compose, on a real Docker engine: ``TICSLAB_TLS=1`` serves HTTPS on
the published TLS port with the local CA made in the volume ``tls``, which students copy out
with ``docker cp``; the servers behind stay plain HTTP. Skipped, with the reason, where
test_compose_e2e.py's stack cannot run."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import docker, wait_until
from test_compose_e2e import Compose, Stack, compose_for, skip_reason, start_stack

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def tls_stack() -> Iterator[Stack]:
    if reason := skip_reason():
        pytest.skip(reason)
    tool = compose_for("v2")
    if isinstance(tool, str):
        tool = compose_for("v1")
    if isinstance(tool, str):
        pytest.skip(tool)
    assert isinstance(tool, Compose)
    stack = start_stack(tool, "tls", ["docker-compose.yml"], TICSLAB_TLS="1")
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def test_https_answers_with_the_ca_copied_out_of_the_volume(
    tls_stack: Stack, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    docker("cp", "balancer:/app/tls/ca.pem", str(ca))  # as docs/docker.md says
    https = f"https://localhost:{tls_stack.env['TICSLAB_TLS_PORT']}"
    context = ssl.create_default_context(cafile=str(ca))

    def answered() -> httpx.Response:
        return httpx.get(f"{https}/tareas", verify=context, timeout=5)

    answer = wait_until(answered, timeout=60, what="the balancer's HTTPS port")
    assert answer.status_code == 200
    assert answer.headers["X-Upstream-Server"] in ("server1", "server2")
    assert httpx.get(tls_stack.url + "/health", timeout=5).status_code == 200  # HTTP still on

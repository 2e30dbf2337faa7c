"""``--compress`` under Compose: ``TICSLAB_COMPRESS`` reaches the balancer's container, whose
image carries brotli and zstd, and the published port answers compressed (real Docker
engine; skipped with the reason without one, as tests/test_compose_e2e.py)."""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator

import brotli
import httpx
import orjson
import pytest
from support import wait_until
from test_compose_e2e import Compose, Stack, compose_for, health, skip_reason, start_stack

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

DECODE = {
    "gzip": lambda data: zlib.decompress(data, 16 + zlib.MAX_WBITS),
    "br": brotli.decompress,
    "zstd": zstd.decompress,
}


@pytest.fixture(scope="module")
def compressing() -> Iterator[Stack]:
    if reason := skip_reason():
        pytest.skip(reason)
    tool = compose_for("v2")
    if isinstance(tool, str):
        tool = compose_for("v1")
    if not isinstance(tool, Compose):
        pytest.skip(tool)
    stack = start_stack(tool, "z", ["docker-compose.yml"], TICSLAB_COMPRESS="br,zstd,gzip")
    try:
        stack.up("balancer")  # and the servers it depends on; no clients
        wait_until(lambda: health("balancer") == "healthy", 90, 0.5, "balancer healthy")
        yield stack
    finally:
        stack.down()


def test_the_balancer_container_compresses_as_asked(compressing: Stack) -> None:
    with httpx.Client(base_url=compressing.url, timeout=10) as client:
        for n in range(40):
            client.post("/tareas", json={"title": f"tarea {n} para comprimir"}).raise_for_status()
        plain = client.get("/tareas", headers={"accept-encoding": "identity"}).content
        for encoding in DECODE:
            with client.stream("GET", "/tareas", headers={"accept-encoding": encoding}) as answer:
                raw = b"".join(answer.iter_raw())
            assert answer.headers["content-encoding"] == encoding
            assert orjson.loads(DECODE[encoding](raw)) == orjson.loads(plain)
            assert len(raw) < len(plain) / 3
        compression = client.get("/status").json()["compression"]
    assert compression["encodings"] == ["br", "zstd", "gzip"]
    assert compression["answers"] == 3

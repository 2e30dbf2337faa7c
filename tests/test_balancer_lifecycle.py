"""The balancer's parts start and stop as one: a part that fails to start closes what was
opened before it, and a background loop that crashes is reported and restarted."""

from __future__ import annotations

import asyncio
import gc

import pytest
from support import wait_until_async
from test_balancer_helpers import EchoBackend

from services.balancer.app import create_app
from services.balancer.config import BalancerConfig
from services.balancer.drivers import DriverFailure
from services.balancer.edge import GC_YOUNG_THRESHOLD, settle_garbage_collector
from services.balancer.health import HealthChecker
from services.balancer.server import Server


def check_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("health check of")]


def test_a_part_that_cannot_start_closes_the_parts_started_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TICSLAB_SUPERVISOR_URL", raising=False)
    backends = [("server1", "http://127.0.0.1:9"), ("server2", "http://127.0.0.1:9")]
    app = create_app(BalancerConfig(backends=backends, driver="local", token="t"))

    async def start() -> tuple[list[asyncio.Task[object]], bool]:
        with pytest.raises(DriverFailure, match="TICSLAB_SUPERVISOR_URL"):
            async with app.admin.router.lifespan_context(app.admin):
                pass  # never reached: control.start() fails
        upstream = app.proxy._upstream
        return check_tasks(), upstream is not None and upstream.closed

    left, proxy_closed = asyncio.run(start())
    assert left == [] and proxy_closed


@pytest.mark.slow  # 1.2-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_a_crashed_check_loop_is_reported_and_restarted() -> None:
    echo = EchoBackend("server1").start()
    server = Server("server1", echo.url)
    config = BalancerConfig(backends=[], check_interval=0.05, fast_check_interval=0.05)
    verdicts: list[bool] = []
    crashes: list[str] = []

    def on_verdict(server: Server, ok: bool, *rest: object) -> None:
        verdicts.append(ok)
        if len(verdicts) == 1:
            raise RuntimeError("a bug in applying a verdict")

    async def run() -> list[asyncio.Task[object]]:
        health = HealthChecker(config, on_verdict=on_verdict, on_crash=crashes.append)
        await health.start([server])
        await wait_until_async(lambda: len(verdicts) >= 3, timeout=10, what="checks go on")
        await health.stop()
        return check_tasks()

    try:
        left = asyncio.run(run())
    finally:
        echo.close()
    assert crashes == [
        "health check of server1 failed (RuntimeError: a bug in applying a verdict);"
        " restarted in 1 s"
    ]
    assert left == []  # stop() waited for every check to end


def test_serving_settles_the_collector_to_freeze_startup_objects_and_collect_young_less() -> None:
    threshold = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0  # what existed before serving is out of its sight
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)

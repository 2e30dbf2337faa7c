"""Health checks that hold on a loaded machine: a slow check is excused while live traffic
succeeds, a refused connection is not, a server found later takes traffic only after its
first passing check, and a control action is recorded even when its caller gave up."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from support import free_port, wait_until, wait_until_async
from test_balancer_helpers import TOKEN, EchoBackend, balancer_process, state_of, status_of

from services.balancer.app import create_app
from services.balancer.config import BalancerConfig

TRAFFIC_LIMIT = 2000  # requests, at most, of one traffic loop


class Traffic:
    """GETs through the balancer from a thread until ``stop``; answers counted by server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.by_server: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for _ in range(TRAFFIC_LIMIT):
                if self._stop.wait(0.02):
                    return
                try:
                    answer = client.get("/echo")
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                    continue
                self.by_server[answer.headers.get("x-upstream-server", answer.status_code)] += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


@pytest.fixture()
def echoes() -> Iterator[tuple[EchoBackend, EchoBackend]]:
    one, two = EchoBackend("server1").start(), EchoBackend("server2").start()
    yield one, two
    for backend in (one, two):
        backend.close()


def last_detail(balancer, name: str) -> str:  # type: ignore[no-untyped-def]
    server = next(s for s in status_of(balancer)["servers"] if s["name"] == name)
    return (server["last_check"] or {}).get("detail", "")


@pytest.mark.slow
def test_a_slow_check_is_excused_while_live_traffic_succeeds_and_a_refused_one_is_not(
    echoes: tuple[EchoBackend, EchoBackend],
) -> None:
    one, two = echoes
    backends = [("server1", one.url), ("server2", two.url)]
    balancer = balancer_process(backends, "round_robin").start()  # checks time out at 0.3 s
    try:
        wait_until(lambda: last_detail(balancer, "server2").startswith("200"), what="checked")
        two.health_delay = 1.0  # every check of server2 times out; its traffic is answered
        with Traffic(balancer.url) as traffic:
            wait_until(
                lambda: last_detail(balancer, "server2").startswith("timeout"), what="a timeout"
            )
            for _ in range(10):  # checks run every 0.2 s: many time out meanwhile
                assert state_of(balancer, "server2") == "UP"
                wait_until(lambda: "busy" in last_detail(balancer, "server2"), what="busy")
            served = traffic.by_server["server2"]
            one.close()  # a refused connection is DOWN at once, traffic or not
            wait_until(lambda: state_of(balancer, "server1") == "DOWN", timeout=5, what="DOWN")
            assert state_of(balancer, "server2") == "UP"
        assert served > 10 and traffic.failures == []
        # Nothing vouches for server2 any more: its timed-out checks count again.
        wait_until(lambda: state_of(balancer, "server2") == "DOWN", timeout=5, what="DOWN")
        assert "timeout" in last_detail(balancer, "server2")
    finally:
        balancer.close()


async def serve_in_loop(config: BalancerConfig) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """The balancer app on this event loop, so a test can call into it as discovery does."""
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=config.port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    await wait_until_async(lambda: server.started, what="balancer started")
    return server, task


def test_a_server_found_later_takes_no_traffic_before_its_first_passing_check(
    echoes: tuple[EchoBackend, EchoBackend],
) -> None:
    one, two = echoes
    two.healthy = False  # it is listening, but its checks fail (a replica still starting)
    config = BalancerConfig(
        port=free_port(),
        backends=[("server1", one.url)],
        algorithm="round_robin",
        check_interval=0.2,
        fast_check_interval=0.1,
        check_timeout=0.5,
    )

    async def main() -> tuple[list[dict], list[str]]:
        server, task = await serve_in_loop(config)
        balancer = server.config.app.proxy.balancer
        try:
            added = balancer.add_server("server2", two.url, who="docker")
            assert added.state == "NEW"
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{config.port}") as client:
                for _ in range(20):
                    answer = await client.get("/echo")
                    assert answer.headers["x-upstream-server"] == "server1"
                states = (await client.get("/status")).json()["servers"]
                assert [s["state"] for s in states] in (["UP", "NEW"], ["UP", "DOWN"])
                await wait_until_async(lambda: added.state == "DOWN", what="checks failed")
                two.healthy = True
                await wait_until_async(lambda: added.state == "UP", what="checks passed")
                last = [await client.get("/echo") for _ in range(4)]
            return balancer.events.since(0), [a.headers["x-upstream-server"] for a in last]
        finally:
            server.should_exit = True
            await task

    events, last = asyncio.run(main())
    assert sorted(last) == ["server1", "server1", "server2", "server2"]  # in rotation once UP
    moves = [
        (e["from"], e["to"]) for e in events if e["kind"] == "state" and e["server"] == "server2"
    ]
    assert moves == [("NEW", "DOWN"), ("DOWN", "UP")]  # never a flap from UP


def test_a_new_server_whose_first_check_passes_is_up_at_once(
    echoes: tuple[EchoBackend, EchoBackend],
) -> None:
    one, two = echoes
    config = BalancerConfig(port=free_port(), backends=[("server1", one.url)], rise=3)

    async def main() -> list[dict]:
        server, task = await serve_in_loop(config)
        balancer = server.config.app.proxy.balancer
        try:
            added = balancer.add_server("server2", two.url, who="docker")
            await wait_until_async(lambda: added.state == "UP", what="first check passed")
            return balancer.events.since(0)
        finally:
            server.should_exit = True
            await task

    events = asyncio.run(main())
    state = [e for e in events if e["kind"] == "state" and e["server"] == "server2"]
    assert [(e["from"], e["to"], e["reason_code"]) for e in state] == [
        ("NEW", "UP", "first_check_passed")
    ]


@pytest.mark.slow
def test_a_control_action_is_recorded_when_its_caller_gave_up(
    echoes: tuple[EchoBackend, EchoBackend],
) -> None:
    one, two = echoes
    balancer = balancer_process([("server1", one.url), ("server2", two.url)]).start()
    try:
        one.delay = 1.0  # its /admin/fault (an echo here) answers after a second
        with pytest.raises(httpx.ReadTimeout):  # the client disconnects mid-action
            httpx.put(
                balancer.url + "/control/servers/server1/fault",
                json={"mode": "latency", "ms": 100},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=httpx.Timeout(0.3, connect=2.0),
            )

        def recorded() -> list[dict]:
            events = httpx.get(balancer.url + "/events", timeout=5).json()["events"]
            return [e for e in events if e["kind"] == "control" and e["action"] == "fault"]

        event = wait_until(recorded, timeout=5, what="the fault's event")[0]
        assert (event["server"], event["ok"]) == ("server1", True)
    finally:
        balancer.close()


def test_the_dashboard_waits_as_long_as_the_slowest_control_action_may_take() -> None:
    from dashboard.api import ACTION_TIMEOUT
    from services.balancer.control import QUIESCE_TIMEOUT
    from services.balancer.drivers import docker, local
    from services.common import CONTROL_ACTION_SECONDS

    def longest(timeout: httpx.Timeout) -> float:
        return (timeout.connect or 0) + (timeout.read or 0)

    slowest_driver = max(longest(local.TIMEOUT), float(docker.STOP_SECONDS) * 2)
    assert longest(QUIESCE_TIMEOUT) + slowest_driver <= CONTROL_ACTION_SECONDS
    assert ACTION_TIMEOUT.read is not None and ACTION_TIMEOUT.read > CONTROL_ACTION_SECONDS


def test_every_state_has_a_colour_and_a_spanish_word_where_it_is_shown() -> None:
    from dashboard.i18n import CATALOGS
    from dashboard.states import STATE_STYLES
    from services.balancer.status import STATE_COLOURS, STATE_SPANISH
    from services.common import SERVER_STATES as STATES

    assert set(STATES) == STATE_STYLES.keys() == STATE_COLOURS.keys() == STATE_SPANISH.keys()
    for language in ("en", "es"):
        assert all(state in CATALOGS[language]["help_states"] for state in STATES)
        assert all(state in CATALOGS[language]["legend_state"] for state in STATES)
    assert "NUEVO" in CATALOGS["es"]["help_states"]

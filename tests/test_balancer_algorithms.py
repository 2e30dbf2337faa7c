"""Weights, slow start, a response-time cost that recovers, and outlier ejection: each rule of
docs/design/balancer.md's algorithm table, on the real strategies and balancer."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter

import httpx
import pytest
from starlette.applications import Starlette

from services.balancer import algorithms
from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.balancer.control import CONTROL_BODY_BYTES, Control
from services.balancer.server import EWMA_UNMEASURED, Server
from services.balancer.status import status


def servers(*weights: int) -> list[Server]:
    pool = []
    for n, weight in enumerate(weights, start=1):
        server = Server(f"server{n}", f"http://127.0.0.1:{5000 + n}")
        server.weight = weight
        pool.append(server)
    return pool


def shares(
    algorithm: algorithms.Algorithm, pool: list[Server], picks: int, client: str = "c"
) -> list[float]:
    counts = Counter(algorithm.pick(pool, client).name for _ in range(picks))
    return [counts[server.name] / picks for server in pool]


def make_balancer(**overrides: object) -> Balancer:
    backends = [("server1", "http://127.0.0.1:5001"), ("server2", "http://127.0.0.1:5002")]
    return Balancer(BalancerConfig(backends=backends, **overrides))  # type: ignore[arg-type]


# Weights -------------------------------------------------------------------------------------


def test_round_robin_at_3_to_1_gives_75_percent_spread_out() -> None:
    pool = servers(3, 1)
    pick = algorithms.make("round_robin").pick
    names = [pick(pool, "c").name for _ in range(400)]
    assert names.count("server1") / 400 == pytest.approx(0.75, abs=0.05)
    assert names[:8] == ["server1", "server1", "server2", "server1"] * 2  # nginx's smooth order


def test_weighted_random_follows_the_weights() -> None:
    random.seed(7)
    assert shares(algorithms.make("random"), servers(3, 1), 4000)[0] == pytest.approx(
        0.75, abs=0.03
    )


def test_least_connections_divides_by_weight() -> None:
    heavy, light = servers(2, 1)
    heavy.in_flight, light.in_flight = 2, 1  # (2 + 1) / 2 = 1.5 beats (1 + 1) / 1 = 2
    assert algorithms.make("least_connections").pick([heavy, light], "c") is heavy


def test_response_time_divides_by_weight() -> None:
    heavy, light = servers(4, 1)
    now = time.monotonic()
    heavy.ewma, heavy.ewma_at = 0.008, now  # 8 ms / 4 beats 3 ms / 1
    light.ewma, light.ewma_at = 0.003, now
    assert algorithms.make("response_time").pick([heavy, light], "c") is heavy


def test_ip_hash_shares_clients_by_weight_and_keeps_equal_weights_unchanged() -> None:
    pool = servers(3, 1)
    pick = algorithms.make("ip_hash").pick
    clients = [f"10.0.{n // 256}.{n % 256}" for n in range(2000)]
    first = Counter(pick(pool, client).name for client in clients)
    assert first["server1"] / 2000 == pytest.approx(0.75, abs=0.04)
    assert all(pick(pool, client) is pick(pool, client) for client in clients[:50])  # affinity
    equal = servers(1, 1)
    unweighted = [max(equal, key=lambda s: algorithms._score(c, s)) for c in clients]
    assert [pick(equal, c) for c in clients] == unweighted


def test_weight_0_takes_no_new_traffic_and_a_live_change_is_an_event() -> None:
    balancer = make_balancer(algorithm="round_robin", weights={"server2": 0})
    assert {balancer.choose([], "c").name for _ in range(20)} == {"server1"}  # type: ignore[union-attr]
    assert balancer.set_weight("server1", 0, who="teacher") == 1
    assert balancer.choose([], "c") is None
    balancer.set_weight("server2", 5)
    assert balancer.choose([], "c").name == "server2"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="0 to 256"):
        balancer.set_weight("server2", 257)
    weights = [
        (e["server"], e["from"], e["to"]) for e in balancer.events.since(0) if e["kind"] == "weight"
    ]
    assert weights == [("server1", 1, 0), ("server2", 0, 5)]
    assert [s["weight"] for s in status(balancer)["servers"]] == [0, 5]


# Slow start ----------------------------------------------------------------------------------


def test_a_returning_server_ramps_its_weight_over_the_slow_start() -> None:
    balancer = make_balancer(slow_start=10.0, weights={"server1": 4})
    server = balancer.get("server1")
    for _ in range(2):
        balancer.record_check(server, False, 503, "503", 1.0)
    assert server.state == "DOWN"
    for _ in range(2):
        balancer.record_check(server, True, 200, "200 OK", 1.0)
    assert server.state == "UP" and server.ramp_from is not None
    start = server.ramp_from
    assert server.effective_weight(start) == pytest.approx(4 * 0.05)  # never 0
    assert server.effective_weight(start + 5) == pytest.approx(2.0)
    assert server.effective_weight(start + 10) == 4.0
    assert status(balancer)["servers"][0]["effective_weight"] <= 4.0
    assert make_balancer().get("server1").effective_weight(time.monotonic()) == 1.0  # off


# Response time -------------------------------------------------------------------------------


def test_the_response_time_cost_decays_with_time_and_resets_on_return() -> None:
    balancer = make_balancer()
    server = balancer.get("server1")
    server.observe_latency(0.3, 200)
    at = server.ewma_at
    assert server.latency_cost(at) == pytest.approx(0.3)
    assert server.latency_cost(at + 5) == pytest.approx(0.3 * math.exp(-5))  # probed again
    for _ in range(2):
        balancer.record_check(server, False, None, "connection refused", 1.0)
    for _ in range(2):
        balancer.record_check(server, True, 200, "200 OK", 1.0)
    assert server.ewma == EWMA_UNMEASURED  # what it measured before it went DOWN is forgotten


# Outlier ejection ----------------------------------------------------------------------------


def test_consecutive_5xx_eject_a_server_for_longer_each_time_never_the_last() -> None:
    async def run() -> list[tuple[str, str, str]]:
        balancer = make_balancer(eject_after_5xx=3, eject_time=0.2)
        one, two = balancer.get("server1"), balancer.get("server2")
        for status_code in (500, 503, 200, 500, 500):  # a success resets the count
            balancer.record_answer(one, status_code)
        assert one.state == "UP" and one.consecutive_5xx == 2
        balancer.record_answer(one, 502)
        assert one.state == "EJECTED"
        shown = status(balancer)["servers"][0]
        assert shown["ejected_for"] == pytest.approx(0.2, abs=0.05)
        assert shown["state_reason"] == "3 answers in a row were 5xx; out for 0.2 s"
        for _ in range(5):
            balancer.record_answer(two, 500)
        assert two.state == "UP"  # the last server left is never ejected
        await asyncio.sleep(0.3)
        assert one.state == "UP"
        for _ in range(3):
            balancer.record_answer(one, 500)
        assert one.state == "EJECTED" and one.ejected_until - time.monotonic() > 0.3  # 2 x 0.2 s
        return [
            (e["from"], e["to"], e["reason"])
            for e in balancer.events.since(0)
            if e["kind"] == "state" and e["server"] == "server1"
        ]

    assert asyncio.run(run()) == [
        ("UP", "EJECTED", "3 answers in a row were 5xx; out for 0.2 s"),
        ("EJECTED", "UP", "ejection over"),
        ("UP", "EJECTED", "3 answers in a row were 5xx; out for 0.4 s"),
    ]


def test_ejection_is_off_unless_asked() -> None:
    balancer = make_balancer()
    server = balancer.get("server1")
    for _ in range(50):
        balancer.record_answer(server, 500)
    assert server.state == "UP"


def test_a_weight_change_takes_effect_at_the_next_round_robin_pick() -> None:
    heavy, light = servers(256, 1)
    pick = algorithms.make("round_robin").pick
    for _ in range(300):
        pick([heavy, light], "c")
    heavy.weight = 1
    names = [pick([heavy, light], "c").name for _ in range(10)]
    assert names == ["server1", "server2"] * 5


def test_round_robin_forgets_servers_that_left() -> None:
    algorithm = algorithms.RoundRobin()
    for n in range(200):  # discovery replaces the second server again and again
        algorithm.pick([Server("a", "http://a:1"), Server(f"s{n}", f"http://s{n}:1")], "c")
    state = [value for value in vars(algorithm).values() if isinstance(value, dict)]
    assert state and all(
        len(remembered) <= 2 * 2 + algorithms.MAX_FORGOTTEN + 1 for remembered in state
    )


def test_ip_hash_scores_stay_strictly_between_0_and_1() -> None:
    extremes = [Server(name, "http://x:1") for name in ("a", "b")]
    for client in (f"10.0.0.{n}" for n in range(256)):
        assert all(0 < algorithms._score(client, server) < 1 for server in extremes)
    assert ((2**64 - 1 >> 12) + 0.5) / 2**52 < 1.0  # the largest digest still maps below 1


def test_an_ejection_ended_otherwise_is_not_ended_again_by_its_old_timer() -> None:
    async def run() -> str:
        balancer = make_balancer(eject_after_5xx=1, eject_time=0.4)
        one = balancer.get("server1")
        balancer.record_answer(one, 500)  # ejected for 0.4 s
        balancer.set_admin_state("server1", "MAINT")
        balancer.set_admin_state("server1", "READY")
        balancer.record_answer(one, 500)  # ejected again, for 0.8 s
        # Past the first ejection's end and 0.2 s before the second's: only a loop stalled
        # 0.2 s would see the second end too (0.1 s did, with ejections of 0.2 s).
        await asyncio.sleep(0.6)
        return one.state

    assert asyncio.run(run()) == "EJECTED"


def test_ready_ends_an_ejection_and_a_removed_server_leaves_no_timer() -> None:
    async def run() -> list[str]:
        balancer = make_balancer(eject_after_5xx=1, eject_time=0.1)
        one = balancer.get("server1")
        balancer.record_answer(one, 500)
        assert balancer.set_admin_state("server1", "READY") == "UP"
        balancer.record_answer(one, 500)
        balancer.remove_server("server1")
        await asyncio.sleep(0.35)
        return [
            e["to"] for e in balancer.events.since(0) if e.get("server") == "server1" and "to" in e
        ]

    assert asyncio.run(run()) == ["EJECTED", "UP", "EJECTED"]


def test_only_servers_taking_traffic_count_as_others_and_only_up_servers_are_ejected() -> None:
    async def run() -> None:
        balancer = make_balancer(eject_after_5xx=2, weights={"server2": 0})
        one, two = balancer.get("server1"), balancer.get("server2")
        for _ in range(4):
            balancer.record_answer(one, 500)
        assert one.state == "UP"  # server2 takes no traffic (weight 0): server1 is the last
        balancer.set_weight("server2", 1)
        balancer.set_admin_state("server2", "DRAIN")
        for _ in range(3):
            balancer.record_answer(two, 500)
        assert two.state == "DRAIN"  # draining already: not ejected
        assert one.state == "UP"

    asyncio.run(run())


def test_ejections_grow_up_to_six_times_the_base_time() -> None:
    async def run() -> float:
        balancer = make_balancer(eject_after_5xx=1, eject_time=10.0)
        one = balancer.get("server1")
        for _ in range(8):
            balancer.record_answer(one, 500)
            balancer.set_admin_state("server1", "READY")
        balancer.record_answer(one, 500)
        left = one.ejected_until - time.monotonic()
        one.end_ejection_timer()
        return left

    assert asyncio.run(run()) == pytest.approx(60.0, abs=0.5)


def test_a_return_through_drain_still_resets_and_slow_starts() -> None:
    balancer = make_balancer(slow_start=5.0, eject_after_5xx=2)
    server = balancer.get("server1")
    for _ in range(2):
        balancer.record_check(server, False, 503, "503", 1.0)
    server.consecutive_5xx = 1
    balancer.set_admin_state("server1", "DRAIN")
    for _ in range(2):
        balancer.record_check(server, True, 200, "200 OK", 1.0)
    balancer.set_admin_state("server1", "READY")
    assert server.state == "UP" and server.ramp_from is not None and server.consecutive_5xx == 0


@pytest.mark.parametrize(
    "bad", [{"slow_start": math.inf}, {"eject_time": math.nan}, {"eject_time": 0}]
)
def test_endless_or_undefined_times_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        make_balancer(**bad)


WEIGHT_BODIES = [
    b'{"weight": true}',
    b'{"weight": 3.0}',
    b'{"weight": "3"}',
    b'{"weight": 1e400}',
    b'{"weight": -1}',
    b'{"weight": 257}',
    b'{"weight": 1180591620717411303424}',
    b'{"weight": 3, "server": "server2"}',
    b"",
    b"[3]",
    b"[" * 100_000,
]


@pytest.mark.parametrize("body", WEIGHT_BODIES, ids=[repr(b[:30]) for b in WEIGHT_BODIES])
def test_bad_weight_bodies_get_400_and_change_nothing(body: bytes) -> None:
    """A bad body is a 400; one past the control API's bound a 413, unread."""

    async def send() -> tuple[int, int]:
        balancer = make_balancer()
        control = Control(balancer, "secret", "none")
        transport = httpx.ASGITransport(Starlette(routes=control.routes()))
        headers = {"Authorization": "Bearer secret"}
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            answer = await http.put(
                "/control/servers/server1/weight", content=body, headers=headers
            )
        await control.stop()
        return answer.status_code, balancer.get("server1").weight

    refused = 413 if len(body) > CONTROL_BODY_BYTES else 400
    assert asyncio.run(send()) == (refused, 1)

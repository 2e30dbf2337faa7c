"""The balancer's history (``GET /history``): per-second deltas of its counters, kept in a
bounded ring. The sampler's logic with a clock and counters set by hand, then one real
balancer in front of echo backends, whose known workload must add up exactly."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest
from support import wait_until, wait_until_async
from test_balancer_helpers import EchoBackend, balancer_process

from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.balancer.history import TrafficHistory, latest
from services.balancer.routes import since_seconds

T0 = 1_764_670_000  # a wall-clock second


def make_balancer() -> Balancer:
    backends = [("server1", "http://127.0.0.1:5001"), ("server2", "http://127.0.0.1:5002")]
    return Balancer(BalancerConfig(backends=backends))


def serve(balancer: Balancer, name: str, latencies_ms: list[float]) -> None:
    """One request per latency, answered by ``name``, as the proxy counts them."""
    stats = balancer.get(name).stats
    for ms in latencies_ms:
        balancer.count_request()
        stats.tries += 1
        stats.record_latency(ms / 1000)


def test_each_second_holds_what_the_counters_gained_in_it() -> None:
    balancer = make_balancer()
    history = TrafficHistory(balancer)
    serve(balancer, "server1", [float(ms) for ms in range(1, 21)])
    serve(balancer, "server2", [50.0])
    balancer.errors.record(404, "no such task", "GET /tareas/9", server="server1")
    balancer.errors.record(404, "no such task", "GET /tareas/8", server="server1")
    balancer.errors.record(500, "boom", "POST /tareas", server="server2")
    balancer.get("server2").state = "DOWN"
    history.tick(T0 + 1.0004)
    serve(balancer, "server1", [7.0])
    balancer.errors.record(400, "bad title", "POST /tareas", server="server1")
    history.tick(T0 + 2.001)
    history.tick(T0 + 3.0)  # a quiet second

    first, second, quiet = history.since()
    assert first == {
        "t": T0,
        "requests": 21,
        "servers": {
            "server1": {"tries": 20, "p95_ms": 19.0, "state": "UP"},  # 19th of 20 (nearest rank)
            "server2": {"tries": 1, "p95_ms": 50.0, "state": "DOWN"},
        },
        "errors": {"404_NOT_FOUND": 2, "500_INTERNAL_ERROR": 1},
        "p95_ms": 20.0,  # the 20th of 21 answers
    }
    assert second["t"] == T0 + 1 and second["requests"] == 1
    assert second["servers"]["server1"] == {"tries": 1, "p95_ms": 7.0, "state": "UP"}
    assert second["servers"]["server2"]["p95_ms"] is None
    assert second["errors"] == {"400_BAD_REQUEST": 1}  # only what changed, only non-zero
    assert quiet["requests"] == 0 and quiet["errors"] == {} and quiet["p95_ms"] is None


def test_a_reset_in_the_middle_counts_from_zero_and_never_negative() -> None:
    balancer = make_balancer()
    history = TrafficHistory(balancer)
    serve(balancer, "server1", [5.0, 5.0])
    balancer.errors.record(404, "no", "GET /x", server="server1")
    history.tick(T0 + 1)
    balancer.reset_stats(who="teacher")
    # More after the reset than before it: a drop is no longer visible, the reset is.
    serve(balancer, "server1", [1.0, 2.0, 3.0])
    serve(balancer, "server2", [4.0])
    balancer.errors.record(404, "no", "GET /y", server="server2")
    balancer.errors.record(404, "no", "GET /z", server="server2")
    history.tick(T0 + 2)
    balancer.reset_stats(who="teacher")
    serve(balancer, "server2", [9.0])
    history.tick(T0 + 3)

    _, after, later = history.since()
    assert after["requests"] == 4 and after["errors"] == {"404_NOT_FOUND": 2}
    assert after["servers"]["server1"] == {"tries": 3, "p95_ms": 3.0, "state": "UP"}
    assert later["requests"] == 1 and later["errors"] == {}
    assert later["servers"]["server1"] == {"tries": 0, "p95_ms": None, "state": "UP"}
    assert later["servers"]["server2"] == {"tries": 1, "p95_ms": 9.0, "state": "UP"}


def test_more_answers_in_a_second_than_the_ring_holds_take_the_last_of_them() -> None:
    balancer = make_balancer()
    history = TrafficHistory(balancer)
    serve(balancer, "server1", [float(ms) for ms in range(1, 1501)])
    assert latest(balancer.get("server1").stats, 1500) == [ms / 1000 for ms in range(477, 1501)]
    history.tick(T0 + 1)
    (sample,) = history.since()
    assert sample["servers"]["server1"]["tries"] == 1500
    # Over the last 1024 (477..1500 ms): the 973rd of them.
    assert sample["servers"]["server1"]["p95_ms"] == 1449.0 == sample["p95_ms"]


def test_servers_that_come_and_go() -> None:
    balancer = make_balancer()
    history = TrafficHistory(balancer)
    serve(balancer, "server2", [1.0])
    history.tick(T0 + 1)
    balancer.add_server("server3", "http://127.0.0.1:5003")
    serve(balancer, "server3", [2.0, 2.0])
    # Gone and back with the same name: a new server, whose counters start from zero.
    balancer.remove_server("server2")
    balancer.add_server("server2", "http://127.0.0.1:5002")
    serve(balancer, "server2", [3.0])
    history.tick(T0 + 2)
    balancer.remove_server("server3")
    history.tick(T0 + 3)

    _, second, third = history.since()
    assert list(second["servers"]) == ["server1", "server3", "server2"]
    # Added servers are NEW until a check passes (none runs here).
    assert second["servers"]["server3"] == {"tries": 2, "p95_ms": 2.0, "state": "NEW"}
    assert second["servers"]["server2"] == {"tries": 1, "p95_ms": 3.0, "state": "NEW"}
    assert list(third["servers"]) == ["server1", "server2"]
    # The servers now, then those the returned samples still name.
    assert history.payload()["servers"] == ["server1", "server2", "server3"]
    assert history.payload(T0 + 1)["servers"] == ["server1", "server2"]


def test_the_ring_keeps_the_last_capacity_seconds_in_bounded_memory() -> None:
    history = TrafficHistory(make_balancer(), capacity=3)
    for second in range(1, 6):
        history.tick(T0 + second)
    assert [sample["t"] for sample in history.since()] == [T0 + 2, T0 + 3, T0 + 4]
    assert history.payload()["capacity"] == 3


def test_a_late_tick_or_a_clock_stepped_back_loses_no_count() -> None:
    balancer = make_balancer()
    history = TrafficHistory(balancer)
    history.tick(T0 + 1)
    serve(balancer, "server1", [1.0])
    history.tick(T0 + 0.9999)  # back in a second already sampled: counted by the next tick
    assert len(history.since()) == 1
    serve(balancer, "server1", [1.0])
    history.tick(T0 + 4.2)  # three seconds late: all of it in its last second
    assert [(s["t"], s["requests"]) for s in history.since()] == [(T0, 0), (T0 + 3, 2)]


def test_a_clock_stepped_back_an_hour_starts_the_history_again_at_once() -> None:
    balancer = make_balancer()
    history = TrafficHistory(balancer)
    for second in range(1, 4):
        history.tick(T0 + second)
    serve(balancer, "server1", [1.0])
    history.tick(T0 + 4 - 3600)  # NTP stepped the clock back an hour
    assert [(s["t"], s["requests"]) for s in history.since()] == [(T0 + 3 - 3600, 1)]
    history.tick(T0 + 5 - 3600)
    assert [s["t"] for s in history.since()] == [T0 + 3 - 3600, T0 + 4 - 3600]


def test_since_returns_only_later_seconds_oldest_first() -> None:
    history = TrafficHistory(make_balancer(), clock=lambda: T0 + 4.5)
    for second in range(1, 5):
        history.tick(T0 + second)
    assert [s["t"] for s in history.since(T0 + 1)] == [T0 + 2, T0 + 3]
    assert [s["t"] for s in history.since(T0 + 1.5)] == [T0 + 2, T0 + 3]
    assert history.since(T0 + 3) == []
    payload = history.payload(T0 + 2)
    assert payload["now"] == T0 + 4.5 and payload["interval_seconds"] == 1
    assert [s["t"] for s in payload["samples"]] == [T0 + 3]


async def test_the_sampler_ticks_just_after_each_second_ends() -> None:
    times = iter([T0 + 0.99, T0 + 1.001, T0 + 1.995, T0 + 2.0002])
    balancer = make_balancer()
    history = TrafficHistory(balancer, clock=lambda: next(times, T0 + 2.9999))
    serve(balancer, "server1", [1.0])
    sampler = asyncio.create_task(history.run())
    await wait_until_async(lambda: len(history.samples) == 2, timeout=2, what="two ticks")
    sampler.cancel()
    assert [(s["t"], s["requests"]) for s in history.since()] == [(T0, 1), (T0 + 1, 0)]


@pytest.mark.parametrize("text", ["0", "1764669700", "1764669700.25", " 12 "])
def test_since_accepts_unix_seconds(text: str) -> None:
    assert since_seconds(text) == float(text)


@pytest.mark.parametrize("text", ["", "abc", "-1", "nan", "inf", "-inf", "1e400", "9" * 33])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="since must be unix seconds"):
        since_seconds(text)


def test_a_known_workload_adds_up_exactly(echoes: list[EchoBackend]) -> None:
    balancer = balancer_process([(e.name, e.url) for e in echoes], "round_robin").start()
    try:
        with httpx.Client(base_url=balancer.url, timeout=5) as client:
            statuses = [200] * 14 + [404] * 4 + [500] * 2
            for status in statuses:
                assert client.get("/echo", params={"status": status}).status_code == status

            def covered() -> list[dict] | None:
                samples = client.get("/history").json()["samples"]
                return samples if sum(s["requests"] for s in samples) >= len(statuses) else None

            samples = wait_until(covered, timeout=5, what="samples covering the workload")
            payload = client.get("/history").json()
            assert payload["servers"] == ["server1", "server2"] and payload["capacity"] == 600
            assert sum(s["requests"] for s in samples) == len(statuses)
            for name in ("server1", "server2"):  # round robin splits 20 tries exactly
                assert sum(s["servers"][name]["tries"] for s in samples) == 10
            errors: dict[str, int] = {}
            for sample in samples:
                for kind, count in sample["errors"].items():
                    errors[kind] = errors.get(kind, 0) + count
            assert errors == {"404_NOT_FOUND": 4, "500_INTERNAL_ERROR": 2}
            assert any(s["p95_ms"] is not None for s in samples)
            seconds = [s["t"] for s in payload["samples"]]
            assert seconds == sorted(seconds) and seconds[-1] < math.floor(payload["now"])

            cut = seconds[-1] - 0.5  # a newer sample may have come meanwhile
            later = [
                s["t"] for s in client.get("/history", params={"since": cut}).json()["samples"]
            ]
            assert later[0] == seconds[-1] and all(t > cut for t in later)
            for bad in ("soon", "-5", "nan", "1" * 100):
                refused = client.get("/history", params={"since": bad})
                assert refused.status_code == 400
                assert "since must be unix seconds" in refused.json()["error"]
    finally:
        balancer.close()

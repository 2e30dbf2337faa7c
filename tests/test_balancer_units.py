"""The balancer's parts on their own: algorithms, health verdicts, states, events, config."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route
from support import state_events_of_every_reason

from services.balancer import algorithms
from services.balancer.app import OwnedPaths
from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig, parse_backends
from services.balancer.drivers import DriverUnsupported, choose_driver
from services.balancer.drivers.docker import ACTION_REQUESTS, RESULTS
from services.balancer.events import KINDS, REASON_CODES
from services.balancer.proxy import may_retry
from services.balancer.server import Server
from services.common import DRIVER_ACTIONS, answer_text


def servers(*names: str) -> list[Server]:
    return [Server(name, f"http://127.0.0.1:{5001 + i}") for i, name in enumerate(names)]


def make_balancer(**overrides: object) -> Balancer:
    backends = [("server1", "http://127.0.0.1:5001"), ("server2", "http://127.0.0.1:5002")]
    return Balancer(BalancerConfig(backends=backends, **overrides))  # type: ignore[arg-type]


# Algorithms ------------------------------------------------------------------------------------


def test_round_robin_alternates_exactly() -> None:
    pool = servers("a", "b", "c")
    pick = algorithms.make("round_robin").pick
    assert [pick(pool, "x").name for _ in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]


def test_random_spreads_evenly_within_tolerance() -> None:
    random.seed(7)
    pool = servers("a", "b")
    counts = Counter(algorithms.make("random").pick(pool, "x").name for _ in range(4000))
    assert 1800 < counts["a"] < 2200


def test_least_connections_takes_the_idlest_and_breaks_ties_at_random() -> None:
    a, b, c = servers("a", "b", "c")
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 1
    pick = algorithms.make("least_connections").pick
    counts = Counter(pick([a, b, c], "x").name for _ in range(1000))
    assert counts["a"] == 0
    assert 400 < counts["b"] < 600


def test_response_time_prefers_the_faster_server_and_weighs_in_flight() -> None:
    fast, slow = servers("fast", "slow")
    for _ in range(3):
        fast.observe_latency(0.002, 200)
        slow.observe_latency(0.050, 200)
    pick = algorithms.make("response_time").pick
    assert pick([fast, slow], "x") is fast
    fast.in_flight = 40  # 0.002 * 41 > 0.050 * 1
    assert pick([fast, slow], "x") is slow


def test_response_time_does_not_reward_fast_errors() -> None:
    failing, healthy = servers("failing", "healthy")
    healthy.observe_latency(0.010, 200)
    failing.observe_latency(0.001, 503)  # a quick error counts as a slow answer
    assert algorithms.make("response_time").pick([failing, healthy], "x") is healthy


def test_peak_ewma_jumps_up_at_once_and_decays_over_time() -> None:
    (server,) = servers("a")
    server.observe_latency(0.100, 200)
    assert server.ewma == pytest.approx(0.100)
    server.ewma_at -= 30.0  # thirty seconds later, a fast answer almost resets it
    server.observe_latency(0.001, 200)
    assert server.ewma < 0.002


def test_ip_hash_is_sticky_and_moves_only_the_departed_servers_clients() -> None:
    pool = servers("a", "b", "c")
    pick = algorithms.make("ip_hash").pick
    clients = [f"10.0.{i // 250}.{i % 250}" for i in range(3000)]
    before = {ip: pick(pool, ip).name for ip in clients}
    assert all(pick(pool, ip).name == before[ip] for ip in clients[:200])  # sticky
    assert min(Counter(before.values()).values()) > 800  # spread over all three
    during = {ip: pick([pool[0], pool[2]], ip).name for ip in clients}  # "b" left
    moved = [ip for ip in clients if during[ip] != before[ip]]
    assert moved and all(before[ip] == "b" for ip in moved)
    assert all(pick(pool, ip).name == before[ip] for ip in clients)  # and they come back


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="round_robin"):
        algorithms.make("fastest")


# Health verdicts and states ---------------------------------------------------------------------


def test_fall_and_rise_follow_consecutive_checks() -> None:
    balancer = make_balancer(fall=2, rise=2)
    server = balancer.get("server1")
    balancer.record_check(server, False, None, "connection refused", 1.0)
    assert server.state == "UP"
    balancer.record_check(server, False, None, "connection refused", 1.0)
    assert server.state == "DOWN"
    assert balancer.choose([], "x") is balancer.get("server2")
    balancer.record_check(server, True, 200, "200 OK", 1.0)
    assert server.state == "DOWN"
    balancer.record_check(server, True, 200, "200 OK", 1.0)
    assert server.state == "UP"
    reasons = [(e["from"], e["to"], e["reason"]) for e in balancer.events.since(0)]
    assert reasons == [
        ("UP", "DOWN", "2 checks failed: connection refused"),
        ("DOWN", "UP", "2 checks passed"),
    ]


def test_fall_and_rise_are_configurable() -> None:
    balancer = make_balancer(fall=3, rise=1)
    server = balancer.get("server1")
    for _ in range(2):
        balancer.record_check(server, False, None, "timeout after 0.5 s", 500.0)
    assert server.state == "UP"
    balancer.record_check(server, False, None, "timeout after 0.5 s", 500.0)
    assert server.state == "DOWN"
    balancer.record_check(server, True, 200, "200 OK", 1.0)
    assert server.state == "UP"
    assert [e["reason"] for e in balancer.events.since(0)] == [
        "3 checks failed: timeout after 0.5 s",
        "1 check passed",
    ]


def test_refused_is_down_at_once_resets_count_toward_fall_timeouts_never() -> None:
    balancer = make_balancer(fall=2)
    one, two = balancer.get("server1"), balancer.get("server2")
    balancer.record_live_failure(one, "refused", "connection refused")
    assert one.state == "DOWN"
    assert balancer.events.since(0)[-1]["reason"] == "connect refused on live traffic"
    for _ in range(5):  # slow is not dead: only health checks can take it out
        balancer.record_live_failure(two, "timeout", "timeout after 5 s")
    assert two.state == "UP"
    balancer.record_live_failure(two, "reset", "connection reset")
    assert two.state == "UP"
    balancer.record_live_failure(two, "reset", "connection reset")
    assert two.state == "DOWN"
    assert balancer.choose([], "x") is None


def test_drain_and_maint_take_no_new_requests_and_ready_follows_the_last_check() -> None:
    balancer = make_balancer()
    one = balancer.get("server1")
    assert balancer.set_admin_state("server1", "DRAIN", who="teacher") == "DRAIN"
    assert {balancer.choose([], "x").name for _ in range(20)} == {"server2"}
    balancer.record_check(one, False, None, "connection refused", 1.0)
    balancer.record_check(one, False, None, "connection refused", 1.0)
    assert one.state == "DRAIN"  # health changes stay hidden behind the admin state
    assert balancer.set_admin_state("server1", "READY") == "DOWN"
    balancer.set_admin_state("server1", "MAINT")
    one.last_check = {"ok": True}
    assert balancer.set_admin_state("server1", "READY") == "UP"
    event = balancer.events.since(0)[0]
    assert (event["kind"], event["to"], event["who"]) == ("state", "DRAIN", "teacher")
    with pytest.raises(ValueError):
        balancer.set_admin_state("server1", "OFF")
    with pytest.raises(KeyError):
        balancer.set_admin_state("server9", "DRAIN")


def test_ready_keeps_a_refused_live_verdict_newer_than_the_last_check() -> None:
    """A server refused live traffic after its last check passed: READY leaves it DOWN
    (not UP until the next request is refused again); a check after that decides."""
    balancer = make_balancer()
    one = balancer.get("server1")
    balancer.record_check(one, True, 200, "200 OK", 1.0)
    balancer.record_live_failure(one, "refused", "connection refused")
    assert one.state == "DOWN"
    balancer.set_admin_state("server1", "MAINT")
    assert balancer.set_admin_state("server1", "READY") == "DOWN"
    assert [e["to"] for e in balancer.events.since(0)][-1] == "DOWN"
    balancer.set_admin_state("server1", "DRAIN")
    balancer.record_check(one, True, 200, "200 OK", 1.0)  # newer than the refusal
    assert balancer.set_admin_state("server1", "READY") == "UP"


def test_set_algorithm_returns_previous_and_records_an_event() -> None:
    balancer = make_balancer(algorithm="random")
    assert balancer.set_algorithm("ip_hash", who="127.0.0.1") == "random"
    assert balancer.algorithm == "ip_hash"
    event = balancer.events.since(0)[-1]
    assert (event["kind"], event["from"], event["to"]) == ("algorithm", "random", "ip_hash")
    with pytest.raises(ValueError):
        balancer.set_algorithm("nope")
    assert balancer.algorithm == "ip_hash"


def test_add_and_remove_servers_and_reset_stats() -> None:
    balancer = make_balancer()
    balancer.add_server("server3", "http://127.0.0.1:5003/")
    assert [s.name for s in balancer.servers] == ["server1", "server2", "server3"]
    assert balancer.get("server3").url == "http://127.0.0.1:5003"
    with pytest.raises(ValueError):
        balancer.add_server("server3", "http://127.0.0.1:5003")
    balancer.remove_server("server1")
    with pytest.raises(KeyError):
        balancer.get("server1")
    balancer.get("server2").stats.tries = 9
    balancer.reset_stats(who="teacher")
    assert balancer.get("server2").stats.tries == 0
    kinds = [(e["kind"], e.get("action")) for e in balancer.events.since(0)]
    assert kinds == [("discovery", "added"), ("discovery", "removed"), ("stats", "reset")]


def test_every_event_kind_the_balancer_emits_is_declared() -> None:
    """``EventLog.add`` refuses an undeclared kind only when that line runs, maybe on a path
    no test takes (a crash report): so every kind written in the balancer's code is checked
    here against ``KINDS``, which the dashboard's tests give a sentence each."""
    code = "".join(path.read_text() for path in Path(algorithms.__file__).parent.rglob("*.py"))
    emitted = set(re.findall(r'events\.add\(\s*"(\w+)"', code))
    assert emitted == set(KINDS)


# The fields each reason code brings, as docs/api.md lists them.
REASON_FIELDS = {
    "first_check_passed": {"detail"},
    "checks_passed": {"checks"},
    "checks_failed": {"checks", "detail"},
    "live_failures": {"failures", "detail"},
    "ejected": {"answers", "seconds"},
}


async def test_every_state_event_carries_a_declared_reason_code_and_its_fields() -> None:
    """The English ``reason`` stays for people; the code and its fields let the dashboard
    say it in another language (and an undeclared code is refused)."""
    events = await state_events_of_every_reason()
    assert {event["reason_code"] for event in events} == set(REASON_CODES)
    for event in events:
        assert REASON_FIELDS.get(event["reason_code"], set()) <= set(event), event
    failed = next(event for event in events if event["reason_code"] == "checks_failed")
    assert (failed["reason"], failed["checks"], failed["detail"]) == (
        "2 checks failed: timeout",
        2,
        "timeout",
    )
    with pytest.raises(ValueError):
        make_balancer().events.add("state", "server1", reason_code="made_up")


def test_a_crashed_loop_is_put_on_the_timeline() -> None:
    balancer = make_balancer()
    reason = "health check of server1 failed (RuntimeError: bug); restarted in 1 s"
    balancer.record_failure(reason)
    event = balancer.events.since(0)[-1]
    assert (event["kind"], event["server"], event["reason"]) == ("failure", None, reason)


def test_events_since_and_bounded() -> None:
    balancer = make_balancer()
    for i in range(600):
        balancer.events.add("control", "server1", action="stop", n=i)
    kept = balancer.events.since(0)
    assert len(kept) == 500 and kept[0]["id"] == 101
    assert [e["id"] for e in balancer.events.since(598)] == [599, 600]


# Retry policy, routing and configuration ---------------------------------------------------------


def test_retry_policy() -> None:
    assert may_retry("refused", "PATCH", keyed=False)  # nothing was sent: always safe
    assert may_retry("connect", "POST", keyed=False)
    assert may_retry("timeout", "GET", keyed=False)
    assert may_retry("reset", "DELETE", keyed=False)
    assert may_retry("reset", "POST", keyed=True)  # a key the failed server deduplicates
    assert not may_retry("reset", "POST", keyed=False)  # a key alone promises nothing
    assert not may_retry("timeout", "PATCH", keyed=False)


def test_owned_paths_cover_exact_and_templated_routes_only() -> None:
    async def endpoint(request: object) -> None: ...

    owned = OwnedPaths(
        [
            Route("/status", endpoint),
            Route("/control/servers/{name}/{action}", endpoint),
            Mount("/static", routes=[]),
        ]
    )
    assert "/status" in owned and "/control/servers/server1/stop" in owned
    assert "/static/app.css" in owned
    assert "/status/" not in owned and "/tareas" not in owned and "/control" not in owned


def test_config_from_text() -> None:
    assert parse_backends("server1=http://server1:5001, server2=http://server2:5002/ weight=3") == [
        ("server1", "http://server1:5001", 1),
        ("server2", "http://server2:5002", 3),
    ]
    bad_weights = (
        "s=http://x:1 weight=257",
        "s=http://x:1 weight=-1",
        "s=http://x:1 w=2",
        "s=http://x:1 weight=³",
    )
    for bad in ("server1", "server1=ftp://x", "=http://x", *bad_weights):
        with pytest.raises(ValueError):
            parse_backends(bad)
    with pytest.raises(ValueError, match="unique"):
        BalancerConfig(backends=[("a", "http://a:1"), ("a", "http://a:2")])
    with pytest.raises(ValueError, match="algorithm"):
        BalancerConfig(algorithm="fastest")


def test_a_check_timeout_while_live_traffic_is_answered_is_not_counted() -> None:
    balancer = make_balancer(fall=2)
    server = balancer.get("server1")
    for _ in range(3):
        server.answered_at = time.perf_counter()  # a live answer during the 300 ms check
        balancer.record_check(server, False, None, "timeout after 0.5 s", 300.0)
    assert server.state == "UP" and server.consecutive_failures == 0
    assert "busy" in server.last_check["detail"]
    server.answered_at = time.perf_counter() - 0.5  # shortly before the check, nothing waiting
    balancer.record_check(server, False, None, "timeout after 0.5 s", 300.0)
    assert server.consecutive_failures == 0
    server.in_flight = 1  # but a request sent to it is still waiting: a hang
    balancer.record_check(server, False, None, "timeout after 0.5 s", 300.0)
    assert server.consecutive_failures == 1
    server.in_flight = 0
    server.answered_at = time.perf_counter() - 2.0  # no live answer for over an interval
    balancer.record_check(server, False, None, "timeout after 0.5 s", 300.0)
    assert server.state == "DOWN"
    server.answered_at = time.perf_counter()
    balancer.record_check(server, False, None, "connection refused", 1.0)
    assert server.consecutive_failures == 3  # a refused check always counts


def test_driver_none_by_choice_says_so_and_how_to_get_one() -> None:
    driver = asyncio.run(choose_driver("none", "token"))
    with pytest.raises(DriverUnsupported) as refused:
        asyncio.run(driver.perform("server1", "pause"))
    message = str(refused.value)
    assert "'pause' needs a driver" in message and "set to none" in message
    assert "mount /var/run/docker.sock" in message and "`ticslab up`" in message


def test_a_refusal_is_told_in_the_other_sides_words() -> None:
    """Docker says why in ``message``, our services in ``error``; else the text, the phrase."""
    docker = httpx.Response(409, json={"message": "container is paused", "error": "no"})
    assert answer_text(docker, "message") == "container is paused"
    assert answer_text(httpx.Response(400, json={"error": "bad rate"}), "error") == "bad rate"
    assert answer_text(httpx.Response(502, text="upstream gone\n"), "error") == "upstream gone"
    assert answer_text(httpx.Response(503), "error") == "Service Unavailable"


def test_the_docker_driver_sends_and_names_every_driver_action() -> None:
    assert set(ACTION_REQUESTS) == set(RESULTS) == set(DRIVER_ACTIONS)


def test_each_servers_first_verdict_is_an_event_and_only_the_first() -> None:
    balancer = make_balancer(fall=2)
    one, two = balancer.get("server1"), balancer.get("server2")
    for _ in range(3):
        balancer.record_check(one, True, 200, "200 OK", 1.0)
    balancer.record_check(two, False, None, "connection refused", 1.0)
    balancer.record_check(two, False, None, "connection refused", 1.0)
    balancer.record_check(two, True, 200, "200 OK", 1.0)
    changes = [(e["server"], e["from"], e["to"], e["reason"]) for e in balancer.events.since(0)]
    assert changes == [
        ("server1", None, "UP", "first verdict: check passed (200 OK)"),
        ("server2", "UP", "DOWN", "2 checks failed: connection refused"),  # a change says it
    ]

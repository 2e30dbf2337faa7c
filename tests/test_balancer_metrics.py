"""Each figure the balancer shows a class has one definition (docs/api.md), read back here
from a known workload."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import ServiceProcess
from test_balancer_helpers import EchoBackend, balancer_process, status_of

from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.balancer.server import LATENCY_MAX_AGE, RateWindow, ServerStats
from services.balancer.status import shares, status
from services.common import percentile


@pytest.mark.parametrize("now", [1015.0, 1015.37, 1015.99, 1020.5])
def test_a_steady_workload_reads_back_its_own_rate(now: float) -> None:
    window = RateWindow(started=1000.0)
    for k in range(int((now - 1000.0) * 20)):  # 20 events per second, evenly spaced
        window.add(1000.0 + k / 20)
    # Within one event over the 9 s or more the window covers (the old 10 s divisor read 18).
    assert window.per_second(now) == pytest.approx(20.0, abs=1 / 9)


def test_the_rate_just_after_a_start_or_reset_is_over_the_time_since() -> None:
    window = RateWindow(started=1000.3)
    for k in range(70):  # 20 per second for 3.5 s
        window.add(1000.3 + k / 20)
    assert window.per_second(1003.8) == pytest.approx(20.0, abs=0.5)


def test_the_balancers_p95_is_the_clients_nearest_rank() -> None:
    stats = ServerStats()
    values = [n / 1000 for n in range(1, 101)]  # 1 .. 100 ms
    for seconds in reversed(values):
        stats.record_latency(seconds)
    assert stats.percentiles_ms() == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert percentile([n * 1.0 for n in range(1, 101)], 95) == 95.0
    stats = ServerStats()
    for n in range(1, 21):  # 20 answers: the 19th smallest is the p95 (ceil(0.95 x 20))
        stats.record_latency(n / 1000)
    assert stats.percentiles_ms()["p95"] == 19.0


def test_the_p95_forgets_answers_older_than_its_age_window() -> None:
    """An idle server shows no p95, not the one of its last busy minute."""
    stats = ServerStats()
    for n in range(1, 101):  # a slow burst at t = 1000: 1 .. 100 ms
        stats.record_latency(n / 1000, now=1000.0)
    stats.record_latency(0.002, now=1000.0 + LATENCY_MAX_AGE - 1)  # one fast answer later
    assert stats.percentiles_ms(now=1000.0 + LATENCY_MAX_AGE - 0.5)["p95"] == 95.0
    assert stats.percentiles_ms(now=1000.0 + LATENCY_MAX_AGE + 0.5)["p95"] == 2.0
    assert stats.percentiles_ms(now=1000.0 + 2 * LATENCY_MAX_AGE) == {
        "p50": None,
        "p95": None,
        "p99": None,
    }


@pytest.mark.parametrize(
    "counts", [[1, 1, 1], [2, 1], [1, 2, 3, 4, 5, 6, 7], [997, 1, 1, 1], [0, 5], [3] * 16]
)
def test_shares_sum_to_exactly_100_when_there_is_any_traffic(counts: list[int]) -> None:
    percents = shares(counts)
    assert round(sum(percents), 6) == 100.0
    whole = sum(counts)
    for count, percent in zip(counts, percents, strict=True):
        assert abs(percent - 100 * count / whole) < 0.1 + 1e-9
    assert shares([0, 0]) == [0.0, 0.0]


def test_a_server_out_of_rotation_has_no_share_and_the_others_still_sum_to_100() -> None:
    """Right after a stop, a drain or a weight of 0: the 10 s window still holds its old
    tries, but the shares are those of the servers that take new traffic."""
    names = ("server1", "server2", "server3")
    backends = [(name, f"http://127.0.0.1:{5001 + i}") for i, name in enumerate(names)]
    balancer = Balancer(BalancerConfig(backends=backends))
    for server in balancer.servers:
        for _ in range(10):
            server.stats.tries += 1
            server.stats.rate.add(time.monotonic())
    one = balancer.servers[0]
    balancer.record_live_failure(one, "refused", "connection refused")  # DOWN at once
    balancer.set_weight("server2", 0)
    recent = [s["share_10s"] for s in status(balancer)["servers"]]
    assert recent == [0.0, 0.0, 100.0]
    balancer.set_weight("server2", 1)
    recent = [s["share_10s"] for s in status(balancer)["servers"]]
    assert recent == [0.0, 50.0, 50.0]
    overall = [s["share_total"] for s in status(balancer)["servers"]]
    assert round(sum(overall), 6) == 100.0  # since start: every server's tries


@pytest.fixture
def pair() -> Iterator[tuple[ServiceProcess, list[EchoBackend]]]:
    echoes = [EchoBackend("server1").start(), EchoBackend("server2").start()]
    backends = [(echo.name, echo.url) for echo in echoes]
    slow_checks = ["--check-interval", "60", "--fast-check-interval", "60"]  # no check races
    balancer = balancer_process(backends, "round_robin", *slow_checks).start()
    yield balancer, echoes
    balancer.close()
    for echo in echoes:
        echo.close()


def metric(balancer: ServiceProcess, name: str, server: str | None = None) -> float:
    text = httpx.get(balancer.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("server") == server:
                return sample.value
    raise AssertionError(f"{name} {server} not exposed")


def test_requests_tries_shares_and_no_backend_from_a_known_workload(
    pair: tuple[ServiceProcess, list[EchoBackend]],
) -> None:
    balancer, echoes = pair
    with httpx.Client(base_url=balancer.url) as http:
        for _ in range(20):
            assert http.get("/echo").status_code == 200
        status = status_of(balancer)
        assert status["requests_total"] == 20
        assert [s["tries_total"] for s in status["servers"]] == [10, 10]
        assert [s["share_total"] for s in status["servers"]] == [50.0, 50.0]
        assert [s["share_10s"] for s in status["servers"]] == [50.0, 50.0]
        assert status["no_backend"] == 0
        assert metric(balancer, "ticslab_balancer_requests_total") == 20
        assert metric(balancer, "ticslab_balancer_tries_total", "server1") == 10

        for echo in echoes:
            echo.close()  # both refuse from now on; the checks will not notice for a minute
        answers = [http.get("/echo").status_code for _ in range(3)]
    assert answers == [503, 503, 503]
    status = status_of(balancer)
    assert status["requests_total"] == 23
    # The first one tried both servers and was refused twice; the next two found none UP.
    assert [s["tries_total"] for s in status["servers"]] == [11, 11]
    assert status["no_backend"] == 3
    assert metric(balancer, "ticslab_balancer_no_backend_total") == 3


def test_errors_never_outnumber_requests(pair: tuple[ServiceProcess, list[EchoBackend]]) -> None:
    """A request the balancer refuses itself (here a WebSocket upgrade, 501) is a request too:
    every error answer belongs to a counted request."""
    balancer, _ = pair
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    with httpx.Client(base_url=balancer.url) as http:
        assert [http.get("/echo").status_code for _ in range(3)] == [200] * 3
        assert [http.get("/echo", headers=upgrade).status_code for _ in range(2)] == [501] * 2
    status = status_of(balancer)
    errors = httpx.get(balancer.url + "/errors/stats").json()
    assert (status["requests_total"], errors["total_errors"]) == (5, 2)
    assert metric(balancer, "ticslab_balancer_requests_total") == 5

"""``/metrics``: Prometheus families built from the balancer's own counters at scrape time.

The hot path only bumps plain integers; prometheus-client formats them when scraped (a
custom collector), which is cheaper than calling its metric objects on every request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from services.balancer.server import LATENCY_BUCKETS
from services.balancer.status import RESPONSE_CLASSES
from services.common import SERVER_STATES, UP

if TYPE_CHECKING:
    from services.balancer.balancer import Balancer

PREFIX = "ticslab_balancer"


class BalancerCollector:
    """Reads the per-server counters of one ``Balancer``."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def collect(self) -> Iterator[Metric]:
        servers = self.balancer.servers
        requests = CounterMetricFamily(
            f"{PREFIX}_requests", "Client requests the balancer received to forward"
        )
        requests.add_metric([], self.balancer.requests_total)
        tries = CounterMetricFamily(
            f"{PREFIX}_tries", "Tries sent to each server, retries included", labels=["server"]
        )
        responses = CounterMetricFamily(
            f"{PREFIX}_responses", "Answers by status class", labels=["server", "code_class"]
        )
        failures = CounterMetricFamily(
            f"{PREFIX}_failures", "Tries without an answer", labels=["server", "kind"]
        )
        retries = CounterMetricFamily(
            f"{PREFIX}_retries", "Tries retried on another server", labels=["server"]
        )
        latency = HistogramMetricFamily(
            f"{PREFIX}_response_seconds", "Time to a full answer", labels=["server"]
        )
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_in_flight", "Requests in flight", labels=["server"]
        )
        state = GaugeMetricFamily(
            f"{PREFIX}_server_state", "1 for the server's current state", labels=["server", "state"]
        )
        up = GaugeMetricFamily(
            f"{PREFIX}_server_up", "1 if the server takes traffic", labels=["server"]
        )
        for server in servers:
            stats = server.stats
            name = server.name
            tries.add_metric([name], stats.tries)
            for code_class, count in zip(RESPONSE_CLASSES, stats.responses, strict=True):
                responses.add_metric([name, code_class], count)
            failures.add_metric([name, "connect"], stats.connect_failures)
            failures.add_metric([name, "timeout"], stats.timeouts)
            failures.add_metric([name, "reset"], stats.resets)
            retries.add_metric([name], stats.retries)
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), stats.buckets, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            latency.add_metric([name], buckets, stats.latency_sum)
            in_flight.add_metric([name], server.in_flight)
            for value in SERVER_STATES:
                state.add_metric([name, value], 1.0 if server.state == value else 0.0)
            up.add_metric([name], 1.0 if server.state == UP else 0.0)
        no_backend = CounterMetricFamily(
            f"{PREFIX}_no_backend",
            "Client requests answered 503: no server was UP, or every one tried refused",
        )
        no_backend.add_metric([], self.balancer.no_backend)
        compressed = CounterMetricFamily(
            f"{PREFIX}_compressed_bytes",
            "Bytes of compressed answers (--compress): the servers' (in), sent to clients (out)",
            labels=["encoding", "stage"],
        )
        for encoding, counts in self.balancer.compression.by_encoding.items():
            compressed.add_metric([encoding, "in"], counts.bytes_in)
            compressed.add_metric([encoding, "out"], counts.bytes_out)
        yield from (
            requests,
            tries,
            responses,
            failures,
            retries,
            latency,
            in_flight,
            state,
            up,
            no_backend,
            compressed,
        )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def registry_for(balancer: Balancer) -> CollectorRegistry:
    """A registry of its own per balancer, so tests can run several in one process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BalancerCollector(balancer))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

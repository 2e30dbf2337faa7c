"""The five built-in ways to choose a server, and the one interface a student's own algorithm
shares with them (a plugin: services/balancer/plugin.py, docs/algorithm-plugin.md).

An algorithm is a class with an optional ``name`` (else the class's name) and a method
``pick(self, servers, client) -> server``. The balancer makes a fresh instance each time it
switches to one, so whatever an algorithm remembers (round robin's counters) lives on the
instance. ``servers`` is never empty, keeps the configured order and holds only servers that
may take this try (UP, of effective weight above 0, not yet tried by this request);
``client`` is the client's address (for ``ip_hash``). An algorithm reads a server only
through ``ServerView``, the built-ins as much as a plugin. Every built-in honours weights
(``effective_weight``: the configured weight, ramped during a slow start): with equal weights
each behaves exactly as its unweighted form.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

# Round robin remembers servers a retry skipped; past this many absent ones, it forgets them.
MAX_FORGOTTEN = 16


class ServerView(Protocol):
    """What an algorithm may read of a server: a small surface kept stable for students'
    algorithms (docs/algorithm-plugin.md). The built-ins are given ``Server`` (server.py),
    which has more; a plugin gets read-only copies (plugin.py, ``View``), never a ``Server``."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def in_flight(self) -> int: ...  # requests sent to it and not yet answered
    @property
    def weight(self) -> int: ...  # configured, 0 to 256
    def effective_weight(self, now: float) -> float: ...  # now: time.monotonic()
    def latency_cost(self, now: float) -> float: ...  # seconds, peak EWMA decayed to now


S = TypeVar("S", bound=ServerView)


class Algorithm(Protocol):
    """The interface; ``name`` is optional on a plugin's class."""

    def pick(self, servers: Sequence[S], client: str) -> S: ...


def _weights(servers: Sequence[ServerView]) -> list[float]:
    now = time.monotonic()
    return [server.effective_weight(now) for server in servers]


class Random:
    """The handout's choice: any server, with probability in proportion to its weight."""

    name = "random"

    def pick(self, servers: Sequence[S], client: str) -> S:
        return random.choices(servers, weights=_weights(servers))[0]


class RoundRobin:
    """Each server in turn, as often as its weight says, spread out: nginx's smooth weighted
    round robin (weights 3:1 give a a b a, a a b a, ... never a a a b). A change of any
    configured weight starts the cycle again, so it takes effect at once."""

    name = "round_robin"

    def __init__(self) -> None:
        self.current: dict[ServerView, float] = {}
        self.configured: dict[ServerView, int] = {}

    def pick(self, servers: Sequence[S], client: str) -> S:
        current, configured = self.current, self.configured
        if any(configured.get(server, server.weight) != server.weight for server in servers):
            current.clear()
        configured.update((server, server.weight) for server in servers)
        if len(current) > 2 * len(servers) + MAX_FORGOTTEN:
            _forget_absent(current, servers)  # servers that left (discovery)
            _forget_absent(configured, servers)
        weights = _weights(servers)
        for server, weight in zip(servers, weights, strict=True):
            current[server] = current.get(server, 0.0) + weight
        chosen = max(servers, key=lambda server: current[server])  # the first on ties
        current[chosen] -= sum(weights)
        return chosen


def _forget_absent(remembered: dict[ServerView, Any], servers: Sequence[ServerView]) -> None:
    for server in [s for s in remembered if s not in servers]:
        del remembered[server]


def _lowest(servers: Sequence[S], cost: Callable[[S, float], float]) -> S:
    """The cheapest server, its cost divided by its weight; ties are broken at random so no
    server is always first."""
    best: list[S] = []
    best_cost = float("inf")
    now = time.monotonic()
    for server in servers:
        value = cost(server, now) / server.effective_weight(now)
        if value < best_cost:
            best, best_cost = [server], value
        elif value == best_cost:
            best.append(server)
    return best[0] if len(best) == 1 else random.choice(best)


class LeastConnections:
    """Fewest requests in flight per unit of weight, counting this one (HAProxy
    ``leastconn``)."""

    name = "least_connections"

    def pick(self, servers: Sequence[S], client: str) -> S:
        return _lowest(servers, lambda server, now: server.in_flight + 1)


class ResponseTime:
    """Peak-EWMA latency, decayed to now, times (in flight + 1): Finagle's and Linkerd's
    cost, per unit of weight."""

    name = "response_time"

    def pick(self, servers: Sequence[S], client: str) -> S:
        return _lowest(
            servers, lambda server, now: server.latency_cost(now) * (server.in_flight + 1)
        )


def _score(client: str, server: ServerView) -> float:
    """A fixed number strictly between 0 and 1 for the pair: 52 bits plus a half, which a
    float holds exactly (with 53, the largest would round up to 1 and its log be 0)."""
    digest = hashlib.blake2b(f"{client}|{server.name}".encode(), digest_size=8).digest()
    return ((int.from_bytes(digest, "big") >> 12) + 0.5) / 2**52


class IpHash:
    """Weighted rendezvous (highest random weight) hashing of the client address.

    Each (client, server) pair gets a fixed score and the client goes to its highest-scoring
    server that may take it: when a server leaves only its own clients move, and they come
    back when it returns. The score ``-weight / ln(u)`` gives each server a share of clients
    in proportion to its weight (with equal weights, the order of ``u`` alone).
    """

    name = "ip_hash"

    def pick(self, servers: Sequence[S], client: str) -> S:
        now = time.monotonic()
        return max(
            servers,
            key=lambda server: -server.effective_weight(now) / math.log(_score(client, server)),
        )


# Name -> class: the built-ins, in the order the dashboard cycles them.
BUILT_INS: dict[str, Callable[[], Algorithm]] = {
    cls.name: cls for cls in (Random, RoundRobin, LeastConnections, ResponseTime, IpHash)
}
ALGORITHMS = tuple(BUILT_INS)
# Each built-in by the handout's own name (docker-ejemplo-3), as the class reads it in Spanish.
HANDOUT_NAMES = {
    "random": "Aleatorio",
    "round_robin": "Round Robin",
    "least_connections": "Menor número de conexiones",
    "response_time": "Tiempo de respuesta",
    "ip_hash": "Hash IP",
}


def make(name: str) -> Algorithm:
    """A fresh instance of the built-in ``name``; ValueError names the valid ones."""
    if name not in BUILT_INS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return BUILT_INS[name]()

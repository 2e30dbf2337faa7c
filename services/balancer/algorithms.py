"""The five ways to choose a server. Each gets only servers that may take the try.

A strategy is a function ``pick(candidates, client) -> Server``; ``candidates`` is never
empty, keeps the configured order and holds only servers of effective weight above 0;
``client`` is the client's address (for ``ip_hash``). Every strategy honours weights
(``Server.effective_weight``: the configured weight, ramped during a slow start): with equal
weights each behaves exactly as its unweighted form.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from services.balancer.server import Server

Pick = Callable[[Sequence[Server], str], Server]
# Round robin remembers servers a retry skipped; past this many absent ones, it forgets them.
MAX_FORGOTTEN = 16


def _weights(candidates: Sequence[Server]) -> list[float]:
    now = time.monotonic()
    return [server.effective_weight(now) for server in candidates]


def pick_random(candidates: Sequence[Server], client: str) -> Server:
    """The handout's choice: any server, with probability in proportion to its weight."""
    return random.choices(candidates, weights=_weights(candidates))[0]


def round_robin() -> Pick:
    """Each server in turn, as often as its weight says, spread out: nginx's smooth weighted
    round robin (weights 3:1 give a a b a, a a b a, ... never a a a b). A change of any
    configured weight starts the cycle again, so it takes effect at once."""
    current: dict[Server, float] = {}
    configured: dict[Server, int] = {}

    def pick(candidates: Sequence[Server], client: str) -> Server:
        if any(configured.get(server, server.weight) != server.weight for server in candidates):
            current.clear()
        configured.update((server, server.weight) for server in candidates)
        if len(current) > 2 * len(candidates) + MAX_FORGOTTEN:
            _forget_absent(current, candidates)  # servers that left (discovery)
            _forget_absent(configured, candidates)
        weights = _weights(candidates)
        for server, weight in zip(candidates, weights, strict=True):
            current[server] = current.get(server, 0.0) + weight
        chosen = max(candidates, key=lambda server: current[server])  # the first on ties
        current[chosen] -= sum(weights)
        return chosen

    return pick


def _forget_absent(remembered: dict[Server, Any], candidates: Sequence[Server]) -> None:
    for server in [s for s in remembered if s not in candidates]:
        del remembered[server]


def _lowest(candidates: Sequence[Server], cost: Callable[[Server, float], float]) -> Server:
    """The cheapest server, its cost divided by its weight; ties are broken at random so no
    server is always first."""
    best: list[Server] = []
    best_cost = float("inf")
    now = time.monotonic()
    for server in candidates:
        value = cost(server, now) / server.effective_weight(now)
        if value < best_cost:
            best, best_cost = [server], value
        elif value == best_cost:
            best.append(server)
    return best[0] if len(best) == 1 else random.choice(best)


def pick_least_connections(candidates: Sequence[Server], client: str) -> Server:
    """Fewest requests in flight per unit of weight, counting this one (HAProxy
    ``leastconn``)."""
    return _lowest(candidates, lambda server, now: server.in_flight + 1)


def pick_response_time(candidates: Sequence[Server], client: str) -> Server:
    """Peak-EWMA latency, decayed to now, times (in flight + 1): Finagle's and Linkerd's
    cost, per unit of weight."""
    return _lowest(
        candidates, lambda server, now: server.latency_cost(now) * (server.in_flight + 1)
    )


def _score(client: str, server: Server) -> float:
    """A fixed number strictly between 0 and 1 for the pair: 52 bits plus a half, which a
    float holds exactly (with 53, the largest would round up to 1 and its log be 0)."""
    digest = hashlib.blake2b(f"{client}|{server.name}".encode(), digest_size=8).digest()
    return ((int.from_bytes(digest, "big") >> 12) + 0.5) / 2**52


def pick_ip_hash(candidates: Sequence[Server], client: str) -> Server:
    """Weighted rendezvous (highest random weight) hashing of the client address.

    Each (client, server) pair gets a fixed score and the client goes to its highest-scoring
    server that may take it: when a server leaves only its own clients move, and they come
    back when it returns. The score ``-weight / ln(u)`` gives each server a share of clients
    in proportion to its weight (with equal weights, the order of ``u`` alone).
    """
    now = time.monotonic()
    return max(
        candidates,
        key=lambda server: -server.effective_weight(now) / math.log(_score(client, server)),
    )


# Name -> a fresh strategy: the one list of algorithms, in the order the dashboard cycles.
STRATEGIES: dict[str, Callable[[], Pick]] = {
    "random": lambda: pick_random,
    "round_robin": round_robin,
    "least_connections": lambda: pick_least_connections,
    "response_time": lambda: pick_response_time,
    "ip_hash": lambda: pick_ip_hash,
}
ALGORITHMS = tuple(STRATEGIES)


def make(name: str) -> Pick:
    """A fresh strategy for ``name``; ValueError names the valid ones."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return STRATEGIES[name]()

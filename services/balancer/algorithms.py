"""The five ways to choose a server. Each gets only servers that are UP and may take the try.

A strategy is a function ``pick(candidates, client) -> Server``; ``candidates`` is never
empty and keeps the configured order; ``client`` is the client's address (for ``ip_hash``).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Sequence

from services.balancer.server import Server

Pick = Callable[[Sequence[Server], str], Server]


def pick_random(candidates: Sequence[Server], client: str) -> Server:
    """The handout's choice: any server, uniformly."""
    return random.choice(candidates)


def round_robin() -> Pick:
    """Each server in turn (a fresh counter per strategy instance)."""
    counter = itertools.count()

    def pick(candidates: Sequence[Server], client: str) -> Server:
        return candidates[next(counter) % len(candidates)]

    return pick


def _lowest(candidates: Sequence[Server], cost: Callable[[Server], float]) -> Server:
    """The cheapest server; ties are broken at random so no server is always first."""
    best: list[Server] = []
    best_cost = float("inf")
    for server in candidates:
        value = cost(server)
        if value < best_cost:
            best, best_cost = [server], value
        elif value == best_cost:
            best.append(server)
    return best[0] if len(best) == 1 else random.choice(best)


def pick_least_connections(candidates: Sequence[Server], client: str) -> Server:
    """Fewest requests in flight (HAProxy ``leastconn``)."""
    return _lowest(candidates, lambda server: server.in_flight)


def pick_response_time(candidates: Sequence[Server], client: str) -> Server:
    """Peak-EWMA latency times (in flight + 1): Finagle's and Linkerd's cost."""
    return _lowest(candidates, lambda server: server.ewma * (server.in_flight + 1))


def _weight(client: str, server: Server) -> int:
    digest = hashlib.blake2b(f"{client}|{server.name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pick_ip_hash(candidates: Sequence[Server], client: str) -> Server:
    """Rendezvous (highest random weight) hashing of the client address.

    Each (client, server) pair gets a fixed score and the client goes to its highest-scoring
    server that is UP: when a server leaves only its own clients move, and they come back
    when it returns.
    """
    return max(candidates, key=lambda server: _weight(client, server))


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

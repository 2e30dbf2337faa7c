"""``ticslab experiment algorithms``: the same workload through every algorithm, one server
slowed down, to show when each algorithm fits (the handout's list).

The workload is light reads (``GET /api/tasks?limit=1``), so what differs between runs is the
choice of server, not the work. Server2 carries the latency fault for the whole experiment.
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from services.balancer.algorithms import ALGORITHMS
from services.experiment.lab import Lab, LabError, throwaway_stack
from services.experiment.load import Call, Outcome, failed, latency_ms, run_load, shares
from services.experiment.result import Claim, Result

SLOW_SERVER = "server2"
PATH = "/api/tasks?limit=1"
MAX_SECONDS_PER_ALGORITHM = 15.0  # the defaults take about 5 s each; a slow machine stops here
ROUND_ROBIN_TOLERANCE = 0.05  # "near 50/50": each share within 5 points


@dataclass
class Settings:
    requests: int = 300
    concurrency: int = 4
    slow_ms: int = 250
    ip_clients: int = 0  # 0: every call from 127.0.0.1; K: from 127.0.0.2 .. 127.0.0.(K+1)
    plugin: str | None = None  # path/to/file.py:ClassName, measured after the built-ins

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.requests <= 100_000:
            found.append("--requests is 1 to 100000")
        if not 1 <= self.concurrency <= 256:
            found.append("--concurrency is 1 to 256")
        if not 0 <= self.slow_ms <= 5_000:
            found.append("--slow-ms is 0 to 5000")
        if not 0 <= self.ip_clients <= 250:
            found.append("--ip-clients is 0 to 250")
        return found


def run(settings: Settings) -> Result:
    """Start a stack, slow server2 down, measure each algorithm in turn."""
    sources = loopback_sources(settings.ip_clients)
    began = time.monotonic()
    result = Result("algorithms", vars(settings).copy())
    with throwaway_stack(algorithm=settings.plugin or "round_robin") as lab:
        names = [*ALGORITHMS, *([plugin_name(lab)] if settings.plugin else [])]
        lab.set_fault(SLOW_SERVER, "latency", ms=settings.slow_ms)
        for name in names:
            lab.set_algorithm(name)
            lab.control("POST", "/control/stats/reset")  # algorithm_errors counts this run's
            outcomes = measure(lab, settings, sources)
            result.results.append(row(name, outcomes, lab.servers, sources))
            result.results[-1]["algorithm_errors"] = lab.status()["algorithm_errors"]
    result.claims = claims(result.results, settings)
    result.seconds = time.monotonic() - began
    return result


def loopback_sources(count: int) -> list[str | None]:
    """``count`` source addresses from 127.0.0.2 up, each checked; ``[None]`` for none."""
    if count == 0:
        return [None]
    sources: list[str | None] = []
    for number in range(2, count + 2):
        address = f"127.0.0.{number}"
        with socket.socket() as sock:
            try:
                sock.bind((address, 0))
            except OSError as error:
                raise LabError(
                    f"cannot send from {address} ({error.strerror}); on macOS add it first: "
                    f"sudo ifconfig lo0 alias {address} up"
                ) from error
        sources.append(address)
    return sources


def plugin_name(lab: Lab) -> str:
    """The name the balancer gave the student's class (it started with it)."""
    return str(lab.control("GET", "/control")["algorithm"])


def measure(lab: Lab, settings: Settings, sources: list[str | None]) -> list[Outcome]:
    """Each call from a client address drawn at random: taken in turn, with an even number
    of clients, round robin would send each client's calls to one server and look sticky."""
    calls = [
        Call("GET", PATH, client=random.randrange(len(sources))) for _ in range(settings.requests)
    ]
    return run_load(
        lab.balancer_url, calls, settings.concurrency, sources, MAX_SECONDS_PER_ALGORITHM
    )


def row(
    name: str, outcomes: list[Outcome], servers: list[str], sources: list[str | None]
) -> dict[str, Any]:
    """One algorithm's numbers: shares, latency percentiles, errors, and per client address
    where its answered calls went (``affinity``: the smallest fraction of a client's answered
    calls that its most used server answered; 1.0: every client always reached the same
    server)."""
    by_client: dict[str, Counter[str]] = {}
    for outcome in outcomes:
        if outcome.server:
            address = sources[outcome.call.client] or "127.0.0.1"
            by_client.setdefault(address, Counter())[outcome.server] += 1
    affinity = min((max(c.values()) / sum(c.values()) for c in by_client.values()), default=0.0)
    return {
        "algorithm": name,
        "requests": len(outcomes),
        "share": shares(outcomes, servers),
        **latency_ms(outcomes),
        "errors": sum(failed(outcome) for outcome in outcomes),
        "affinity": round(affinity, 4),
        "clients": {address: dict(counts) for address, counts in sorted(by_client.items())},
    }


def claims(rows: list[dict[str, Any]], settings: Settings) -> list[Claim]:
    """The handout's sentences, checked against the rows of the built-ins."""
    by_name = {str(r["algorithm"]): r for r in rows}

    def p95(name: str) -> float:
        return float(by_name[name]["p95_ms"])

    blind = min(p95("random"), p95("round_robin"))  # below both
    rr_share: dict[str, float] = by_name["round_robin"]["share"]
    return [
        Claim(
            "round robin splits the requests near 50/50",
            "round robin reparte las peticiones cerca de 50/50",
            all(abs(share - 0.5) <= ROUND_ROBIN_TOLERANCE for share in rr_share.values()),
        ),
        Claim(
            f"with one server {settings.slow_ms} ms slower, response time's p95 is below "
            "random's and round robin's",
            f"con un servidor {settings.slow_ms} ms más lento, el p95 de tiempo de respuesta es "
            "menor que el de aleatorio y round robin",
            p95("response_time") < blind,
        ),
        Claim(
            "least connections' p95 is below random's and round robin's too",
            "el p95 de menos conexiones también es menor que el de aleatorio y round robin",
            p95("least_connections") < blind,
        ),
        Claim(
            "IP hash keeps each client address on one server",
            "IP hash mantiene cada dirección cliente en un solo servidor",
            by_name["ip_hash"]["affinity"] == 1.0,
        ),
    ]

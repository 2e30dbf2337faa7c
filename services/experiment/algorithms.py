"""``ticslab experiment algorithms``: the same workload through every algorithm, one server
slowed down, to show when each algorithm fits (the handout's list).

The workload is light reads (``GET /api/tasks?limit=1``), so what differs between runs is the
choice of server, not the work. Server2 carries the latency fault for the whole experiment.
Each repeat measures every algorithm once, in turn, so a slow moment of the machine falls on
one repeat of all of them rather than on every repeat of one.
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
from services.experiment.result import HANDOUT, LAB, REPEATS, Claim, Result, Words, combine
from services.experiment.settings import Problems, check_range

SLOW_SERVER = "server2"
PATH = "/api/tasks?limit=1"
MAX_SECONDS_PER_ALGORITHM = 15.0  # per run; the defaults take 1-5 s; a slow machine stops here
ROUND_ROBIN_TOLERANCE = 5.0  # points: "near 50/50" is each share within 45-55 %
P95_GAIN = 25.0  # %: response time's p95 must be this much below the blind algorithms' p95
# Points: least connections must give the slow server this much less than round robin. Its
# p95 is no claim: the slow server's share nears 5 % on a busy machine, where p95 sits.
FEWER_POINTS = 25.0
DEFAULT_IP_CLIENTS = 6  # 127.0.0.2-7: four hash to server1 and two to server2


@dataclass
class AlgorithmsSettings:
    requests: int = 200
    concurrency: int = 6
    slow_ms: int = 250
    # None: DEFAULT_IP_CLIENTS where the system answers on them, else only 127.0.0.1;
    # 0: every call from 127.0.0.1; K: from 127.0.0.2 .. 127.0.0.(K+1)
    ip_clients: int | None = None
    plugin: str | None = None  # path/to/file.py:ClassName, measured after the built-ins
    repeat: int = REPEATS

    def problems(self) -> Problems:
        return [
            *check_range("--requests", self.requests, 1, 100_000),
            *check_range("--concurrency", self.concurrency, 1, 256),
            *check_range("--slow-ms", self.slow_ms, 0, 5_000),
            *check_range("--ip-clients", self.ip_clients or 0, 0, 250),
            *check_range("--repeat", self.repeat, 1, 10),
        ]


def run(settings: AlgorithmsSettings) -> Result:
    """Start a stack, slow server2 down, measure each algorithm in turn, ``repeat`` times."""
    began = time.monotonic()
    sources, notes = client_sources(settings.ip_clients)
    used = {**vars(settings), "ip_clients": len(sources) if sources[0] else 0}
    result = Result("algorithms", used, notes=notes)
    with throwaway_stack(algorithm=settings.plugin or "round_robin") as lab:
        names = [*ALGORITHMS, *([plugin_name(lab)] if settings.plugin else [])]
        lab.set_fault(SLOW_SERVER, "latency", ms=settings.slow_ms)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for _ in range(settings.repeat):
            for name in names:
                lab.set_algorithm(name)
                lab.control("POST", "/control/stats/reset")  # algorithm_errors counts this run's
                one = row(name, measure(lab, settings, sources), lab.servers, sources)
                one["algorithm_errors"] = lab.status()["algorithm_errors"]
                runs[name].append(one)
    result.results = [combined(name_runs) for name_runs in runs.values()]
    result.claims = claims(runs, settings)
    result.notes += ip_hash_notes(runs["ip_hash"][0]["clients"])
    result.seconds = time.monotonic() - began
    return result


def client_sources(count: int | None) -> tuple[list[str | None], list[Words]]:
    """The source addresses, and a note when the default several fell back to 127.0.0.1:
    where the loopback answers only there (macOS), the defaults still run; asked for
    explicitly, the clear error stays."""
    if count is not None:
        return loopback_sources(count), []
    try:
        return loopback_sources(DEFAULT_IP_CLIENTS), []
    except LabError:
        return [None], [("ip_fallback", {})]


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
                raise LabError("lab_source", address=address, reason=error.strerror) from error
        sources.append(address)
    return sources


def plugin_name(lab: Lab) -> str:
    """The name the balancer gave the student's class (it started with it)."""
    return str(lab.control("GET", "/control")["algorithm"])


def measure(lab: Lab, settings: AlgorithmsSettings, sources: list[str | None]) -> list[Outcome]:
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
    """One algorithm's numbers in one run: shares, latency percentiles, errors, and per
    client address where its answered calls went (``affinity``: the smallest fraction of a
    client's answered calls that its most used server answered; 1.0: every client always
    reached the same server)."""
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


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """An algorithm's row over the repeats: mean and spread of its shares and percentiles,
    its errors and failed picks added up, its lowest affinity, its clients' calls added up."""
    clients: dict[str, Counter[str]] = {}
    for one in runs:
        for address, counts in one["clients"].items():
            clients.setdefault(address, Counter()).update(counts)
    return {
        **combine(runs, ["share", "p50_ms", "p95_ms", "p99_ms"]),
        "errors": sum(one["errors"] for one in runs),
        "algorithm_errors": sum(one["algorithm_errors"] for one in runs),
        "affinity": min(one["affinity"] for one in runs),
        "clients": {address: dict(counts) for address, counts in sorted(clients.items())},
    }


def claims(runs: dict[str, list[dict[str, Any]]], settings: AlgorithmsSettings) -> list[Claim]:
    """The handout's sentences (and the lab's one about least connections: the handout defines
    it, but claims only that it suits varying work), each checked on every repeat of the
    built-ins."""
    repeats = range(settings.repeat)

    def gain(name: str, i: int) -> float:
        """How much lower (in %) ``name``'s p95 was than the lower of the blind ones', run i."""
        blind = min(runs["random"][i]["p95_ms"], runs["round_robin"][i]["p95_ms"]) or 1.0
        return float(100 * (blind - runs[name][i]["p95_ms"]) / blind)

    def slow_share(name: str, i: int) -> float:
        return float(100 * runs[name][i]["share"][SLOW_SERVER])

    def off_even(i: int) -> float:
        shares = runs["round_robin"][i]["share"].values()
        return float(max(abs(100 * share - 50) for share in shares))

    p95 = {"required": round(P95_GAIN), "slow_ms": settings.slow_ms}
    return [
        Claim(
            "round_robin_even", HANDOUT, tuple(off_even(i) for i in repeats),
            ROUND_ROBIN_TOLERANCE, False, "against_round_robin_even", "points",
            {"tolerance": f"{ROUND_ROBIN_TOLERANCE:g}"},
        ),
        Claim(
            "response_time_p95", HANDOUT, tuple(gain("response_time", i) for i in repeats),
            P95_GAIN, True, "against_p95", "%", p95,
        ),
        Claim(
            "least_connections_fewer", LAB,
            tuple(slow_share("round_robin", i) - slow_share("least_connections", i)
                  for i in repeats),
            FEWER_POINTS, True, "against_slow_share", "points",
            {"required": f"{FEWER_POINTS:g}"},
        ),
        Claim(
            "ip_hash_affinity", HANDOUT,
            tuple(100 * runs["ip_hash"][i]["affinity"] for i in repeats),
            100.0, True, "against_affinity", "%",
        ),
    ]  # fmt: skip


def ip_hash_notes(clients: dict[str, dict[str, int]]) -> list[Words]:
    """Where IP hash put the client addresses, and whether that split says anything: when
    every address lands on one server, that is the luck of the hash."""
    homes = Counter(max(counts, key=counts.__getitem__) for counts in clients.values())
    if len(clients) == 1:
        return [("ip_hash_one", {"server": next(iter(homes))})]
    if len(homes) == 1:
        return [("ip_hash_luck", {"count": len(clients), "server": next(iter(homes))})]
    counts = [("ip_hash_count", {"count": n, "server": s}) for s, n in sorted(homes.items())]
    return [("ip_hash_split", {"counts": counts})]

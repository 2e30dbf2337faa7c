"""What authentication at the edge costs: ``python bench/bench_auth.py [--seconds 5]``.

1. The layer alone (services/balancer/auth.py, in this process, real bcrypt at cost 10): the
   same good ``Authorization`` header again and again, with the verified-header cache and
   without it (a cache of 0 entries: every request pays a bcrypt check).
2. The whole hop: ``wrk -t1 -c8`` through ``ticslab balancer`` in front of two task servers,
   without ``--auth-users`` and with it (every request carrying the same good header, as a
   client does), interleaved, the best of 3 runs each.
Targets: with the cache, the layer adds <= 50 us a request; through the balancer, auth keeps
>= 0.8 x the throughput without it. Needs /usr/bin/wrk. Every run is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import httpx
from bench_proxy import wrk
from stack import ServiceProcess, report, start_balancer, start_taskserver

sys.path.insert(0, str(Path(__file__).parent.parent))

from services.balancer.auth import Checker, EdgeAuth, VerifiedCache
from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig

ROUNDS = 3
HEADER = b"Basic " + base64.b64encode(b"ana:secreto")


async def layer_seconds(cached: bool, seconds: float) -> tuple[int, float]:
    """(requests, seconds per request) through the layer for about ``seconds``."""

    async def inner(scope: object, receive: object, send: object) -> None:
        return None

    async def send(message: object) -> None:
        return None

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    hashed = bcrypt.hashpw(b"secreto", bcrypt.gensalt(10)).decode()
    checker = Checker({"ana": hashed})
    edge = EdgeAuth(inner, Balancer(BalancerConfig(backends=[])), "en", checker)
    if not cached:
        edge.cache = VerifiedCache(entries=0)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/tareas",
        "headers": [(b"host", b"x"), (b"authorization", HEADER)],
        "client": ("127.0.0.1", 1),
    }
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        await edge(scope, receive, send)  # type: ignore[arg-type]
        count += 1
    checker.close()
    return count, (time.perf_counter() - started) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run (default 5)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    per_request = {}
    for cached in (True, False):
        count, each = asyncio.run(layer_seconds(cached, args.seconds))
        per_request[cached] = each
        label = "with the cache   " if cached else "without the cache"
        print(f"layer {label}: {count:>7} requests, {each * 1e6:10.1f} us each")
    processes: list[ServiceProcess] = []
    rates: dict[bool, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        folder = Path(tmp)
        users = folder / "users"
        users.write_text(f"ana:{bcrypt.hashpw(b'secreto', bcrypt.gensalt(10)).decode()}\n")
        try:
            for name in ("server1", "server2"):
                processes.append(start_taskserver(name, folder / "tasks.json"))
            ports = [server.port for server in processes]
            # Interleaved, best of ROUNDS each: other load on the machine hits both alike.
            for _ in range(ROUNDS):
                for flags in ((), ("--auth-users", str(users))):
                    balancer = start_balancer(ports, flags)
                    processes.append(balancer)
                    auth = {"Authorization": HEADER.decode()}
                    assert httpx.get(balancer.url + "/tareas", headers=auth).status_code == 200
                    header = f"Authorization: {HEADER.decode()}"
                    rate, latency = wrk(balancer.url + "/tareas", 8, args.seconds, header)
                    rates[bool(flags)] = max(rate, rates.get(bool(flags), 0.0))
                    label = "with --auth-users" if flags else "without auth     "
                    print(f"balancer {label}: {rate:8.0f} req/s, {latency:6.2f} ms mean (8 conns)")
                    balancer.close()
        finally:
            for process in processes:
                process.close()
    return report(
        [
            ("layer with the cache <= 50 us a request", per_request[True] <= 50e-6),
            ("auth keeps >= 0.8 x the throughput", rates[True] >= 0.8 * rates[False]),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())

"""The proxy hop's cost: ``python bench/bench_proxy.py [--seconds 5]``.

Same run, same two task servers (127.0.0.1, free ports): ``wrk -t1`` at 1, 8, 32 and 64
connections against one server directly, through HAProxy (roundrobin, bench/haproxy.cfg.template)
and through ``ticslab balancer`` (round_robin). Prints req/s, mean latency and the ratios the
targets are about:
- balancer >= 0.5 x HAProxy's throughput at 32 connections (goal 0.75 x);
- balancer at 64 connections >= 0.9 x balancer at 8 connections (no collapse);
- added mean latency at 1 connection <= 0.5 ms over direct.
Needs /usr/sbin/haproxy and /usr/bin/wrk. Every run is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from stack import ServiceProcess, report, start_balancer, start_haproxy, start_taskserver

CONNECTIONS = (1, 8, 32, 64)
PATH = "/tareas"  # the seed's list of tasks: a small JSON array (a few tasks)


def wrk(url: str, connections: int, seconds: float, *headers: str) -> tuple[float, float]:
    """(requests per second, mean latency in ms) from one wrk run; ``headers`` (``Name: value``)
    go with every request."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url]
    command += [part for header in headers for part in ("-H", header)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    value, unit = re.search(r"Latency\s+([\d.]+)(us|ms|s)", output).groups()
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        print(f"  warning: {errors.group(1)} non-2xx answers from {url}")
    return rate, float(value) * scale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run (default 5)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    processes: list[ServiceProcess] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        folder = Path(tmp)
        tasks_file = folder / "tasks.json"
        try:
            for name in ("server1", "server2"):
                processes.append(start_taskserver(name, tasks_file))
            for n in range(5):
                httpx.post(processes[0].url + "/tareas", json={"title": f"bench-{n}"})
            ports = [server.port for server in processes]
            haproxy, _ = start_haproxy(ports, folder)
            processes.append(haproxy)
            balancer = start_balancer(ports)
            processes.append(balancer)
            targets = {"direct": processes[0].url, "haproxy": haproxy.url, "balancer": balancer.url}
            results: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in targets}
            for connections in CONNECTIONS:
                for name, base in targets.items():  # interleaved: all see the same load
                    wrk(base + PATH, connections, 1)  # warm up connections and caches
                    results[name][connections] = wrk(base + PATH, connections, args.seconds)
        finally:
            for process in processes:
                process.close()
    print(f"\nwrk -t1 -d{args.seconds:g}s GET {PATH}; req/s (mean latency ms)")
    print("conns | " + " | ".join(f"{name:>18}" for name in results) + " | balancer/haproxy")
    for connections in CONNECTIONS:
        cells = [
            f"{results[name][connections][0]:8.0f} ({results[name][connections][1]:6.2f})"
            for name in results
        ]
        ratio = results["balancer"][connections][0] / results["haproxy"][connections][0]
        print(f"{connections:>5} | " + " | ".join(f"{c:>18}" for c in cells) + f" | {ratio:.2f}x")
    at32 = results["balancer"][32][0] / results["haproxy"][32][0]
    scaling = results["balancer"][64][0] / results["balancer"][8][0]
    added = results["balancer"][1][1] - results["direct"][1][1]
    added_haproxy = results["haproxy"][1][1] - results["direct"][1][1]
    checks = [
        (f"balancer/haproxy at 32 connections: {at32:.2f}x (target >= 0.5x)", at32 >= 0.5),
        (f"balancer 64 conns / 8 conns: {scaling:.2f}x (target >= 0.9x)", scaling >= 0.9),
        (
            f"added latency at 1 connection: {added:.2f} ms (haproxy {added_haproxy:.2f} ms; "
            "target <= 0.5 ms)",
            added <= 0.5,
        ),
    ]
    return report(checks)


if __name__ == "__main__":
    sys.exit(main())

"""TLS termination's cost: ``python bench/bench_tls.py [--seconds 5]``.

Same run, same two task servers (127.0.0.1, free ports), one certificate (the local CA's,
made by ``ticslab balancer --tls``), terminated by ``ticslab balancer --tls`` and by HAProxy
(``bind ... ssl crt``, bench/haproxy.cfg.template plus an HTTPS frontend):
- TLS handshakes per second on new connections (``openssl s_time -new``: a full handshake
  each, no request), for each;
- the per-request cost over HTTPS against HTTP on kept-alive connections (``wrk -t1 -c8``,
  GET /tareas), for each: the handshake is paid once, then only the record encryption.
Prints the figures and the ratios the targets are about:
- the balancer's handshakes/s >= 0.25 x HAProxy's (Python's event loop around OpenSSL);
- over kept-alive connections, HTTPS keeps >= 0.7 x of the balancer's HTTP throughput.
Needs /usr/sbin/haproxy, /usr/bin/wrk and /usr/bin/openssl. Every run is bounded by
``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from bench_proxy import wrk
from stack import (
    ServiceProcess,
    free_port,
    report,
    start_balancer,
    start_haproxy,
    start_taskserver,
    wait_until,
)

PATH = "/tareas"
CONNECTIONS = 8
ROUNDS = 3  # each figure is the median of this many runs, interleaved with the others
HAPROXY_TLS = """
frontend ticslab_tls
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend taskservers
"""


def handshakes_per_second(port: int, ca: Path, seconds: float) -> float:
    """New TLS connections per second ``openssl s_time -new`` completes (one process)."""
    command = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new"]
    command += ["-time", f"{max(1, round(seconds))}", "-CAfile", str(ca)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    found = re.search(r"(\d+) connections in ([\d.]+)s", output)
    if found is None:
        raise RuntimeError(f"openssl s_time said: {output[-500:]}")
    return int(found.group(1)) / float(found.group(2))


def median_run(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The run of median throughput (and its latency)."""
    return sorted(runs)[len(runs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run (default 5)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    processes: list[ServiceProcess] = []
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        folder = Path(tmp)
        try:
            for name in ("server1", "server2"):
                processes.append(start_taskserver(name, folder / "tasks.json"))
            for n in range(5):
                httpx.post(processes[0].url + "/tareas", json={"title": f"bench-{n}"})
            ports = [server.port for server in processes]
            balancer_tls = free_port()
            tls_flags = ("--tls", "--tls-port", str(balancer_tls), "--tls-dir", str(folder))
            balancer = start_balancer(ports, tls_flags)
            processes.append(balancer)
            ca, pem = folder / "ca.pem", folder / "haproxy.pem"  # HAProxy wants one file
            pem.write_bytes(
                (folder / "balancer.pem").read_bytes() + (folder / "balancer-key.pem").read_bytes()
            )
            haproxy_tls = free_port()
            extra = HAPROXY_TLS.format(port=haproxy_tls, pem=pem)
            haproxy, _ = start_haproxy(ports, folder, extra)
            processes.append(haproxy)
            wait_until(lambda: handshakes_per_second(haproxy_tls, ca, 1) > 0, 10)
            tls_ports = {"haproxy": haproxy_tls, "balancer": balancer_tls}
            urls = {
                "haproxy": (haproxy.url, f"https://127.0.0.1:{haproxy_tls}"),
                "balancer": (balancer.url, f"https://127.0.0.1:{balancer_tls}"),
            }
            handshakes: dict[str, list[float]] = {name: [] for name in urls}
            runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for name, (http, https) in urls.items():
                for scheme, base in (("http", http), ("https", https)):
                    wrk(base + PATH, CONNECTIONS, 1)  # warm up connections and caches
                    runs[name, scheme] = []
            # Interleaved, ROUNDS times, medians kept: every target sees the same load.
            for _ in range(ROUNDS):
                for name, (http, https) in urls.items():
                    handshakes[name].append(
                        handshakes_per_second(tls_ports[name], ca, args.seconds)
                    )
                    for scheme, base in (("http", http), ("https", https)):
                        runs[name, scheme].append(wrk(base + PATH, CONNECTIONS, args.seconds))
        finally:
            for process in processes:
                process.close()
    handshake_rate = {name: statistics.median(rates) for name, rates in handshakes.items()}
    throughput = {
        name: {scheme: median_run(runs[name, scheme]) for scheme in ("http", "https")}
        for name in urls
    }
    print(f"load average after the runs: {os.getloadavg()[0]:.2f}")
    print(f"\nopenssl s_time -new ({args.seconds:g} s, median of {ROUNDS}): handshakes per second")
    for name, rate in handshake_rate.items():
        print(f"  {name:<9} {rate:8.0f}")
    print(
        f"\nwrk -t1 -c{CONNECTIONS} -d{args.seconds:g}s GET {PATH}, median of {ROUNDS}; req/s (ms)"
    )
    print("          |               http |              https | https/http")
    for name, cells in throughput.items():
        (rate, ms), (tls_rate, tls_ms) = cells["http"], cells["https"]
        ratio = tls_rate / rate
        print(
            f"{name:<9} | {rate:8.0f} ({ms:6.2f}) | {tls_rate:8.0f} ({tls_ms:6.2f}) | {ratio:.2f}x"
        )
    versus = handshake_rate["balancer"] / handshake_rate["haproxy"]
    kept = throughput["balancer"]["https"][0] / throughput["balancer"]["http"][0]
    checks = [
        (
            f"balancer/haproxy handshakes per second: {versus:.2f}x (target >= 0.25x)",
            versus >= 0.25,
        ),
        (
            f"balancer https/http over kept-alive connections: {kept:.2f}x (target >= 0.7x)",
            kept >= 0.7,
        ),
    ]
    return report(checks)


if __name__ == "__main__":
    sys.exit(main())

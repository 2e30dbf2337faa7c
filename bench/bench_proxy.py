"""The proxy hop's cost: ``python bench/bench_proxy.py [--seconds 5]``.

Same run, same two task servers (127.0.0.1, free ports): ``wrk -t1`` at 1, 8, 32 and 64
connections against one server directly, through HAProxy (roundrobin, bench/haproxy.cfg.template)
and through ``ticslab balancer`` (round_robin). Prints req/s, mean latency and the ratios the
targets are about:
- balancer >= 0.25 x HAProxy's throughput at 32 connections;
- balancer at 64 connections >= 0.9 x balancer at 8 connections (no collapse);
- added mean latency at 1 connection <= 0.5 ms over direct.
Needs /usr/sbin/haproxy and /usr/bin/wrk. Every run is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from string import Template

import httpx

CONNECTIONS = (1, 8, 32, 64)
HAPROXY_TEMPLATE = Path(__file__).with_name("haproxy.cfg.template")
PATH = "/tareas"  # the seed's list of tasks: a small JSON array (a few tasks)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def ticslab(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "services.cli", *args]
    environment = {**os.environ, **(env or {})}
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment
    )


def start_taskserver(
    name: str, port: int, tasks_file: Path, token: str | None = None
) -> subprocess.Popen[bytes]:
    """A task server; with ``token`` its fault modes can be set (TICSLAB_TOKEN)."""
    args = ["--name", name, "--port", str(port), "--tasks-file", str(tasks_file)]
    process = ticslab("taskserver", *args, env={"TICSLAB_TOKEN": token} if token else None)
    wait_for(f"http://127.0.0.1:{port}/health")
    return process


def start_balancer(port: int, ports: list[int], *extra: str) -> subprocess.Popen[bytes]:
    backends = [f"--backend=server{i}=http://127.0.0.1:{p}" for i, p in enumerate(ports, 1)]
    process = ticslab(
        "balancer", "--port", str(port), "--algorithm", "round_robin", "--log-level", "warning",
        *backends, *extra,
    )  # fmt: skip
    wait_for(f"http://127.0.0.1:{port}/health")
    return process


def start_haproxy(port: int, ports: list[int], folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """HAProxy in the foreground; returns it and the port of its stats page."""
    stats_port = free_port()
    config = Template(HAPROXY_TEMPLATE.read_text()).substitute(
        port=port, port1=ports[0], port2=ports[1], stats_port=stats_port
    )
    path = folder / "haproxy.cfg"
    path.write_text(config)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    process = subprocess.Popen(
        [haproxy, "-db", "-f", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(f"http://127.0.0.1:{stats_port}/stats")
    return process, stats_port


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wrk(url: str, connections: int, seconds: float) -> tuple[float, float]:
    """(requests per second, mean latency in ms) from one wrk run."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url]
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
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        folder = Path(tmp)
        tasks_file = folder / "tasks.json"
        try:
            ports = [free_port(), free_port()]
            for i, port in enumerate(ports, 1):
                processes.append(start_taskserver(f"server{i}", port, tasks_file))
            for n in range(5):
                httpx.post(f"http://127.0.0.1:{ports[0]}/tareas", json={"title": f"bench-{n}"})
            haproxy_port, balancer_port = free_port(), free_port()
            haproxy, _ = start_haproxy(haproxy_port, ports, folder)
            processes.append(haproxy)
            processes.append(start_balancer(balancer_port, ports))
            targets = {
                "direct": ports[0],
                "haproxy": haproxy_port,
                "balancer": balancer_port,
            }
            results: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in targets}
            for connections in CONNECTIONS:
                for name, port in targets.items():  # interleaved: all see the same load
                    url = f"http://127.0.0.1:{port}{PATH}"
                    wrk(url, connections, 1)  # warm up connections and caches
                    results[name][connections] = wrk(url, connections, args.seconds)
        finally:
            for process in processes:
                stop(process)
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
        (f"balancer/haproxy at 32 connections: {at32:.2f}x (target >= 0.25x)", at32 >= 0.25),
        (f"balancer 64 conns / 8 conns: {scaling:.2f}x (target >= 0.9x)", scaling >= 0.9),
        (
            f"added latency at 1 connection: {added:.2f} ms (haproxy {added_haproxy:.2f} ms; "
            "target <= 0.5 ms)",
            added <= 0.5,
        ),
    ]
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for text, ok in checks:
        print(f"{'met   ' if ok else 'MISSED'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

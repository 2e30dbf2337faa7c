"""The proxy hop's cost: ``python bench/bench_proxy.py [--backend lab|fast] [--rounds N]``.

Same run, same two backends (127.0.0.1, free ports): ``wrk -t1`` at 1, 8, 32 and 64
connections against one backend directly, through HAProxy (roundrobin,
bench/haproxy.cfg.template) and through ``ticslab balancer`` (round_robin), interleaved cell by
cell so that all see the same machine load. Backends:
- ``lab``: the lab's two task servers (``GET /tareas``). They are Python too and burn most of
  the CPU, so this measures how much of two cores the balancer takes from them;
- ``fast``: two nginx serving a small static JSON file. The proxy is then the bottleneck, so
  this measures the proxy itself.

For each proxy it prints req/s, mean latency and its own CPU per request (utime + stime from
``/proc/<pid>/stat`` over the run, divided by the requests wrk counted). ``--against REV``
adds a column: the balancer of that git revision (a temporary worktree, run with this
interpreter), so a change is judged against its parent in the same run. Targets (ratios):
- ``lab``: balancer >= 0.6x HAProxy at 32 connections (goal 0.75x);
- ``fast``: balancer >= 0.25x HAProxy at 32 connections (goal 0.5x);
- both: balancer at 64 connections >= 0.9x at 8 (no collapse); ``lab``: added mean latency at
  1 connection <= 0.5 ms over direct.
Needs haproxy, wrk and (``fast``) nginx. Every run is bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from stack import (
    ROOT,
    ServiceProcess,
    cpu_seconds,
    free_port,
    report,
    start_balancer,
    start_haproxy,
    start_taskserver,
)

CONNECTIONS = (1, 8, 32, 64)
PATH = "/tareas"  # the seed's list of tasks: a small JSON array (a few tasks)
# What nginx serves in --backend fast: five tasks as the task servers list them (~0.6 KB).
FAST_TASKS = (
    b"["
    + b",".join(
        b'{"id":%d,"title":"bench-%d","description":"","completed":false,'
        b'"created_at":"2026-12-07T10:00:00+00:00","server":"nginx"}' % (n, n)
        for n in range(1, 6)
    )
    + b"]"
)
NGINX_CONF = """\
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    keepalive_requests 1000000;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


@dataclass
class Cell:
    """One wrk run through one target."""

    rate: float  # requests per second
    latency_ms: float  # mean
    cpu_us: float | None  # the proxy's own CPU per request (None: not measured, direct)


def wrk(url: str, connections: int, seconds: float, *headers: str) -> tuple[float, float]:
    """(requests per second, mean latency in ms) from one wrk run; ``headers`` (``Name: value``)
    go with every request."""
    rate, latency, _ = wrk_run(url, connections, seconds, *headers)
    return rate, latency


def wrk_run(url: str, connections: int, seconds: float, *headers: str) -> tuple[float, float, int]:
    """(requests per second, mean latency in ms, requests) from one wrk run."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url]
    command += [part for header in headers for part in ("-H", header)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    value, unit = re.search(r"Latency\s+([\d.]+)(us|ms|s)", output).groups()
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        print(f"  warning: {errors.group(1)} non-2xx answers from {url}")
    return rate, float(value) * scale, requests


def measure(url: str, connections: int, seconds: float, pid: int | None) -> Cell:
    """One warmed-up wrk run; with ``pid``, that process's CPU per request over it."""
    wrk_run(url, connections, 1)  # warm up connections and caches
    before = cpu_seconds(pid) if pid else 0.0
    rate, latency, requests = wrk_run(url, connections, seconds)
    cpu = (cpu_seconds(pid) - before) / max(requests, 1) * 1e6 if pid else None
    return Cell(rate, latency, cpu)


def median_cell(cells: list[Cell]) -> Cell:
    """Each figure's median over the runs of one cell."""
    cpus = [cell.cpu_us for cell in cells if cell.cpu_us is not None]
    return Cell(
        statistics.median(cell.rate for cell in cells),
        statistics.median(cell.latency_ms for cell in cells),
        statistics.median(cpus) if cpus else None,
    )


@contextmanager
def nginx(folder: Path) -> Iterator[ServiceProcess]:
    """An nginx (one worker) serving FAST_TASKS at every path, in the foreground."""
    folder.mkdir()
    root = folder / "www"
    root.mkdir()
    for name in ("tareas", "health"):
        (root / name).write_bytes(FAST_TASKS)
    port = free_port()
    config = folder / "nginx.conf"
    config.write_text(NGINX_CONF.format(folder=folder, port=port, root=root))
    program = [shutil.which("nginx") or "/usr/sbin/nginx"]
    args = ["-p", str(folder), "-c", str(config), "-g", "daemon off;"]
    process = ServiceProcess(args, port, program=program).start()
    try:
        yield process
    finally:
        process.close()


@contextmanager
def lab_backends(folder: Path) -> Iterator[list[ServiceProcess]]:
    """The lab's two task servers on one tasks file holding five tasks."""
    servers = [start_taskserver(name, folder / "tasks.json") for name in ("server1", "server2")]
    try:
        for n in range(5):
            httpx.post(servers[0].url + "/tareas", json={"title": f"bench-{n}"})
        yield servers
    finally:
        for server in servers:
            server.close()


@contextmanager
def worktree(revision: str, folder: Path) -> Iterator[Path]:
    """A checkout of ``revision`` (this repository's), removed afterwards."""
    path = folder / "against"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", str(path), revision], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(path)], check=False)


def start(kind: str, folder: Path, stack: ExitStack) -> list[ServiceProcess]:
    """The two backends of ``kind`` (``lab`` or ``fast``), stopped with ``stack``."""
    if kind == "lab":
        return stack.enter_context(lab_backends(folder))
    folder.chmod(0o755)  # nginx's worker (nobody, when started by root) reads the files
    return [stack.enter_context(nginx(folder / f"nginx{n}")) for n in (1, 2)]


def print_table(
    kind: str, seconds: float, rounds: int, results: dict[str, dict[int, Cell]]
) -> None:
    """req/s (mean latency ms) [CPU us per request] per target, and balancer/HAProxy."""
    print(f"\nbackends: {kind}; wrk -t1 -d{seconds:g}s GET {PATH}; medians of {rounds} run(s)")
    print("req/s (mean latency ms) [the proxy's CPU us per request]")
    print("conns | " + " | ".join(f"{name:>26}" for name in results) + " | balancer/haproxy")
    for connections in CONNECTIONS:
        cells = []
        for name in results:
            cell = results[name][connections]
            cpu = f" [{cell.cpu_us:4.0f}]" if cell.cpu_us is not None else ""
            cells.append(f"{cell.rate:7.0f} ({cell.latency_ms:6.2f}){cpu}")
        ratio = results["balancer"][connections].rate / results["haproxy"][connections].rate
        print(f"{connections:>5} | " + " | ".join(f"{c:>26}" for c in cells) + f" | {ratio:.2f}x")


def checks(kind: str, results: dict[str, dict[int, Cell]]) -> list[tuple[str, bool]]:
    """The targets of the module docstring, for ``kind``."""
    balancer, haproxy, direct = results["balancer"], results["haproxy"], results["direct"]
    at32 = balancer[32].rate / haproxy[32].rate
    target, goal = (0.6, 0.75) if kind == "lab" else (0.25, 0.5)
    scaling = balancer[64].rate / balancer[8].rate
    found = [
        (
            f"balancer/haproxy at 32 connections: {at32:.2f}x (target >= {target}x, goal {goal}x)",
            at32 >= target,
        ),
        (f"balancer 64 conns / 8 conns: {scaling:.2f}x (target >= 0.9x)", scaling >= 0.9),
    ]
    if "against" in results:
        gain = balancer[32].rate / results["against"][32].rate
        found.append((f"balancer / balancer@REV at 32 connections: {gain:.2f}x", True))
    if kind == "lab":
        added = balancer[1].latency_ms - direct[1].latency_ms
        added_haproxy = haproxy[1].latency_ms - direct[1].latency_ms
        text = (
            f"added latency at 1 connection: {added:.2f} ms (haproxy {added_haproxy:.2f} ms; "
            "target <= 0.5 ms)"
        )
        found.append((text, added <= 0.5))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per wrk run (default 5)")
    parser.add_argument(
        "--backend", choices=("lab", "fast"), default="lab", help="task servers or nginx"
    )
    parser.add_argument("--against", metavar="REV", help="also the balancer of this revision")
    parser.add_argument(
        "--rounds", type=int, default=1, help="runs per cell, interleaved; medians shown"
    )
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        backends = start(args.backend, folder, stack)
        ports = [server.port for server in backends]
        haproxy, _ = start_haproxy(ports, folder)
        stack.callback(haproxy.close)
        targets = {"direct": backends[0], "haproxy": haproxy}
        targets["balancer"] = start_balancer(ports)
        stack.callback(targets["balancer"].close)
        if args.against:
            tree = stack.enter_context(worktree(args.against, folder))
            targets["against"] = start_balancer(ports, tree=tree)
            stack.callback(targets["against"].close)
        runs: dict[str, dict[int, list[Cell]]] = {name: {} for name in targets}
        for connections in CONNECTIONS:
            for _ in range(args.rounds):
                for name, target in targets.items():  # interleaved: all see the same load
                    pid = None if name == "direct" else target.proc.pid
                    cell = measure(target.url + PATH, connections, args.seconds, pid)
                    runs[name].setdefault(connections, []).append(cell)
    results = {
        name: {connections: median_cell(cells) for connections, cells in by_count.items()}
        for name, by_count in runs.items()
    }
    print_table(args.backend, args.seconds, args.rounds, results)
    return report(checks(args.backend, results))


if __name__ == "__main__":
    sys.exit(main())

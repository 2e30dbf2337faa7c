"""Memory per slow reader: ``python bench/bench_stream_memory.py [--streams 50]``.

Same run, same two backends (bench/stream_backend.py on 127.0.0.1, free ports), through
``ticslab balancer`` and, if /usr/sbin/haproxy is installed, through HAProxy as the reference:
- ``--streams`` clients each ask for a 100 MB answer, read its first bytes and then stop
  reading, the slowest reader there is (each socket's receive buffer is 64 KiB, so the
  kernel holds little for them);
- the proxy's RSS is read from /proc before, once it has stopped growing with every stream
  open ("held"), and once it has stopped falling after every client closed ("after close").
Target: at most 0.5 MiB held per stream, and at most 0.1 MiB per stream kept after close.
Bounded: every wait has a deadline, every socket a timeout; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_streaming import rss_mb, start_backend
from rich.console import Console
from rich.table import Table
from stack import ServiceProcess, report, start_balancer, start_haproxy

MIB = 1024 * 1024
SIZE = 100_000_000
HELD_TARGET, KEPT_TARGET = 0.5, 0.1  # MiB per stream
SETTLE_SECONDS, SETTLE_DEADLINE = 1.0, 20.0


def rss_mib(pid: int) -> float:
    return rss_mb(pid) * 1024 * 1024 / MIB


def settled(read: Callable[[], float], deadline: float = SETTLE_DEADLINE) -> float:
    """``read()`` once it changed by under 1 % for ``SETTLE_SECONDS``, or at ``deadline``."""
    started = time.monotonic()
    last, since = read(), time.monotonic()
    while time.monotonic() - started < deadline:
        time.sleep(0.1)
        value = read()
        if abs(value - last) > max(0.01 * last, 0.05):
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= SETTLE_SECONDS:
            return value
    return read()


def slow_reader(port: int) -> socket.socket:
    """A client that asks for 100 MB, reads the first bytes of the answer, and stops."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /bytes/{SIZE} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    if not sock.recv(4096).startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"127.0.0.1:{port}: no 200 for the stream")
    return sock


def measure(port: int, pid: int, streams: int) -> dict[str, float]:
    """RSS before, held with ``streams`` slow readers, after they closed; MiB per stream.
    One stream first, closed: the first imports, and a first freed buffer (glibc keeps
    large ones only after one was freed)."""
    slow_reader(port).close()
    before = settled(lambda: rss_mib(pid))
    readers = []
    try:
        readers = [slow_reader(port) for _ in range(streams)]
        held = settled(lambda: rss_mib(pid))
    finally:
        for sock in readers:
            sock.close()
    after = settled(lambda: rss_mib(pid))
    return {
        "before": before,
        "held": held,
        "after": after,
        "per_stream": (held - before) / streams,
        "kept": max(0.0, after - before) / streams,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50, help="slow readers at once (50)")
    streams = max(1, min(parser.parse_args().streams, 500))
    console = Console(width=110)
    console.print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    processes: list[ServiceProcess] = []
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stream-memory-") as tmp:
        try:
            backends = [start_backend(), start_backend()]
            processes += backends
            ports = [backend.port for backend in backends]
            balancer = start_balancer(ports)
            processes.append(balancer)
            targets = {"balancer": balancer}
            if shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists():
                haproxy, _ = start_haproxy(ports, Path(tmp))
                processes.append(haproxy)
                targets["haproxy"] = haproxy
            else:
                console.print("HAProxy is not installed (apt-get install haproxy): no reference")
            for name, process in targets.items():
                assert process.proc is not None
                rows[name] = measure(process.port, process.proc.pid, streams)
        finally:
            for process in processes:
                process.close()
    table = Table(title=f"{streams} slow readers of a 100 MB answer: proxy RSS (MiB)")
    for column in ("proxy", "before", "held", "after close", "per stream", "kept per stream"):
        table.add_column(column, justify="right")
    for name, row in rows.items():
        table.add_row(
            name,
            *(f"{row[key]:.1f}" for key in ("before", "held", "after")),
            *(f"{row[key]:.3f}" for key in ("per_stream", "kept")),
        )
    console.print(table)
    ours = rows["balancer"]
    checks = [
        (
            f"held per stream: {ours['per_stream']:.3f} MiB (target <= {HELD_TARGET})",
            ours["per_stream"] <= HELD_TARGET,
        ),
        (
            f"kept per stream after close: {ours['kept']:.3f} MiB (target <= {KEPT_TARGET})",
            ours["kept"] <= KEPT_TARGET,
        ),
    ]
    return report(checks)


if __name__ == "__main__":
    sys.exit(main())

"""What the benchmarks start: task servers, a balancer and HAProxy on free loopback ports.

They are the tests' ``ServiceProcess`` (tests/support.py), so benchmarks and tests start and
stop servers one way: ``start()`` waits until the process answers, ``close()`` stops it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support import (  # noqa: E402
    TICSLAB,
    ServiceProcess,
    free_port,
    free_run,
    taskserver,
    wait_until,
)

__all__ = [
    "ROOT", "ServiceProcess", "cpu_seconds", "free_port", "free_run", "report", "start_balancer",
    "start_haproxy", "start_taskserver", "wait_until",
]  # fmt: skip

HAPROXY_TEMPLATE = Path(__file__).with_name("haproxy.cfg.template")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (fields 14 and 15 of its /proc stat;
    the name before them, in parentheses, may hold spaces)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start_taskserver(name: str, tasks_file: Path, token: str | None = None) -> ServiceProcess:
    """A running task server; with ``token`` its fault modes can be set (TICSLAB_TOKEN)."""
    return taskserver(name, tasks_file, env={"TICSLAB_TOKEN": token} if token else None).start()


def start_balancer(
    ports: list[int], flags: tuple[str, ...] = (), tree: Path | None = None
) -> ServiceProcess:
    """A running ``ticslab balancer`` (round_robin) in front of server1, server2, ... on
    ``ports``; ``flags`` come last. With ``tree``, the code of that checkout runs (with this
    interpreter: ``-P`` keeps the working directory off the path, PYTHONPATH puts it first)."""
    port = free_port()
    backends = [f"--backend=server{i}=http://127.0.0.1:{p}" for i, p in enumerate(ports, 1)]
    args = ["balancer", "--port", str(port), "--algorithm", "round_robin"]
    # A token of its own, by environment: no benchmark writes the user's token file.
    env = {"TICSLAB_TOKEN": secrets.token_urlsafe(16)}
    program = TICSLAB
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        program = [sys.executable, "-P", "-m", "services.cli"]
    args = [*args, "--log-level", "warning", *backends, *flags]
    return ServiceProcess(args, port, env, program=program).start()


def start_haproxy(ports: list[int], folder: Path, extra: str = "") -> tuple[ServiceProcess, int]:
    """HAProxy in the foreground (bench/haproxy.cfg.template, roundrobin) in front of the
    two task servers on ``ports``, with ``extra`` sections appended (bench_tls.py's HTTPS
    frontend); returns it and the port of its stats page."""
    port, stats_port = free_port(), free_port()
    config = Template(HAPROXY_TEMPLATE.read_text()).substitute(
        port=port, port1=ports[0], port2=ports[1], stats_port=stats_port
    )
    config += extra
    path = folder / "haproxy.cfg"
    path.write_text(config)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    process = ServiceProcess(["-db", "-f", str(path)], port, program=[haproxy])
    return process.start(health_path="/health"), stats_port


def report(checks: list[tuple[str, bool]]) -> int:
    """Print the load average and each target as met or MISSED; the exit status (0: all met)."""
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for text, ok in checks:
        print(f"{'met   ' if ok else 'MISSED'} {text}")
    return 0 if all(ok for _, ok in checks) else 1


def interleaved(
    calls: list[Callable[[], object]], rounds: int, seconds: float
) -> list[list[float]]:
    """Milliseconds of each call, interleaved round by round so that all of them see the same
    machine load; at most ``rounds`` rounds, none begun after ``seconds``."""
    samples: list[list[float]] = [[] for _ in calls]
    deadline = time.monotonic() + seconds
    for _ in range(rounds):
        for call, times in zip(calls, samples, strict=True):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        if time.monotonic() > deadline:
            break
    return samples

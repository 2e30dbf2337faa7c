"""Health checks on a saturated machine: ``python bench/bench_checks.py [--seconds 20]``.

What a student laptop running the scale stack looks like: four task servers behind the
balancer, every CPU kept busy by busy-loop processes (2 per core), each server stalled now
and then for 0.2-1.5 s (``STALL_FOR``: busy loops alone never stall a process that long on
Linux; a Docker Desktop VM on a busy host does), and the clients' traffic:
their first phase (20 users creating tasks), their steady phase (10 requests/s), or none.
For each setting of the checks and each traffic, it counts flaps (UP -> DOWN changes;
nothing is broken, so every one is false) and the most servers DOWN at once. Then, still
saturated, it freezes server4 (SIGSTOP) and times how long until it is DOWN: the price of a
longer check timeout.

Settings: the old defaults (checks every 1 s, timeout 0.5 s) against the current ones
(timeout 1 s),
measured in the same run (``--setting`` adds others); the ratio is each one's flaps over the
old defaults'. Loopback only; every phase is bounded in time (each run takes --seconds, its
freeze at most 15 s more).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.table import Table
from stack import ServiceProcess, start_balancer, start_taskserver

SERVERS = 4
NO_TRAFFIC, STEADY, WRITERS = "none", "steady 10/s", "20 users creating"
LOADS = (WRITERS, STEADY, NO_TRAFFIC)
STEADY_RATE = 10.0  # requests/s: the two clients' steady phase, 5/s each
USERS = 20  # the two clients' first phase: 10 users each
HANG_LIMIT = 15.0  # seconds to wait for a frozen server to be DOWN
SETTINGS = {
    "old defaults": ("--check-interval", "1", "--check-timeout", "0.5"),
    "current defaults": (),
}
HOG = "while True: pass"
# Stalls: each task server is frozen now and then (SIGSTOP, SIGCONT), as a Docker Desktop VM
# whose vCPUs the busy host does not run for a while; busy loops alone never stall a process
# that long on Linux, whose scheduler gives every runnable process its turn within ms.
STALL_EVERY = (1.0, 4.0)  # seconds between two stalls of one server (uniform)
STALL_FOR = (0.2, 1.5)  # seconds one stall lasts (uniform)


@dataclass
class Run:
    """What one setting saw under one traffic level."""

    flaps: int = 0
    timeouts: int = 0  # flaps whose reason was a check timeout
    most_down: int = 0
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    hang_down_after: float | None = None


async def traffic(url: str, load: str, until: float, run: Run) -> None:
    """The clients' traffic until ``until``: none; their steady phase (10 requests/s, GETs);
    or their first phase, 20 users each creating tasks as fast as answers come (every create
    is a locked, fsynced write of the shared file: what keeps a server's threads busy)."""
    if load == NO_TRAFFIC:
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one(post: bool) -> None:
            run.requests += 1
            try:
                if post:
                    request = http.post(url + "/tareas", json={"title": f"bench {run.requests}"})
                else:
                    request = http.get(url + "/tareas", params={"limit": "5"})
                async with request as response:
                    await response.read()
                    if response.status not in (200, 201):
                        run.failures.append(str(response.status))
            except (aiohttp.ClientError, TimeoutError) as error:
                run.failures.append(repr(error))

        async def user() -> None:
            while time.monotonic() < until:
                await one(post=True)

        if load == WRITERS:
            await asyncio.gather(*(user() for _ in range(USERS)))
            return
        sent: list[asyncio.Task[None]] = []
        start = time.monotonic()
        while time.monotonic() < until:
            sent.append(asyncio.create_task(one(post=False)))
            await asyncio.sleep(max(0.0, start + len(sent) / STEADY_RATE - time.monotonic()))
        await asyncio.gather(*sent)


async def watch(url: str, until: float, run: Run) -> None:
    """The most servers DOWN at once, polled every 0.25 s."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while time.monotonic() < until:
            try:
                async with http.get(url + "/status") as response:
                    servers = (await response.json())["servers"]
                down = sum(server["state"] == "DOWN" for server in servers)
                run.most_down = max(run.most_down, down)
            except (aiohttp.ClientError, TimeoutError):
                pass  # a saturated balancer may miss a poll; the events count the flaps
            await asyncio.sleep(0.25)


async def stall(server: ServiceProcess, until: float, seed: int) -> None:
    """Freeze ``server`` for ``STALL_FOR`` every ``STALL_EVERY`` until ``until``; the same
    ``seed`` gives every setting the same stalls."""
    chance = random.Random(seed)
    while True:
        await asyncio.sleep(chance.uniform(*STALL_EVERY))
        if time.monotonic() >= until:
            return
        server.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(chance.uniform(*STALL_FOR))
        finally:
            server.signal(signal.SIGCONT)


async def measure(
    balancer: ServiceProcess, servers: list[ServiceProcess], load: str, seconds: float
) -> Run:
    """Flaps and the most servers DOWN over ``seconds`` of ``load`` (and stalls, if any)."""
    run = Run()
    until = time.monotonic() + seconds
    stalls = [stall(server, until, seed) for seed, server in enumerate(servers)]
    await asyncio.gather(
        traffic(balancer.url, load, until, run), watch(balancer.url, until, run), *stalls
    )
    async with aiohttp.ClientSession() as http, http.get(balancer.url + "/events") as response:
        events = (await response.json())["events"]
    flaps = [e for e in events if e["kind"] == "state" and (e["from"], e["to"]) == ("UP", "DOWN")]
    run.flaps = len(flaps)
    run.timeouts = sum("timeout" in e.get("reason", "") for e in flaps)
    return run


async def time_to_down(balancer: ServiceProcess, victim: ServiceProcess) -> float | None:
    """Freeze ``victim`` (server4) and time until the balancer has it DOWN."""
    victim.signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while time.monotonic() < frozen + HANG_LIMIT:
                async with http.get(balancer.url + "/status") as response:
                    servers = (await response.json())["servers"]
                if next(s for s in servers if s["name"] == "server4")["state"] == "DOWN":
                    return time.monotonic() - frozen
                await asyncio.sleep(0.05)
    finally:
        victim.signal(signal.SIGCONT)
    return None


def one_run(
    servers: list[ServiceProcess],
    flags: tuple[str, ...],
    load: str,
    seconds: float,
    hogs: int,
    stalled: bool,
) -> Run:
    """A fresh balancer with ``flags``, the CPUs saturated for the run and the freeze."""
    balancer = start_balancer([server.port for server in servers], flags)
    busy = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
    try:
        run = asyncio.run(measure(balancer, servers if stalled else [], load, seconds))
        run.hang_down_after = asyncio.run(time_to_down(balancer, victim=servers[-1]))
        return run
    finally:
        for hog in busy:
            hog.kill()
            hog.wait()
        balancer.close()


def setting(text: str) -> tuple[str, tuple[str, ...]]:
    """``NAME=FLAGS``, e.g. ``'timeout 1 s=--check-timeout 1'``."""
    name, _, flags = text.partition("=")
    return name.strip(), tuple(flags.split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per run (default 20)")
    parser.add_argument("--hogs", type=int, default=2 * (os.cpu_count() or 1), help="busy loops")
    parser.add_argument(
        "--setting",
        type=setting,
        action="append",
        default=[],
        metavar="'NAME=FLAGS'",
        help="another setting to measure, e.g. 'timeout 1 s=--check-timeout 1'",
    )
    parser.add_argument(
        "--stalls",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stall the servers now and then (default: on)",
    )
    args = parser.parse_args()
    settings = {**SETTINGS, **dict(args.setting)}
    console = Console(width=110)
    console.print(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"{args.hogs} busy loops, {SERVERS} task servers, {args.seconds:g} s per run, "
        f"stalls {'on' if args.stalls else 'off'}"
    )
    runs: dict[tuple[str, str], Run] = {}
    with tempfile.TemporaryDirectory(prefix="bench-checks-") as tmp:
        tasks_file = Path(tmp) / "tasks.json"
        servers: list[ServiceProcess] = []
        try:
            for n in range(1, SERVERS + 1):
                servers.append(start_taskserver(f"server{n}", tasks_file))
            for load in LOADS:
                for name, flags in settings.items():
                    runs[name, load] = one_run(
                        servers, flags, load, args.seconds, args.hogs, args.stalls
                    )
        finally:
            for server in servers:
                server.close()
    table = Table(title="false flaps on a saturated machine")
    for heading in ("setting", "traffic (requests)", "flaps (timeouts)", "most DOWN",
                    "failures", "frozen: DOWN after"):  # fmt: skip
        table.add_column(heading, justify="right")
    for (name, load), run in runs.items():
        hang = "never" if run.hang_down_after is None else f"{run.hang_down_after:.2f} s"
        table.add_row(
            name,
            f"{load} ({run.requests})",
            f"{run.flaps} ({run.timeouts})",
            f"{run.most_down} of {SERVERS}",
            str(len(run.failures)),
            hang,
        )
    console.print(table)
    for load in LOADS:
        old = runs["old defaults", load].flaps
        for name in list(settings)[1:]:
            flaps = runs[name, load].flaps
            ratio = f"{flaps / old:.2f}" if old else "n/a (the old defaults did not flap)"
            console.print(f"{load}: {name}: flaps / the old defaults' = {ratio}")
    console.print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Failover as clients see it: ``python bench/bench_failover.py [--seconds 16]``.

Steady load (half ``POST /tareas``, half ``GET /info``, 8 clients) through a balancer in front
of two task servers sharing one tasks.json. At 25% of the run server1 fails, at 70% it comes
back (server1 answers 50 ms late all along, so requests are in flight when it fails).
Two faults:
- kill: SIGKILL, later a fresh process on the same port;
- hang: SIGSTOP (accepts connections, never answers), later SIGCONT.
Each runs through ``ticslab balancer`` (defaults: checks every 1 s, fall 2, rise 2, response
timeout 5 s) and through HAProxy (bench/haproxy.cfg.template: checks inter 1s fall 2 rise 2,
retries 3, option redispatch), printed side by side: client-visible failures, duplicated
tasks, time to DOWN, time to UP after the restart, time until traffic is back on server1, and
the slowest request. Targets for ours: 0 failures and 0 duplicates for the kill; DOWN within
2 s; UP within 3 s of the restart; in the hang no request waits longer than the response
timeout plus one retry. Loopback only; every phase is bounded in time.

Note on the hang: a task server frozen while it holds the shared tasks.json lock stalls every
writer on every server until it resumes, so a POST retried on server2 can wait past the
response timeout too (504). Reads are not affected. That is the shared file's design; the
balancer can only bound the wait.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from stack import ServiceProcess, start_balancer, start_haproxy, start_taskserver

WORKERS = 8
FAIL_AT, RECOVER_AT = 0.25, 0.70  # fractions of the run
IN_FLIGHT_MS = 50  # server1 answers this slowly, so requests are in flight when it fails
TOKEN = "bench-failover"
RESPONSE_TIMEOUT = 5.0


@dataclass
class Run:
    """What one scenario saw."""

    requests: int = 0
    failures: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    slowest: float = 0.0
    down_after: float | None = None
    up_after: float | None = None
    back_after: float | None = None
    duplicates: int = 0
    server1_since_restart: int = 0


class Proxy:
    """How to ask one balancer whether server1 is UP."""

    def __init__(self, name: str, url: str, stats_port: int | None = None) -> None:
        self.name, self.url, self.stats_port = name, url, stats_port

    async def server1_state(self, http: aiohttp.ClientSession) -> str:
        if self.stats_port is None:
            async with http.get(self.url + "/status") as response:
                data = await response.json()
            return next(s["state"] for s in data["servers"] if s["name"] == "server1")
        async with http.get(f"http://127.0.0.1:{self.stats_port}/stats;csv") as response:
            text = (await response.text()).lstrip("# ")
        for row in csv.DictReader(io.StringIO(text)):
            if row["svname"] == "server1":
                return row["status"].split()[0]
        return "?"


async def load(proxy: Proxy, run: Run, until: float, restarted: list[float]) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def worker(number: int) -> None:
            count = 0
            while time.monotonic() < until:
                count += 1
                post = count % 2 == 0
                title = f"w{number}-{count}"
                started = time.monotonic()
                try:
                    if post:
                        request = http.post(proxy.url + "/tareas", json={"title": title})
                    else:
                        request = http.get(proxy.url + "/info")
                    async with request as response:
                        status = response.status
                        body = await response.json(content_type=None) if status < 300 else {}
                except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                    run.failures.append(f"{'POST' if post else 'GET'} {error!r}")
                    continue
                finally:
                    run.requests += 1
                    run.slowest = max(run.slowest, time.monotonic() - started)
                if status not in (200, 201):
                    run.failures.append(f"{'POST' if post else 'GET'} {status}")
                    continue
                if post:
                    run.titles.append(title)
                late = restarted and started >= restarted[0]  # sent after the recovery
                if late and body.get("server") == "server1" and not post:
                    run.server1_since_restart += 1
                    if run.back_after is None:
                        run.back_after = time.monotonic() - restarted[0]

        await asyncio.gather(*(worker(n) for n in range(WORKERS)))


async def watch_state(
    proxy: Proxy, run: Run, failed: list[float], restarted: list[float], until: float
) -> None:
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < until:
            state = await proxy.server1_state(http)
            now = time.monotonic()
            if failed and run.down_after is None and state != "UP":
                run.down_after = now - failed[0]
            if restarted and run.up_after is None and state == "UP":
                run.up_after = now - restarted[0]
            await asyncio.sleep(0.05)


async def scenario(proxy: Proxy, fault: str, victim: ServiceProcess, seconds: float) -> Run:
    run = Run()
    start = time.monotonic()
    until = start + seconds
    failed: list[float] = []
    restarted: list[float] = []
    traffic = asyncio.create_task(load(proxy, run, until, restarted))
    watcher = asyncio.create_task(
        watch_state(proxy, run, failed, restarted, until + RESPONSE_TIMEOUT)
    )
    await asyncio.sleep(seconds * FAIL_AT)
    victim.signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    failed.append(time.monotonic())
    await asyncio.sleep(seconds * (RECOVER_AT - FAIL_AT))
    restarted.append(time.monotonic())  # from the launch: the new process's start-up counts
    if fault == "kill":
        victim.kill()  # reaps the killed process
        await asyncio.to_thread(victim.start)  # a fresh process on the same port
    else:
        victim.signal(signal.SIGCONT)
    await traffic
    await watcher
    return run


def measure(kind: str, fault: str, seconds: float) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        folder = Path(tmp)
        tasks_file = folder / "tasks.json"
        servers = [start_taskserver(f"server{n}", tasks_file, token=TOKEN) for n in (1, 2)]
        httpx.put(
            servers[0].url + "/admin/fault",
            json={"mode": "latency", "ms": IN_FLIGHT_MS},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).raise_for_status()
        ports = [server.port for server in servers]
        if kind == "balancer":
            front = start_balancer(ports)
            proxy = Proxy("balancer", front.url)
        else:
            front, stats_port = start_haproxy(ports, folder)
            proxy = Proxy("haproxy", front.url, stats_port)
        time.sleep(2.5)  # both proxies have checked both servers
        try:
            run = asyncio.run(scenario(proxy, fault, servers[0], seconds))
        finally:
            for process in (front, *servers):
                process.close()  # wakes a frozen server first
        titles = [task["title"] for task in json.loads(tasks_file.read_text())]
        run.duplicates = len(titles) - len(set(titles))
        missing = set(run.titles) - set(titles)
        if missing:
            run.failures.append(f"{len(missing)} acknowledged tasks missing from the file")
    return run


def row(label: str, runs: dict[str, Run], value) -> str:
    return f"{label:<34}" + "".join(f"{value(runs[name]):>16}" for name in runs)


def seconds_or_never(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=16.0, help="per scenario (default 16)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    ok = True
    for fault in ("kill", "hang"):
        runs = {name: measure(name, fault, args.seconds) for name in ("balancer", "haproxy")}
        what = "SIGKILL, then restarted" if fault == "kill" else "SIGSTOP, then SIGCONT"
        print(f"\n{fault}: server1 {what}; {WORKERS} clients, {args.seconds:g} s")
        print(f"{'':<34}" + "".join(f"{name:>16}" for name in runs))
        print(row("requests", runs, lambda r: r.requests))
        print(row("client-visible failures", runs, lambda r: len(r.failures)))
        print(row("duplicated tasks", runs, lambda r: r.duplicates))
        print(row("server1 DOWN after", runs, lambda r: seconds_or_never(r.down_after)))
        print(row("UP after restart", runs, lambda r: seconds_or_never(r.up_after)))
        print(row("traffic back after restart", runs, lambda r: seconds_or_never(r.back_after)))
        print(row("slowest request", runs, lambda r: f"{r.slowest:.2f} s"))
        for name, run in runs.items():
            if run.failures:
                print(f"  {name} failures, first ones: {run.failures[:3]}")
        ours = runs["balancer"]
        if fault == "kill":
            ok &= not ours.failures and ours.duplicates == 0
            ok &= ours.down_after is not None and ours.down_after <= 2.0
            ok &= ours.up_after is not None and ours.up_after <= 3.0
        else:  # a POST may still fail here: see the note on the hang in the module docstring
            ok &= ours.slowest <= 2 * RESPONSE_TIMEOUT
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("targets " + ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

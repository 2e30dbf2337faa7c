"""Benchmark of the client emulator: ``python bench/bench_client.py``.

1. The client's own cost: CPU seconds per request of a full ``ticslab client`` run (plan,
   rate limiter, recorder, loss check, report), beside a bare ``httpx.AsyncClient`` loop
   posting tasks with the same concurrency (the reference), both in this process against one
   real task server, so the server's work is not counted.
2. Rate limiting: achieved requests per second over the requested ``--rate``.
3. Memory of a long steady run: a million requests (two in three creating a task that stays)
   in the recorder, against the lists of every latency and kept task it used to hold; each in
   a fresh interpreter, as the growth of its resident memory (``--memory new|lists``).

Every loop is bounded in count and time; traffic goes only to a server started here on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from stack import start_taskserver

from services.client.config import ClientConfig
from services.client.plan import Kind, task_title
from services.client.session import run_session
from services.client.stats import Recorder

TASKS = 600
CONCURRENCY = 10
RATES = (50.0, 100.0, 200.0)
RATE_SECONDS = 3.0
STEADY_REQUESTS = 1_000_000


async def bare_posts(url: str, count: int) -> int:
    """The reference: ``count`` POSTs from CONCURRENCY coroutines, nothing recorded."""
    titles = iter(range(count))
    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:

        async def worker() -> None:
            for number in titles:
                response = await client.post("/api/tasks", json={"title": f"bare-{number}"})
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return count


def client_run(url: str, name: str, **settings: float | int | None) -> dict:
    """A full client run in this process; its JSON report."""
    report_path = Path(tempfile.mkdtemp()) / "report.json"
    config = ClientConfig(url=url, name=name, json_path=report_path, **settings)  # type: ignore[arg-type]
    quiet = Console(file=io.StringIO())
    code = asyncio.run(run_session(config, quiet, quiet))
    if code != 0:
        raise SystemExit(f"client run {name} failed with exit code {code}")
    return json.loads(report_path.read_text())


def cpu_per_request() -> None:
    with tempfile.TemporaryDirectory() as folder:
        server = start_taskserver("server1", Path(folder) / "tasks.json")
        try:
            started = time.process_time()
            requests = asyncio.run(bare_posts(server.url, TASKS))
            bare = (time.process_time() - started) / requests
            started = time.process_time()
            report = client_run(
                server.url, "bench", tasks=TASKS, concurrency=CONCURRENCY, errors=0.1
            )
            client = (time.process_time() - started) / report["requests_total"]
        finally:
            server.close()
    print(f"1. client CPU per request ({TASKS} tasks, concurrency {CONCURRENCY}):")
    print(f"   bare httpx POST loop (reference): {bare * 1e6:8.0f} us/request")
    print(
        f"   ticslab client, full run:         {client * 1e6:8.0f} us/request"
        f"  ({report['requests_total']} requests, {report['throughput_rps']:.0f} req/s)"
    )
    print(f"   ratio client / reference: {client / bare:.2f}")


def rate_accuracy() -> None:
    print(f"2. rate limiting ({RATE_SECONDS:g}s each, concurrency {CONCURRENCY}):")
    with tempfile.TemporaryDirectory() as folder:
        server = start_taskserver("server1", Path(folder) / "tasks.json")
        try:
            for rate in RATES:
                report = client_run(
                    server.url, f"rate{rate:g}", tasks=None, duration=RATE_SECONDS, rate=rate
                )
                achieved = report["throughput_rps"]
                # Without a limit, users can send at most concurrency / latency per second.
                ceiling = CONCURRENCY / (report["latency_ms"]["mean"] / 1000)
                print(
                    f"   --rate {rate:5.0f}: achieved {achieved:6.1f} req/s,"
                    f" ratio {achieved / rate:.3f}"
                    f" (mean latency {report['latency_ms']['mean']:.1f} ms:"
                    f" at most {ceiling:.0f} req/s with {CONCURRENCY} users)"
                )
        finally:
            server.close()


def steady_memory(how: str) -> None:
    """Feed STEADY_REQUESTS to the recorder (``new``) or to the lists it used to keep
    (``lists``: the appends alone); print the growth of resident memory in MiB and the CPU µs
    per request."""
    import psutil

    rng = random.Random(1)
    recorder = Recorder()
    latencies: list[float] = []
    kept: list[tuple[int, str]] = []
    rss = psutil.Process().memory_info().rss
    started = time.process_time()
    for n in range(STEADY_REQUESTS):
        latency = rng.expovariate(20.0)
        if how == "new":
            recorder.record(Kind.CREATE, "201", latency, "server1")
            if n % 3:
                recorder.keep(n, n)
        else:
            latencies.append(latency)
            if n % 3:
                kept.append((n, task_title("client1-steady", n)))
    took = (time.process_time() - started) / STEADY_REQUESTS
    grown = (psutil.Process().memory_info().rss - rss) / 2**20
    print(f"{grown:.1f} {took * 1e6:.2f}")


def memory_per_run() -> None:
    print(f"3. memory of {STEADY_REQUESTS:,} steady requests (RSS growth, fresh interpreter):")
    for how, what in (("lists", "every latency and kept task"), ("new", "recorder (bounded)")):
        command = [sys.executable, __file__, "--memory", how]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
        grown, took = out.stdout.split()
        cost = f", record + keep {float(took):.2f} us CPU/request" if how == "new" else ""
        print(f"   {what:28}: {float(grown):7.1f} MiB{cost}")


def main() -> None:
    if sys.argv[1:2] == ["--memory"]:
        steady_memory(sys.argv[2])
        return
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    cpu_per_request()
    rate_accuracy()
    memory_per_run()


if __name__ == "__main__":
    main()

"""Benchmark of the client emulator: ``python bench/bench_client.py``.

1. The client's own cost: CPU seconds per request of a full ``ticslab client`` run (plan,
   rate limiter, recorder, loss check, report), beside a bare ``httpx.AsyncClient`` loop
   posting tasks with the same concurrency (the reference), both in this process against one
   real task server, so the server's work is not counted.
2. Rate limiting: achieved requests per second over the requested ``--rate``.

Every loop is bounded in count and time; traffic goes only to a server started here on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from stack import start_taskserver

from services.client.config import ClientConfig
from services.client.session import run_session

TASKS = 600
CONCURRENCY = 10
RATES = (50.0, 100.0, 200.0)
RATE_SECONDS = 3.0


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


def main() -> None:
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    cpu_per_request()
    rate_accuracy()


if __name__ == "__main__":
    main()

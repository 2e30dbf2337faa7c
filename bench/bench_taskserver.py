"""Benchmark of the task server's storage path: ``python bench/bench_taskserver.py``.

1. p50/p99 latency of ``POST /tareas`` on one real server with 100 to 100,000 tasks already
   stored, beside two references measured in the same run: ``GET /health`` on the same
   server (the HTTP floor), interleaved request by request, and, measured after them, a bare
   in-process rewrite of the same file (temporary file, fsync, rename, folder fsync: the
   least a POST cost before creates were appended in place).
   Also what a poller pays (``GET /tareas?order=desc&limit=20``), the whole list, and the
   server's memory (RSS) at each size.
2. Throughput of concurrent posts through two servers sharing one file, beside the same
   posters through one server (the reference), and a check that no acknowledged post is lost.

Every loop is bounded in count and time; traffic goes only to servers started here on
127.0.0.1. Target (2-core machine): p50 POST at most 5 ms at every size up to 100,000 tasks.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import psutil
from stack import interleaved, start_taskserver

SIZES = (100, 1_000, 10_000, 100_000)
POSTS_PER_SIZE = 200
PHASE_SECONDS = 30.0
POSTERS = 8
CONCURRENT_POSTS = 800
TARGETS_MS = {1_000: 5.0, 10_000: 5.0, 100_000: 5.0}
FLOOR_ROUNDS = 20
WHOLE_LISTS = 5  # whole-list GETs per size (20 MB each at 100,000 tasks)


def seed_file(path: Path, count: int) -> bytes:
    """A tasks file of ``count`` tasks shaped like the server's, written as the server would."""
    stamp = "2026-11-26T21:44:41.123Z"
    tasks = [
        {
            "id": n,
            "title": f"seed-{n:06d}",
            "completed": n % 3 == 0,
            "created_at": stamp,
            "updated_at": stamp,
            "server": "server1",
            "idempotency_key": f"{n:08x}-bench-key-0000-000000000000",
        }
        for n in range(1, count + 1)
    ]
    raw = orjson.dumps(tasks, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    path.write_bytes(raw)
    return raw


def timed(calls: list[Callable[[], object]], rounds: int) -> list[list[float]]:
    """``stack.interleaved``, stopping early after ``PHASE_SECONDS``."""
    return interleaved(calls, rounds, PHASE_SECONDS)


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def bare_write(folder: Path, raw: bytes) -> None:
    """The storage floor: what every POST must at least pay for durability."""
    temporary, target = folder / ".floor.tmp", folder / "floor.json"
    with open(temporary, "wb") as handle:
        handle.write(raw)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def latency(folder: Path, size: int) -> dict[str, float]:
    path = folder / f"tasks-{size}.json"
    raw = seed_file(path, size)
    server = start_taskserver("server1", path)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            counter = iter(range(10**9))

            def post() -> None:
                response = http.post("/tareas", json={"title": f"bench-{next(counter)}"})
                assert response.status_code == 201, response.text

            def health() -> None:
                http.get("/health")

            def floor() -> None:
                bare_write(folder, raw)

            def newest() -> None:
                http.get("/tareas", params={"order": "desc", "limit": 20})

            def whole() -> None:
                http.get("/tareas")

            timed([post], 10)  # warm up: first parse, connections
            posts, healths, pages = timed([post, health, newest], POSTS_PER_SIZE)
            (wholes,) = timed([whole], WHOLE_LISTS)
            # Apart: at 100,000 tasks each rewrite moves 27 MB through the disk, which would
            # slow every fsync measured beside it.
            (floors,) = timed([floor], FLOOR_ROUNDS)
            assert server.proc is not None
            rss = psutil.Process(server.proc.pid).memory_info().rss
    finally:
        server.close()
    return {
        "p50": statistics.median(posts),
        "p99": p(posts, 99),
        "health_p50": statistics.median(healths),
        "floor_p50": statistics.median(floors),
        "page_p50": statistics.median(pages),
        "whole_p50": statistics.median(wholes),
        "rss_mb": rss / 2**20,
        "n": len(posts),
    }


def throughput(folder: Path, names: tuple[str, ...]) -> tuple[float, int, int]:
    """Posts per second of ``POSTERS`` concurrent clients spread over servers sharing one file
    of 1,000 tasks; returns (rate, posts answered 201, tasks added to the file)."""
    path = folder / f"tasks-{len(names)}-servers.json"
    seed_file(path, 1_000)
    servers = [start_taskserver(name, path) for name in names]
    deadline = time.monotonic() + PHASE_SECONDS

    def poster(n: int) -> int:
        acknowledged = 0
        with httpx.Client(timeout=30) as http:
            for count in range(CONCURRENT_POSTS // POSTERS):
                if time.monotonic() > deadline:
                    break
                url = servers[(n + count) % len(servers)].url + "/tareas"
                if http.post(url, json={"title": f"p{n}-{count}"}).status_code == 201:
                    acknowledged += 1
        return acknowledged

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(POSTERS) as pool:
            acknowledged = sum(pool.map(poster, range(POSTERS)))
        elapsed = time.perf_counter() - started
    finally:
        for server in servers:
            server.close()
    stored = len(orjson.loads(path.read_bytes())) - 1_000
    return acknowledged / elapsed, acknowledged, stored


def main() -> int:
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-taskserver-") as tmp:
        folder = Path(tmp)
        print(
            "stored | POST p50 | POST p99 | health p50 | rewrite floor | p50/health | p50/floor"
            " | newest 20 p50 | whole list p50 | server RSS"
        )
        for size in SIZES:
            r = latency(folder, size)
            target = TARGETS_MS.get(size)
            verdict = "" if target is None else f"  target {target} ms: "
            if target is not None:
                verdict += "met" if r["p50"] < target else "MISSED"
                failed |= r["p50"] >= target
            print(
                f"{size:>6} | {r['p50']:6.2f} ms | {r['p99']:6.2f} ms | {r['health_p50']:6.2f} ms"
                f" | {r['floor_p50']:8.2f} ms | {r['p50'] / r['health_p50']:6.1f}x"
                f" | {r['p50'] / r['floor_p50']:5.2f}x | {r['page_p50']:6.2f} ms"
                f" | {r['whole_p50']:7.1f} ms | {r['rss_mb']:5.0f} MB{verdict}"
            )
        for names in (("server1",), ("server1", "server2")):
            rate, acknowledged, stored = throughput(folder, names)
            print(
                f"{len(names)} server(s), {POSTERS} posters: {rate:.0f} posts/s;"
                f" {acknowledged} answered 201, {stored} new in the file"
                f" ({'none lost' if stored == acknowledged else 'MISMATCH'})"
            )
            failed |= stored != acknowledged
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

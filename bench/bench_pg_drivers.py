"""PostgreSQL driver for the task server's store, measured: ``python bench/bench_pg_drivers.py``.

One real PostgreSQL (tests/pgserver.py: Debian's binaries, a throwaway cluster on a free
loopback port, fsync on), one database, and the operation a create is, with issue 27's
schema and statements: one transaction on an autocommit connection that takes an id from a
sequence, inserts the Idempotency-Key row (``ON CONFLICT DO NOTHING RETURNING``, a replay
otherwise) and the task row, and returns the row. Done two ways (and a third, for the
reading), alternated round by round so that all see the same machine load:

(a) psycopg 3, sync, with psycopg_pool's ``ConnectionPool``, called from worker threads
    (``anyio.to_thread.run_sync``, as the task server calls its store) by N concurrent
    callers on one event loop: the reference;
(b) asyncpg with its own pool, called by N concurrent tasks on the same kind of event loop;
(c) psycopg 3's async API with ``AsyncConnectionPool``, the same way as (b): no threads, so
    it tells what the driver costs from what the thread hop costs.

Each pool holds N connections. Reported at N = 1, 4 and 16: creates/s, p50 and p95 latency
(ms, from the caller's await to its answer), this process's CPU per create (threads
included: the figure a loaded 2-core machine moves least), and each rate over (a)'s. Then
what each driver costs to have: the import time (median of fresh interpreters) and the
installed size (the files its distributions' RECORDs list, with what they require here).

Every loop is bounded in count and time (``--creates`` per cell, ``--seconds`` per round);
traffic goes only to the server started here on 127.0.0.1. No target: the figures decide
docs/design/dependencies.md ("PostgreSQL driver: psycopg 3 or asyncpg").
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio.to_thread
import stack  # noqa: F401  (puts tests/ on sys.path)
from packaging.requirements import Requirement
from pgserver import PostgresServer, postgres_problem

from services.taskserver.storage.postgres import PostgresStore

CONCURRENCY = (1, 4, 16)
ROUNDS = 4  # each driver's share of a cell is split in rounds, alternated a, b, c, a, ...
IMPORT_RUNS = 7
INSTALL = "pip install 'psycopg[binary]' psycopg-pool asyncpg"

# The statements of the task server's store (services/taskserver/storage/postgres.py), on the
# schema its own migrations make: ids from a sequence of their own, times as the API's text,
# the key in a table of its own whose row names the task.
# One create, in one transaction: the id, the key (a key already there would be a replay),
# then the row; the row is what the API answers.
NEXT_ID = "SELECT nextval('task_ids')"
INSERT_KEY = (
    "INSERT INTO task_keys (key, digest, task_id) VALUES ({}, {}, {})"
    " ON CONFLICT (key) DO NOTHING RETURNING task_id"
)
INSERT_TASK = (
    "INSERT INTO tasks (id, title, completed, created_at, updated_at, server)"
    " VALUES ({}, {}, {}, {}, {}, {})"
)
STAMP = "2026-12-07T12:00:00.000Z"

Create = Callable[[str], Awaitable[object]]


def first(row: tuple[Any, ...] | None) -> Any:
    assert row is not None
    return row[0]


def arguments(title: str) -> tuple[str, str]:
    key = str(uuid.uuid4())
    return key, hashlib.sha256(title.encode()).hexdigest()[:32]


class Psycopg:
    """(a): the sync driver and its pool, each create in a worker thread."""

    name = "psycopg 3 sync + ConnectionPool, to_thread"

    def __init__(self, url: str, size: int) -> None:
        from psycopg_pool import ConnectionPool

        # Autocommit connections, each create an explicit transaction, as the store does.
        kwargs = {"autocommit": True}
        self.pool = ConnectionPool(url, min_size=size, max_size=size, kwargs=kwargs, open=True)
        self.pool.wait(timeout=30)
        self.key_sql = INSERT_KEY.format("%s", "%s", "%s")
        self.task_sql = INSERT_TASK.format(*["%s"] * 6)

    def _create(self, title: str) -> object:
        key, digest = arguments(title)
        with self.pool.connection() as conn, conn.transaction():
            task_id = first(conn.execute(NEXT_ID).fetchone())
            first(conn.execute(self.key_sql, (key, digest, task_id)).fetchone())
            row = (task_id, title, False, STAMP, STAMP, "server1")
            conn.execute(self.task_sql, row)
        return row

    async def create(self, title: str) -> object:
        return await anyio.to_thread.run_sync(self._create, title)

    async def close(self) -> None:
        self.pool.close()


class PsycopgAsync:
    """(c), for the reading: psycopg 3's own async API and ``AsyncConnectionPool``, no
    threads; tells the driver's cost from the thread hop's."""

    name = "psycopg 3 async + AsyncConnectionPool"

    def __init__(self, pool: object) -> None:
        self.pool = pool
        self.key_sql = INSERT_KEY.format("%s", "%s", "%s")
        self.task_sql = INSERT_TASK.format(*["%s"] * 6)

    @classmethod
    async def open(cls, url: str, size: int) -> PsycopgAsync:
        from psycopg_pool import AsyncConnectionPool

        kwargs = {"autocommit": True}
        pool = AsyncConnectionPool(url, min_size=size, max_size=size, kwargs=kwargs, open=False)
        await pool.open(wait=True, timeout=30)
        return cls(pool)

    async def create(self, title: str) -> object:
        key, digest = arguments(title)
        async with self.pool.connection() as conn, conn.transaction():  # type: ignore[attr-defined]
            task_id = first(await (await conn.execute(NEXT_ID)).fetchone())
            cursor = await conn.execute(self.key_sql, (key, digest, task_id))
            first(await cursor.fetchone())
            row = (task_id, title, False, STAMP, STAMP, "server1")
            await conn.execute(self.task_sql, row)
        return row

    async def close(self) -> None:
        await self.pool.close()  # type: ignore[attr-defined]


class Asyncpg:
    """(b): asyncpg's own pool, each create a coroutine on the event loop."""

    name = "asyncpg + its pool, async"

    def __init__(self, pool: object) -> None:
        self.pool = pool
        self.key_sql = INSERT_KEY.format("$1", "$2", "$3")
        self.task_sql = INSERT_TASK.format(*[f"${n}" for n in range(1, 7)])

    @classmethod
    async def open(cls, url: str, size: int) -> Asyncpg:
        import asyncpg

        return cls(await asyncpg.create_pool(url, min_size=size, max_size=size))

    async def create(self, title: str) -> object:
        key, digest = arguments(title)
        async with self.pool.acquire() as conn, conn.transaction():  # type: ignore[attr-defined]
            task_id = await conn.fetchval(NEXT_ID)
            assert await conn.fetchval(self.key_sql, key, digest, task_id) is not None
            row = (task_id, title, False, STAMP, STAMP, "server1")
            await conn.execute(self.task_sql, *row)
        return row

    async def close(self) -> None:
        await self.pool.close()  # type: ignore[attr-defined]


async def drive(
    create: Create, callers: int, count: int, seconds: float
) -> tuple[list[float], float, float]:
    """``callers`` concurrent loops sharing ``count`` creates, stopping after ``seconds``;
    the latency of each create in ms, the wall time and this process's CPU time (every
    thread's: the worker threads' too)."""
    left = iter(range(count))
    deadline = time.monotonic() + seconds
    samples: list[float] = []

    async def caller(n: int) -> None:
        for i in left:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            await create(f"bench-{n}-{i}")
            samples.append((time.perf_counter() - started) * 1000)

    started, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for n in range(callers):
            group.create_task(caller(n))
    return samples, time.perf_counter() - started, time.process_time() - cpu


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[94]


async def cell(url: str, callers: int, creates: int, seconds: float) -> dict[str, dict[str, float]]:
    """The drivers at ``callers``: ``creates`` each, in alternated rounds."""
    # The thread limiter is anyio's default (40 threads), as in the task server: never the
    # bottleneck at 16 callers.
    opened = [Psycopg(url, callers), await Asyncpg.open(url, callers)]
    opened.append(await PsycopgAsync.open(url, callers))
    drivers = dict(zip("abc", opened, strict=True))
    results: dict[str, tuple[list[float], float, float]] = {n: ([], 0.0, 0.0) for n in drivers}
    try:
        for driver in drivers.values():  # warm up: connections, prepared statements, threads
            await drive(driver.create, callers, 10 * callers, seconds)
        for _ in range(ROUNDS):
            for name, driver in drivers.items():
                samples, elapsed, cpu = await drive(
                    driver.create, callers, creates // ROUNDS, seconds
                )
                kept, total, total_cpu = results[name]
                results[name] = (kept + samples, total + elapsed, total_cpu + cpu)
    finally:
        for driver in drivers.values():
            await driver.close()
    return {
        name: {
            "rate": len(samples) / elapsed,
            "p50": statistics.median(samples),
            "p95": p95(samples),
            "cpu_us": cpu / len(samples) * 1e6,
            "n": len(samples),
        }
        for name, (samples, elapsed, cpu) in results.items()
    }


def import_ms(statement: str) -> float:
    """Median ms of ``statement`` in fresh interpreters (what a server's start pays)."""
    code = (
        "import time; t = time.perf_counter(); "
        f"{statement}; print((time.perf_counter() - t) * 1000)"
    )
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=60).stdout)
        for _ in range(IMPORT_RUNS)
    ]  # fmt: skip
    return statistics.median(runs)


def installed(names: list[str]) -> tuple[float, list[str]]:
    """MB on disk of the distributions ``names`` and of what they require (installed here,
    for this Python), by their RECORD files; and every distribution counted."""
    seen: dict[str, float] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower()
        if key in seen:
            continue
        size = 0
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                size += path.stat().st_size
        seen[key] = size / 1e6
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            parsed = Requirement(requirement)
            if parsed.marker is None or parsed.marker.evaluate():
                todo.append(parsed.name)
    return sum(seen.values()), [f"{k} {v:.1f}" for k, v in sorted(seen.items())]


def event_loop() -> str:
    """uvloop when installed, as uvicorn runs the task server; asyncio's own otherwise."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=2000, help="per driver and cell")
    parser.add_argument("--seconds", type=float, default=15.0, help="bound of each round")
    args = parser.parse_args()
    if problem := postgres_problem():
        print(f"skipped: {problem}")
        return 0
    try:
        import asyncpg
        import psycopg
        import psycopg_pool
    except ImportError as error:
        print(f"skipped: {error.name} is not installed ({INSTALL})")
        return 0

    loop = event_loop()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} libpq {psycopg.pq.version()}),"
        f" psycopg_pool {psycopg_pool.__version__}, asyncpg {asyncpg.__version__},"
        f" event loop {loop}"
    )
    server = PostgresServer().start()
    try:
        url = server.create_database("drivers")
        store = PostgresStore(url, "bench")  # the schema as a task server makes it
        store.prepare()
        store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'} on 127.0.0.1:{server.port}")
        print(
            f"(a) {Psycopg.name} (the reference); (b) {Asyncpg.name};"
            f" (c) {PsycopgAsync.name}; pool size = callers"
        )
        print(
            "callers | driver | creates/s | p50 ms | p95 ms | client CPU/create"
            " | rate / (a) | creates"
        )
        for callers in CONCURRENCY:
            r = asyncio.run(cell(url, callers, args.creates, args.seconds))
            for name, x in r.items():
                print(
                    f"{callers:>7} | {name:>6} | {x['rate']:9.0f} | {x['p50']:6.2f}"
                    f" | {x['p95']:6.2f} | {x['cpu_us']:10.0f} us"
                    f" | {x['rate'] / r['a']['rate']:9.2f}x | {x['n']:.0f}"
                )
    finally:
        server.close()
    for label, statement, names in (
        ("(a)", "import psycopg, psycopg_pool", ["psycopg", "psycopg-binary", "psycopg-pool"]),
        ("(b)", "import asyncpg", ["asyncpg"]),
    ):
        megabytes, counted = installed(names)
        print(
            f"{label} import {import_ms(statement):.0f} ms (median of {IMPORT_RUNS} fresh"
            f" interpreters); installed {megabytes:.1f} MB: {', '.join(counted)}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

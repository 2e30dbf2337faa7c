"""The task server's two storage backends, side by side: ``python bench/bench_storage.py``.

A real ``ticslab taskserver`` process (uvicorn, loopback) with 1,000, 10,000 and 100,000
tasks already stored, one on ``tasks.json`` (the reference) and one on PostgreSQL
(``--storage postgresql://...``, a throwaway cluster from tests/pgserver.py: Debian's
binaries, fsync on), both running at once, one size after the other. For each:

- ``POST /tareas``, each with its own ``Idempotency-Key`` as ``ticslab client`` sends them:
  ``--posts`` posts by ``--callers`` concurrent clients (threads, one connection each), in
  rounds alternated server by server so that both see the same machine load;
  p50 and p95 latency, answers per second, and the CPU time per post of the task server and
  of the cluster's processes (PostgreSQL's backends, WAL writer, checkpointer...); then a
  check that every post answered 201 is stored (the file read whole; ``count(*)`` in the
  database);
- ``GET /tareas?limit=50`` (the first page and its ``X-Total-Count``) on each server,
  interleaved request by request with ``GET /health`` on each, the floor (it checks the
  storage too: a stat and small reads of the file, one SELECT); p50 of each;
- the server's memory (RSS) at the end, and how long it took to start (launch to the first
  answer of ``/health``; the file's server reads the whole file first);
- the disk's floor, interleaved with the pages: 100 bytes written and fsynced in the folder
  of the file (the cluster's is on the same disk).

Pre-filled quickly, never through the API: the file is written whole in the exact format
the store writes (``render_tasks``, services/taskserver/storage/format.py); the database is
created by the server's first start (its own schema), stopped, filled with ``COPY`` into the
tables it made (every seeded task with a key, as in the file), the id sequence set past the
last id, and started again.

Every loop is bounded in count and time (``--seconds`` per phase); traffic goes only to the
servers started here on 127.0.0.1. The PostgreSQL half is skipped, saying why, when
PostgreSQL, psycopg or a task server that takes ``--storage`` is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from stack import ROOT, ServiceProcess, free_port, interleaved
from support import TICSLAB

sys.path.insert(0, str(ROOT))

from services.taskserver.storage.format import render_tasks
from services.taskserver.storage.model import request_digest

SIZES = (1_000, 10_000, 100_000)
STAMP = "2026-11-26T21:44:41.123Z"
WARM_POSTS = 20
ROUNDS = 5  # the posts of each size, in rounds alternated backend by backend
PAGE_ROUNDS = 50  # GET /tareas?limit=50 and GET /health, interleaved
START_SECONDS = 60.0  # a server on 100,000 tasks parses 27 MB before it listens


# -- the seeded tasks, the same for both backends --------------------------------------------


def seeded(n: int) -> dict[str, Any]:
    """Task ``n`` as the file stores it, with the key and digest of a create made with one
    (the digest the server computes, so a repeated key would be told apart as it should)."""
    return {
        "id": n,
        "title": f"seed-{n:06d}",
        "completed": n % 3 == 0,
        "created_at": STAMP,
        "updated_at": STAMP,
        "server": "server1",
        "idempotency_key": f"seed-key-{n:08d}-{hashlib.sha1(b'%d' % n).hexdigest()[:12]}",
        "request_digest": request_digest(f"seed-{n:06d}", n % 3 == 0),
    }


# -- the backends ------------------------------------------------------------------------------


class Backend:
    """A way to start one task server on ``count`` stored tasks and to count what it holds."""

    name = ""
    started_in = 0.0  # seconds the last start took, from launch to /health's answer

    def start(self, count: int) -> ServiceProcess:
        raise NotImplementedError

    def timed_start(self, server: ServiceProcess) -> ServiceProcess:
        started = time.perf_counter()
        server.start(timeout=START_SECONDS)
        self.started_in = time.perf_counter() - started
        return server

    def stored(self) -> int:
        raise NotImplementedError

    def helper_cpu(self) -> float:
        """CPU seconds so far of the processes that serve the task server (none for a file)."""
        return 0.0


def task_server(port: int, storage: list[str]) -> ServiceProcess:
    args = ["taskserver", "--name", "server1", "--host", "127.0.0.1", "--port", str(port)]
    return ServiceProcess([*args, *storage], port)


class FileBackend(Backend):
    name = "tasks.json"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "tasks.json"

    def start(self, count: int) -> ServiceProcess:
        for leftover in self.folder.glob("tasks.json*"):
            leftover.unlink()
        self.path.write_bytes(render_tasks([seeded(n) for n in range(1, count + 1)]))
        storage = ["--tasks-file", str(self.path)]
        return self.timed_start(task_server(free_port(), storage))

    def stored(self) -> int:
        return len(orjson.loads(self.path.read_bytes()))


class PostgresBackend(Backend):
    """One database per size, its schema made by the server's first start."""

    name = "PostgreSQL"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.url = ""

    def start(self, count: int) -> ServiceProcess:
        self.url = self.server.create_database(f"tasks_{count}")
        port = free_port()
        first = task_server(port, ["--storage", self.url]).start(timeout=START_SECONDS)
        first.close()  # its schema is there now; fill it with nobody else connected
        fill(self.url, count)
        return self.timed_start(task_server(port, ["--storage", self.url]))

    def stored(self) -> int:
        import psycopg

        with psycopg.connect(self.url) as conn:
            table = Schema(conn).tasks
            row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            return int(row[0]) if row else -1

    def helper_cpu(self) -> float:
        """The cluster's processes: the postmaster, the server's backends, the WAL writer,
        the checkpointer and the rest (every database's: only one is in use at a time)."""
        pid = int((self.server.data / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        total = 0.0
        for process in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += cpu_seconds(process)
        return total


def postgres_problem() -> str | None:
    """Why the PostgreSQL half cannot run here, or None."""
    from pgserver import postgres_problem as server_problem

    if problem := server_problem():
        return problem
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    done = subprocess.run(
        [*TICSLAB, "taskserver", "--help"], capture_output=True, text=True, timeout=60
    )
    if "--storage" not in done.stdout:
        return "this ticslab taskserver has no --storage (issue 27's backend is not merged)"
    return None


# -- filling the server's own schema -------------------------------------------------------


class Schema:
    """The tables the server made, read from the catalog rather than assumed."""

    def __init__(self, conn: Any) -> None:
        rows = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type, c.is_nullable = 'YES',"
            " c.column_default IS NOT NULL OR c.is_identity = 'YES'"
            " FROM information_schema.columns c JOIN information_schema.tables t"
            " USING (table_schema, table_name)"
            " WHERE t.table_type = 'BASE TABLE' AND c.table_schema = current_schema()"
            " ORDER BY c.table_name, c.ordinal_position"
        ).fetchall()
        self.columns: dict[str, list[tuple[str, str, bool]]] = {}
        for table, column, kind, nullable, defaulted in rows:
            self.columns.setdefault(table, []).append((column, kind, nullable or defaulted))
        names = {table: {c for c, _, _ in cols} for table, cols in self.columns.items()}
        tasks = [t for t, cols in names.items() if {"id", "title", "completed"} <= cols]
        if len(tasks) != 1:
            raise RuntimeError(f"cannot tell the tasks table among {sorted(names)}")
        self.tasks = tasks[0]
        # A table of its own for the keys, if the tasks table does not hold them.
        keyed = [
            t for t, cols in names.items()
            if t != self.tasks and any("key" in c for c in cols) and any("task" in c for c in cols)
        ]  # fmt: skip
        self.keys = keyed[0] if len(keyed) == 1 else None


def value(column: str, kind: str, task: dict[str, Any]) -> tuple[bool, Any]:
    """(known, value) of ``column`` for ``task``, by the column's name and type."""
    name = column.lower()
    when = datetime.datetime(2026, 11, 26, 21, 44, 41, 123000, tzinfo=datetime.UTC)
    if name in ("id", "task_id"):
        return True, task["id"]
    if name in ("title", "completed", "server"):
        return True, task[name]
    if name in ("created_at", "updated_at") or "timestamp" in kind:
        return True, task[name] if kind == "text" and name in task else when
    if "key" in name:
        return True, task["idempotency_key"]
    if "digest" in name:
        return True, task["request_digest"]
    return False, None


def copy_rows(conn: Any, table: str, columns: list[tuple[str, str, bool]], count: int) -> int:
    """COPY ``count`` seeded rows into ``table``, filling every column it knows; a column it
    does not know must be nullable or have a default. The rows copied."""
    chosen: list[tuple[str, str]] = []
    for column, kind, optional in columns:
        known, _ = value(column, kind, seeded(1))
        if known:
            chosen.append((column, kind))
        elif not optional:
            raise RuntimeError(f"cannot fill {table}.{column} ({kind}): unknown and required")
    names = ", ".join(f'"{c}"' for c, _ in chosen)
    with conn.cursor() as cursor, cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
        for n in range(1, count + 1):
            task = seeded(n)
            copy.write_row([value(c, k, task)[1] for c, k in chosen])
    return count


def id_sequence(conn: Any, table: str) -> str:
    """The sequence the ids come from: the id column's own (serial, identity), else the one
    sequence in the schema (a sequence of its own, taken with nextval)."""
    row = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (f'"{table}"',)).fetchone()
    if row and row[0]:
        return str(row[0])
    rows = conn.execute(
        "SELECT sequence_name FROM information_schema.sequences"
        " WHERE sequence_schema = current_schema()"
    ).fetchall()
    if len(rows) != 1:
        raise RuntimeError(f"cannot tell the id sequence among {[r[0] for r in rows]}")
    return str(rows[0][0])


def fill(url: str, count: int) -> None:
    """The seeded tasks (and their keys) into the server's schema, the id sequence past them."""
    import psycopg

    with psycopg.connect(url) as conn:
        schema = Schema(conn)
        copy_rows(conn, schema.tasks, schema.columns[schema.tasks], count)
        if schema.keys is not None:
            copy_rows(conn, schema.keys, schema.columns[schema.keys], count)
        conn.execute("SELECT setval(%s, %s)", (id_sequence(conn, schema.tasks), count))
        conn.commit()
        conn.autocommit = True
        conn.execute(f'VACUUM ANALYZE "{schema.tasks}"')


# -- the measurements --------------------------------------------------------------------------


def p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def posts(url: str, total: int, callers: int, seconds: float) -> tuple[list[float], int, float]:
    """``total`` posts shared by ``callers`` threads, stopping after ``seconds``: each
    answer's latency in ms, how many answered 201, and the wall time."""
    counter: Iterator[int] = iter(range(total))
    deadline = time.monotonic() + seconds

    def caller(n: int) -> tuple[list[float], int]:
        samples, created = [], 0
        with httpx.Client(base_url=url, timeout=30) as http:
            for i in counter:
                if time.monotonic() > deadline:
                    break
                key = f"bench-{os.getpid()}-{n}-{i}-{time.monotonic_ns()}"
                started = time.perf_counter()
                response = http.post(
                    "/tareas", json={"title": f"bench-{i}"}, headers={"Idempotency-Key": key}
                )
                samples.append((time.perf_counter() - started) * 1000)
                created += response.status_code == 201
        return samples, created

    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        done = list(pool.map(caller, range(callers)))
    elapsed = time.perf_counter() - started
    return [s for samples, _ in done for s in samples], sum(c for _, c in done), elapsed


def cpu_seconds(process: psutil.Process) -> float:
    """The task server's CPU time so far (user and system, every thread)."""
    times = process.cpu_times()
    return times.user + times.system


class Cell:
    """One backend's server at one size, and what was measured on it."""

    def __init__(self, backend: Backend, server: ServiceProcess) -> None:
        self.backend, self.server = backend, server
        assert server.proc is not None
        self.process = psutil.Process(server.proc.pid)
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.latencies: list[float] = []
        self.created = 0
        self.elapsed = self.cpu = self.helper_cpu = 0.0

    def page(self) -> None:
        response = self.http.get("/tareas", params={"limit": 50})
        assert response.status_code == 200, response.text

    def health(self) -> None:
        self.http.get("/health")

    def total(self) -> int:
        return int(self.http.get("/tareas", params={"limit": 1}).headers["X-Total-Count"])

    def post_round(self, count: int, callers: int, seconds: float) -> None:
        before, helper = cpu_seconds(self.process), self.backend.helper_cpu()
        latencies, created, elapsed = posts(self.server.url, count, callers, seconds)
        self.cpu += cpu_seconds(self.process) - before
        self.helper_cpu += self.backend.helper_cpu() - helper
        self.latencies += latencies
        self.created += created
        self.elapsed += elapsed

    def close(self) -> None:
        self.http.close()
        self.server.close()


def fsync_once(folder: Path) -> None:
    """The disk's floor, measured beside the pages: 100 bytes written and fsynced (a file
    create pays three, the journal, the file and the id record; a commit one, the WAL)."""
    path = folder / "fsync-floor"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"x" * 100)
        os.fsync(fd)
    finally:
        os.close(fd)


def measure(
    backends: list[Backend], count: int, args: argparse.Namespace, folder: Path
) -> list[dict[str, float]]:
    """Every backend's server on ``count`` tasks, all running at once; the posts in rounds
    alternated backend by backend and the pages request by request, so that each sees the
    same machine load."""
    cells: list[Cell] = []
    try:
        for backend in backends:
            cells.append(Cell(backend, backend.start(count)))
        for cell in cells:
            total = cell.total()
            assert total == count, f"{cell.backend.name}: {total} tasks stored, {count} seeded"
            cell.post_round(WARM_POSTS, 1, args.seconds)  # connections, first writes
            cell.latencies, cell.created = [], 0
            cell.elapsed = cell.cpu = cell.helper_cpu = 0.0
        for _ in range(ROUNDS):
            for cell in cells:
                cell.post_round(max(1, args.posts // ROUNDS), args.callers, args.seconds / ROUNDS)
        floor = functools.partial(fsync_once, folder)
        timings = interleaved(
            [cell.page for cell in cells] + [cell.health for cell in cells] + [floor],
            PAGE_ROUNDS,
            args.seconds,
        )
        rss = [cell.process.memory_info().rss for cell in cells]
    finally:
        for cell in cells:
            cell.close()
    return [
        {
            "p50": statistics.median(cell.latencies),
            "p95": p(cell.latencies, 95),
            "rate": len(cell.latencies) / cell.elapsed,
            "cpu_ms": cell.cpu / len(cell.latencies) * 1000,
            "db_cpu_ms": cell.helper_cpu / len(cell.latencies) * 1000,
            "sent": len(cell.latencies),
            "created": cell.created,
            "stored": cell.backend.stored() - count - WARM_POSTS,
            "page_p50": statistics.median(timings[i]),
            "health_p50": statistics.median(timings[len(cells) + i]),
            "rss_mb": rss[i] / 2**20,
            "start_s": cell.backend.started_in,
            "fsync_p50": statistics.median(timings[-1]),
        }
        for i, cell in enumerate(cells)
    ]


def row(size: int, name: str, r: dict[str, float], reference: dict[str, float] | None) -> str:
    ratio = "" if reference is None else f" | {r['p50'] / reference['p50']:5.2f}x"
    lost = "none lost" if r["stored"] == r["created"] else "MISMATCH"
    return (
        f"{size:>7} | {name:<10} | {r['p50']:6.2f} | {r['p95']:6.2f} | {r['rate']:5.0f}"
        f" | {r['cpu_ms']:5.2f} + {r['db_cpu_ms']:4.2f} ms"
        f" | {r['created']:.0f}/{r['sent']:.0f} 201, {r['stored']:.0f} stored ({lost})"
        f" | {r['page_p50']:6.2f} | {r['health_p50']:5.2f} | {r['rss_mb']:4.0f} MB"
        f" | {r['start_s']:4.1f} s{ratio}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=500, help="posts per size and backend")
    parser.add_argument("--callers", type=int, default=4, help="concurrent posters")
    parser.add_argument("--seconds", type=float, default=30.0, help="bound of each phase")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="tasks stored, comma-separated"
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    problem = postgres_problem()
    if problem:
        print(f"PostgreSQL backend skipped: {problem}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        backends: list[Backend] = [FileBackend(Path(tmp))]
        database = None
        if not problem:
            from pgserver import PostgresServer

            database = PostgresServer().start()
            backends.append(PostgresBackend(database))
        try:
            print(
                f"{args.posts} POSTs by {args.callers} callers per backend and size, in"
                f" {ROUNDS} alternated rounds; page: GET /tareas?limit=50, interleaved with"
                " GET /health"
            )
            print(
                "stored  | backend    | POST p50 ms | p95 ms | req/s | CPU/POST: server + database"
                " | answered, stored | page p50 ms | health p50 ms | server RSS | start"
                " | p50 / file's"
            )
            for size in sizes:
                results = measure(backends, size, args, Path(tmp))
                for backend, r in zip(backends, results, strict=True):
                    failed |= r["stored"] != r["created"]
                    reference = None if r is results[0] else results[0]
                    print(row(size, backend.name, r, reference), flush=True)
                print(f"        fsync of 100 bytes here, p50: {results[0]['fsync_p50']:.2f} ms")
        finally:
            if database is not None:
                database.close()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

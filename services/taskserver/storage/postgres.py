"""The PostgreSQL backend: the tasks in a database that every server given the same URL
shares, through psycopg 3's synchronous API and a small connection pool.

The app calls a store from worker threads (``anyio.to_thread``), so a blocking driver fits:
each call takes a pooled connection for one short transaction and gives it back. Reads are
plain SELECTs (MVCC: they never wait for a write); a create is one transaction holding its
Idempotency-Key, the key's request digest and the row together. Ids come from a sequence, so
an id is never handed out twice, even after its task is deleted; a create that rolls back
leaves a gap. Every wait is bounded: the pool's wait for a connection, ``connect_timeout``,
``statement_timeout`` and ``lock_timeout``; past one, the call raises
:class:`StorageUnavailable` and the app answers 503. A database that comes back is used
again without a restart: the pool checks a connection before lending it and opens new ones.

The schema is made by versioned migrations (``MIGRATIONS``) on a server's first start, under
a transaction-scoped advisory lock, so two servers starting at once on an empty database
make it once. The design: docs/design/taskserver.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from services.common import utc_now_iso
from services.taskserver.storage.model import (
    ID_RANGE_USED,
    MAX_TASK_ID,
    KeyReused,
    StorageUnavailable,
    Task,
    TaskNotFound,
    new_task,
    request_digest,
)
from services.taskserver.storage.postgres_url import redacted

T = TypeVar("T")

POOL_MIN = 1
POOL_MAX = 4  # per server: writes go one at a time (writers.py), reads and /health beside
POOL_WAIT_SECONDS = 5.0  # for a pooled connection; 503 after
# A call that gets no pooled connection this soon asks the database directly whether it is
# there (a new connection, refused at once when it is stopped), so a database that is away
# answers 503 with its reason at once, not after the pool's whole wait.
PROBE_AFTER_SECONDS = 0.3
PROBE_CONNECT_TIMEOUT = 2  # libpq's minimum
CONNECT_TIMEOUT_SECONDS = 3  # libpq's connect_timeout: whole seconds
STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 3000
HEALTH_WAIT_SECONDS = 2.0  # /health's wait for a connection, after a probe found it there
WRITER_WAIT_SECONDS = 10.0  # for this process's writer lock (held by a quiesce)
CREATE_ATTEMPTS = 3  # a sequence id taken meanwhile by fault mode nolock's upsert: next id
RAISE_BY_NEXTVAL = 100_000  # raise_last_id steps the sequence up to this far; setval beyond

# The advisory lock the migrations are run under ("ticslab" in ASCII; one bigint).
MIGRATION_LOCK = 0x7469_6373_6C61_62
COLUMNS = "id, title, completed, created_at, updated_at, server"

# Each migration runs once, in order, in the transaction that records its version.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            f"CREATE SEQUENCE IF NOT EXISTS task_ids MAXVALUE {MAX_TASK_ID + 1}",
            # Times are kept as the text the API shows (the file backend's format), so both
            # backends answer the same bytes.
            """CREATE TABLE IF NOT EXISTS tasks (
                id bigint PRIMARY KEY,
                title text NOT NULL,
                completed boolean NOT NULL,
                created_at text NOT NULL,
                updated_at text NOT NULL,
                server text NOT NULL
            )""",
            # A key lives as long as its task, as in the file (where it is a task's field).
            """CREATE TABLE IF NOT EXISTS task_keys (
                key text PRIMARY KEY,
                digest text NOT NULL,
                task_id bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE
                    DEFERRABLE INITIALLY DEFERRED
            )""",
            "CREATE INDEX IF NOT EXISTS task_keys_task_id ON task_keys (task_id)",
        ],
    ),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class PostgresStore:
    """Tasks in one PostgreSQL database shared by every server given the same URL.

    Methods block (network round trips): call them from a worker thread, not the event loop.
    """

    def __init__(self, url: str, server: str) -> None:
        self.url = url
        self.where = redacted(url)
        self.server = server
        # Writes queue on it in this process (writers.py); a quiesce holds it, so a paused
        # process holds no row lock or open transaction.
        self.writer_lock = threading.Lock()
        self._password = urlsplit(url).password
        self._count = 0  # tasks as last seen, for metrics (no I/O)
        self._wait_since = 0.0  # monotonic start of a write's wait for a connection; 0: none
        self._pool = ConnectionPool(
            url,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            timeout=POOL_WAIT_SECONDS,
            open=False,
            # A connection broken while the database was away is found and replaced before
            # it is lent, so a database that comes back is used at once.
            check=ConnectionPool.check_connection,
            # Keep trying to reconnect for as long as the server runs.
            reconnect_timeout=365 * 24 * 3600.0,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
                f"-c lock_timeout={LOCK_TIMEOUT_MS}",
                "application_name": f"ticslab {server}"[:63],
            },
            name=f"ticslab-{server}",
        )

    # -- the public operations -------------------------------------------------------------

    def prepare(self) -> None:
        """Open the pool and bring the schema to ``SCHEMA_VERSION``; two servers doing it at
        once on an empty database take turns on an advisory lock."""
        self._pool.open(wait=False)

        def migrate(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY)"
                )
                row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
                current = _one(row.fetchone())
                for version, statements in MIGRATIONS:
                    if version > current:
                        for statement in statements:
                            conn.execute(statement.encode())
                        conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
            self._count = _one(conn.execute("SELECT count(*) FROM tasks").fetchone())

        self._run(migrate)

    def page(
        self, offset: int = 0, limit: int | None = None, newest_first: bool = False
    ) -> tuple[list[Task], int]:
        order = "DESC" if newest_first else "ASC"
        query = f"SELECT {COLUMNS} FROM tasks ORDER BY id {order} LIMIT %s OFFSET %s"

        def read(conn: psycopg.Connection[Any]) -> tuple[list[Task], int]:
            # One snapshot for the page and the total, so they agree.
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                total = _one(conn.execute("SELECT count(*) FROM tasks").fetchone())
                with conn.cursor(row_factory=dict_row) as cursor:
                    tasks = cursor.execute(query.encode(), (limit, offset)).fetchall()
            return tasks, total

        tasks, total = self._run(read)
        self._count = total
        return tasks, total

    def get(self, task_id: int) -> Task:
        def read(conn: psycopg.Connection[Any]) -> Task | None:
            with conn.cursor(row_factory=dict_row) as cursor:
                query = f"SELECT {COLUMNS} FROM tasks WHERE id = %s"
                return cursor.execute(query.encode(), (task_id,)).fetchone()

        task = self._run(read) if task_id <= MAX_TASK_ID else None
        if task is None:
            raise TaskNotFound(task_id)
        return task

    def count(self) -> int:
        return self._count

    def create(
        self, title: str, completed: bool = False, idempotency_key: str | None = None
    ) -> tuple[Task, bool]:
        """One transaction: the id, the key with its digest, the row. A key another create
        holds in a transaction not yet committed makes this one wait for it (ON CONFLICT),
        then answer its task: one key, one row, however many servers get it at once."""
        digest = request_digest(title, completed)

        def insert(conn: psycopg.Connection[Any]) -> tuple[Task, bool]:
            for attempt in range(1, CREATE_ATTEMPTS + 1):
                try:
                    with conn.transaction():
                        return self._insert(conn, title, completed, idempotency_key, digest)
                except pg_errors.UniqueViolation:
                    # The id was written meanwhile by fault mode nolock's upsert (which takes
                    # max(id) + 1 without the sequence): take the next one.
                    if attempt == CREATE_ATTEMPTS:
                        raise
            raise AssertionError("unreachable")

        with self._writing():
            task, replayed = self._run(insert)
        if not replayed:
            self._count += 1
        return task, replayed

    def _insert(
        self,
        conn: psycopg.Connection[Any],
        title: str,
        completed: bool,
        key: str | None,
        digest: str,
    ) -> tuple[Task, bool]:
        task_id = _one(conn.execute("SELECT nextval('task_ids')").fetchone())
        if task_id > MAX_TASK_ID:
            raise StorageUnavailable(self.where, ID_RANGE_USED, "storage_error")
        if key is not None:
            added = conn.execute(
                "INSERT INTO task_keys (key, digest, task_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO NOTHING RETURNING task_id",
                (key, digest, task_id),
            ).fetchone()
            if added is None:  # the key is another create's, committed: replay or refuse
                return self._earlier(conn, key, digest), True
        task = new_task(task_id, title, completed, self.server)
        conn.execute(
            f"INSERT INTO tasks ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)".encode(),
            tuple(task.values()),
        )
        return task, False

    def _earlier(self, conn: psycopg.Connection[Any], key: str, digest: str) -> Task:
        with conn.cursor(row_factory=dict_row) as cursor:
            row = cursor.execute(
                f"SELECT k.digest AS key_digest, {COLUMNS} FROM task_keys k "
                "JOIN tasks t ON t.id = k.task_id WHERE k.key = %s".encode(),
                (key,),
            ).fetchone()
        if row is None:  # never: a key goes with its task (ON DELETE CASCADE)
            raise StorageUnavailable(self.where, "an Idempotency-Key without its task")
        if row.pop("key_digest") != digest:
            raise KeyReused
        return row

    def update(self, task_id: int, changes: dict[str, Any]) -> Task:
        fields = {name: changes[name] for name in ("title", "completed") if name in changes}
        sets = ", ".join(f"{name} = %s" for name in fields)
        query = f"UPDATE tasks SET {sets}, updated_at = %s WHERE id = %s RETURNING {COLUMNS}"

        def change(conn: psycopg.Connection[Any]) -> Task | None:
            with conn.cursor(row_factory=dict_row) as cursor:
                values = (*fields.values(), utc_now_iso(), task_id)
                return cursor.execute(query.encode(), values).fetchone()

        return self._written(task_id, change)

    def delete(self, task_id: int) -> Task:
        def remove(conn: psycopg.Connection[Any]) -> Task | None:
            with conn.cursor(row_factory=dict_row) as cursor:
                query = f"DELETE FROM tasks WHERE id = %s RETURNING {COLUMNS}"
                return cursor.execute(query.encode(), (task_id,)).fetchone()

        task = self._written(task_id, remove)
        self._count = max(0, self._count - 1)
        return task

    def raise_last_id(self, task_id: int) -> None:
        """Step the sequence to at least ``task_id`` with ``nextval``, which is atomic, so a
        create running meanwhile is never handed an id below the result (a ``setval`` read
        and written apart could move it back). Past ``RAISE_BY_NEXTVAL`` steps, ``setval``."""

        def step(conn: psycopg.Connection[Any]) -> None:
            row = conn.execute("SELECT last_value, is_called FROM task_ids").fetchone()
            assert row is not None
            last = row[0] if row[1] else row[0] - 1
            missing = task_id - last
            if missing <= 0:
                return
            if missing > RAISE_BY_NEXTVAL:
                conn.execute("SELECT setval('task_ids', %s)", (task_id,))
                return
            conn.execute("SELECT max(nextval('task_ids')) FROM generate_series(1, %s)", (missing,))

        with self._writing():
            self._run(step)

    def read_naively(self, title: str, completed: bool) -> tuple[None, Task]:
        """Fault mode nolock's read, the naive SQL of the lesson: the highest id + 1, in its
        own statement, no transaction, no lock, no sequence."""

        def read(conn: psycopg.Connection[Any]) -> int:
            return int(_one(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM tasks").fetchone()))

        task_id = self._run(read)
        if task_id > MAX_TASK_ID:
            raise StorageUnavailable(self.where, ID_RANGE_USED, "storage_error")
        return None, new_task(task_id, title, completed, self.server)

    def write_naively(self, read: None, task: Task) -> None:
        """Fault mode nolock's write: an upsert on the id, so a create that read the same
        highest id meanwhile is overwritten, as the file's naive rewrite does (its key, if it
        had one, goes with it)."""

        def upsert(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "WITH gone AS (DELETE FROM task_keys WHERE task_id = %s) "
                f"INSERT INTO tasks ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET title = excluded.title, "
                "completed = excluded.completed, created_at = excluded.created_at, "
                "updated_at = excluded.updated_at, server = excluded.server".encode(),
                (task["id"], *task.values()),
            )

        self._run(upsert)

    def problem(self) -> str | None:
        try:
            with self._connection(HEALTH_WAIT_SECONDS) as conn:
                conn.execute("SELECT 1 FROM tasks LIMIT 1")
        except StorageUnavailable as error:
            return f"{self.where}: {error.problem}"
        except psycopg.Error as error:
            return f"{self.where}: {self._reason(error)}"
        return None

    def lock_wait(self) -> float:
        since = self._wait_since
        return time.monotonic() - since if since else 0.0

    def describe(self) -> dict[str, Any]:
        return {"kind": "postgresql", "url": self.where}

    def close(self) -> None:
        self._pool.close()

    # -- connections and errors ------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        if not self.writer_lock.acquire(timeout=WRITER_WAIT_SECONDS):
            problem = f"a write here waited more than {WRITER_WAIT_SECONDS:g} s"
            raise StorageUnavailable(self.where, problem, "storage_timeout")
        try:
            yield
        finally:
            self.writer_lock.release()

    def _written(
        self, task_id: int, change: Callable[[psycopg.Connection[Any]], Task | None]
    ) -> Task:
        if task_id > MAX_TASK_ID:
            raise TaskNotFound(task_id)
        with self._writing():
            task = self._run(change)
        if task is None:
            raise TaskNotFound(task_id)
        return task

    @contextmanager
    def _connection(self, wait: float) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection within ``wait`` seconds, else :class:`StorageUnavailable`.
        Past ``PROBE_AFTER_SECONDS`` a direct connection asks whether the database is there:
        when it is not, its reason is raised at once."""
        try:
            conn = self._pool.getconn(timeout=min(wait, PROBE_AFTER_SECONDS))
        except PoolTimeout:
            if reason := self._unreachable():
                raise StorageUnavailable(self.where, reason) from None
            try:
                conn = self._pool.getconn(timeout=max(0.0, wait - PROBE_AFTER_SECONDS))
            except PoolTimeout:
                problem = f"no database connection within {wait:g} s"
                raise StorageUnavailable(self.where, problem) from None
        try:
            with conn:  # a pooled connection is not closed here: rolled back or committed
                yield conn
        finally:
            self._pool.putconn(conn)

    def _unreachable(self) -> str | None:
        """Why a new connection to the database fails, or None when one succeeds."""
        try:
            with psycopg.connect(
                self.url, connect_timeout=PROBE_CONNECT_TIMEOUT, autocommit=True
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as error:
            return self._reason(error)
        return None

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work`` on a pooled connection; every database failure as StorageUnavailable."""
        self._wait_since = time.monotonic()
        try:
            with self._connection(POOL_WAIT_SECONDS) as conn:
                self._wait_since = 0.0
                return work(conn)
        except (pg_errors.QueryCanceled, pg_errors.LockNotAvailable) as error:
            raise StorageUnavailable(self.where, self._reason(error), "storage_timeout") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise StorageUnavailable(self.where, self._reason(error)) from None
        except psycopg.Error as error:
            raise StorageUnavailable(self.where, self._reason(error), "storage_error") from None
        finally:
            self._wait_since = 0.0

    def _reason(self, error: BaseException) -> str:
        """The error's first line, never with the password in it."""
        lines = str(error).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        if self._password:
            reason = reason.replace(self._password, "***")
        return reason


def _one(row: tuple[Any, ...] | None) -> Any:
    assert row is not None
    return row[0]

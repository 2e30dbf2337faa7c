"""The PostgreSQL backend: the tasks in a database that every server given the same URL
shares, through psycopg 3's synchronous API and a small connection pool.

The app calls a store from worker threads (``anyio.to_thread``), so a blocking driver fits:
each call takes a pooled connection for one short transaction and gives it back. Reads are
plain SELECTs (MVCC: they never wait for a write); a create is one transaction holding its
Idempotency-Key, the key's request digest and the row together. Ids come from a sequence, so
an id is never handed out twice, even after its task is deleted; a create that rolls back
leaves a gap. The waits this module bounds: the pool's wait for a connection,
``connect_timeout``, ``statement_timeout`` and ``lock_timeout`` (past one, the call raises
:class:`StorageUnavailable` and the app answers 503), TCP keepalives and ``tcp_user_timeout``
for a network gone. Not every wait: a frozen database (SIGSTOP, ``docker pause``) holds a
query, or the pool's check of a connection, as long as it is frozen; the app bounds those
calls itself (``bounds``: ``CALL_SECONDS``, in threads of their own). A database that comes
back is used again without a restart: the pool checks a connection before lending it and
opens new ones.

The schema is made by versioned migrations (``MIGRATIONS``) on a server's first start, under
a transaction-scoped advisory lock, so two servers starting at once on an empty database
make it once. The design: docs/design/taskserver.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from services.common import utc_now_iso
from services.taskserver.storage.base import CallBounds
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
from services.taskserver.storage.postgres_url import masked, redacted, secrets

T = TypeVar("T")
POOL_LOG = logging.getLogger("psycopg.pool")
LOG_REPEAT_SECONDS = 10.0  # a repeated pool warning is logged at most once in this long

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
IDLE_IN_TRANSACTION_MS = 10_000  # a session idle inside a transaction this long is ended
RECONNECT_TIMEOUT_SECONDS = 10.0
KEEPALIVES_IDLE_SECONDS = 5
KEEPALIVES_INTERVAL_SECONDS = 2
KEEPALIVES_COUNT = 3
TCP_USER_TIMEOUT_MS = 10_000  # unacknowledged data this long: the connection is dead
# The app's bounds (app.py): statement_timeout and lock_timeout are the server's, and a
# frozen database (SIGSTOP, docker pause) acknowledges a query at the TCP level and never
# answers it, nor a pooled connection's check. A call unanswered past CALL_SECONDS answers
# 503 storage_timeout; its thread ends in the background (SIGCONT, or the keepalives when the
# network is gone), outside the app's thread pool.
CALL_SECONDS = POOL_WAIT_SECONDS + STATEMENT_TIMEOUT_MS / 1000 + 1
CALL_THREADS = POOL_MAX + 2
HEALTH_SECONDS = 0.8  # /health within the balancer's 1 s check timeout
PROBE_FRESH_SECONDS = 1.0  # one probe's answer serves every caller this long
WRITER_WAIT_SECONDS = 10.0  # for this process's writer lock (held by a quiesce)
KEY_ATTEMPTS = 5  # a key whose task is deleted between its insert and its read: again
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
        self.bounds: CallBounds | None = CallBounds(
            CALL_SECONDS, CALL_THREADS, HEALTH_SECONDS, self.where
        )
        # One probe at a time (a new connection, not the pool's); its answer, and when.
        self._probe_lock = threading.Lock()
        self._probed: tuple[float, str | None] = (-PROBE_FRESH_SECONDS, None)
        # Writes queue on it in this process (writers.py); a quiesce holds it, so a paused
        # process holds no row lock or open transaction.
        self.writer_lock = threading.Lock()
        self._secrets = secrets(url)
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
            # An attempt chain to reconnect backs off (1, 2, 4 s...) and gives up after this
            # long; the next call starts a new one. Never longer: a chain left growing for
            # days answered 503 for 45 s after a 71 s outage had ended.
            reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                # Client-side bounds: the server's timeouts cannot end a call to a database
                # that is frozen or cut off; TCP keepalives and tcp_user_timeout do.
                "keepalives": 1,
                "keepalives_idle": KEEPALIVES_IDLE_SECONDS,
                "keepalives_interval": KEEPALIVES_INTERVAL_SECONDS,
                "keepalives_count": KEEPALIVES_COUNT,
                "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
                # A server paused inside a transaction (SIGSTOP, docker pause) must not hold
                # its key and row locks for as long as it is paused.
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
                f"-c lock_timeout={LOCK_TIMEOUT_MS} "
                f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
                "application_name": f"ticslab {server}"[:63],
            },
            name=f"ticslab-{server}",
        )
        # psycopg_pool logs libpq's messages as they are, once per reconnect attempt.
        self._log_filter = PoolLogFilter(self._secrets)
        POOL_LOG.addFilter(self._log_filter)

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
            task, replayed = self._run(insert, write=True)
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
            for _ in range(KEY_ATTEMPTS):
                added = conn.execute(
                    "INSERT INTO task_keys (key, digest, task_id) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO NOTHING RETURNING task_id",
                    (key, digest, task_id),
                ).fetchone()
                if added is not None:
                    break
                # The key is another create's, committed: replay or refuse. In READ
                # COMMITTED its task may be deleted since (its key goes by cascade; nolock's
                # upsert deletes keys too): then the key is free, and it is inserted again.
                if (earlier := self._earlier(conn, key, digest)) is not None:
                    return earlier, True
            else:
                problem = f"an Idempotency-Key came and went {KEY_ATTEMPTS} times"
                raise StorageUnavailable(self.where, problem, "storage_timeout")
        task = new_task(task_id, title, completed, self.server)
        conn.execute(
            f"INSERT INTO tasks ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)".encode(),
            tuple(task.values()),
        )
        return task, False

    def _earlier(self, conn: psycopg.Connection[Any], key: str, digest: str) -> Task | None:
        """The task the key was committed with; None when it is gone meanwhile."""
        with conn.cursor(row_factory=dict_row) as cursor:
            row = cursor.execute(
                f"SELECT k.digest AS key_digest, {COLUMNS} FROM task_keys k "
                "JOIN tasks t ON t.id = k.task_id WHERE k.key = %s".encode(),
                (key,),
            ).fetchone()
        if row is None:
            return None
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
            self._run(step, write=True)

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
        """From a probe of its own (a new connection, never one of the pool's: a pool busy
        with reads is no database away), at most one at a time and one a second."""
        reason = self._unreachable()
        return f"{self.where}: {reason}" if reason else None

    def lock_wait(self) -> float:
        since = self._wait_since
        return time.monotonic() - since if since else 0.0

    def describe(self) -> dict[str, Any]:
        return {"kind": "postgresql", "url": self.where}

    def close(self) -> None:
        try:
            self._pool.close()
        finally:
            POOL_LOG.removeFilter(self._log_filter)

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
            task = self._run(change, write=True)
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
        """Why a new connection to the database, or a read of the tasks table on it, fails;
        None when both succeed. One probe at a time: callers meanwhile wait for its answer,
        which serves every caller for ``PROBE_FRESH_SECONDS`` (a probe per waiting request
        opened 84 connections in 15 s under load)."""
        with self._probe_lock:
            probed_at, reason = self._probed
            if time.monotonic() - probed_at < PROBE_FRESH_SECONDS:
                return reason
            try:
                with psycopg.connect(
                    self.url,
                    connect_timeout=PROBE_CONNECT_TIMEOUT,
                    autocommit=True,
                    options=f"-c statement_timeout={PROBE_CONNECT_TIMEOUT * 1000}",
                ) as conn:
                    conn.execute("SELECT 1 FROM tasks LIMIT 1")
            except psycopg.Error as error:
                reason = self._reason(error)
            else:
                reason = None
            self._probed = (time.monotonic(), reason)
            return reason

    def _run(self, work: Callable[[psycopg.Connection[Any]], T], write: bool = False) -> T:
        """``work`` on a pooled connection; every database failure as StorageUnavailable.
        A ``write`` (they run one at a time, under ``writer_lock``) marks its wait for a
        connection for ``lock_wait``; reads do not, so none overwrites another's mark."""
        if write:
            self._wait_since = time.monotonic()
        try:
            with self._connection(POOL_WAIT_SECONDS) as conn:
                if write:
                    self._wait_since = 0.0
                return work(conn)
        except (pg_errors.QueryCanceled, pg_errors.LockNotAvailable) as error:
            raise StorageUnavailable(self.where, self._reason(error), "storage_timeout") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            raise StorageUnavailable(self.where, self._reason(error)) from None
        except psycopg.Error as error:
            raise StorageUnavailable(self.where, self._reason(error), "storage_error") from None
        finally:
            if write:
                self._wait_since = 0.0

    def _reason(self, error: BaseException) -> str:
        """The error's first line, never with a password in it (any form of any of the URL's,
        and any ``password=`` value)."""
        lines = str(error).strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        return masked(reason, self._secrets)


class PoolLogFilter(logging.Filter):
    """On psycopg_pool's logger: no password in its lines (it logs libpq's messages as they
    are), and a line repeated (its template: one per reconnect attempt while the database is
    away) at most once per ``LOG_REPEAT_SECONDS``, saying how many were left out."""

    def __init__(self, hidden: set[str]) -> None:
        super().__init__()
        self.hidden = hidden
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}  # template: (shown at, left out since)

    def filter(self, record: logging.LogRecord) -> bool:
        template = str(record.msg)
        now = time.monotonic()
        with self._lock:
            shown_at, left_out = self._last.get(template, (-LOG_REPEAT_SECONDS, 0))
            if now - shown_at < LOG_REPEAT_SECONDS:
                self._last[template] = (shown_at, left_out + 1)
                return False
            self._last[template] = (now, 0)
        text = masked(record.getMessage(), self.hidden)
        if left_out:
            text += f" ({left_out} more like it in {LOG_REPEAT_SECONDS:g} s not shown)"
        record.msg, record.args = text, None
        return True


def _one(row: tuple[Any, ...] | None) -> Any:
    assert row is not None
    return row[0]

"""The PostgreSQL task store on a real PostgreSQL (tests/pgserver.py): one transaction per
create with its key, ids from a sequence, migrations that race safely, fault mode nolock's
naive SQL, every wait bounded, a database that goes away and comes back, and no password
ever shown. The behaviour both backends share through the API: test_taskserver_backends.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pgserver import USER, PostgresServer, postgres_problem
from storage_backends import taskserver_on
from support import TICSLAB, ServiceProcess, wait_until
from test_client_stack import finish, start_client
from test_launcher import UpStack, children

from services.experiment.lab import throwaway_stack
from services.experiment.load import Call, run_load
from services.taskserver.app import BoundedCalls, TaskServerSettings, create_app
from services.taskserver.storage import KeyReused, StorageUnavailable, TaskNotFound
from services.taskserver.storage.base import CallBounds
from services.taskserver.storage.postgres import (
    CALL_SECONDS,
    POOL_MAX,
    SCHEMA_VERSION,
    PostgresStore,
)
from services.taskserver.storage.postgres_url import redacted


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    one = PostgresStore(postgres_url, "server1")
    one.prepare()
    yield one
    one.close()


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query.encode()).fetchall()


def run_sql(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode())


@pytest.mark.smoke
def test_create_read_page_update_delete(store: PostgresStore) -> None:
    created = [store.create(f"t{n}")[0] for n in range(5)]
    assert [task["id"] for task in created] == [1, 2, 3, 4, 5]
    assert created[0] == {**created[0], "title": "t0", "completed": False, "server": "server1"}
    assert store.get(3) == created[2]
    assert store.page(1, 2) == (created[1:3], 5)
    assert store.page(1, 2, newest_first=True) == ([created[3], created[2]], 5)
    assert store.page(10) == ([], 5)
    assert store.page() == (created, 5)
    changed = store.update(2, {"completed": True})
    assert changed["completed"] is True and changed["title"] == "t1"
    assert store.get(2) == changed
    assert store.delete(2) == changed
    with pytest.raises(TaskNotFound):
        store.get(2)
    with pytest.raises(TaskNotFound):
        store.update(2, {"title": "x"})
    with pytest.raises(TaskNotFound):
        store.delete(2**60)
    assert store.count() == 4


@pytest.mark.smoke
def test_a_key_replays_its_task_and_is_refused_for_another(store: PostgresStore) -> None:
    task, replayed = store.create("una vez", False, "k-1")
    assert replayed is False
    assert store.create("una vez", False, "k-1") == (task, True)
    with pytest.raises(KeyReused):
        store.create("otra", False, "k-1")
    with pytest.raises(KeyReused):
        store.create("una vez", True, "k-1")  # the digest covers completed too
    assert store.page()[1] == 1
    # The key goes with its task, as in the file: deleted, the key may make a new one.
    store.delete(task["id"])
    again, replayed = store.create("otra", False, "k-1")
    assert replayed is False and again["id"] > task["id"]


def test_ids_are_never_reused_after_deleting_the_newest(store: PostgresStore) -> None:
    newest = store.create("borrada")[0]["id"]
    store.delete(newest)
    assert store.create("nueva")[0]["id"] == newest + 1
    other = PostgresStore(store.url, "server2")  # another server: the same sequence
    other.prepare()
    try:
        assert other.create("de otro")[0]["id"] == newest + 2
    finally:
        other.close()


def test_the_same_key_sent_at_once_through_two_stores_makes_one_row(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, f"server{n}") for n in (1, 2)]
    for one in stores:
        one.prepare()
    try:
        start = threading.Barrier(8)

        def send(n: int) -> tuple[dict[str, Any], bool]:
            start.wait()
            return stores[n % 2].create("carrera", False, "same-key")

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(8)))
    finally:
        for one in stores:
            one.close()
    assert len({task["id"] for task, _ in answers}) == 1
    assert [replayed for _, replayed in answers].count(False) == 1
    assert rows(postgres_url, "SELECT count(*) FROM tasks") == [(1,)]
    assert rows(postgres_url, "SELECT count(*) FROM task_keys") == [(1,)]


def test_servers_starting_at_once_on_an_empty_database_migrate_it_once(
    postgres_url: str,
) -> None:
    stores = [PostgresStore(postgres_url, f"server{n}") for n in range(6)]
    start = threading.Barrier(len(stores))

    def prepare(one: PostgresStore) -> None:
        start.wait()
        one.prepare()

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(prepare, stores))  # raises what any of them raised
        assert stores[0].create("after")[0]["id"] == 1
    finally:
        for one in stores:
            one.close()
    assert rows(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_nolock_twin_loses_a_task_and_later_creates_never_reuse_its_id(
    store: PostgresStore,
) -> None:
    store.create("antes")
    # Two naive creates that read the same highest id: the second upsert overwrites the first.
    first_read, first = store.read_naively("a", False)
    second_read, second = store.read_naively("b", False)
    assert first["id"] == second["id"] == 2
    for read, task in ((first_read, first), (second_read, second)):
        store.raise_last_id(task["id"])
        store.write_naively(read, task)
    assert [task["title"] for task in store.page()[0]] == ["antes", "b"]  # "a" is lost
    assert store.create("normal")[0]["id"] == 3  # never 2 again


def test_raising_the_last_id_never_moves_the_sequence_back(store: PostgresStore) -> None:
    for _ in range(3):
        store.create("x")
    store.raise_last_id(2)  # below: nothing moves
    assert store.create("y")[0]["id"] == 4
    store.raise_last_id(10)
    assert store.create("z")[0]["id"] == 11


def test_a_renamed_table_is_a_storage_error_and_health_says_why(store: PostgresStore) -> None:
    store.create("x")
    run_sql(store.url, "ALTER TABLE tasks RENAME TO gone")
    try:
        with pytest.raises(StorageUnavailable) as caught:
            store.page()
        assert caught.value.code == "storage_error"
        assert "tasks" in (store.problem() or "")
    finally:
        run_sql(store.url, "ALTER TABLE gone RENAME TO tasks")
    wait_until(lambda: store.problem() is None, 3)  # a probe's answer serves for 1 s
    assert store.page()[1] == 1


def test_a_password_is_never_shown() -> None:
    assert redacted("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted("postgres://h/db?password=s3cret&x=1") == "postgres://h/db?password=***&x=1"
    assert redacted("postgresql://h/db") == "postgresql://h/db"
    # libpq ends the user part at the first '@' before any '/': '#' and '?' are the password's
    assert redacted("postgresql://u:pa#ss@h/db") == "postgresql://u:***@h/db"
    assert redacted("postgresql://u:pa?ss@h/db?x=1") == "postgresql://u:***@h/db?x=1"
    assert redacted("postgresql://u:pa/ss@h/db") == "postgresql://***@h/db"
    assert redacted("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert (
        redacted("postgresql:///db?host=h&PASSWORD=s3cret&user=u")
        == "postgresql:///db?host=h&PASSWORD=***&user=u"
    )


@pytest.mark.parametrize("command", ["taskserver", "up"])
@pytest.mark.parametrize("password", ["pa#s3cret", "pa?s3cret", "pa/s3cret"])
def test_a_url_that_url_readers_split_differently_is_refused(command: str, password: str) -> None:
    """urllib cuts ``u:pa#ss@host`` at the '#' where libpq does not, so what urllib would
    redact is not the password libpq uses: such a URL is refused before anything starts."""
    url = f"postgresql://u:{password}@127.0.0.1:1/db"
    done = run_cli(command, "--storage", url)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "%23" in lines[0], done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_no_password_in_driver_errors_or_the_pool_log(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """libpq repeats a password it cannot read in its error; neither the 503's reason nor
    psycopg_pool's log lines (one per reconnect attempt, at most one per 10 s) show it."""
    url = f"postgresql://{USER}@127.0.0.1:{postgres.port}/postgres?password=se%zzcret"
    one = PostgresStore(url, "server1")
    one._pool.open(wait=False)
    try:
        with caplog.at_level("INFO", logger="psycopg.pool"):
            reason = one.problem()
            wait_until(lambda: "invalid percent" in caplog.text, 5)
            first = caplog.text.count("invalid percent")
            wait_until(lambda: one.problem(), 2)  # more attempts meanwhile
    finally:
        one.close()
    assert reason and "invalid percent-encoded token" in reason
    assert "zzcret" not in reason
    assert "zzcret" not in caplog.text
    assert caplog.text.count("invalid percent") == first == 1


def run_cli(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    program = [sys.executable, "-c", code] if code else TICSLAB
    return subprocess.run(
        [*program, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("command", ["taskserver", "up"])
def test_an_unknown_storage_is_refused_in_one_line_before_anything_starts(
    command: str,
) -> None:
    done = run_cli(command, "--storage", "mysql://root:s3cret@db/tasks", "--lang", "es")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    assert "mysql://" in lines[0] and "postgresql://" in lines[0]
    if command == "up":
        assert "no es un almacenamiento" in lines[0]


def test_without_psycopg_a_postgresql_url_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.argv[0] = 'ticslab'; "
        "from services.cli import main; sys.exit(main())"
    )
    done = run_cli(
        "taskserver", "--storage", "postgresql://u:s3cret@127.0.0.1:1/db", "--port", "0", code=code
    )
    assert done.returncode == 2, done.stderr
    assert "pip install -e '.[postgres]'" in done.stderr
    assert "s3cret" not in done.stderr


def test_health_shows_the_database_without_its_password(postgres: PostgresServer) -> None:
    url = postgres.create_database("withpassword")
    # Trust authentication ignores the password, so a URL with one connects. Given in the
    # environment, as ticslab up does: a command line is public (ps).
    with_password = url.replace(f"//{USER}@", f"//{USER}:s3cret@")
    server = taskserver_on("server1", "", env={"TICSLAB_STORAGE": with_password}).start()
    try:
        health = httpx.get(server.url + "/health").json()
        assert health["storage"] == {
            "kind": "postgresql",
            "url": with_password.replace("s3cret", "***"),
            "ok": True,
        }
        assert "tasks_file" not in health
        assert httpx.post(server.url + "/tareas", json={"title": "x"}).status_code == 201
        assert httpx.put(server.url + "/admin/fault", json={"mode": "nolock"}).status_code in (
            403,
            401,
        )
    finally:
        server.close()
    assert "s3cret" not in server.log()


# -- a database of the test's own, stopped and started ---------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    if problem := postgres_problem():
        pytest.skip(problem)
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.mark.slow
def test_a_stopped_database_answers_503_in_bounded_time_and_recovers_without_restart(
    own_postgres: PostgresServer,
) -> None:
    url = own_postgres.create_database("tasks")
    server = taskserver_on("server1", url).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            kept = http.post("/tareas", json={"title": "antes"}).json()
            own_postgres.stop("fast")
            health = wait_until(
                lambda: (r := http.get("/health")).status_code == 503 and r,
                timeout=15,
                what="/health 503",
            )
            assert health.json()["status"] == "error"
            assert health.json()["storage"]["ok"] is False
            for method, path, body in (
                ("POST", "/tareas", {"title": "durante"}),
                ("GET", "/tareas", None),
                ("GET", f"/tareas/{kept['id']}", None),
                ("DELETE", f"/tareas/{kept['id']}", None),
            ):
                answer = http.request(method, path, json=body)
                assert answer.status_code == 503, (method, path, answer.text)
                assert answer.json()["code"] == "storage_unavailable"
                assert answer.elapsed.total_seconds() < 2  # a probe finds it away at once
            own_postgres.start()
            wait_until(lambda: http.get("/health").status_code == 200, 20, what="recovery")
            assert http.post("/tareas", json={"title": "después"}).status_code == 201
            assert [t["title"] for t in http.get("/tareas").json()] == ["antes", "después"]
    finally:
        server.close()


@pytest.mark.slow
def test_a_database_stopped_and_started_under_load_loses_no_answered_task(
    own_postgres: PostgresServer,
) -> None:
    """A whole stack (balancer, two servers) on a database that stops for two seconds while
    POSTs flow: clients get 503s meanwhile, never a hang or another error; once it is back,
    creates succeed again, and every task answered 201, before or after, is stored."""
    with throwaway_stack(database=own_postgres.url()) as lab:
        stop = (1.0, lambda: own_postgres.stop("fast"))
        start = (3.0, own_postgres.start)
        calls = (Call("POST", "/tareas", {"title": f"carga {n}"}) for n in range(100_000))
        outcomes = run_load(lab.balancer_url, calls, 4, [None], 7.0, [stop, start])
        statuses = {outcome.status for outcome in outcomes}
        assert statuses <= {201, 503}, statuses
        refused = [o for o in outcomes if o.status == 503]
        assert refused and all(o.seconds < 5 for o in outcomes)  # said, never waited out
        last = max(o.started for o in refused)
        assert any(o.status == 201 and o.started > last for o in outcomes)  # back by itself
        created = [o.task for o in outcomes if o.task is not None]
        assert len(created) > 50 and lab.lost(created) == 0


# -- real task servers sharing one database -------------------------------------------------


@pytest.fixture
def pair(postgres_url: str) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    servers = (taskserver_on("server1", postgres_url), taskserver_on("server2", postgres_url))
    try:
        with ThreadPoolExecutor(2) as pool:  # at once, on an empty database: both migrate
            list(pool.map(ServiceProcess.start, servers))
        yield servers
    finally:
        for server in servers:
            server.close()


def post(url: str, title: str, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return httpx.post(url + "/tareas", json={"title": title}, headers=headers, timeout=30)


@pytest.mark.slow
def test_concurrent_creates_through_two_servers_lose_nothing(
    pair: tuple[ServiceProcess, ServiceProcess], postgres_url: str
) -> None:
    urls = [server.url for server in pair]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: post(urls[n % 2], f"t{n}"), range(400)))
    assert all(answer.status_code == 201 for answer in answers)
    ids = [answer.json()["id"] for answer in answers]
    assert len(set(ids)) == 400
    stored = rows(postgres_url, "SELECT id, title FROM tasks ORDER BY id")
    assert sorted(stored) == sorted((a.json()["id"], a.json()["title"]) for a in answers)


@pytest.mark.slow
def test_sigkill_mid_create_keeps_every_answered_task_once(
    pair: tuple[ServiceProcess, ServiceProcess], postgres_url: str
) -> None:
    one, two = pair
    answered: list[dict[str, Any]] = []
    unanswered: list[str] = []  # title and key of a post with no 201 (its create may be in)
    lock = threading.Lock()

    def poster(n: int) -> None:
        for i in range(60):
            url = (one if (n + i) % 2 else two).url
            try:
                answer = post(url, f"p{n}-{i}", key=f"p{n}-{i}")
            except httpx.HTTPError:  # the killed server's connections
                answer = None
            with lock:
                if answer is not None and answer.status_code == 201:
                    answered.append(answer.json())
                else:
                    unanswered.append(f"p{n}-{i}")

    threads = [threading.Thread(target=poster, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(answered) >= 40, timeout=30, what="creates under way")
    one.kill()
    for thread in threads:
        thread.join(timeout=60)
    assert unanswered, "no create was cut by the kill"
    # As a client does: each post with no answer sent again with its key, to the live server.
    # One whose create was committed before the kill is replayed, not made twice.
    for title in unanswered:
        again = post(two.url, title, key=title)
        assert again.status_code == 201, again.text
        answered.append(again.json())
    stored = rows(postgres_url, "SELECT id, title FROM tasks")
    assert sorted(title for _, title in stored) == sorted(task["title"] for task in answered)
    assert len({title for _, title in stored}) == len(stored)  # nothing twice
    kept = {(task_id, title) for task_id, title in stored}
    assert {(task["id"], task["title"]) for task in answered} == kept
    keys = rows(postgres_url, "SELECT key, task_id FROM task_keys")
    assert sorted(keys) == sorted((task["title"], task["id"]) for task in answered)


@pytest.mark.slow
def test_nolock_on_postgresql_loses_tasks_and_then_no_id_is_reused(
    postgres: PostgresServer, postgres_url: str
) -> None:
    env = {"TICSLAB_TOKEN": "secret"}
    auth = {"Authorization": "Bearer secret"}
    servers = [taskserver_on(f"server{n}", postgres_url, env=env).start() for n in (1, 2)]
    try:
        for server in servers:
            answer = httpx.put(server.url + "/admin/fault", json={"mode": "nolock"}, headers=auth)
            assert answer.status_code == 200
        urls = [server.url for server in servers]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda n: post(urls[n % 2], f"n{n}"), range(300)))
        assert all(answer.status_code == 201 for answer in answers)
        given = [answer.json()["id"] for answer in answers]
        stored = rows(postgres_url, "SELECT count(*) FROM tasks")[0][0]
        assert stored < len(answers), "nolock lost no task: the race did not show"
        assert len(set(given)) < len(given)  # ids handed out twice
        for server in servers:
            answer = httpx.put(server.url + "/admin/fault", json={"mode": "none"}, headers=auth)
            assert answer.status_code == 200
        after = [post(urls[n % 2], f"ok{n}").json()["id"] for n in range(20)]
        assert min(after) > max(given)
        assert len(set(after)) == 20
    finally:
        for server in servers:
            server.close()


@pytest.mark.slow
def test_up_gives_every_server_the_database_and_a_client_loses_nothing(
    tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ticslab up`` with the URL in TICSLAB_STORAGE: every server on the database, the
    banner and every command line without the password, and a client's loss check (through
    the API, pages newest first) finds each of its tasks."""
    url = postgres.create_database("upstack")
    with_password = url.replace(f"//{USER}@", f"//{USER}:s3cret@")
    monkeypatch.setenv("TICSLAB_STORAGE", with_password)
    stack = UpStack(tmp_path, servers=2)
    stack.start()
    try:
        for port in stack.server_ports:
            health = httpx.get(f"http://127.0.0.1:{port}/health").json()
            assert health["storage"]["url"] == with_password.replace("s3cret", "***")
        assert with_password.replace("s3cret", "***") in stack.output()  # the banner
        assert stack.proc is not None
        for pid in [stack.proc.pid, *children(stack.proc.pid)]:
            assert b"s3cret" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        client = start_client(stack.url, "client1", tmp_path / "client1.json", "--tasks", "50")
        code, out = finish(client)
        assert code == 0, out
        assert "lost: 0" in out
        assert rows(url, "SELECT count(*) FROM tasks WHERE title LIKE 'client1-%'") == [(50,)]
    finally:
        stack.close()
    assert "s3cret" not in stack.output()


def test_a_key_whose_task_is_deleted_meanwhile_is_taken_again(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READ COMMITTED: another server may delete the key's task (the key goes by cascade)
    between this create's ON CONFLICT and its read of the earlier task: the key is free
    then, and the create makes its task, no 503 for a healthy database."""
    first, _ = store.create("primera", False, "k-gone")
    earlier = PostgresStore._earlier
    deleted: list[int] = []

    def delete_first(self: PostgresStore, *args: Any) -> Any:
        if not deleted:  # as another server would, committed, between the two statements
            run_sql(self.url, f"DELETE FROM tasks WHERE id = {first['id']}")
            deleted.append(first["id"])
        return earlier(self, *args)

    monkeypatch.setattr(PostgresStore, "_earlier", delete_first)
    again, replayed = store.create("segunda", False, "k-gone")
    assert deleted and replayed is False and again["title"] == "segunda"
    assert rows(store.url, "SELECT key, task_id FROM task_keys") == [("k-gone", again["id"])]


def test_a_read_waiting_for_a_connection_is_no_write_waiting(store: PostgresStore) -> None:
    """lock_wait (what /health reports as a write's wait) is set by writes only: a read
    waiting for a pooled connection says nothing of writes."""
    store.create("x")
    held = [store._pool.getconn() for _ in range(POOL_MAX)]  # every pooled connection
    try:
        with ThreadPoolExecutor(2) as pool:
            reading = pool.submit(store.get, 1)
            waits: list[float] = []

            def sample() -> bool:  # half a second of the read's wait
                waits.append(store.lock_wait())
                return len(waits) >= 10

            wait_until(sample, 3)
            assert not reading.done() and max(waits) == 0.0
            writing = pool.submit(store.update, 1, {"completed": True})
            wait_until(lambda: store.lock_wait() > 0, 3)
            for conn in held:
                store._pool.putconn(conn)
            held = []
            assert reading.result(10)["id"] == 1
            assert writing.result(10)["completed"] is True
        assert store.lock_wait() == 0.0
    finally:
        for conn in held:
            store._pool.putconn(conn)


def test_connections_are_bounded_on_the_client_and_in_a_transaction(
    store: PostgresStore,
) -> None:
    """The server's statement_timeout cannot end a call to a frozen or cut-off database:
    TCP keepalives and tcp_user_timeout do; a session idle in a transaction (its server
    paused mid-create) is ended by PostgreSQL, so it holds no lock for long."""

    def settings(conn: psycopg.Connection[Any]) -> tuple[dict[str, str], Any]:
        shown = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        return conn.info.get_parameters(), shown

    parameters, (idle,) = store._run(settings)
    assert idle == "10s"
    assert {name: parameters.get(name) for name in ("keepalives", "tcp_user_timeout")} == {
        "keepalives": "1",
        "tcp_user_timeout": "10000",
    }
    assert parameters.get("keepalives_idle") == "5"


@pytest.mark.slow
def test_a_database_back_after_an_outage_is_used_again_within_seconds() -> None:
    """A reconnect chain that backs off without end (1, 2, 4, 8, 16 s...) kept a server
    answering 503 long after its database was back; chains end after 10 s, and the next
    call starts a new one."""
    if problem := postgres_problem():
        pytest.skip(problem)
    server = PostgresServer().start()
    one = PostgresStore(server.url(), "server1")
    try:
        one.prepare()
        one.create("antes")
        server.stop()
        down = time.monotonic()

        def refused() -> bool:  # a client keeps asking through the outage
            with pytest.raises(StorageUnavailable):
                one.get(1)
            return time.monotonic() - down > OUTAGE_SECONDS

        wait_until(refused, OUTAGE_SECONDS + 10, interval=0.5)
        server.start()
        back = time.monotonic()

        def served() -> bool:
            try:
                return one.get(1)["title"] == "antes"
            except StorageUnavailable:
                return False

        wait_until(served, 30, interval=0.2)
        took = time.monotonic() - back
        print(f"served again {took:.1f} s after the database was back")
        assert took < 5.0, f"served again only {took:.1f} s after the database was back"
    finally:
        one.close()
        server.close()


OUTAGE_SECONDS = 20


def database_processes(server: PostgresServer) -> list[int]:
    """The postmaster (first line of its data folder's postmaster.pid) and its children."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, timeout=10
    ).stdout.split()
    return [postmaster, *map(int, children)]


@pytest.mark.slow
def test_a_frozen_database_answers_503_in_bounded_time_and_starves_nothing() -> None:
    """A frozen database (SIGSTOP, docker pause) acknowledges queries at the TCP level and
    never answers: the server's timeouts cannot end them. /health answers 503 with a reason
    within its bound, however many are asked at once (each used to hold a thread of the
    app's pool for good), a read answers 503 within CALL_SECONDS, and all recovers at
    SIGCONT."""
    if problem := postgres_problem():
        pytest.skip(problem)
    server = PostgresServer().start()
    process = taskserver_on("server1", server.url())
    try:
        process.start()
        assert httpx.post(process.url + "/tareas", json={"title": "antes"}).status_code == 201
        frozen = database_processes(server)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:

            def timed(path: str) -> tuple[int, float, str]:
                start = time.monotonic()
                answer = httpx.get(process.url + path, timeout=60)
                return answer.status_code, time.monotonic() - start, answer.text

            # A probe's answer serves for 1 s: the one from before the freeze, then none.
            wait_until(lambda: timed("/health")[0] == 503, 5)
            with ThreadPoolExecutor(50) as pool:
                read = pool.submit(timed, "/tareas/1")
                healths = list(pool.map(timed, ["/health"] * 45))
                after = timed("/health")  # the process still answers, in time
                info = timed("/info")
                read_status, read_seconds, read_text = read.result(60)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        assert {status for status, _, _ in healths} == {503}
        assert max(seconds for _, seconds, _ in healths) < 3.0
        assert after[0] == 503 and after[1] < 1.5 and "storage" in after[2]
        assert info[0] == 200 and info[1] < 1.5
        assert read_status == 503 and read_seconds < CALL_SECONDS + 2, read_text

        def served() -> bool:
            answer = httpx.get(process.url + "/tareas/1", timeout=30)
            assert answer.status_code == 200, answer.text  # wait_until shows the last one
            return True

        wait_until(served, 30, what="a read after SIGCONT")
        wait_until(lambda: httpx.get(process.url + "/health").status_code == 200, 10)
    finally:
        process.close()
        server.close()


def test_a_pool_busy_with_reads_is_no_database_away(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/health asks with a probe of its own, one at a time and at most one a second: with
    every pooled connection taken by reads it answers at once that all is well, and twenty
    asking at once open one connection, not twenty."""
    connects: list[str] = []
    connect = psycopg.connect

    def counted(*args: Any, **kwargs: Any) -> Any:
        connects.append("probe")
        return connect(*args, **kwargs)

    held = [store._pool.getconn() for _ in range(POOL_MAX)]  # reads holding every connection
    monkeypatch.setattr(psycopg, "connect", counted)
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(lambda _: store.problem(), range(20)))
        took = time.monotonic() - start
    finally:
        for conn in held:
            store._pool.putconn(conn)
    assert answers == [None] * 20
    assert took < 1.0
    assert len(connects) == 1


@pytest.mark.parametrize("command", ["taskserver", "up"])
def test_the_help_never_suggests_a_password_on_the_command_line(command: str) -> None:
    done = run_cli(command, "--help")
    text = " ".join(done.stdout.split())
    assert "USER:PASSWORD@" not in text
    assert "PGPASSWORD" in text and "TICSLAB_STORAGE" in text


def test_health_answers_at_once_while_reads_take_every_store_thread(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow reads holding every thread the store's calls may use (and more waiting) leave
    /health its own: 200 at once, not 503 after waiting behind them."""
    release = threading.Event()
    read = PostgresStore.get

    def slow_get(self: PostgresStore, task_id: int) -> Any:
        release.wait(10)
        return read(self, task_id)

    monkeypatch.setattr(PostgresStore, "get", slow_get)
    app = create_app(
        TaskServerSettings(name="server1", tasks_file=tmp_path / "t.json", storage=postgres_url)
    )

    async def ask() -> tuple[list[int], int, float]:
        transport = httpx.ASGITransport(app)
        async with (
            app.router.lifespan_context(app),  # closes the store's pool at the end
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            await client.post("/tareas", json={"title": "x"})
            reads = [asyncio.create_task(client.get("/tareas/1")) for _ in range(12)]
            await asyncio.sleep(0.2)  # let them take the threads
            start = time.monotonic()
            health = await client.get("/health")
            took = time.monotonic() - start
            release.set()
            answers = await asyncio.gather(*reads)
            return [answer.status_code for answer in answers], health.status_code, took

    statuses, health, took = asyncio.run(ask())
    assert health == 200 and took < 0.8
    assert statuses == [200] * 12


def test_calls_given_up_before_they_began_are_not_counted_as_left_running() -> None:
    """Calls that time out while waiting for a thread never ran and never will: they are not
    counted among the threads left running on the database (which, once as many as the
    threads, refuse every call), so the server recovers when the one stuck call ends."""
    release = threading.Event()

    async def main() -> tuple[list[Any], int, Any]:
        calls = BoundedCalls(CallBounds(0.2, 2, 0.2, "postgresql://db"))
        stuck = [calls.run(release.wait, 10) for _ in range(8)]  # 2 run, 6 wait, all time out
        given_up = await asyncio.gather(*stuck, return_exceptions=True)
        release.set()
        for _ in range(100):
            if calls.left_running == 0:
                break
            await asyncio.sleep(0.02)
        return given_up, calls.left_running, await calls.run(lambda: "again")

    given_up, left, again = asyncio.run(main())
    assert all(isinstance(answer, StorageUnavailable) for answer in given_up)
    assert left == 0 and again == "again"

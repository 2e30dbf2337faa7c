"""The PostgreSQL task store on a real PostgreSQL (tests/pgserver.py): one transaction per
create with its key, ids from a sequence, migrations that race safely, fault mode nolock's
naive SQL, every wait bounded, a database that goes away and comes back, and no password
ever shown. The behaviour both backends share through the API: test_taskserver_backends.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
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

from services.taskserver.storage import KeyReused, StorageUnavailable, TaskNotFound
from services.taskserver.storage.postgres import SCHEMA_VERSION, PostgresStore
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
    assert store.problem() is None
    assert store.page()[1] == 1


def test_a_password_is_never_shown() -> None:
    assert redacted("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted("postgres://h/db?password=s3cret&x=1") == "postgres://h/db?password=***&x=1"
    assert redacted("postgresql://h/db") == "postgresql://h/db"


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
    lock = threading.Lock()

    def poster(n: int) -> None:
        for i in range(60):
            url = (one if (n + i) % 2 else two).url
            try:
                answer = post(url, f"p{n}-{i}", key=f"p{n}-{i}")
            except httpx.HTTPError:
                continue  # the killed server's connections
            if answer.status_code == 201:
                with lock:
                    answered.append(answer.json())

    threads = [threading.Thread(target=poster, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(answered) >= 40, timeout=30, what="creates under way")
    one.kill()
    for thread in threads:
        thread.join(timeout=60)
    stored = rows(postgres_url, "SELECT id, title FROM tasks")
    assert len({title for _, title in stored}) == len(stored)  # nothing twice
    kept = {(task_id, title) for task_id, title in stored}
    assert {(task["id"], task["title"]) for task in answered} <= kept
    assert rows(postgres_url, "SELECT count(*) FROM task_keys") == [(len(stored),)]


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

"""The tasks in PostgreSQL under Compose: docker-compose.postgres.yml (docs/docker.md,
"PostgreSQL") adds a `db` service and points both task servers at it.

Read by Compose alone (no engine needed, v1 and v2): the override merges with the handout's
files, needs a password of one's own, keeps the database's port unpublished, and takes its image
from TICSLAB_POSTGRES_IMAGE. On a real engine (``-m docker``; skipped, saying why, without one
or without a local PostgreSQL image: `bash .ci/docker-setup.sh` builds ticslab/postgres:15,
which .ci/run names in DOCKER_TESTS_POSTGRES_IMAGE), under v1 and v2: the database becomes
healthy, unpublished, the servers start after it and the clients lose nothing; and, with issue
27's backend (skipped before it), both servers say PostgreSQL on /health without the password,
tasks created through the balancer by both servers have unique ids and read back from both, and
the schema is in the database. Traffic goes only to the published port on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import tomllib
from collections.abc import Iterator

import httpx
import pytest
import yaml
from support import (
    HEALTH,
    docker,
    postgres_image,
    tasks_through,
    taskserver_takes_storage,
    wait_until,
)
from test_compose_e2e import REPO, Stack, compose_for, health, skip_reason, start_stack

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

FILES = ["docker-compose.yml", "docker-compose.override.yml", "docker-compose.postgres.yml"]
SETTLE_SECONDS = 120  # the database's first start (initdb), then the servers' checks
PORTS = {"server1": 5001, "server2": 5002}


def config(version: str, **env: str) -> dict:
    """The merged files as Compose ``version`` reads them (skipped without that version)."""
    tool = compose_for(version)
    if isinstance(tool, str):
        pytest.skip(tool)
    done = start_stack(tool, "pgconfig", FILES, **env).compose("config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_override_points_both_servers_at_the_database(version: str) -> None:
    password = secrets.token_hex(16)
    services = config(version, TICSLAB_POSTGRES_PASSWORD=password)["services"]
    db = services["db"]
    assert db["image"] == "postgres:16"  # the official image, for students
    assert db["environment"] == {
        "POSTGRES_USER": "ticslab",
        "POSTGRES_DB": "ticslab",
        "POSTGRES_PASSWORD": password,
    }
    assert "ports" not in db, "only containers on the Compose network reach the database"
    assert "pg_isready" in db["healthcheck"]["test"]
    # v1 writes a volume short (pgdata:/var/lib/postgresql/data:rw), v2 long.
    targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in db["volumes"]]
    assert targets == ["/var/lib/postgresql/data"]
    url = f"postgresql://ticslab:{password}@db:5432/ticslab"
    for server in ("server1", "server2"):
        assert services[server]["environment"]["TICSLAB_STORAGE"] == url, server
        assert services[server]["depends_on"]["db"]["condition"] == "service_healthy", server
    assert "TICSLAB_STORAGE" not in services["balancer"]["environment"]
    other = config(version, TICSLAB_POSTGRES_PASSWORD="x", TICSLAB_POSTGRES_IMAGE="pg:test")
    assert other["services"]["db"]["image"] == "pg:test"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_override_refuses_to_start_without_a_password(version: str) -> None:
    """No default secret: Compose stops and says which variable to set."""
    tool = compose_for(version)
    if isinstance(tool, str):
        pytest.skip(tool)
    done = start_stack(tool, "pgnopw", FILES).compose("config", "--quiet")
    assert done.returncode != 0
    assert "TICSLAB_POSTGRES_PASSWORD" in done.stderr, done.stderr


# --- On a real engine -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["v1", "v2"])
def stored(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The handout's stack with the override, on the local PostgreSQL image, until the
    balancer sees both servers UP (one stack at a time: the handout's fixed names)."""
    if reason := skip_reason():
        pytest.skip(reason)
    image, problem = postgres_image()
    if problem:
        pytest.skip(problem)
    tool = compose_for(request.param)
    if isinstance(tool, str):
        pytest.skip(tool)
    stack = start_stack(
        tool,
        "pg",
        FILES,
        TICSLAB_POSTGRES_IMAGE=image,
        TICSLAB_POSTGRES_PASSWORD=secrets.token_hex(16),
        TICSLAB_ALGORITHM="round_robin",
        TICSLAB_CLIENT_TASKS="20",
    )
    try:
        stack.up()
        wait_until(lambda: servers_up(stack) == 2, SETTLE_SECONDS, 0.5, "both servers UP")
        yield stack
    finally:
        stack.down()


def servers_up(stack: Stack) -> int:
    try:
        return httpx.get(stack.url + "/health", timeout=5).json()["servers_up"]
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def container(stack: Stack, service: str) -> str:
    return stack.compose("ps", "-q", service).stdout.strip()


def psql(stack: Stack, query: str) -> str:
    done = stack.compose(
        "exec", "-T", "db", "psql", "-U", "ticslab", "-d", "ticslab", "-Atc", query
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_database_becomes_healthy_and_the_servers_start_after_it(stored: Stack) -> None:
    db = container(stored, "db")
    assert health(db) == "healthy"
    assert docker("port", db) == "", "the database's port is not published"
    for server in ("server1", "server2"):
        wait_until(lambda s=server: health(s) == "healthy", 90, 0.5, f"{server} healthy")
        env = docker("inspect", "-f", "{{json .Config.Env}}", server)
        password = stored.env["TICSLAB_POSTGRES_PASSWORD"]
        assert f"TICSLAB_STORAGE=postgresql://ticslab:{password}@db:5432/ticslab" in env
    started = {s: docker("inspect", "-f", "{{.State.StartedAt}}", s) for s in ("server1", db)}
    assert started[db] < started["server1"], started
    assert psql(stored, "select current_user") == "ticslab"
    # The clients' report: every task created through the balancer was found again.
    for client in ("client1", "client2"):
        wait_until(
            lambda c=client: "perdidas: 0" in stored.compose("logs", "--no-color", c).stdout,
            120,
            0.5,
            f"{client}'s report",
        )


def test_the_services_image_carries_psycopg_once_the_extra_exists(stored: Stack) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    if "postgres" not in project.get("optional-dependencies", {}):
        pytest.skip("pyproject.toml has no extra `postgres` yet (issue 27's PostgreSQL branch)")
    code = "import psycopg, psycopg_pool; print(psycopg.pq.__impl__)"
    done = stored.compose("exec", "-T", "server1", "python", "-c", code)
    assert done.returncode == 0, done.stderr


def test_both_servers_store_in_postgresql_with_unique_ids(stored: Stack) -> None:
    if not taskserver_takes_storage():
        pytest.skip("this code's task server has no --storage (issue 27's PostgreSQL branch)")
    password = stored.env["TICSLAB_POSTGRES_PASSWORD"]
    for server, port in PORTS.items():
        said = json.loads(docker("exec", server, "python", "-c", HEALTH % port))
        assert said["storage"]["kind"] == "postgresql", said
        assert password not in json.dumps(said), "the password is redacted"
    made = tasks_through(stored.url, 20, "pg")  # round robin: both servers create
    assert {task["upstream"] for task in made} == set(PORTS)
    ids = [task["id"] for task in made]
    assert len(set(ids)) == len(ids), f"duplicate ids: {ids}"
    readers = set()
    with httpx.Client(base_url=stored.url, timeout=15) as client:
        for task in made:
            read = client.get(f"/tareas/{task['id']}")
            assert read.status_code == 200, read.text
            assert read.json()["title"] == task["title"]
            readers.add(read.headers["x-upstream-server"])
    assert readers == set(PORTS), "each server reads what the other created"
    tables = "select count(*) from information_schema.tables where table_schema = 'public'"
    assert int(psql(stored, tables)) >= 1, "the schema is in the database"

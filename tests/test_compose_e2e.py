"""The handout's Docker Compose path, end to end, on a real Docker engine.

What the class does, checked from the outside, under Compose v1 (`docker-compose`, the
handout's command) and v2 (`docker compose`, Docker Desktop's; `up --build --wait`): tasks through
:8080 reach both servers and land in the shared tasks.json, the client emulators report nothing
lost and keep steady traffic until `docker-compose stop` (or finish, with one variable),
`docker-compose stop server1` and the system keeps answering, the control
endpoint stops and starts a container (and refuses without the token), pausing a server under
write load never stalls the other's writes, the scalable variant shows every replica, and the
dashboard runs from an image of its own while the services' image carries no Textual, no
container keeps `<defunct>` processes, and the check docs/docker.md gives for the fixed
container names finds a container of another project before `up` meets it.
Traffic goes only to the published port on 127.0.0.1.

`bash .ci/docker-setup.sh` prepares the engine, the base image and Compose v2 (in a
DOCKER_CONFIG folder of its own, which .ci/run passes as COMPOSE_V2_DOCKER_CONFIG); without
them this module, or one Compose version, is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from support import docker, docker_engine_problem, free_port, wait_until

from services.client.i18n import TEXT as CLIENT_TEXT

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "python:3.12-slim"
HANDOUT_CONTAINERS = ("server1", "server2", "balancer", "client1", "client2")
COMMAND_SECONDS = 600  # a cold `up --build` installs the dependencies


@dataclass(frozen=True)
class Compose:
    """One Compose version: its command and what its environment needs."""

    version: str
    command: tuple[str, ...]
    env: dict[str, str]

    def up_flags(self) -> tuple[str, ...]:
        """v2 waits until every service is healthy (the clients' checks too); v1 cannot."""
        return ("--wait",) if self.version == "v2" else ("-d",)


def compose_for(version: str) -> Compose | str:
    """The Compose of ``version``, or why it is not here."""
    if version == "v1":
        if shutil.which("docker-compose") is None:
            return "no docker-compose (Compose v1) on PATH"
        return Compose("v1", ("docker-compose",), {})
    env = {}
    if folder := os.environ.get("COMPOSE_V2_DOCKER_CONFIG"):
        # A DOCKER_CONFIG whose cli-plugins hold v2 (not a TICSLAB_ name: conftest clears those).
        env["DOCKER_CONFIG"] = folder
    done = run(["docker", "compose", "version", "--short"], env={**os.environ, **env})
    if done.returncode != 0 or not done.stdout.startswith(("2", "v2")):
        return f"no Compose v2 (`docker compose`): {(done.stderr or done.stdout).strip()[:200]}"
    return Compose("v2", ("docker", "compose"), env)


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def skip_reason() -> str | None:
    """Why this machine cannot run the stack, or None when it can."""
    if problem := docker_engine_problem():
        return problem
    try:
        docker("image", "inspect", BASE_IMAGE)
    except RuntimeError:
        return f"no local {BASE_IMAGE} and no registry here (bash .ci/docker-setup.sh builds one)"
    if clash := taken_names():
        return f"containers {clash} already exist (the handout's fixed names allow one stack)"
    return None


def taken_names() -> list[str]:
    taken = docker("ps", "-a", "--format", "{{.Names}}").split()
    return [name for name in HANDOUT_CONTAINERS if name in taken]


@dataclass
class Stack:
    """A Compose project started by a test, reached only through its published port."""

    tool: Compose
    project: str
    files: list[str]
    env: dict[str, str]
    url: str
    token: str

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        files = [arg for name in self.files for arg in ("-f", name)]
        command = [*self.tool.command, "-p", self.project, *files, *args]
        return run(command, env=self.env, timeout=timeout)

    def up(self, *args: str) -> None:
        flags = self.tool.up_flags()
        done = self.compose("up", "--build", *flags, *args, timeout=COMMAND_SECONDS)
        if done.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "30").stdout
            raise AssertionError(f"compose up failed:\n{done.stderr}\n{logs}")

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", timeout=180)

    def status(self) -> dict:
        return httpx.get(self.url + "/status", timeout=5).json()

    def states(self) -> dict[str, str]:
        return {server["name"]: server["state"] for server in self.status()["servers"]}


def start_stack(tool: Compose, name: str, files: list[str], **env: str) -> Stack:
    port = free_port()
    token = secrets.token_urlsafe(16)
    environment = {
        **os.environ,
        **tool.env,
        "TICSLAB_PORT": str(port),
        "TICSLAB_TLS_PORT": str(free_port()),  # published too: never a fixed port in tests
        "TICSLAB_TOKEN": token,
        "TICSLAB_CLIENT_TASKS": "50",
        **env,
    }
    project = f"ticslabe2e{name}{tool.version}{os.getpid()}"
    return Stack(tool, project, files, environment, f"http://127.0.0.1:{port}", token)


def absent(*modules: str) -> str:
    """Python code that exits non-zero, naming them, if any of ``modules`` is installed."""
    return (
        f"import sys; from importlib.util import find_spec; "
        f"found = [m for m in {modules!r} if find_spec(m)]; "
        f"sys.exit(f'installed: {{found}}') if found else None"
    )


def health(container: str) -> str:
    return docker("inspect", "-f", "{{.State.Health.Status}}", container)


def exited(container: str) -> int | None:
    state = json.loads(docker("inspect", "-f", "{{json .State}}", container))
    return None if state["Running"] else state["ExitCode"]


class Posts:
    """Three threads POSTing /tareas through the balancer (with an Idempotency-Key, so the
    balancer may resend one that timed out on a frozen server), bounded in count and time."""

    def __init__(self, url: str, threads: int = 3, limit: int = 500, seconds: float = 120) -> None:
        self.url, self.limit, self.deadline = url, limit, time.monotonic() + seconds
        self.created = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=20) as client:
            for _ in range(self.limit):
                if self._stop.is_set() or time.monotonic() > self.deadline:
                    return
                key = {"Idempotency-Key": secrets.token_hex(8)}
                try:
                    answer = client.post(self.url + "/tareas", json={"title": "l"}, headers=key)
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                    continue
                if answer.status_code == 201:
                    self.created += 1
                else:
                    self.failures.append(f"{answer.status_code}: {answer.text}")

    def __enter__(self) -> Posts:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    if reason := skip_reason():
        pytest.skip(reason)


@pytest.fixture(scope="module", params=["v1", "v2"])
def compose(request: pytest.FixtureRequest) -> Compose:
    """Every test once with Compose v1 and once with v2 (one stack at a time: fixed names)."""
    tool = compose_for(request.param)
    if isinstance(tool, str):
        pytest.skip(tool)
    return tool


@pytest.fixture(scope="class")
def handout(compose: Compose) -> Iterator[Stack]:
    """docker-compose.yml with its override (the socket), as `docker-compose up` reads them."""
    stack = start_stack(
        compose,
        "h",
        ["docker-compose.yml", "docker-compose.override.yml"],
        TICSLAB_ALGORITHM="round_robin",
    )
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


class TestHandoutStack:
    def test_every_server_and_the_balancer_become_healthy(self, handout: Stack) -> None:
        for container in ("server1", "server2", "balancer"):
            wait_until(lambda c=container: health(c) == "healthy", 90, 0.5, f"{container} healthy")
        body = httpx.get(handout.url + "/health", timeout=5).json()
        assert body == {"status": "ok", "servers_up": 2, "servers_total": 2}

    def test_clients_report_nothing_lost_then_keep_traffic_until_stopped(
        self, handout: Stack
    ) -> None:
        """The report first, then gentle traffic for the class's `docker-compose stop server1`,
        until `docker-compose stop` ends it promptly with the report's exit code."""
        # .env says TICSLAB_LANG=es, and every service speaks it.
        steady = CLIENT_TEXT["es"]["steady_start"].split(":")[1].strip()
        for client in ("client1", "client2"):
            wait_until(
                lambda c=client: steady in self.log(handout, c),
                180,
                0.5,
                f"{client}'s report and steady traffic",
            )
            log = self.log(handout, client)
            assert log.index("perdidas: 0") < log.index(steady), log
            assert exited(client) is None, f"{client} keeps running:\n{log[-2000:]}"
        before = handout.status()["requests_total"]
        wait_until(
            lambda: handout.status()["requests_total"] >= before + 10, 30, 0.5, "steady traffic"
        )
        started = time.monotonic()
        assert handout.compose("stop", "client1", "client2").returncode == 0
        assert time.monotonic() - started < 9, "ended by SIGTERM, before Docker's SIGKILL"
        for client in ("client1", "client2"):
            log = self.log(handout, client)
            assert exited(client) == 0, log[-2000:]
            assert f"resultado de la ejecución ({client}): OK" in log
        # docs/docker.md: v2's `ps` leaves exited containers out, `ps -a` lists them.
        assert "client1" in handout.compose("ps", "-a").stdout
        shown = handout.compose("ps").stdout
        assert ("client1" in shown) is (handout.tool.version == "v1"), shown

    def test_the_one_shot_clients_are_one_variable_away(self, handout: Stack) -> None:
        one_shot = replace(
            handout,
            env={**handout.env, "TICSLAB_CLIENT_THEN": "exit", "TICSLAB_CLIENT_TASKS": "10"},
        )
        done = one_shot.compose("run", "--rm", "--no-deps", "-T", "client1", timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        assert "perdidas: 0" in done.stdout
        assert CLIENT_TEXT["es"]["steady_title"] not in done.stdout

    @staticmethod
    def log(stack: Stack, container: str) -> str:
        return stack.compose("logs", "--no-color", container).stdout

    def test_tasks_reach_both_servers_and_persist_in_the_shared_file(self, handout: Stack) -> None:
        titles = [f"e2e-{i}" for i in range(10)]
        answers = [
            httpx.post(handout.url + "/tareas", json={"title": title}, timeout=10)
            for title in titles
        ]
        assert [answer.status_code for answer in answers] == [201] * len(titles)
        assert {answer.headers["x-upstream-server"] for answer in answers} == {"server1", "server2"}
        assert {answer.json()["server"] for answer in answers} == {"server1", "server2"}
        ids = {answer.json()["id"] for answer in answers}
        # The handout's step: `docker exec -it server1 /bin/bash`, then `cat /app/tasks.json`.
        for server in ("server1", "server2"):
            stored = json.loads(docker("exec", server, "cat", "/app/tasks.json"))
            assert ids <= {task["id"] for task in stored}, f"{server} sees every task"
        assert "ticslab taskserver" in docker("exec", "server1", "ps", "aux")

    def test_stopping_server1_keeps_the_system_working(self, handout: Stack) -> None:
        assert handout.compose("stop", "server1").returncode == 0
        try:
            for i in range(20):
                answer = httpx.post(handout.url + "/tareas", json={"title": f"s{i}"}, timeout=10)
                assert answer.status_code == 201, answer.text
                assert answer.headers["x-upstream-server"] == "server2"
            wait_until(lambda: handout.states()["server1"] == "DOWN", 30, 0.5, "server1 DOWN")
            assert httpx.get(handout.url + "/health", timeout=5).json()["servers_up"] == 1
        finally:
            handout.compose("start", "server1")
        wait_until(lambda: handout.states()["server1"] == "UP", 60, 0.5, "server1 UP again")
        # "Observa los logs": the balancer's own lines tell it, in .env's language (es).
        told = self.log(handout, "balancer")
        assert "balanceador iniciado" in told, told[-3000:]
        assert re.search(r" WARNING: +server1 UP → DOWN: ", told), told[-3000:]
        assert re.search(r" INFO: +server1 DOWN → UP: ", told), told[-3000:]

    def test_control_endpoint_stops_and_starts_server2_through_docker(self, handout: Stack) -> None:
        control = httpx.get(handout.url + "/control", timeout=5).json()
        assert control["driver"] == "docker"
        stop = handout.url + "/control/servers/server2/stop"
        refused = httpx.post(stop, timeout=30)
        assert refused.status_code == 401
        assert httpx.post(stop, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert exited("server2") is None, "a refused request must not stop the container"

        auth = {"Authorization": f"Bearer {handout.token}"}
        done = httpx.post(stop, headers=auth, timeout=30)
        assert done.status_code == 200, done.text
        assert exited("server2") is not None
        wait_until(lambda: handout.states()["server2"] == "DOWN", 30, 0.5, "server2 DOWN")
        answer = httpx.get(handout.url + "/tareas", timeout=10)
        assert answer.status_code == 200
        assert answer.headers["x-upstream-server"] == "server1"

        start = httpx.post(handout.url + "/control/servers/server2/start", headers=auth, timeout=30)
        assert start.status_code == 200, start.text
        assert exited("server2") is None
        wait_until(lambda: handout.states()["server2"] == "UP", 60, 0.5, "server2 UP again")

    def test_pausing_server2_never_stalls_the_writes_through_the_balancer(
        self, handout: Stack
    ) -> None:
        """`docker pause` freezes a container wherever it is; server2 is asked to hold its
        writes first, so it is never frozen holding the shared tasks.json lock, and server1
        keeps writing. Frozen inside a write, it would stall every POST (504 after 5 s)."""
        auth = {"Authorization": f"Bearer {handout.token}"}
        control = handout.url + "/control/servers/server2/"
        with Posts(handout.url) as load:
            for cycle in range(5):
                mark = load.created
                wait_until(lambda: load.created > mark + 5, 60, 0.05, "POSTs flowing")  # noqa: B023
                paused = httpx.post(control + "pause", headers=auth, timeout=30)
                try:
                    assert paused.status_code == 200, paused.text
                    assert paused.json()["process"] == "paused"
                    assert paused.json()["quiesced"] is True, paused.json()["quiesce"]
                    wait_until(lambda: handout.states()["server2"] == "DOWN", 30, 0.1, "DOWN")
                    for i in range(5):
                        answer = httpx.post(
                            handout.url + "/tareas", json={"title": f"p{cycle}-{i}"}, timeout=10
                        )
                        assert answer.status_code == 201, answer.text
                        assert answer.headers["x-upstream-server"] == "server1"
                        assert answer.elapsed.total_seconds() < 2.0, answer.elapsed
                finally:
                    unpaused = httpx.post(control + "unpause", headers=auth, timeout=30)
                assert unpaused.status_code == 200, unpaused.text
                wait_until(lambda: handout.states()["server2"] == "UP", 30, 0.1, "server2 UP")
        assert load.failures == []
        # Docker's own health checks fail while a container is paused; the next tests (and
        # `compose run`, which checks dependencies) need server2 healthy again.
        wait_until(lambda: health("server2") == "healthy", 60, 0.5, "server2 healthy again")

    def test_no_process_is_left_defunct(self, handout: Stack) -> None:
        """The handout's `docker exec -it server1 ps aux`: an orphan that `docker exec` leaves
        (a background job of a student's shell; once also the python of a shell-form health
        check that Docker killed on its timeout) is reaped by Docker's init (`init: true`),
        not kept as <defunct> by ticslab, which never waits for children it did not start."""
        containers = ("server1", "server2", "balancer")
        for container in containers:
            docker("exec", container, "sh", "-c", "sleep 0.1 &")  # orphaned at once

        def sleeping(container: str) -> bool:
            """A `sleep` still running (a zombie has state Z: it has finished)."""
            table = docker("exec", container, "ps", "-eo", "stat=,comm=")
            rows = [line.split() for line in table.splitlines()]
            return any(row[1:] == ["sleep"] and not row[0].startswith("Z") for row in rows)

        wait_until(
            lambda: not any(sleeping(c) for c in containers), 30, 0.2, "the orphans finished"
        )
        for container in containers:
            table = docker("exec", container, "ps", "aux")
            assert "<defunct>" not in table, f"{container}:\n{table}"
            assert docker("exec", container, "ps", "-o", "comm=", "-p", "1") == "docker-init"

    def test_faults_reach_the_task_servers_with_the_shared_token(self, handout: Stack) -> None:
        auth = {"Authorization": f"Bearer {handout.token}"}
        fault = handout.url + "/control/servers/server1/fault"
        done = httpx.put(fault, json={"mode": "latency", "ms": 50}, headers=auth, timeout=10)
        assert done.status_code == 200, done.text
        assert done.json()["fault"]["mode"] == "latency"
        reset = httpx.put(fault, json={"mode": "none"}, headers=auth, timeout=10)
        assert reset.json()["fault"]["mode"] == "none"

    def test_dashboard_service_runs_on_demand(self, handout: Stack) -> None:
        # Its own image, built from this code: `run` builds it only when no such tag exists, and
        # `up --build` leaves it alone (the service is under a profile).
        built = handout.compose("build", "dashboard", timeout=COMMAND_SECONDS)
        assert built.returncode == 0, built.stderr[-2000:]
        # The words after the service are the dashboard's options (its entrypoint's).
        done = handout.compose("run", "--rm", "-T", "dashboard", "--help", timeout=COMMAND_SECONDS)
        assert done.returncode == 0, done.stderr
        assert "--url" in done.stdout and "TICSLAB_LANG" in done.stdout
        done = handout.compose("run", "--rm", "-T", "dashboard", "--lang", "fr")
        assert done.returncode == 2
        assert "argument --lang: 'fr': use es or en" in done.stderr, done.stderr
        # TICSLAB_LANG reaches it from the shell or .env (the image has no Spanish locale).
        spanish = replace(handout, env={**handout.env, "TICSLAB_LANG": "es"})
        code = "from dashboard.options import parse_options; print(parse_options([]).lang)"
        done = spanish.compose(
            "run", "--rm", "-T", "--entrypoint", "python", "dashboard", "-c", code
        )
        assert (done.returncode, done.stdout.strip()) == (0, "es"), done.stderr
        # It runs the app, and carries neither `textual run`'s tools nor `ticslab up`'s nor tests'.
        code = "import dashboard.main; " + absent("textual_dev", "psutil", "pytest")
        python = ("run", "--rm", "-T", "--entrypoint", "python", "dashboard", "-c", code)
        done = handout.compose(*python)
        assert done.returncode == 0, done.stderr

    def test_the_services_image_carries_no_dashboard_and_no_tools(self, handout: Stack) -> None:
        code = absent("textual", "textual_dev", "psutil", "pytest")
        done = handout.compose("exec", "-T", "server1", "python", "-c", code)
        assert done.returncode == 0, done.stderr


@pytest.fixture()
def scaled(compose: Compose) -> Iterator[Stack]:
    stack = start_stack(compose, "s", ["docker-compose.scale.yml"], TICSLAB_CLIENT_TASKS="20")
    try:
        stack.up("--scale", "server=3")
        yield stack
    finally:
        stack.down()


def test_scale_variant_discovers_every_replica(scaled: Stack) -> None:
    expected = {"server", "server-2", "server-3"}
    wait_until(
        lambda: scaled.states() == dict.fromkeys(expected, "UP"), 90, 0.5, "three servers UP"
    )
    names = {
        httpx.post(scaled.url + "/tareas", json={"title": f"n{i}"}, timeout=10).json()["server"]
        for i in range(12)
    }
    assert len(names) >= 2, "tasks are created by more than one replica"


@pytest.fixture()
def without_socket(compose: Compose) -> Iterator[Stack]:
    """docker-compose.yml alone, as `docker-compose -f docker-compose.yml up` reads it."""
    stack = start_stack(compose, "n", ["docker-compose.yml"])
    try:
        stack.up("balancer")  # and the servers it depends on; no clients
        yield stack
    finally:
        stack.down()


def test_without_the_socket_control_falls_back_and_nothing_runs_as_root(
    without_socket: Stack,
) -> None:
    wait_until(lambda: health("balancer") == "healthy", 90, 0.5, "balancer healthy")
    control = httpx.get(without_socket.url + "/control", timeout=5).json()
    assert control["driver"] == "none"
    auth = {"Authorization": f"Bearer {without_socket.token}"}
    stop = httpx.post(without_socket.url + "/control/servers/server2/stop", headers=auth)
    assert stop.status_code == 409
    drain = httpx.post(without_socket.url + "/control/servers/server2/drain", headers=auth)
    assert drain.json()["state"] == "DRAIN"
    for container in ("server1", "server2", "balancer"):
        assert docker("exec", container, "id", "-u") == "1000", f"{container} runs as ticslab"


def name_check() -> str:
    """The check docs/docker.md gives for the handout's fixed names, as a student pastes it."""
    lines = (REPO / "docs" / "docker.md").read_text(encoding="utf-8").splitlines()
    return next(line for line in lines if line.startswith("docker ps -a --filter 'name=^/?("))


def test_a_name_another_project_holds_is_found_before_up(compose: Compose) -> None:
    """A container called server1 from another project: the documented check names it and
    its project before `up`, which would stop at Docker's terse "Conflict" (and leaves it be)."""
    other = docker(
        "run", "-d", "--name", "server1", "--label", "com.docker.compose.project=otro-curso",
        BASE_IMAGE, "sleep", "300",
    )  # fmt: skip
    stack = start_stack(compose, "c", ["docker-compose.yml"])
    try:
        found = run(["bash", "-c", name_check()])
        assert found.returncode == 0, found.stderr
        assert found.stdout.startswith("server1: project otro-curso, Up"), found.stdout
        assert len(found.stdout.splitlines()) == 1, found.stdout
        done = stack.compose("up", "-d", "server1", timeout=COMMAND_SECONDS)
        assert done.returncode != 0
        assert 'The container name "/server1" is already in use' in done.stdout + done.stderr
        assert exited(other) is None, "Compose left the other project's container alone"
    finally:
        docker("rm", "-f", other)
        stack.down()


@pytest.mark.parametrize(
    ("file", "builder"), [("docker-compose.yml", "server1"), ("docker-compose.scale.yml", "server")]
)
def test_compose_v1_takes_the_service_that_builds_the_image_first(file: str, builder: str) -> None:
    """Compose 1.29 ignores `pull_policy: never` and goes through the services in this order:
    one that only names ticslab:latest before its builder would be pulled from a registry
    (and fail) on an engine that never built it, a student's first `up --build`."""
    if isinstance(tool := compose_for("v1"), str):
        pytest.skip(tool)
    done = run([*tool.command, "-f", file, "config", "--services"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == builder, done.stdout

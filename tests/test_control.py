"""The control API with the local driver, against a real ``ticslab up`` stack.

Each driver action is checked on the real process (gone, frozen, back) and in ``/status``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx
import pytest
from filelock import FileLock
from support import ServiceProcess, free_port, wait_until
from test_launcher import UpStack, alive, listening

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="checks processes through Linux /proc"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    up = UpStack(tmp_path_factory.mktemp("control"), servers=2).start()
    try:
        yield up
    finally:
        up.close()


def post(stack: UpStack, path: str, token: str | None = "", **kwargs: object) -> httpx.Response:
    token = stack.token if token == "" else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(stack.url + path, headers=headers, timeout=40, **kwargs)  # type: ignore[arg-type]


def put(stack: UpStack, path: str, body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {stack.token}"}
    return httpx.put(stack.url + path, json=body, headers=headers, timeout=10)


def state(stack: UpStack, name: str) -> str:
    servers = httpx.get(stack.url + "/status").json()["servers"]
    return next(s["state"] for s in servers if s["name"] == name)


def pid_of(stack: UpStack, index: int) -> int:
    return httpx.get(f"http://127.0.0.1:{stack.server_ports[index]}/info").json()["pid"]


def process_state(pid: int) -> str:
    """R, S, T (stopped by SIGSTOP), Z... from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


class Background:
    """Calls ``step`` in a thread, ``limit`` times at most, until the ``with`` block ends."""

    def __init__(self, url: str, limit: int = 2000) -> None:
        self.url, self.limit = url, limit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def step(self, client: httpx.Client) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        with httpx.Client(timeout=20) as client:
            for _ in range(self.limit):
                if self._stop.is_set():
                    return
                self.step(client)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Traffic(Background):
    """GET /tareas through the balancer, recording status and server."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.answers: list[tuple[int, str | None]] = []

    def step(self, client: httpx.Client) -> None:
        try:
            answer = client.get(self.url + "/tareas")
            self.answers.append((answer.status_code, answer.headers.get("x-upstream-server")))
        except httpx.HTTPError as error:
            self.answers.append((0, repr(error)))


def test_overview_names_the_local_driver_and_actions(stack: UpStack) -> None:
    overview = httpx.get(stack.url + "/control").json()  # reads stay open
    assert overview["driver"] == "local"
    server1 = overview["servers"]["server1"]
    assert server1["process"] == "running"
    for action in ("stop", "start", "kill", "restart", "pause", "unpause", "drain", "fault"):
        assert action in server1["actions"]


def test_token_is_enforced(stack: UpStack) -> None:
    before = httpx.get(stack.url + "/events").json()["last_id"]
    for token in (None, "wrong-token"):
        answer = post(stack, "/control/servers/server1/kill", token=token)
        assert answer.status_code == 401
        assert "token" in answer.json()["error"]
    assert put(stack, "/control/algorithm", {"algorithm": "round_robin"}).status_code == 200
    unauthorised = httpx.put(stack.url + "/control/algorithm", json={"algorithm": "ip_hash"})
    assert unauthorised.status_code == 401
    assert httpx.get(stack.url + "/status").json()["algorithm"] == "round_robin"
    assert alive(pid_of(stack, 0))
    kinds = [e["kind"] for e in httpx.get(stack.url + f"/events?since={before}").json()["events"]]
    assert kinds == ["algorithm"]  # refused requests change nothing and record nothing


def test_unknown_server_bad_action_and_bad_bodies(stack: UpStack) -> None:
    answer = post(stack, "/control/servers/server9/stop")
    assert answer.status_code == 404 and "server9" in answer.json()["error"]
    assert post(stack, "/control/servers/server1/explode").status_code == 400
    assert put(stack, "/control/algorithm", {"algorithm": "fastest"}).status_code == 400
    assert put(stack, "/control/algorithm", ["round_robin"]).status_code == 400
    assert put(stack, "/control/servers/server1/fault", {"mode": "meltdown"}).status_code == 400
    assert (
        put(stack, "/control/servers/server1/fault", {"mode": "error", "rate": 7}).status_code
        == 400
    )
    assert put(stack, "/control/servers/server9/fault", {"mode": "none"}).status_code == 404
    # A mistyped control path is the balancer's 404, never proxied (with the token) to a server.
    typo = put(stack, "/control/algoritm", {"algorithm": "round_robin"})
    assert typo.status_code == 404 and "x-upstream-server" not in typo.headers
    # The process cannot be unpaused when it is not paused: the driver says why.
    before = httpx.get(stack.url + "/events").json()["last_id"]
    answer = post(stack, "/control/servers/server1/unpause")
    assert answer.status_code == 409 and "not paused" in answer.json()["error"]
    (event,) = httpx.get(stack.url + f"/events?since={before}").json()["events"]
    assert (event["kind"], event["server"], event["action"], event["ok"]) == (
        "control", "server1", "unpause", False,
    )  # fmt: skip
    assert "not paused" in event["result"] and event["who"] == "127.0.0.1"


def test_kill_then_start_while_traffic_flows_through_the_other(stack: UpStack) -> None:
    pid = pid_of(stack, 0)
    with Traffic(stack.url) as traffic:
        wait_until(lambda: len(traffic.answers) > 20, what="traffic to flow")
        answer = post(stack, "/control/servers/server1/kill")
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == "killed" and answer.json()["process"] == "exited"
        assert answer.json()["state"] in ("UP", "DOWN")  # the balancer's view at that moment
        assert not alive(pid) and not listening(stack.server_ports[0])
        wait_until(lambda: state(stack, "server1") == "DOWN", what="server1 DOWN")
        mark = len(traffic.answers)
        wait_until(lambda: len(traffic.answers) > mark + 20, what="traffic while server1 is down")
        while_down = traffic.answers[mark : mark + 20]

        answer = post(stack, "/control/servers/server1/start")
        assert answer.status_code == 200 and answer.json()["process"] == "running"
        assert alive(pid_of(stack, 0)) and pid_of(stack, 0) != pid
        wait_until(lambda: state(stack, "server1") == "UP", what="server1 UP again")
    assert {server for _, server in while_down} == {"server2"}
    assert [status for status, _ in traffic.answers if status != 200] == []
    event = httpx.get(stack.url + "/events").json()["events"]
    kills = [e for e in event if e["kind"] == "control" and e["action"] == "kill"]
    assert kills[-1]["who"] == "127.0.0.1" and kills[-1]["ok"] is True
    assert kills[-1]["result"] == "killed"
    down = [e for e in event if e["kind"] == "state" and e["server"] == "server1"]
    assert down[-2]["to"] == "DOWN" and down[-2]["reason"] in (
        "connect refused on live traffic",
        "2 checks failed: connection refused",
    )


@pytest.mark.slow  # 1.2-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_pause_freezes_the_process_and_unpause_thaws_it(stack: UpStack) -> None:
    pid = pid_of(stack, 1)
    answer = post(stack, "/control/servers/server2/pause")
    assert answer.status_code == 200 and answer.json()["process"] == "paused"
    assert process_state(pid) == "T"
    with pytest.raises(httpx.TimeoutException):  # accepts the connection, never answers
        httpx.get(f"http://127.0.0.1:{stack.server_ports[1]}/health", timeout=0.5)
    wait_until(lambda: state(stack, "server2") == "DOWN", what="server2 DOWN while frozen")
    assert httpx.get(stack.url + "/tareas", timeout=5).headers["x-upstream-server"] == "server1"

    answer = post(stack, "/control/servers/server2/unpause")
    assert answer.status_code == 200 and answer.json()["result"] == "unpaused"
    assert process_state(pid) != "T"
    wait_until(lambda: state(stack, "server2") == "UP", what="server2 UP after unpause")


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_stop_is_graceful_and_restart_brings_it_back(stack: UpStack) -> None:
    pid = pid_of(stack, 0)
    answer = post(stack, "/control/servers/server1/stop")
    assert answer.json()["result"] == "stopped" and not alive(pid)
    # SIGTERM, not SIGKILL; polled: the launcher relays the child's last lines after its exit.
    wait_until(
        lambda: "server1   | INFO:     Shutting down" in stack.output(), what="a graceful stop"
    )
    wait_until(lambda: state(stack, "server1") == "DOWN", what="server1 DOWN after stop")
    assert post(stack, "/control/servers/server1/stop").json()["result"] == "already exited"

    answer = post(stack, "/control/servers/server1/restart")
    assert answer.json()["result"] == "restarted" and listening(stack.server_ports[0])
    wait_until(lambda: state(stack, "server1") == "UP", what="server1 UP after restart")


def test_balancer_states_faults_and_stats_reset(stack: UpStack) -> None:
    before = httpx.get(stack.url + "/events").json()["last_id"]
    answer = post(stack, "/control/servers/server1/drain").json()
    assert answer["state"] == "DRAIN" and state(stack, "server1") == "DRAIN"
    events = httpx.get(stack.url + f"/events?since={before}").json()["events"]
    assert [(e["kind"], e.get("reason", e.get("result"))) for e in events] == [
        ("state", "set drain by control"),
        ("control", "DRAIN"),
    ]
    assert {e["who"] for e in events} == {"127.0.0.1"}
    assert post(stack, "/control/servers/server1/maint").json()["state"] == "MAINT"
    answer = post(stack, "/control/servers/server1/ready").json()
    assert answer["state"] in ("UP", "DOWN")
    wait_until(lambda: state(stack, "server1") == "UP", what="server1 ready")

    fault = put(stack, "/control/servers/server2/fault", {"mode": "error", "rate": 1.0})
    assert fault.status_code == 200 and fault.json()["fault"]["mode"] == "error"
    last = httpx.get(stack.url + "/events").json()["events"][-1]
    assert (last["action"], last["result"], last["fault"]["rate"]) == ("fault", "error", 1.0)
    direct = f"http://127.0.0.1:{stack.server_ports[1]}"
    assert httpx.get(direct + "/tareas").status_code == 500
    assert put(stack, "/control/servers/server2/fault", {"mode": "none"}).status_code == 200
    assert httpx.get(direct + "/tareas").status_code == 200

    assert post(stack, "/control/stats/reset").json() == {"reset": True}
    assert httpx.get(stack.url + "/status").json()["requests_total"] <= 1


@pytest.mark.parametrize(
    ("driver", "status", "words"),
    [
        # auto, outside `ticslab up` and with no Docker socket: the reason says exactly that
        ("auto", 409, ["no Docker socket at /nonexistent/docker.sock", "`ticslab up`"]),
        ("local", 502, ["supervisor"]),
    ],
)
def test_driver_cannot_is_409_and_driver_failure_is_502(
    tmp_path: Path, driver: str, status: int, words: list[str]
) -> None:
    port = free_port()
    nobody = f"http://127.0.0.1:{free_port()}"  # a supervisor that is not there
    args = ["balancer", "--port", str(port), "--driver", driver, "--token", "t0ken"]
    backend = ["--backend", f"server1=http://127.0.0.1:{free_port()}"]
    env = {
        "TICSLAB_SUPERVISOR_URL": nobody if driver == "local" else "",
        "DOCKER_HOST": "unix:///nonexistent/docker.sock",
        "TICSLAB_TOKEN_FILE": str(tmp_path / "token"),
    }
    balancer = ServiceProcess([*args, *backend], port, env).start()
    try:
        answer = httpx.post(
            balancer.url + "/control/servers/server1/stop",
            headers={"Authorization": "Bearer t0ken"},
        )
        assert answer.status_code == status
        for word in words:
            assert word in answer.json()["error"]
        overview = httpx.get(balancer.url + "/control").json()
        assert overview["driver"] == ("none" if driver == "auto" else driver)
        if driver == "auto":
            assert overview["servers"]["server1"]["actions"] == ["drain", "maint", "ready", "fault"]
            assert "no Docker socket" in overview["driver_missing"]
            assert "mount /var/run/docker.sock" in answer.json()["error"]  # how to enable it
        drain = httpx.post(
            balancer.url + "/control/servers/server1/drain",
            headers={"Authorization": "Bearer t0ken"},
        )
        assert drain.json()["state"] == "DRAIN"  # the balancer's own states need no driver
    finally:
        balancer.close()


def test_balancer_without_token_generates_one_for_its_owner_only(tmp_path: Path) -> None:
    port, token_file = free_port(), tmp_path / "state" / "token"
    env = {"TICSLAB_TOKEN_FILE": str(token_file), "TICSLAB_TOKEN": ""}
    args = ["balancer", "--port", str(port), "--driver", "none"]
    backend = ["--backend", f"server1=http://127.0.0.1:{free_port()}"]
    balancer = ServiceProcess([*args, *backend], port, env).start()
    try:
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 20
        url = balancer.url + "/control/servers/server1/maint"
        assert httpx.post(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        answer = httpx.post(url, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
    finally:
        balancer.close()
    balancer._stderr.seek(0)  # support.ServiceProcess keeps stderr in a file
    stderr = balancer._stderr.read().decode()
    assert str(token_file) in stderr and token not in stderr  # where it is, never what


class Writer(Background):
    """POST /tareas straight to one task server, timing each write."""

    def __init__(self, url: str) -> None:
        super().__init__(url, limit=3000)
        self.seconds: list[float] = []
        self.failures: list[str] = []

    def step(self, client: httpx.Client) -> None:
        started = time.monotonic()
        try:
            answer = client.post(self.url + "/tareas", json={"title": "w"})
        except httpx.HTTPError as error:
            self.failures.append(repr(error))
            return
        self.seconds.append(time.monotonic() - started)
        if answer.status_code != 201:
            self.failures.append(f"{answer.status_code}: {answer.text}")


@pytest.mark.slow  # 2.5-3 s: the default run stays near 3 minutes
def test_pause_never_freezes_a_server_holding_the_tasks_file_lock(stack: UpStack) -> None:
    """Pausing server2 while it writes must never stall writes on server1 (shared lock).

    The supervisor only sends SIGSTOP: what keeps the lock free is the quiesce the control
    API asks of server2 first (without it, this fails within a few pauses)."""
    one, two = (f"http://127.0.0.1:{port}" for port in stack.server_ports)
    busy = [Writer(two) for _ in range(3)]  # server2 holds the lock often
    with Writer(one) as measured, busy[0], busy[1], busy[2]:
        for _ in range(12):
            resumed = len(busy[0].seconds)
            wait_until(lambda: len(busy[0].seconds) > resumed, what="server2 writing")  # noqa: B023
            paused = post(stack, "/control/servers/server2/pause")
            assert paused.status_code == 200 and paused.json()["quiesced"] is True, paused.text
            try:
                mark = len(measured.seconds)
                wait_until(
                    lambda: len(measured.seconds) >= mark + 3,  # noqa: B023
                    timeout=3,
                    what="writes on server1 while server2 is frozen",
                )
            finally:
                assert post(stack, "/control/servers/server2/unpause").status_code == 200
    assert measured.failures == [] and all(w.failures == [] for w in busy)
    assert max(measured.seconds) < 1.0, max(measured.seconds)


@pytest.mark.slow
def test_pause_goes_ahead_and_says_so_when_the_server_cannot_hold_its_writes(
    stack: UpStack,
) -> None:
    """Best effort: server2's write waits for a lock held outside the stack, so its quiesce
    gives up; the pause still happens, and the answer and the event say it was not held."""
    before = httpx.get(stack.url + "/events").json()["last_id"]
    two = f"http://127.0.0.1:{stack.server_ports[1]}"
    answers: list[int] = []

    def write() -> None:
        answers.append(httpx.post(two + "/tareas", json={"title": "stuck"}, timeout=20).status_code)

    with FileLock(stack.tmp / "data" / "tasks.json.lock"):
        stuck = threading.Thread(target=write, daemon=True)
        stuck.start()
        # Polled, not a 0.5 s join: the write has reached server2 and waits for the lock.
        wait_until(
            lambda: httpx.get(two + "/health").json()["tasks_file"].get("lock_wait_seconds"),
            what="server2's write waiting for the tasks file lock",
        )
        assert stuck.is_alive()
        paused = post(stack, "/control/servers/server2/pause")
    try:
        assert paused.status_code == 200 and paused.json()["process"] == "paused", paused.text
        assert paused.json()["quiesced"] is False
        assert "did not hold its writes" in paused.json()["quiesce"]
        assert "for the tasks file lock" in paused.json()["quiesce"]
    finally:
        assert post(stack, "/control/servers/server2/unpause").status_code == 200
        stuck.join(timeout=15)
    assert answers == [201]  # the held write was neither lost nor broken by the pause
    (event,) = [
        e for e in httpx.get(stack.url + f"/events?since={before}").json()["events"]
        if e["kind"] == "control" and e["action"] == "pause"
    ]  # fmt: skip
    assert event["ok"] is True and event["quiesced"] is False
    assert event["quiesce"] == paused.json()["quiesce"]

"""Quiesce: a task server holds its own writes for a moment, so a pause cannot freeze the
shared tasks file lock. Two real servers share one file; only the quiesced one waits."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from filelock import FileLock
from prometheus_client.parser import text_string_to_metric_families
from support import ServiceProcess, taskserver, taskserver_pair, wait_until

TOKEN = "quiesce-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, ...]]:
    path = tmp_path_factory.mktemp("quiesce") / "tasks.json"
    with taskserver_pair(path, env={"TICSLAB_TOKEN": TOKEN}) as servers:
        yield servers


def posts_in_progress(server: ServiceProcess) -> float:
    """POSTs the server has received and not yet answered (its own /metrics gauge)."""
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics").text):
        if family.name == "ticslab_taskserver_requests_in_progress":
            return sum(s.value for s in family.samples if s.labels["method"] == "POST")
    return 0.0


def quiesce(server: ServiceProcess, seconds: float) -> httpx.Response:
    return httpx.post(server.url + "/admin/quiesce", json={"seconds": seconds}, headers=AUTH)


class Timed(threading.Thread):
    """One request in a thread; ``done`` is when its answer arrived (monotonic)."""

    def __init__(self, method: str, url: str, **kwargs: object) -> None:
        super().__init__(daemon=True)
        self.method, self.url, self.kwargs = method, url, kwargs
        self.answer: httpx.Response | None = None
        self.done = 0.0
        self.start()

    def run(self) -> None:
        self.answer = httpx.request(self.method, self.url, timeout=20, **self.kwargs)  # type: ignore[arg-type]
        self.done = time.monotonic()


@pytest.mark.slow  # 1.2-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_quiesce_holds_this_servers_writes_but_not_the_other_servers(
    servers: tuple[ServiceProcess, ...],
) -> None:
    one, two = servers
    first = quiesce(one, 1.0)
    assert first.status_code == 200, first.text
    assert 0.9 < first.json()["writes_held_seconds"] <= 1.0
    held = Timed("POST", one.url + "/tareas", json={"title": "held"})
    wait_until(lambda: posts_in_progress(one) >= 1, what="the write to reach server1")

    other = httpx.post(two.url + "/tareas", json={"title": "free"}, timeout=0.5)  # not held
    assert other.status_code == 201
    assert httpx.get(one.url + "/tareas", timeout=0.5).status_code == 200  # reads go on
    assert httpx.get(one.url + "/health", timeout=0.5).status_code == 200
    sent = time.monotonic()
    again = quiesce(one, 1.5)  # a repeated quiesce extends the hold, answered at once
    assert time.monotonic() - sent < 0.5 and again.status_code == 200
    assert again.json()["writes_held_seconds"] > 1.4
    assert held.is_alive(), "a write on the quiesced server went through during the hold"

    held.join(timeout=10)
    assert held.answer is not None and held.answer.status_code == 201
    assert held.done - sent >= 1.45  # until the extended end, not the first one
    assert httpx.post(one.url + "/tareas", json={"title": "after"}, timeout=0.5).status_code == 201


def test_quiesce_waits_for_a_write_in_progress_so_it_holds_no_file_lock(
    servers: tuple[ServiceProcess, ...], tmp_path: Path
) -> None:
    one, _ = servers
    tasks_file = Path(httpx.get(one.url + "/health").json()["tasks_file"]["path"])
    outside = FileLock(str(tasks_file) + ".lock")
    with outside:  # server1's next write takes its writer lock and waits for this one
        writing = Timed("POST", one.url + "/tareas", json={"title": "in progress"})
        wait_until(lambda: posts_in_progress(one) >= 1, timeout=5, what="the write to arrive")
        quiescing = Timed("POST", one.url + "/admin/quiesce", json={"seconds": 1}, headers=AUTH)
        wait_until(lambda: posts_in_progress(one) >= 2, timeout=5, what="the quiesce to arrive")
        released = time.monotonic()
    quiescing.join(timeout=5)
    writing.join(timeout=5)
    assert writing.answer is not None and writing.answer.status_code == 201
    assert quiescing.answer is not None and quiescing.answer.status_code == 200
    assert quiescing.done > released, "quiesce answered while a write was in progress"
    written = writing.answer.json()["id"]
    # Held: the write in progress is in the file and server1 does not hold the file lock.
    with FileLock(str(tasks_file) + ".lock", timeout=0.2):
        assert f'"id": {written},' in tasks_file.read_text()
    assert httpx.delete(one.url + "/admin/quiesce", headers=AUTH).json()["ended"] is True


def test_a_hold_has_expired_when_a_server_frozen_during_it_resumes(
    servers: tuple[ServiceProcess, ...],
) -> None:
    one, two = servers
    assert one.proc is not None
    assert quiesce(one, 0.5).status_code == 200
    frozen_at = time.monotonic()
    os.kill(one.proc.pid, signal.SIGSTOP)
    try:
        # The other server keeps writing while this one is frozen past its hold.
        def two_writes() -> bool:
            answer = httpx.post(two.url + "/tareas", json={"title": "meanwhile"}, timeout=0.5)
            assert answer.status_code == 201
            return time.monotonic() - frozen_at > 0.8

        wait_until(two_writes, timeout=5, what="writes on server2 while server1 is frozen")
    finally:
        os.kill(one.proc.pid, signal.SIGCONT)
    # No timer ran while frozen, yet the hold is over: writes go through at once.
    answer = httpx.post(one.url + "/tareas", json={"title": "resumed"}, timeout=0.5)
    assert answer.status_code == 201


def test_quiesce_is_not_delayed_by_fault_modes_and_can_be_ended(
    servers: tuple[ServiceProcess, ...],
) -> None:
    one, _ = servers
    hang = {"mode": "hang", "max_seconds": 30}
    assert httpx.put(one.url + "/admin/fault", json=hang, headers=AUTH).status_code == 200
    try:
        assert (
            httpx.post(
                one.url + "/admin/quiesce", json={"seconds": 30}, headers=AUTH, timeout=1
            ).status_code
            == 200
        )
    finally:
        httpx.put(one.url + "/admin/fault", json={"mode": "none"}, headers=AUTH)
    ended = httpx.delete(one.url + "/admin/quiesce", headers=AUTH, timeout=1)
    assert ended.json() == {"server": "server1", "ended": True}
    assert httpx.post(one.url + "/tareas", json={"title": "x"}, timeout=1).status_code == 201
    assert httpx.delete(one.url + "/admin/quiesce", headers=AUTH).json()["ended"] is False


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[2]", b'{"seconds": 0}', b'{"seconds": -1}', b'{"seconds": 31}',
     b'{"seconds": "2"}', b'{"seconds": true}', b'{"seconds": 2, "then": "pause"}', b"{}"],
)  # fmt: skip
def test_bad_quiesce_bodies_get_400(servers: tuple[ServiceProcess, ...], body: bytes) -> None:
    answer = httpx.post(servers[0].url + "/admin/quiesce", content=body, headers=AUTH)
    assert answer.status_code == 400
    assert "seconds" in answer.json()["error"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_quiesce_needs_the_token(servers: tuple[ServiceProcess, ...], headers: dict) -> None:
    one = servers[0]
    for answer in (
        httpx.post(one.url + "/admin/quiesce", json={"seconds": 2}, headers=headers),
        httpx.delete(one.url + "/admin/quiesce", headers=headers),
    ):
        assert answer.status_code == 401 and "token" in answer.json()["error"]
    assert httpx.post(one.url + "/tareas", json={"title": "x"}, timeout=0.5).status_code == 201


@pytest.mark.slow
def test_a_hold_gives_up_on_a_write_that_waits_for_another_process(tmp_path: Path) -> None:
    """A write waiting for another process's file lock is not waited for without bound."""
    path = tmp_path / "tasks.json"
    server = taskserver("server1", path, env={"TICSLAB_TOKEN": TOKEN}).start()
    try:
        with FileLock(str(path) + ".lock"):
            writing = Timed("POST", server.url + "/tareas", json={"title": "stuck"})
            wait_until(lambda: posts_in_progress(server) == 1, timeout=5, what="the write to queue")
            refused = quiesce(server, 1.0)
            assert refused.status_code == 503
            assert "waited over 1.5 s" in refused.json()["error"]
        writing.join(timeout=15)
        assert writing.answer is not None and writing.answer.status_code == 201
        assert quiesce(server, 0.05).status_code == 200  # free again: held, and over soon
        wait_until(
            lambda: httpx.post(server.url + "/tareas", json={"title": "x"}).status_code == 201,
            timeout=5,
            what="writes after the hold",
        )
    finally:
        server.close()

"""The client emulator against a real stack on 127.0.0.1: two task servers sharing one
tasks.json behind a real balancer, as in the handout (docker-ejemplo-3)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import TICSLAB, Output, ServiceProcess, free_port, taskserver, wait_until

from services.client import checks


@dataclass
class Stack:
    balancer: ServiceProcess
    servers: list[ServiceProcess]
    tasks_file: Path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path / "tasks.json") as started:
        yield started


@contextmanager
def running_stack(tasks_file: Path) -> Iterator[Stack]:
    """Two task servers sharing ``tasks_file`` behind a balancer, both UP; closed after."""
    names = ("server1", "server2")
    servers = [taskserver(name, tasks_file) for name in names]
    port = free_port()
    args = ["balancer", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    for name, server in zip(names, servers, strict=True):
        args += ["--backend", f"{name}={server.url}"]
    args += ["--check-interval", "0.2", "--fast-check-interval", "0.1", "--check-timeout", "0.5"]
    balancer = ServiceProcess(args, port, env={"TICSLAB_TOKEN": "client-stack-tests"})
    try:
        for server in servers:
            server.start()
        balancer.start()
        wait_until(
            lambda: httpx.get(balancer.url + "/health").json()["servers_up"] == 2,
            what="both task servers UP behind the balancer",
        )
        yield Stack(balancer, servers, tasks_file)
    finally:
        balancer.close()
        for server in servers:
            server.close()


def start_client(url: str, name: str, report: Path, *options: str) -> subprocess.Popen[str]:
    command = [*TICSLAB, "client", "--url", url, "--name", name]
    return subprocess.Popen(
        [*command, "--json", str(report), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(client: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        out, _ = client.communicate(timeout=timeout)
    finally:
        client.kill()
    return client.returncode, out


def kept_titles(tasks_file: Path, client: str) -> list[str]:
    pattern = re.compile(rf"^{client}-\d{{6}}$")
    return [
        task["title"] for task in json.loads(tasks_file.read_text()) if pattern.match(task["title"])
    ]


def read_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_two_clients_with_100_tasks_each_leave_exactly_200(stack: Stack, tmp_path: Path) -> None:
    reports = {name: tmp_path / f"{name}.json" for name in ("client1", "client2")}
    clients = {
        name: start_client(stack.balancer.url, name, path, "--tasks", "100")
        for name, path in reports.items()
    }
    for name, client in clients.items():
        code, out = finish(client)
        assert code == 0, out
        assert "lost: 0" in out
        report = read_report(reports[name])
        assert report["lost"] == 0 and report["tasks"]["created"] == 100
        # Traffic went through the balancer to both servers, named by X-Upstream-Server.
        assert set(report["servers"]) == {"server1", "server2"}
        assert sum(row["percent"] for row in report["servers"].values()) == pytest.approx(100, 0.1)
    tasks = json.loads(stack.tasks_file.read_text())
    assert len(tasks) == 200
    for name in clients:
        assert sorted(kept_titles(stack.tasks_file, name)) == [
            f"{name}-{n:06d}" for n in range(1, 101)
        ]


def test_forced_errors_appear_in_the_balancers_error_stats(stack: Stack, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    client = start_client(stack.balancer.url, "c1", report_path, "--tasks", "30", "--errors", "0.3")
    code, out = finish(client)
    assert code == 0, out
    forced = read_report(report_path)["errors"]["expected_by_status"]
    assert set(forced) == {"400", "404", "500"}
    stats = httpx.get(stack.balancer.url + "/errors/stats").json()
    assert stats["error_types"]["400_BAD_REQUEST"] == forced["400"]
    assert stats["error_types"]["404_NOT_FOUND"] == forced["404"]
    assert stats["error_types"]["500_INTERNAL_ERROR"] == forced["500"]
    assert stats["total_errors"] == sum(forced.values())


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_a_balancer_that_is_not_there_exits_2_with_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = start_client(url, "c1", tmp_path / "r.json", "--wait", "1s")
    code, out = finish(client)
    assert code == 2
    assert f"waiting for {url}/health (up to 1s)" in out
    assert f"no balancer answered at {url}/health within 1s" in out
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_a_server_killed_mid_run_loses_no_task(stack: Stack, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    client = start_client(stack.balancer.url, "c1", report_path, "--tasks", "300", "--rate", "120")
    try:
        wait_until(
            lambda: len(kept_titles(stack.tasks_file, "c1")) >= 100,
            timeout=30,
            what="a third of the tasks",
        )
        stack.servers[0].kill()
    finally:
        code, out = finish(client)
    report = read_report(report_path)
    assert report["lost"] == 0, out
    assert report["tasks"]["created"] == 300, out
    titles = kept_titles(stack.tasks_file, "c1")
    assert len(titles) == len(set(titles)) == 300
    # The balancer moved the traffic to server2: it answered most of the run.
    assert report["servers"]["server2"]["percent"] > 50
    assert code in (0, 1), out  # 1 only if a request in flight on server1 got an error


def tries(stack: Stack) -> dict[str, int]:
    servers = httpx.get(stack.balancer.url + "/status").json()["servers"]
    return {server["name"]: server["tries_total"] for server in servers}


def test_then_steady_reports_the_run_then_keeps_traffic_until_sigterm(
    stack: Stack, tmp_path: Path
) -> None:
    """The Compose clients' way: the 20-task run's report first, then gentle traffic through
    the balancer to both servers until `docker stop`'s SIGTERM, which ends it promptly with the
    run's exit code and a summary of the steady traffic."""
    report_path = tmp_path / "report.json"
    steady = ("--then", "steady", "--steady-rate", "40", "--progress-every", "0.2s")
    client = start_client(stack.balancer.url, "c2", report_path, "--tasks", "20", *steady)
    try:
        output = Output(client)
        before = output.wait_for("steady traffic until stopped")
        assert "lost: 0" in before
        assert "result: OK (exit code 0)" in before
        assert read_report(report_path)["tasks"]["created"] == 20  # the run's report, written
        counts = tries(stack)
        wait_until(
            lambda: len(kept_titles(stack.tasks_file, "c2-steady")) >= 10, 20, what="steady tasks"
        )
        assert all(now > counts[name] for name, now in tries(stack).items()), "both servers"
        assert client.poll() is None, "still running"
        client.terminate()
        code = client.wait(timeout=5)  # well within the 10 s `docker stop` waits
    finally:
        client.kill()
    after = output.rest(len(before))
    assert code == 0, before + after
    assert "steady traffic: c2-steady" in after
    assert "lost 0 (not in the exit code" in after
    assert "result of the run (c2): OK, lost 0" in after
    # The run's 20 tasks, as its report says; the steady traffic's are titled apart.
    assert sorted(kept_titles(stack.tasks_file, "c2")) == [f"c2-{n:06d}" for n in range(1, 21)]
    assert read_report(report_path)["tasks"]["created"] == 20


@pytest.mark.slow  # ~4 s: a stack started on a list of 20,000 tasks
def test_the_check_finds_each_of_2000_tasks_spread_over_a_list_of_20000(tmp_path: Path) -> None:
    """Through the balancer, on a list of 20,000 tasks of which one in ten is this run's and
    two of those are gone: the check reads the list back page by page to the oldest, names
    the two, and finishes within the time the client gives it."""
    tasks_file = tmp_path / "tasks.json"
    tasks = [
        {"id": n, "title": f"big-{n:06d}" if n % 10 == 0 else f"other-{n}", "completed": False}
        for n in range(1, 20_001)
        if n not in (5_000, 15_000)
    ]
    tasks_file.write_text(json.dumps(tasks))
    kept = [(n, f"big-{n:06d}") for n in range(10, 20_001, 10)]

    async def check(url: str) -> tuple[checks.LossCheck, float]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            started = time.monotonic()
            found = await checks.check_losses(client, kept)
            return found, time.monotonic() - started

    with running_stack(tasks_file) as stack:
        found, took = asyncio.run(check(stack.balancer.url))
    assert (found.checked, found.listed, found.lost_count) == (2000, 19_998, 2)
    assert found.lost_titles == ["big-005000", "big-015000"]
    assert took < checks.check_budget(len(kept)), took

"""The client emulator against a real task server on 127.0.0.1 (no balancer in between)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from support import TICSLAB, Output, ServiceProcess, free_port, taskserver

from services.cli import main
from services.client import checks
from services.client.config import ClientConfig
from services.client.session import run_session

TOKEN = "client-tests-token"

DOCS = Path(__file__).resolve().parent.parent / "docs" / "client.md"


def documented_report() -> dict[str, Any]:
    """The example report under "### `--json` keys" in docs/client.md."""
    section = DOCS.read_text().split("### `--json` keys", 1)[1]
    return json.loads(section.split("```json", 1)[1].split("```", 1)[0])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    service = taskserver("server1", tmp_path / "tasks.json", env={"TICSLAB_TOKEN": TOKEN})
    service.start()
    yield service
    service.close()


def run_client(tmp_path: Path, url: str, *options: str) -> tuple[int, dict[str, Any]]:
    """Run ``ticslab client`` in this process; its exit code and its JSON report."""
    report = tmp_path / f"report-{free_port()}.json"
    code = main(["client", "--url", url, "--json", str(report), *options])
    return code, json.loads(report.read_text()) if report.exists() else {}


def tasks_in_file(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())


def titles_of(tasks: list[dict[str, Any]], client: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(client)}-\d{{6}}$")
    return [task["title"] for task in tasks if pattern.match(task["title"])]


def test_a_run_creates_exactly_n_tasks_that_stay_and_reports_none_lost(
    server: ServiceProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_client(tmp_path, server.url, "--name", "c1", "--tasks", "30")
    assert code == 0, capsys.readouterr().out
    assert report["lost"] == 0 and report["ok"] is True
    assert report["tasks"]["created"] == 30
    # Completes and deletes worked on extra tasks, all deleted again: only the 30 stay.
    tasks = tasks_in_file(tmp_path / "tasks.json")
    assert sorted(titles_of(tasks, "c1")) == [f"c1-{n:06d}" for n in range(1, 31)]
    assert len(tasks) == 30
    assert report["requests"]["complete"] == {"200": report["requests"]["complete"]["200"]}
    assert report["requests"]["delete"]["200"] == report["requests"]["extra"]["201"]
    out = capsys.readouterr().out
    assert re.search(r"p50 [\d.]+ ms, p95 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert re.search(r"throughput: [\d.]+ req/s", out)
    assert "expected errors:" in out
    assert "unexpected errors: 0" in out
    # Traffic per server, as count and percent (no balancer here: no X-Upstream-Server).
    assert re.search(rf"\(none\) +│ +{report['requests_total']} +│ +100\.0", out)
    assert "lost: 0" in out
    assert "result: OK" in out


@pytest.mark.smoke
def test_the_json_report_has_the_documented_shape(server: ServiceProcess, tmp_path: Path) -> None:
    code, report = run_client(tmp_path, server.url, "--tasks", "20", "--errors", "0.3")
    assert code == 0
    documented = documented_report()
    assert set(report) == set(documented)
    for part in ("settings", "errors", "tasks", "latency_ms"):
        assert set(report[part]) == set(documented[part]), part
    rows = [*report["servers"].values(), *documented["servers"].values()]
    assert all(set(row) == {"requests", "percent"} for row in rows)
    assert report["settings"] == {
        "tasks": 20,
        "duration_s": None,
        "concurrency": 10,
        "rate": 0.0,
        "errors": 0.3,
    }
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
    assert report["latency_ms"]["p95"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    total = report["requests_total"]
    assert total == sum(sum(statuses.values()) for statuses in report["requests"].values())
    assert sum(row["requests"] for row in report["servers"].values()) == total
    assert report["throughput_rps"] > 0
    assert report["errors"]["unexpected"] == 0


def test_forced_errors_match_the_servers_error_stats(
    server: ServiceProcess, tmp_path: Path
) -> None:
    code, report = run_client(tmp_path, server.url, "--tasks", "40", "--errors", "0.3")
    assert code == 0
    forced = report["errors"]["expected_by_status"]
    assert set(forced) == {"400", "404", "500"}
    stats = httpx.get(server.url + "/errors/stats").json()
    assert stats["by_status"] == forced
    assert stats["error_types"]["400_BAD_REQUEST"] == forced["400"]
    assert stats["error_types"]["404_NOT_FOUND"] == forced["404"]
    assert stats["error_types"]["500_INTERNAL_ERROR"] == forced["500"]
    assert report["errors"]["expected"] == stats["total_errors"]


def test_a_duration_run_stops_on_time(server: ServiceProcess, tmp_path: Path) -> None:
    code, report = run_client(tmp_path, server.url, "--duration", "1s", "--rate", "100")
    assert code == 0
    assert report["tasks"]["target"] is None and report["tasks"]["created"] > 0
    assert 1.0 <= report["elapsed_s"] < 5.0
    assert report["lost"] == 0


def test_the_rate_limit_spaces_requests(server: ServiceProcess, tmp_path: Path) -> None:
    """The limiter is a token bucket of one: at most 1 + rate x elapsed requests, however fast
    the server is; and it holds back no more than that, so with ten users overlapping their
    waits the run ends soon after its last slot (measured: 0.02-0.04 s after it)."""
    rate = 20
    code, report = run_client(tmp_path, server.url, "--tasks", "10", "--rate", str(rate))
    assert code == 0
    requests, elapsed = report["requests_total"], report["elapsed_s"]
    slots = (requests - 1) / rate  # the last request's slot: 0.9 s for the usual 19
    assert requests <= 1 + rate * elapsed  # i.e. elapsed >= slots
    # 0.75 s of margin for a loaded 2-core machine (a request may take 0.5 s before ten users
    # no longer hide it); a limiter spacing requests twice as far apart needs 0.9 s more.
    assert elapsed <= slots + 0.75


def client_command(url: str, *options: str) -> list[str]:
    return [*TICSLAB, "client", "--url", url, *options]


@pytest.mark.slow  # 1.2-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_the_client_waits_for_a_late_balancer(tmp_path: Path) -> None:
    port = free_port()
    client = subprocess.Popen(
        client_command(f"http://127.0.0.1:{port}", "--tasks", "5", "--wait", "30s"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    late = taskserver("server1", tmp_path / "tasks.json", port=port)
    try:
        assert client.stdout is not None
        assert "waiting for" in client.stdout.readline()
        late.start()
        out, _ = client.communicate(timeout=30)
        assert client.returncode == 0, out
        assert "lost: 0" in out
    finally:
        client.kill()
        late.close()


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_unexpected_errors_fail_the_run_but_retried_creates_are_never_doubled(
    server: ServiceProcess, tmp_path: Path
) -> None:
    fault = {"mode": "error", "rate": 0.3}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    httpx.put(server.url + "/admin/fault", json=fault, headers=headers).raise_for_status()
    code, report = run_client(
        tmp_path, server.url, "--name", "c9", "--tasks", "30", "--errors", "0", "--wait", "20s"
    )
    assert code == 1
    assert report["ok"] is False
    assert report["errors"]["unexpected_by_status"]["500"] > 0
    assert report["errors"]["unexpected_samples"]
    assert report["retries"] > 0
    assert report["lost"] == 0
    # Each create was retried with the same Idempotency-Key: no title made twice.
    titles = titles_of(tasks_in_file(tmp_path / "tasks.json"), "c9")
    assert len(titles) == len(set(titles)) == report["tasks"]["created"]


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
def test_a_task_that_disappears_is_reported_lost(server: ServiceProcess, tmp_path: Path) -> None:
    """Someone deletes one of the client's tasks mid-run: ``lost: 1`` and exit code 1."""
    stop = threading.Event()

    def delete_victim() -> None:
        with httpx.Client(base_url=server.url) as http:
            while not stop.is_set():
                for task in http.get("/api/tasks").json():
                    if task["title"] == "c5-000002":
                        http.delete(f"/api/tasks/{task['id']}")
                        return
                stop.wait(0.01)

    thief = threading.Thread(target=delete_victim)
    thief.start()
    try:
        code, report = run_client(
            tmp_path, server.url, "--name", "c5", "--tasks", "40", "--rate", "60"
        )
    finally:
        stop.set()
        thief.join(timeout=10)
    assert code == 1
    assert report["lost"] == 1
    assert report["tasks"]["lost_titles"] == ["c5-000002"]
    assert report["tasks"]["created"] == 40


def test_the_loss_check_pages_a_real_servers_list_back_to_the_oldest_kept_task(
    server: ServiceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checks, "PAGE", 10)
    monkeypatch.setattr(checks, "OVERLAP", 3)
    with httpx.Client(base_url=server.url) as http:
        ids = [http.post("/api/tasks", json={"title": f"t{n}"}).json()["id"] for n in range(41)]
        http.delete(f"/api/tasks/{ids[10]}").raise_for_status()  # t10 is lost
    offsets: list[str] = []

    async def asked(request: httpx.Request) -> None:
        offsets.append(request.url.params["offset"])

    async def check() -> checks.LossCheck:
        hooks = {"request": [asked]}
        async with httpx.AsyncClient(base_url=server.url, event_hooks=hooks) as client:
            return await checks.check_losses(client, [(ids[n], f"t{n}") for n in (10, 25, 40)])

    found = asyncio.run(check())
    assert (found.lost_count, found.lost_titles, found.listed) == (1, ["t10"], 40)
    assert offsets == ["0", "7", "14", "21"]  # the fourth page reaches t9: no further


@pytest.mark.smoke
def test_on_a_terminal_a_live_progress_bar_is_shown(server: ServiceProcess) -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, highlight=False)
    config = ClientConfig(url=server.url, name="c3", tasks=15)
    code = asyncio.run(run_session(config, console, console))
    assert code == 0
    drawn = screen.getvalue()
    assert "15/15" in drawn  # the bar's "created of target" column, at its end
    assert "result:" in drawn


def test_ctrl_c_stops_cleanly_and_prints_the_report_so_far(
    server: ServiceProcess, tmp_path: Path
) -> None:
    report_path = tmp_path / "interrupted.json"
    client = subprocess.Popen(
        client_command(
            server.url,
            *("--name", "c7", "--duration", "60s", "--rate", "50"),
            *("--progress-every", "0.2s", "--json", str(report_path)),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert client.stdout is not None
        # Not a terminal: periodic one-line summaries, as Compose logs show them.
        line = client.stdout.readline()
        assert line.startswith("c7 | tasks "), line
        client.send_signal(signal.SIGINT)
        out, _ = client.communicate(timeout=20)
    finally:
        client.kill()
    assert client.returncode == 130, out
    assert "INTERRUPTED" in out
    report = json.loads(report_path.read_text())
    assert report["interrupted"] is True
    assert report["lost"] == 0
    assert report["tasks"]["created"] > 0
    assert report["elapsed_s"] < 30


@pytest.mark.slow  # 2-2.3 s: the default run stays near 3 minutes
def test_then_steady_keeps_a_failed_runs_exit_code_and_names_it_at_the_end(
    server: ServiceProcess,
) -> None:
    """A run that failed (500s) still goes on with steady traffic, but SIGTERM ends it with
    the run's code 1, and the last line says so, not the steady traffic's interruption."""
    fault = {"mode": "error", "rate": 0.3}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    httpx.put(server.url + "/admin/fault", json=fault, headers=headers).raise_for_status()
    steady = ("--then", "steady", "--steady-rate", "20")
    client = subprocess.Popen(
        client_command(server.url, "--name", "c8", "--tasks", "10", "--errors", "0", *steady),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        output = Output(client)
        before = output.wait_for("steady traffic until stopped")
        assert "result: FAILED (exit code 1)" in before
        assert "exit code 1" in before.splitlines()[-1]
        client.send_signal(signal.SIGTERM)
        code = client.wait(timeout=10)
    finally:
        client.kill()
    after = output.rest(len(before))
    assert code == 1, before + after
    last = after.strip().splitlines()[-1]
    assert last.startswith("result of the run (c8): FAILED"), after
    assert last.endswith("(exit code 1)")

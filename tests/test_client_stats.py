"""The client's statistics stay bounded over a day of steady traffic and its percentiles stay
within the stated 1 % of the exact ones; the loss check looks for a bounded window of the
newest tasks, for a time proportional to them, and says when it could not finish."""

from __future__ import annotations

import asyncio
import io
import json
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from rich.console import Console
from support import ServiceProcess, free_port, taskserver, wait_until_async

from services.cli import main
from services.client import checks, session, stats
from services.client.config import ClientConfig
from services.client.plan import Kind
from services.client.report import build_report, render_report
from services.client.stats import RELATIVE_ACCURACY, KeptTasks, Latencies, Recorder
from services.common import percentile

TOKEN = "client-stats-token"
QUANTILES = (1, 25, 50, 90, 95, 99, 99.9, 100)


def assert_close_to_exact(values: list[float]) -> None:
    """Every percentile of a Latencies fed ``values`` is within RELATIVE_ACCURACY of the exact
    nearest-rank one (services.common.percentile over all of them)."""
    latencies = Latencies()
    for value in values:
        latencies.add(value)
    ordered = sorted(values)
    for q in QUANTILES:
        exact = percentile(ordered, q)
        assert abs(latencies.percentile(q) - exact) <= RELATIVE_ACCURACY * exact * 1.0001, q
    assert latencies.max == ordered[-1]
    assert latencies.mean == pytest.approx(sum(values) / len(values))


def test_percentiles_of_an_even_spread_are_within_one_percent() -> None:
    """1 ms to 100 s in steps of 1 ms, shuffled: the exact p95 is 95 s, p50 50 s."""
    values = [n / 1000 for n in range(1, 100_001)]
    random.Random(1).shuffle(values)
    assert_close_to_exact(values)


def test_percentiles_of_a_long_tail_are_within_one_percent() -> None:
    rng = random.Random(2)
    assert_close_to_exact([rng.lognormvariate(-4.0, 1.5) for _ in range(50_000)])


def test_percentiles_take_the_nearest_rank_even_across_a_jump() -> None:
    """19 answers of 10 ms and one of 2 s: the nearest-rank p95 is 10 ms and p99 is 2 s (a
    sketch that takes rank q*(n-1), as DDSketch does, says 10 ms for p99)."""
    values = [0.010] * 19 + [2.0]
    assert_close_to_exact(values)
    latencies = Latencies()
    for value in values:
        latencies.add(value)
    assert latencies.percentile(99) == pytest.approx(2.0, rel=RELATIVE_ACCURACY)


def test_no_latency_reports_zeros() -> None:
    latencies = Latencies()
    assert (latencies.percentile(95), latencies.max, latencies.mean) == (0.0, 0.0, 0.0)


def test_the_window_of_kept_tasks_holds_the_newest_and_counts_them_all() -> None:
    kept = KeptTasks(capacity=5)
    for n in range(1, 13):
        kept.add(1000 + n, n)
    assert (kept.count, len(kept)) == (12, 5)
    assert sorted(kept.window()) == [(1000 + n, n) for n in range(8, 13)]


def growth(feed: Callable[[int], None], warm: int, more: int) -> int:
    """Bytes still allocated after ``feed(more)`` that were not after ``feed(warm)``."""
    tracemalloc.start()
    try:
        feed(warm)
        before, _ = tracemalloc.get_traced_memory()
        feed(more)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def test_memory_stays_flat_over_a_simulated_steady_run() -> None:
    """After a warm-up, 40,000 more latencies and kept tasks add no memory: the sketch and
    the window are full-size already. Lists of them would have grown by ~3 MB."""
    latencies = Latencies()
    kept = KeptTasks(capacity=5_000)
    rng = random.Random(3)

    def feed(count: int) -> None:
        for _ in range(count):
            latencies.add(rng.expovariate(20.0))
            kept.add(kept.count + 1, kept.count)

    assert growth(feed, 10_000, 40_000) < 16 * 1024
    assert (latencies.count, kept.count, len(kept)) == (50_000, 50_000, 5_000)


@pytest.mark.slow  # ~10 s: a million requests through Recorder.record
def test_a_million_requests_leave_the_recorder_the_size_it_was() -> None:
    """The process's resident memory after a million requests (two in three creating a task
    that stays) is within 8 MB of what it was once the window was full; keeping them all, as
    the recorder did, took ~200 MB."""
    recorder = Recorder()
    rng = random.Random(4)
    servers = ("server1", "server2")

    def feed(count: int) -> None:
        for n in range(count):
            recorder.record(Kind.CREATE, "201", rng.expovariate(20.0), servers[n % 2])
            if n % 3:
                recorder.keep(recorder.kept.count + 1, n)

    process = psutil.Process()
    feed(2 * stats.KEPT_WINDOW)
    before = process.memory_info().rss
    feed(1_000_000 - 2 * stats.KEPT_WINDOW)
    assert process.memory_info().rss - before < 8 * 2**20
    assert recorder.requests == 1_000_000
    assert len(recorder.kept) == stats.KEPT_WINDOW < recorder.kept.count


def test_the_checks_time_grows_with_what_it_looks_for_and_is_bounded() -> None:
    assert checks.check_budget(0) == checks.CHECK_BASE_SECONDS
    assert checks.check_budget(10_000) > checks.check_budget(1_000) > checks.check_budget(0)
    assert checks.check_budget(10**9) == checks.CHECK_MAX_SECONDS
    assert checks.check_budget(10**9, 8.0) == 8.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    service = taskserver("server1", tmp_path / "tasks.json", env={"TICSLAB_TOKEN": TOKEN})
    service.start()
    yield service
    service.close()


def run_client(tmp_path: Path, url: str, *options: str) -> tuple[int, dict]:
    report = tmp_path / f"report-{free_port()}.json"
    code = main(["client", "--url", url, "--json", str(report), *options])
    return code, json.loads(report.read_text())


def test_a_run_longer_than_the_window_checks_its_newest_tasks_and_says_so(
    server: ServiceProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(stats, "KEPT_WINDOW", 15)
    code, report = run_client(tmp_path, server.url, "--name", "w1", "--tasks", "40")
    assert code == 0
    assert report["tasks"]["created"] == 40
    assert report["tasks"]["checked"] == 15
    assert report["lost"] == 0
    assert "lost: 0 (checked the newest 15 of 40, listed 40)" in capsys.readouterr().out


def test_a_check_out_of_time_claims_nothing_and_says_why(
    server: ServiceProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every answer takes 0.4 s and the check gets 0.2 s: it cannot finish, so ``lost`` is
    unknown and the run fails, instead of a result it never read (or a wait without end)."""
    monkeypatch.setattr(checks, "CHECK_BASE_SECONDS", 0.2)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    fault = {"mode": "latency", "ms": 400}
    httpx.put(server.url + "/admin/fault", json=fault, headers=headers).raise_for_status()
    options = ("--name", "w2", "--tasks", "2", "--errors", "0", "--concurrency", "4")
    code, report = run_client(tmp_path, server.url, *options)
    assert code == 1
    assert report["lost"] is None
    assert report["tasks"]["check_error"] == "not done within 0.2s (looking for 2 tasks)"
    assert "lost: unknown (not done within 0.2s (looking for 2 tasks))" in capsys.readouterr().out


def test_a_balancer_naming_a_new_server_in_each_answer_fills_no_memory() -> None:
    """X-Upstream-Server is network text: 5,000 different names of 10,000 characters are
    counted under at most MAX_SERVERS names cut to MAX_SERVER_NAME, the rest as others, and
    the report shows that bucket in words."""
    recorder = Recorder()
    for n in range(5_000):
        recorder.record(Kind.LIST, "200", 0.001, f"{n}-" + "x" * 10_000)
    assert len(recorder.servers) == stats.MAX_SERVERS + 1
    assert max(map(len, recorder.servers)) == stats.MAX_SERVER_NAME
    assert recorder.servers[stats.OTHER_SERVERS] == 5_000 - stats.MAX_SERVERS
    assert sum(recorder.servers.values()) == 5_000
    recorder.finish()
    config = ClientConfig(url="http://127.0.0.1:9", name="c", tasks=0)
    check = checks.LossCheck(lost_count=0)
    report = build_report(config, recorder, check, interrupted=False, run_id="r")
    screen = io.StringIO()
    render_report(report, Console(file=screen, width=300), "es")
    assert "(otros)" in screen.getvalue()


def test_a_run_stopped_by_a_signal_checks_only_within_its_grace(
    server: ServiceProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped (``ticslab up`` sends SIGKILL 5 s after SIGTERM), the check gets at most
    INTERRUPTED_CHECK_SECONDS, and says it did not finish instead of being killed mid-way."""
    monkeypatch.setattr(session, "INTERRUPTED_CHECK_SECONDS", 0.2)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    fault = {"mode": "latency", "ms": 400}
    httpx.put(server.url + "/admin/fault", json=fault, headers=headers).raise_for_status()
    report_path = tmp_path / "stopped.json"
    config = ClientConfig(
        url=server.url, name="w3", tasks=None, duration=60.0, errors=0.0, json_path=report_path
    )
    quiet = Console(file=io.StringIO())

    async def stopped_run() -> int:
        run = asyncio.create_task(session.run_session(config, quiet, quiet))
        await wait_until_async(
            lambda: tasks_file.exists() and "w3-" in tasks_file.read_text(),
            what="a first task created",
        )
        run.cancel()  # what the first SIGINT or SIGTERM does
        return await run

    tasks_file = tmp_path / "tasks.json"
    assert asyncio.run(stopped_run()) == 130
    report = json.loads(report_path.read_text())
    assert report["lost"] is None
    assert report["tasks"]["check_error"].startswith("not done within 0.2s")

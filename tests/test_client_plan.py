"""The client's pure parts: the operation mix, durations, percentiles, settings from env vars,
and how the loss check pages through a scripted task list."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from support import page_of

from services.cli import build_parser, main
from services.client import checks
from services.client.checks import LossCheck, check_losses
from services.client.cli import config_from_args
from services.client.config import ClientConfig, parse_duration
from services.client.plan import FORCED, Kind, Plan, operation_weights, task_title
from services.client.report import build_report
from services.client.runner import Load
from services.client.stats import Recorder
from services.common import percentile

pytestmark = pytest.mark.smoke  # also run at the lowest allowed versions (.ci/run)


def hand_out_all(plan: Plan, limit: int = 100_000) -> list[Kind]:
    kinds = []
    while (step := plan.next()) is not None and len(kinds) < limit:
        kinds.append(step.kind)
    return kinds


def test_a_tasks_run_hands_out_exactly_that_many_creates_then_stops() -> None:
    kinds = Counter(hand_out_all(Plan(errors=0.1, tasks=100)))
    assert kinds[Kind.CREATE] == 100
    assert kinds[Kind.LIST] and kinds[Kind.COMPLETE] and kinds[Kind.DELETE]
    forced = sum(kinds[kind] for kind in FORCED)
    assert forced == pytest.approx(0.1 * sum(kinds.values()), abs=2)
    assert max(kinds[kind] for kind in FORCED) - min(kinds[kind] for kind in FORCED) <= 1


def test_the_mix_is_interleaved_and_the_same_every_run() -> None:
    first = hand_out_all(Plan(errors=0.2, tasks=50))
    assert first == hand_out_all(Plan(errors=0.2, tasks=50))
    # Forced errors are spread over the run, not bunched at one end.
    forced_at = [i for i, kind in enumerate(first) if kind in FORCED]
    assert forced_at[0] < len(first) // 4 and forced_at[-1] > 3 * len(first) // 4


def test_no_forced_errors_at_share_zero_and_a_share_too_high_is_refused() -> None:
    assert not set(hand_out_all(Plan(errors=0.0, tasks=20))) & set(FORCED)
    with pytest.raises(ValueError, match=r"between 0 and 0\.9"):
        operation_weights(0.95)


def test_a_duration_run_plan_never_runs_out() -> None:
    plan = Plan(errors=0.1, tasks=None)
    assert len(hand_out_all(plan, limit=5000)) == 5000


def test_titles_are_unique_and_zero_padded() -> None:
    assert task_title("client1", 42) == "client1-000042"
    assert len({task_title("c", n) for n in range(1, 1001)}) == 1000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("30", 30.0), ("1.5s", 1.5), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-1s", "10 minutes"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_nearest_rank_percentiles() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) == 0.0
    assert percentile([7.0], 99) == 7.0


def test_every_setting_comes_from_its_env_var_so_compose_can_configure_a_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {
        "TICSLAB_URL": "http://balancer:8080",
        "TICSLAB_CLIENT_NAME": "client2",
        "TICSLAB_TASKS": "7",
        "TICSLAB_CONCURRENCY": "3",
        "TICSLAB_RATE": "25",
        "TICSLAB_ERRORS": "0.3",
        "TICSLAB_JSON": "out/report.json",
        "TICSLAB_WAIT": "1m",
        "TICSLAB_TIMEOUT": "2s",
        "TICSLAB_PROGRESS_EVERY": "500ms",
        "TICSLAB_THEN": "steady",
        "TICSLAB_STEADY_RATE": "2.5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = config_from_args(build_parser("client").parse_args(["client"]))
    assert config == ClientConfig(
        url="http://balancer:8080",
        name="client2",
        tasks=7,
        duration=None,
        concurrency=3,
        rate=25.0,
        errors=0.3,
        json_path=Path("out/report.json"),
        wait=60.0,
        timeout=2.0,
        progress_every=0.5,
        then="steady",
        steady_rate=2.5,
    )
    # The command line wins over the environment; a duration replaces the task count.
    argv = ["client", "--duration", "5s", "--rate", "0", "--name", "c3"]
    config = config_from_args(build_parser("client").parse_args(argv))
    assert (config.tasks, config.duration, config.rate, config.name) == (None, 5.0, 0.0, "c3")
    config = config_from_args(build_parser("client").parse_args(["client", "--then", "exit"]))
    assert config.then == "exit"
    # TICSLAB_DURATION makes a duration run even when TICSLAB_TASKS is set too.
    monkeypatch.setenv("TICSLAB_DURATION", "2m")
    config = config_from_args(build_parser("client").parse_args(["client"]))
    assert (config.tasks, config.duration) == (None, 120.0)


def test_a_bad_env_var_is_a_usage_error_like_a_bad_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TICSLAB_CONCURRENCY", "0")
    with pytest.raises(SystemExit) as exit_info:
        build_parser("client").parse_args(["client"])
    assert exit_info.value.code == 2
    assert "--concurrency" in capsys.readouterr().err


def test_defaults_are_the_handouts_hundred_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ("TICSLAB_TASKS", "TICSLAB_DURATION", "TICSLAB_URL", "TICSLAB_CLIENT_NAME")
    for name in (*names, "TICSLAB_THEN"):
        monkeypatch.delenv(name, raising=False)
    config = config_from_args(build_parser("client").parse_args(["client"]))
    assert (config.url, config.name, config.tasks) == ("http://localhost:8080", "client1", 100)
    assert config.then == "exit"  # the handout's one-shot run; Compose asks for steady


def test_a_loss_check_that_could_not_list_the_tasks_fails_the_run() -> None:
    recorder = Recorder()
    recorder.keep(1, 1)
    recorder.finish()
    check = LossCheck(checked=1, error="could not list the tasks")
    config = ClientConfig(url="http://127.0.0.1:9", name="c", tasks=1)
    report = build_report(config, recorder, check, interrupted=False, run_id="r")
    assert report["lost"] is None
    assert report["tasks"]["check_error"] == "could not list the tasks"
    assert (report["exit_code"], report["ok"]) == (1, False)


def test_a_bad_duration_or_task_count_variable_exits_2_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Read after parsing (--tasks and --duration exclude each other), so checked by run().
    monkeypatch.setenv("TICSLAB_DURATION", "soon")
    assert main(["client", "--url", "http://127.0.0.1:9"]) == 2
    assert "bad client setting" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--tasks", "0"],
        ["--errors", "1.5"],
        ["--rate", "-1"],
        ["--name", "cliente uno"],
        ["--tasks", "5", "--duration", "5s"],
        ["--wait", "soon"],
        ["--then", "later"],
        ["--steady-rate", "0"],
    ],
)
def test_bad_options_are_refused_with_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser("client").parse_args(["client", *argv])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


class ScriptedTasks:
    """``GET /api/tasks`` over ``count`` tasks titled ``t<id>``, paged as a task server does;
    ``between`` runs after each answer (to change the list, or fail, meanwhile)."""

    def __init__(self, count: int, between: Callable[[ScriptedTasks], None] = lambda s: None):
        self.tasks = [{"id": n, "title": f"t{n}"} for n in range(1, count + 1)]
        self.between = between
        self.offsets: list[int] = []
        self.failures = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.failures:
            self.failures -= 1
            return httpx.Response(500, json={"error": "simulated"})
        self.offsets.append(int(request.url.params["offset"]))
        answer = page_of(self.tasks, request.url.params)
        self.between(self)
        return answer

    async def check(self, kept_ids: list[int]) -> LossCheck:
        transport = httpx.MockTransport(self.handle)
        async with httpx.AsyncClient(base_url="http://b", transport=transport) as client:
            return await check_losses(client, [(n, f"t{n}") for n in kept_ids])


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "PAGE", 10)
    monkeypatch.setattr(checks, "OVERLAP", 3)
    monkeypatch.setattr(checks, "LIST_RETRY_DELAY", 0)


async def test_the_loss_check_reads_one_page_when_the_runs_tasks_are_the_newest(
    small_pages: None,
) -> None:
    server = ScriptedTasks(1000)
    check = await server.check([995, 998, 1000])
    assert server.offsets == [0]
    assert (check.lost_count, check.listed) == (0, 1000)  # listed: X-Total-Count


async def test_the_loss_check_pages_back_to_the_oldest_kept_task_and_no_further(
    small_pages: None,
) -> None:
    server = ScriptedTasks(100)
    del server.tasks[69]  # task 70 is lost
    check = await server.check([70, 75, 99])
    assert server.offsets == [0, 7, 14, 21]  # the fourth page reaches task 69: no further
    assert (check.lost_count, check.lost_titles, check.listed) == (1, ["t70"], 99)


async def test_tasks_deleted_between_two_pages_hide_no_kept_task(small_pages: None) -> None:
    def other_clients_delete_their_newest_extras(server: ScriptedTasks) -> None:
        del server.tasks[-2:]

    server = ScriptedTasks(100, other_clients_delete_their_newest_extras)
    check = await server.check(list(range(60, 81)))
    assert check.lost_count == 0 and check.error is None


async def test_a_flaky_list_is_retried_page_by_page_and_a_dead_one_is_an_error(
    small_pages: None,
) -> None:
    flaky = ScriptedTasks(30)
    flaky.failures = checks.LIST_ATTEMPTS - 1
    assert (await flaky.check([1])).lost_count == 0
    dead = ScriptedTasks(30)
    dead.failures = checks.LIST_ATTEMPTS
    check = await dead.check([1])
    assert check.lost_count is None and check.error is not None and "500" in check.error


async def test_a_server_that_does_not_page_is_read_once_whole() -> None:
    tasks = [{"id": n, "title": f"t{n}"} for n in range(1, 2001)]  # more than a page

    def whole(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=tasks)  # oldest first, no X-Total-Count

    transport = httpx.MockTransport(whole)
    async with httpx.AsyncClient(base_url="http://b", transport=transport) as client:
        check = await check_losses(client, [(1, "t1"), (2000, "t2000"), (2001, "t2001")])
    assert (check.lost_count, check.lost_titles, check.listed) == (1, ["t2001"], 2000)


async def test_a_list_in_the_mix_asks_for_the_newest_page_only() -> None:
    """The list grows with every run; the emulated users never read it, so they ask for 20."""
    asked: list[httpx.QueryParams] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            asked.append(request.url.params)
            return httpx.Response(200, json=[])
        if request.method == "POST":
            return httpx.Response(201, json={"id": 1, "title": "t"})
        return httpx.Response(200, json={})

    config = ClientConfig(url="http://b", name="c", tasks=20, errors=0, concurrency=1)
    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(base_url="http://b", transport=transport) as client:
        await Load(config, client, Recorder()).run()
    assert asked and set(map(str, asked)) == {"order=desc&limit=20"}


def test_idempotency_keys_are_random_and_kept_across_a_creates_retries() -> None:
    """A key that could be guessed could be sent first by someone else (squatting)."""
    keys: list[str] = []
    answers = iter([503, 201, 201])

    def server(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        return httpx.Response(next(answers), json={"id": len(keys), "title": "t"})

    async def two_creates() -> None:
        transport = httpx.MockTransport(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            config = ClientConfig(url="http://t", name="c1")
            load = Load(config, client, Recorder(), Plan(0, 2))
            load.limiter.wait = lambda: asyncio.sleep(0)  # type: ignore[method-assign]
            for _ in range(2):
                await load.create(Kind.CREATE, "same title")

    asyncio.run(two_creates())
    first, retried, second = keys
    assert first == retried  # the retry of one create repeats its key
    assert second != first  # the same title again is a new task with a new key
    assert len(first) >= 22 and "same" not in first and "c1" not in first


def test_the_steady_phase_is_unbounded_gentle_and_titled_apart() -> None:
    config = ClientConfig(
        url="http://balancer:8080",
        name="client1",
        tasks=100,
        concurrency=10,
        rate=0.0,
        json_path=Path("r.json"),
        then="steady",
        steady_rate=5.0,
    )
    steady = config.steady()
    assert (steady.tasks, steady.duration, steady.rate, steady.concurrency) == (None, None, 5.0, 2)
    assert (steady.name, steady.json_path, steady.then) == ("client1-steady", None, "exit")
    assert task_title(steady.name, 1) == "client1-steady-000001" != task_title(config.name, 1)
    assert (steady.url, steady.errors) == (config.url, config.errors)

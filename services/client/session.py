"""One run from start to end: wait for the balancer, load it, check for losses, report.

Ctrl+C (SIGINT) or ``docker stop`` (SIGTERM) cancels the run: the users stop, the loss check
still runs on what was created, and the report so far is printed. A second signal quits.

With ``--then steady`` a run that ended by itself goes on with gentle steady traffic after its
report until a signal stops it; then a short summary of that traffic is printed and the exit
code is the run's, so the report and its verdict are what a Compose client is remembered by.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import httpx
from rich.console import Console

from services.client.checks import (
    CHECK_MAX_SECONDS,
    LossCheck,
    check_budget,
    check_losses,
    wait_for_health,
)
from services.client.config import THEN_STEADY, ClientConfig
from services.client.i18n import TEXT
from services.client.plan import task_title
from services.client.progress import show_progress
from services.client.report import (
    EXIT_INTERRUPTED,
    build_report,
    render_report,
    render_steady,
    write_json,
)
from services.client.runner import Load, make_client
from services.client.stats import KeptTasks, Recorder
from services.common import printable
from services.lang import Translator

EXIT_NO_BALANCER = 2
# The steady phase's loss check runs after ``docker stop``'s SIGTERM: it must end within the
# 10 s Docker waits before SIGKILL, so it looks for the newest STEADY_KEPT_WINDOW tasks only
# (about an hour at 5 requests/s; a few hundred ms of reading) and gets at most
# STEADY_CHECK_SECONDS.
STEADY_CHECK_SECONDS = 8.0
STEADY_KEPT_WINDOW = 10_000
# A run stopped by a signal is on borrowed time too: ``ticslab up`` sends SIGKILL 5 s after its
# SIGTERM (services/launcher/supervisor.py), and a check cut short by SIGKILL says nothing.
INTERRUPTED_CHECK_SECONDS = 4.0


def _stop_on_signals(task: asyncio.Task[Any]) -> None:
    """First SIGINT/SIGTERM cancels ``task``; a second one raises KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            raise KeyboardInterrupt
        task.cancel()

    # On Windows there are no such handlers; asyncio.run's own Ctrl+C handling cancels too.
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, on_signal)


def _uncancel() -> None:
    """Take back a cancellation we handled, so later awaits in this task run normally."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def run_session(config: ClientConfig, console: Console, errors: Console) -> int:
    """The whole run; returns the exit code (0 ok, 1 failed, 2 no balancer, 130 interrupted)."""
    current = asyncio.current_task()
    assert current is not None
    _stop_on_signals(current)
    t = Translator(TEXT, config.lang)
    async with make_client(config) as client:
        try:
            reason = await wait_for_health(
                client,
                config.wait,
                lambda text: console.print(printable(text), markup=False),
                config.lang,
            )
        except asyncio.CancelledError:
            errors.print(t("interrupted_before"))
            return EXIT_INTERRUPTED
        if reason is not None:
            url = f"{config.base_url}/health"
            failed = t("no_balancer", url=url, wait=config.wait, reason=printable(reason))
            errors.print(failed, markup=False)
            return EXIT_NO_BALANCER

        recorder, check, interrupted, run_id = await _load(config, client, console)

    report = build_report(config, recorder, check, interrupted=interrupted, run_id=run_id)
    render_report(report, console, config.lang)
    if config.json_path is not None:
        write_json(report, config.json_path)
        console.print(t("report_written", path=config.json_path), markup=False)
    if config.then == THEN_STEADY and not interrupted:
        await run_steady(config.steady(), report, console)
    return int(report["exit_code"])


async def _load(
    config: ClientConfig,
    client: httpx.AsyncClient,
    console: Console,
    window: int | None = None,
    check_most: float | None = None,
) -> tuple[Recorder, LossCheck, bool, str]:
    """Load the balancer until the plan, the duration or a signal ends it, then look for the
    newest ``window`` (KEPT_WINDOW) tasks it created, for ``check_budget`` seconds (at most
    ``check_most``; by default CHECK_MAX_SECONDS, INTERRUPTED_CHECK_SECONDS after a signal):
    what was recorded, what the check found, whether a signal ended it, and the run's id."""
    recorder = Recorder(kept=KeptTasks(window))
    load = Load(config, client, recorder)
    interrupted = False
    try:
        async with show_progress(config, recorder, console):
            await load.run()
    except asyncio.CancelledError:
        interrupted = True
        _uncancel()
    recorder.finish()

    kept = [(task_id, task_title(config.name, n)) for task_id, n in recorder.kept.window()]
    if check_most is None:
        check_most = INTERRUPTED_CHECK_SECONDS if interrupted else CHECK_MAX_SECONDS
    within = check_budget(len(kept), check_most)
    t = Translator(TEXT, config.lang)
    try:
        async with asyncio.timeout(within):
            check = await check_losses(client, kept, config.lang)
    except asyncio.CancelledError:
        _uncancel()
        check = LossCheck(checked=len(kept), error=t("check_interrupted"))
    except TimeoutError:
        error = t("check_timeout", seconds=round(within, 1), checked=len(kept))
        check = LossCheck(checked=len(kept), error=error)
    return recorder, check, interrupted, load.run_id


async def run_steady(config: ClientConfig, run: dict[str, Any], console: Console) -> None:
    """Gentle traffic with ``config`` (``ClientConfig.steady()``) until a signal stops it, then
    its summary and the verdict of ``run``, the report printed before it."""
    starting = Translator(TEXT, config.lang)(
        "steady_start",
        client=run["client"],
        rate=config.rate,
        users=config.concurrency,
        name=config.name,
        code=run["exit_code"],
    )
    console.print(starting, markup=False)
    async with make_client(config) as client:
        recorder, check, _, run_id = await _load(
            config, client, console, STEADY_KEPT_WINDOW, STEADY_CHECK_SECONDS
        )
    steady = build_report(config, recorder, check, interrupted=True, run_id=run_id)
    render_steady(steady, run, console, config.lang)

"""One run from start to end: wait for the balancer, load it, check for losses, report.

Ctrl+C (SIGINT) or ``docker stop`` (SIGTERM) cancels the run: the users stop, the loss check
still runs on what was created, and the report so far is printed. A second signal quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from rich.console import Console

from services.client.checks import LossCheck, check_losses, wait_for_health
from services.client.config import ClientConfig
from services.client.progress import show_progress
from services.client.report import EXIT_INTERRUPTED, build_report, render_report, write_json
from services.client.runner import Load, make_client
from services.client.stats import Recorder
from services.common import printable

EXIT_NO_BALANCER = 2


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
    async with make_client(config) as client:
        try:
            reason = await wait_for_health(
                client, config.wait, lambda text: console.print(printable(text), markup=False)
            )
        except asyncio.CancelledError:
            errors.print("interrupted before the run started / interrumpido antes de empezar")
            return EXIT_INTERRUPTED
        if reason is not None:
            errors.print(
                f"error: no balancer answered at {config.base_url}/health within"
                f" {config.wait:g}s ({printable(reason)}) / ningún balanceador respondió en"
                f" {config.base_url}/health en {config.wait:g}s",
                markup=False,
            )
            return EXIT_NO_BALANCER

        recorder = Recorder()
        load = Load(config, client, recorder)
        interrupted = False
        try:
            async with show_progress(config, recorder, console):
                await load.run()
        except asyncio.CancelledError:
            interrupted = True
            _uncancel()
        recorder.finish()

        try:
            check = await check_losses(client, recorder.kept)
        except asyncio.CancelledError:
            _uncancel()
            check = LossCheck(checked=len(recorder.kept), error="interrupted / interrumpido")

    report = build_report(config, recorder, check, interrupted=interrupted, run_id=load.run_id)
    render_report(report, console)
    if config.json_path is not None:
        write_json(report, config.json_path)
        console.print(f"report written to / informe escrito en {config.json_path}", markup=False)
    return report["exit_code"]

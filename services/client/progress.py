"""Progress while the load runs: a live bar on a terminal, one line now and then in logs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from services.client.config import ClientConfig
from services.client.i18n import TEXT
from services.client.stats import SERVER_KEYS, Recorder, StatsSnapshot
from services.common import printable
from services.lang import Translator

LIVE_REFRESH = 0.25  # seconds between two redraws of the live bar


def summary_line(config: ClientConfig, snap: StatsSnapshot) -> str:
    """One line for Compose logs, e.g. ``client1 | tasks/tareas 42/100 | 63 req (31.5/s) | ...``."""
    t = Translator(TEXT, config.lang)
    tasks = t("progress_tasks")
    if config.tasks is not None:
        done = f"{tasks} {snap.created}/{config.tasks}"
    elif config.duration is not None:
        done = f"{tasks} {snap.created}, {snap.elapsed:.0f}/{config.duration:g}s"
    else:  # the steady phase, until stopped
        done = f"{tasks} {snap.created}, {snap.elapsed:.0f}s"
    shares = " ".join(
        f"{t(SERVER_KEYS[name]) if name in SERVER_KEYS else printable(name)}"
        f" {100.0 * count / snap.requests:.0f}%"  # from X-Upstream-Server
        for name, count in sorted(snap.servers.items())
    )
    return (
        f"{config.name} | {done} | {snap.requests} req ({snap.rps:.1f}/s)"
        " | "
        + t("progress_errors", expected=snap.expected_errors, unexpected=snap.unexpected_errors)
        + (f" | {shares}" if shares else "")
    )


def _live_stats(snap: StatsSnapshot, lang: str) -> str:
    errors = Translator(TEXT, lang)(
        "live_errors", expected=snap.expected_errors, unexpected=snap.unexpected_errors
    )
    return f"{snap.requests} req {snap.rps:.0f}/s · {errors}"


async def _print_lines(config: ClientConfig, recorder: Recorder, console: Console) -> None:
    while True:
        await asyncio.sleep(config.progress_every)
        console.print(summary_line(config, recorder.snapshot()), markup=False, highlight=False)


def _redraw(config: ClientConfig, recorder: Recorder, progress: Progress, bar: TaskID) -> None:
    """Move the bar to the tasks created (of ``--tasks``) or the seconds run (of ``--duration``)."""
    snap = recorder.snapshot()
    done = snap.created if config.tasks is not None else min(snap.elapsed, config.duration or 0.0)
    progress.update(bar, completed=done, stats=_live_stats(snap, config.lang), refresh=True)


async def _live_bar(
    config: ClientConfig, recorder: Recorder, progress: Progress, bar: TaskID
) -> None:
    while True:
        _redraw(config, recorder, progress, bar)
        await asyncio.sleep(LIVE_REFRESH)


@contextlib.asynccontextmanager
async def show_progress(
    config: ClientConfig, recorder: Recorder, console: Console
) -> AsyncIterator[None]:
    """Show progress for as long as the ``async with`` body runs."""
    if not console.is_terminal:
        task = asyncio.create_task(_print_lines(config, recorder, console))
        try:
            yield
        finally:
            task.cancel()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if config.tasks is not None else TextColumn(""),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
    )
    total = float(config.tasks) if config.tasks is not None else config.duration
    with Progress(*columns, console=console, auto_refresh=False) as progress:
        bar = progress.add_task(config.name, total=total, stats="")
        task = asyncio.create_task(_live_bar(config, recorder, progress, bar))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            _redraw(config, recorder, progress, bar)  # the final counts

"""The checks around a run: is the balancer there before it, was any task lost after it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from services.client.runner import TASKS_PATH

HEALTH_PATH = "/health"
HEALTH_POLL = 0.5  # seconds between two health probes
LIST_ATTEMPTS = 8  # a list is safe to repeat; a flaky server should not hide the answer
LIST_RETRY_DELAY = 0.25
LOST_TITLES_SHOWN = 20


async def wait_for_health(
    client: httpx.AsyncClient, wait: float, say: Callable[[str], None]
) -> str | None:
    """Poll ``/health`` until it answers 200; None then, else why the last probe failed.

    ``say`` is told once, when the first probe fails, so a student knows why nothing happens.
    """
    url = str(client.base_url).rstrip("/") + HEALTH_PATH
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            response = await client.get(HEALTH_PATH, timeout=max(0.5, min(2.0, wait)))
        except httpx.HTTPError as error:
            reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        else:
            if response.status_code == 200:
                if announced:
                    say(f"{url} is up / está disponible")
                return None
            reason = f"answered {response.status_code}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return reason
        if not announced:
            say(f"waiting for {url} (up to {wait:g}s) / esperando al balanceador ... ({reason})")
            announced = True
        await asyncio.sleep(min(HEALTH_POLL, remaining))


@dataclass
class LossCheck:
    """The end-of-run check: which tasks answered 201 are missing from the task list."""

    checked: int = 0  # tasks this run created and looked for
    listed: int = 0  # tasks the list held in total (every client's)
    lost_titles: list[str] = field(default_factory=list)
    lost_count: int | None = None  # None when the list could not be fetched
    error: str | None = None


async def check_losses(client: httpx.AsyncClient, kept: list[tuple[int, str]]) -> LossCheck:
    """List the tasks once (a few attempts) and look for each kept id with its own title."""
    check = LossCheck(checked=len(kept))
    for attempt in range(LIST_ATTEMPTS):
        if attempt:
            await asyncio.sleep(LIST_RETRY_DELAY)
        try:
            response = await client.get(TASKS_PATH)
            response.raise_for_status()
            tasks = response.json()
            present = {task.get("id"): task.get("title") for task in tasks}
        except (httpx.HTTPError, ValueError, TypeError, AttributeError) as error:
            check.error = f"could not list the tasks / no se pudo listar las tareas: {error}"
            continue
        lost = [title for task_id, title in kept if present.get(task_id) != title]
        check.listed = len(tasks)
        check.lost_count = len(lost)
        check.lost_titles = sorted(lost)[:LOST_TITLES_SHOWN]
        check.error = None
        return check
    return check

"""The checks around a run: is the balancer there before it, was any task lost after it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.client.i18n import TEXT
from services.client.runner import TASKS_PATH
from services.lang import Translator
from services.waiting import wait_ready

HEALTH_PATH = "/health"
HEALTH_POLL = 0.5  # seconds between two health probes
LIST_ATTEMPTS = 8  # a list is safe to repeat; a flaky server should not hide the answer
LIST_RETRY_DELAY = 0.25
LOST_TITLES_SHOWN = 20
# The loss check reads the list newest first, a page at a time, and stops as soon as it has
# seen every task it looks for: the tasks of a long run are the newest, so a short run on a
# big list reads one page. Each page re-reads the last OVERLAP tasks of the one before, as
# tasks deleted meanwhile (other clients' extras) move the older ones up; MAX_PAGES bounds
# the check against a server that ignores the offset.
PAGE = 1000
OVERLAP = 100
MAX_PAGES = 1000
# The time the check gets: a base plus a share per task it looks for, bounded. A page of 1,000
# tasks takes ~15 ms from a task server holding 100,000 (~30 ms through the balancer): a second
# per 1,000 tasks leaves room for a busy machine and for other clients' tasks in between.
CHECK_BASE_SECONDS = 10.0
CHECK_SECONDS_PER_TASK = 0.001
CHECK_MAX_SECONDS = 120.0


def check_budget(looked_for: int, most: float = CHECK_MAX_SECONDS) -> float:
    """Seconds the loss check may take to look for ``looked_for`` tasks, at most ``most``."""
    return min(most, CHECK_BASE_SECONDS + CHECK_SECONDS_PER_TASK * looked_for)


async def wait_for_health(
    client: httpx.AsyncClient, wait: float, say: Callable[[str], None], lang: str = "en"
) -> str | None:
    """Poll ``/health`` until it answers 200; None then, else why the last probe failed.

    ``say`` is told once, when the first probe fails, so a student knows why nothing happens.
    """
    t = Translator(TEXT, lang)
    url = str(client.base_url).rstrip("/") + HEALTH_PATH
    announced: list[str] = []

    async def probe() -> str | None:
        try:
            response = await client.get(HEALTH_PATH, timeout=max(0.5, min(2.0, wait)))
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return None if response.status_code == 200 else f"answered {response.status_code}"

    def announce(reason: str) -> None:
        announced.append(reason)
        say(t("waiting", url=url, wait=wait, reason=reason))

    reason = await wait_ready(probe, wait, HEALTH_POLL, announce)
    if reason is None and announced:
        say(t("is_up", url=url))
    return reason


@dataclass
class LossCheck:
    """The end-of-run check: which tasks answered 201 are missing from the task list."""

    checked: int = 0  # tasks this run created and looked for
    listed: int = 0  # tasks the list held in total (every client's)
    lost_titles: list[str] = field(default_factory=list)
    lost_count: int | None = None  # None when the list could not be fetched
    error: str | None = None


class ListFailed(Exception):
    """A page of the task list could not be read, after every attempt."""


async def check_losses(
    client: httpx.AsyncClient, kept: list[tuple[int, str]], lang: str = "en"
) -> LossCheck:
    """Page through the tasks, newest first, until every kept id was seen, a page reaches
    below the oldest kept id or the list ends; then look for each id with its own title."""
    t = Translator(TEXT, lang)
    check = LossCheck(checked=len(kept))
    wanted = {task_id for task_id, _ in kept}
    oldest = min(wanted, default=0)
    present: dict[Any, Any] = {}
    offset = 0
    for _ in range(MAX_PAGES):
        try:
            page, total = await list_page(client, offset)
        except ListFailed as error:
            check.error = t("list_failed", error=error)
            return check
        present.update((task.get("id"), task.get("title")) for task in page)
        ids = [task_id for task in page if isinstance(task_id := task.get("id"), int)]
        check.listed = len(page) if total is None else total
        if (
            total is None  # a server that does not page answered the whole list
            or len(page) < PAGE
            or wanted <= present.keys()
            or min(ids, default=oldest) < oldest
        ):
            break
        offset += PAGE - OVERLAP
    else:
        check.error = t("too_many_pages", pages=MAX_PAGES)
        return check
    lost = [title for task_id, title in kept if present.get(task_id) != title]
    check.lost_count = len(lost)
    check.lost_titles = sorted(lost)[:LOST_TITLES_SHOWN]
    return check


async def list_page(
    client: httpx.AsyncClient, offset: int
) -> tuple[list[dict[str, Any]], int | None]:
    """The tasks at ``offset`` from the newest and ``X-Total-Count`` (None if the server does
    not page); up to LIST_ATTEMPTS attempts."""
    query: dict[str, str | int] = {"order": "desc", "limit": PAGE, "offset": offset}
    failure = ""
    for attempt in range(LIST_ATTEMPTS):
        if attempt:
            await asyncio.sleep(LIST_RETRY_DELAY)
        try:
            response = await client.get(TASKS_PATH, params=query)
            response.raise_for_status()
            page = response.json()
        except (httpx.HTTPError, ValueError) as error:
            failure = str(error)
            continue
        if isinstance(page, list) and all(isinstance(task, dict) for task in page):
            total = response.headers.get("x-total-count", "")
            return page, int(total) if total.isdigit() else None
        failure = f"GET {TASKS_PATH} did not answer a list of tasks"
    raise ListFailed(failure)

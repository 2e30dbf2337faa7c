"""One poll of the balancer: everything the screen shows, fetched together.

The app runs ``Poller.fetch`` in a single worker loop, so polls never overlap; a slow
balancer only makes the loop slower, it never piles requests up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dashboard.api import ApiError, BalancerClient, TaskList
from dashboard.history import SampleWindow

T = TypeVar("T")
MAX_BACKOFF = 5.0
# /tareas is proxied to a task server, so the dashboard's own reads show up in the
# balancer's counts; reading it at most every few seconds, and only the newest tasks the
# panel has room for, keeps that footprint small however many tasks there are.
TASKS_EVERY = 3.0
# With --auth-users the balancer refuses the dashboard's /tareas (401: it has no user), and
# each refusal is counted: then it is tried again only this rarely, so the dashboard's own
# 401s do not fill the errors panel the class is watching.
TASKS_REFUSED_EVERY = 60.0
TASKS_SHOWN = 40


@dataclass
class PollResult:
    """What one poll brought back; ``None`` means "not available this time, keep the old"."""

    status: dict[str, Any]
    errors: dict[str, Any] | None = None
    tasks: TaskList | None = None
    new_events: list[dict[str, Any]] = field(default_factory=list)
    events_restarted: bool = False
    # The chart view is open: did /history bring a new second, and does the balancer keep one?
    history_changed: bool = False
    history_missing: bool = False
    # The chart view was open when the poll ended: the table and panels under it wait.
    charts_open: bool = False


def backoff_delay(failures: int, refresh: float) -> float:
    """Seconds to wait after ``failures`` failed polls in a row: doubling, capped."""
    return min(refresh * 2.0 ** max(failures - 1, 0), max(refresh, MAX_BACKOFF))


async def optional(call: Awaitable[Any], shape: type[T]) -> T | None:
    """A secondary read: its failure, or an answer that is not the JSON ``shape`` expected,
    must not hide the rest of the screen (nor stop the poll loop)."""
    try:
        answer = await call
    except ApiError:
        return None
    return answer if isinstance(answer, shape) else None


class Poller:
    """Fetches ``/status`` (required) plus errors, new events and tasks (best effort), and
    while the chart view is open (``charts_open``) the seconds of ``/history`` not seen yet."""

    def __init__(self, client: BalancerClient) -> None:
        self.client = client
        self.last_event_id: int | None = None
        self._tasks_read_at = -TASKS_EVERY
        self._tasks_every = TASKS_EVERY
        self.history = SampleWindow()
        self.charts_open = False

    async def _tasks(self) -> TaskList | None:
        """The newest tasks, or None; a 401 (``--auth-users``) slows the reads down."""
        try:
            tasks = await self.client.tasks(TASKS_SHOWN)
        except ApiError as error:
            refused = error.status == 401
            self._tasks_every = TASKS_REFUSED_EVERY if refused else TASKS_EVERY
            return None
        self._tasks_every = TASKS_EVERY
        return tasks

    async def fetch(self) -> PollResult:
        status, errors, events = await asyncio.gather(
            self.client.status(),
            optional(self.client.error_stats(), dict),
            optional(self.client.events(self.last_event_id), dict),
            return_exceptions=True,
        )
        if isinstance(status, BaseException):
            raise status
        if not isinstance(status, dict) or not isinstance(status.get("servers"), list):
            raise ApiError("the answer to /status is not a ticslab balancer's status")
        result = PollResult(status=status, errors=_ok(errors))
        self._take_events(result, _ok(events))
        if result.events_restarted:
            self._take_events(result, await optional(self.client.events(), dict))
        # /tareas goes through the balancer to a task server: skip it when none is UP so
        # the dashboard does not add 503s to the error statistics the class is watching.
        now = time.monotonic()
        tasks_due = now - self._tasks_read_at >= self._tasks_every and not self.charts_open
        if status.get("servers_up", 0) > 0 and tasks_due:
            self._tasks_read_at = now
            result.tasks = await self._tasks()
        if self.charts_open:
            answer = await optional(self.client.history(self.history.since), dict)
            result.history_missing = answer is None and self.history.since is None
            result.history_changed = answer is not None and self.history.add(answer)
        result.charts_open = self.charts_open
        return result

    def _take_events(self, result: PollResult, answer: dict[str, Any] | None) -> None:
        if answer is None:
            return
        last_id = answer.get("last_id")
        if (
            self.last_event_id is not None
            and isinstance(last_id, int)
            and last_id < self.last_event_id
        ):
            # The balancer restarted and its event ids started again: reload the timeline.
            result.events_restarted = True
            self.last_event_id = None
            return
        listed = answer.get("events")
        events = [
            event
            for event in (listed if isinstance(listed, list) else [])
            if isinstance(event, dict) and isinstance(event.get("id"), int)
        ]
        if self.last_event_id is not None:
            events = [e for e in events if e["id"] > self.last_event_id]
        result.new_events.extend(events)
        if isinstance(last_id, int):
            self.last_event_id = last_id
        elif events:
            self.last_event_id = max(e["id"] for e in events)


def _ok(value: T | BaseException | None) -> T | None:
    return None if isinstance(value, BaseException) else value

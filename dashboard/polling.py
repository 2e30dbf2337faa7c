"""The poll controller: the one worker that polls the balancer, and the refresh it keeps.

Split from the app so that the app only composes and wires. The controller never touches a
widget: it sets the app's reactives (``polled`` after a poll that worked, ``poll_failed``
after one that did not) and each widget watches the ones it draws (``PollWatcher``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from textual import log
from textual.app import App
from textual.widget import Widget
from textual.worker import Worker

from dashboard.api import ApiError
from dashboard.i18n import Translator
from dashboard.poll import Poller, PollResult, backoff_delay
from services.common import printable

REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class Refresh:
    """How often the dashboard polls, and whether polling is paused (the status bar says)."""

    seconds: float
    paused: bool = False

    def step(self, step: int) -> Refresh:
        """The next slower (``step`` 1) or faster (-1) rate of ``REFRESH_STEPS``."""
        steps = REFRESH_STEPS
        nearest = min(range(len(steps)), key=lambda i: abs(steps[i] - self.seconds))
        return Refresh(steps[min(max(nearest + step, 0), len(steps) - 1)], self.paused)


@dataclass(frozen=True)
class PollFailure:
    """A poll that failed: ``state`` for the status bar (``disconnected``, ``poll_error``) and
    the banner's sentence, which says why and when the next poll comes."""

    state: str
    banner: str


class PollView(Protocol):
    """What the controller reads and sets on the app: its reactives (``DashboardState``)."""

    refresh_rate: Refresh
    polled: PollResult | None
    poll_failed: PollFailure | None

    @property
    def status(self) -> dict[str, Any] | None: ...


class PollController:
    """Runs ``Poller.fetch`` in a single worker loop: the next poll starts after the previous
    one has finished, so a slow balancer only makes the loop slower."""

    def __init__(self, view: PollView, poller: Poller, t: Translator, url: str) -> None:
        self.view = view
        self.poller = poller
        self.t = t
        self.url = url  # as shown: without credentials
        self.failures = 0
        self._wake = asyncio.Event()
        self._once_more = False  # one poll even while paused (opening the charts)

    def start(self, app: App[Any]) -> Worker[None]:
        """The loop in ``app``'s worker (again after it ended by an exception)."""
        return app.run_worker(
            self._loop, name="poll_loop", group="poll", exclusive=True, exit_on_error=False
        )

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            paused = self.view.refresh_rate.paused
            if paused and self.view.status is not None and not self._once_more:
                await self._wake.wait()
                continue
            self._once_more = False
            delay = await self.poll_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def poll_now(self, even_paused: bool = False) -> None:
        """Poll at once (after a control action, a rate change or resuming); ``even_paused``
        polls once while paused too (the history, or the tables, when the charts toggle)."""
        self._once_more = self._once_more or even_paused
        self._wake.set()

    async def poll_once(self) -> float:
        """One poll; returns how long to wait before the next one. Whatever it raises, the
        loop goes on: a poll that failed is said, and the next one backs off."""
        seconds = self.view.refresh_rate.seconds
        try:
            self.view.polled = await self.poller.fetch()
        except Exception as error:
            self.failures += 1
            delay = backoff_delay(self.failures, seconds)
            self.view.poll_failed = self.failure(error, delay)
            return delay
        self.failures = 0
        return seconds

    def failure(self, error: Exception, delay: float) -> PollFailure:
        """The last data stays on screen, dimmed, under a banner saying why and when the next
        poll comes: DISCONNECTED for the balancer's own refusals and silences (``ApiError``),
        POLL ERROR for anything else (an answer of the wrong shape, a bug), also logged."""
        if isinstance(error, ApiError):
            state, reason = "disconnected", error.message
        else:
            state, reason = "poll_error", printable(f"{type(error).__name__}: {error}")
            log.error("poll failed", reason, error)
        banner = self.t(
            f"banner_{state}",
            url=self.url,
            reason=reason,
            delay=f"{delay:g}",
            attempt=self.failures,
        )
        return PollFailure(state, banner)


class PollWatcher(Widget):
    """A widget that draws what the polls bring: ``show_poll`` after each poll that worked,
    ``show_failure`` after each one that failed (the app's ``polled`` and ``poll_failed``)."""

    def on_mount(self) -> None:
        self.watch(self.app, "polled", self._polled, init=False)
        self.watch(self.app, "poll_failed", self._failed, init=False)

    def _polled(self, result: PollResult | None) -> None:
        if result is not None:
            self.show_poll(result)

    def _failed(self, failure: PollFailure | None) -> None:
        if failure is not None:
            self.show_failure(failure)

    def show_poll(self, result: PollResult) -> None:
        """What this widget shows of a poll that worked."""

    def show_failure(self, failure: PollFailure) -> None:
        """What this widget shows of a poll that failed (most keep their last data)."""

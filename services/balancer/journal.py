"""The balancer's story in its log: one line per event (a server going DOWN or coming back, a
control action, an algorithm switch...), in the stack's language (``--lang``), and retries
that hid a failure from clients summed up every few seconds, never one line per request.

The lines go to the ``ticslab.balancer`` logger, which writes where uvicorn writes
(services/common.py ``log_config``: the same stream, made printable), so they show under
``ticslab up``, in ``data/logs/balancer.log`` and in ``docker-compose logs balancer``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from services.balancer.background import CrashReport, restarting
from services.balancer.messages import EventText
from services.common import DRAIN, MAINT, UP

log = logging.getLogger("ticslab.balancer")
# Retries are summed up over this many seconds: at most one line per pair of servers each.
SUMMARY_SECONDS = 5.0
# Pairs of servers (failed on, answered by) counted between two summaries: the servers are
# few, but discovery may bring and take many over a long class; past this many the summary
# comes early, so memory stays bounded and no retry goes untold.
MAX_PAIRS = 64
# Kinds told as warnings (something broke) or errors (a bug in the balancer); others are info.
WARNING_KINDS = frozenset({"algorithm_error", "algorithm_slow"})
ERROR_KINDS = frozenset({"failure"})


def level(event: dict[str, Any]) -> int:
    """WARNING for a server leaving rotation, an action or a rollout that failed, ERROR for a
    crashed background loop, INFO for the rest."""
    kind = event.get("kind")
    if kind in ERROR_KINDS:
        return logging.ERROR
    leaving = kind == "state" and event.get("to") not in (UP, DRAIN, MAINT)
    stopped = kind == "rollout" and event.get("phase") == "failed"
    if kind in WARNING_KINDS or leaving or stopped or event.get("ok") is False:
        return logging.WARNING
    return logging.INFO


class Journal:
    """Says every event as it is recorded (``EventLog``'s listener), and counts retries that
    hid a failure until ``flush`` says them, one line per pair of servers."""

    def __init__(self, lang: str, seconds: float = SUMMARY_SECONDS) -> None:
        self.text = EventText(lang)
        self.seconds = seconds
        self._retried: Counter[tuple[str, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def start(self, report: CrashReport) -> None:
        """Flush every ``seconds`` in a loop that a crash restarts (and ``report``s)."""
        summaries = restarting("retry summary", self.run, report)
        self._task = asyncio.create_task(summaries, name="retry summary")

    async def stop(self) -> None:
        """End the loop and say what it had not said yet."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.flush()

    def event(self, event: dict[str, Any]) -> None:
        """One line for ``event``; a sentence that cannot be said is a logged bug, never a
        state change that fails halfway (the listener runs inside ``EventLog.add``)."""
        try:
            sentence = self.text.sentence(event)
        except Exception:  # a bug in the catalogue, by definition: the tests say every event
            log.exception("could not say the %s event %s", event.get("kind"), event.get("id"))
            return
        log.log(level(event), "%s", sentence)

    def retried(self, failed: str, server: str) -> None:
        """A request failed on ``failed`` and ``server`` answered it: the client never knew."""
        pair = (server, failed)
        if pair not in self._retried and len(self._retried) >= MAX_PAIRS:
            self.flush()
        self._retried[pair] += 1

    def flush(self) -> None:
        """One line per pair of servers with retries since the last flush, then forget them."""
        for (server, failed), count in sorted(self._retried.items()):
            log.info("%s", self.text.retried(server, failed, count, self.seconds))
        self._retried.clear()

    async def run(self) -> None:
        """Flush every ``seconds`` (a background loop, services/balancer/background.py)."""
        while True:
            await asyncio.sleep(self.seconds)
            self.flush()

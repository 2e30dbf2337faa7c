"""The timeline the dashboard polls: the start, state changes, control actions, algorithm
switches, discovered servers, statistics resets, background loops that crashed and a
plugin algorithm's failed or slow picks."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from services.common import utc_now_iso

KEPT_EVENTS = 500
# Text an event keeps of one field (a reason, a detail, a server's answer): enough for a
# sentence, so 500 events stay small whatever the network sent.
EVENT_TEXT = 300
# Every kind ``add`` accepts: a new kind is declared here, and the tests fail until it has a
# sentence in both languages (services/balancer/messages.py, ``ev_<kind>``).
KINDS = (
    "start",
    "state",
    "control",
    "algorithm",
    "algorithm_error",
    "algorithm_slow",
    "weight",
    "discovery",
    "stats",
    "failure",
    "rollout",  # a rollout's start, each step, its end (services/balancer/rollout.py)
)
# Every ``reason_code`` a ``state`` event may carry: the English ``reason`` is for people, the
# code (and the fields it names, docs/api.md) lets the log and the dashboard say it in Spanish.
# A new code is declared here, and the tests fail until it has a sentence in both languages.
REASON_CODES = (
    "first_check_passed",  # detail
    "checks_passed",  # checks
    "checks_failed",  # checks, detail
    "refused_live",
    "live_failures",  # failures, detail
    "ejected",  # answers, seconds
    "ejection_over",
    "set_drain",
    "set_maint",
    "set_ready",
)


Listener = Callable[[dict[str, Any]], None]


def clipped(text: str, length: int = EVENT_TEXT) -> str:
    """``text`` cut to ``length`` characters, saying so."""
    return text if len(text) <= length else text[: length - 1] + "…"


class EventLog:
    """Numbered events, oldest first; only the last ``KEPT_EVENTS`` are kept. ``listener``
    hears each one as it is recorded (the balancer's log lines, journal.py)."""

    def __init__(self, keep: int = KEPT_EVENTS, listener: Listener | None = None) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=keep)
        self.last_id = 0
        self.listener = listener

    def add(self, kind: str, server: str | None = None, **fields: Any) -> dict[str, Any]:
        """Record one event and return it: ``id``, ``time``, ``kind``, ``server`` + fields."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(KINDS)}")
        if fields.get("reason_code") not in (None, *REASON_CODES):
            raise ValueError(f"undeclared reason code {fields['reason_code']!r}")
        self.last_id += 1
        event = {"id": self.last_id, "time": utc_now_iso(), "kind": kind, "server": server}
        event.update({k: clipped(v) if isinstance(v, str) else v for k, v in fields.items()})
        self._events.append(event)
        if self.listener is not None:
            self.listener(event)
        return event

    def since(self, event_id: int = 0) -> list[dict[str, Any]]:
        """Events with ``id > event_id``, oldest first."""
        return [event for event in self._events if event["id"] > event_id]

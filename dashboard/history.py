"""The balancer's last five minutes as the chart view draws them: per-second samples from
``/history`` and markers from the events timeline.

Plain data, no Textual, so it is tested directly. Everything comes from the network: a
sample or an event of the wrong shape is skipped, a number that is not finite counts as none.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from statistics import fmean
from typing import Any

from dashboard.format import real
from services.common import DOWN, DRIVER_ACTIONS, UP, clock_stepped_back

WINDOW_SECONDS = 300  # what the charts show
MAX_SERVERS = 16  # lines drawn; a balancer may list more, the charts show the first ones
MAX_ERROR_TYPES = 4  # the most frequent types get a line each, the rest one "other" line
LABEL_LENGTH = 14  # a marker's server name, and its word once translated, on the time axis
DETAIL_LENGTH = 64  # a marker's word as sent: kept whole to be translated, then fitted
# Numbers beyond these are a misbehaving balancer's: cut, so the chart never overflows.
MAX_COUNT = 1e9
MAX_MS = 1e7


@dataclass(frozen=True)
class Sample:
    """One second: tries per server, its p95 per server (ms), errors by type."""

    t: int
    tries: dict[str, float]
    p95_by_server: dict[str, float]
    errors: dict[str, int]


@dataclass(frozen=True)
class Marker:
    """An event on the time axis: ``x`` seconds from the newest sample (0 or less)."""

    x: float
    kind: str  # "down", "up", "action", "fault", "algorithm"
    server: str
    detail: str


class SampleWindow:
    """The newest ``WINDOW_SECONDS`` samples, by second; ``since`` is what to ask for next."""

    def __init__(self) -> None:
        self._samples: dict[int, Sample] = {}
        self.servers: list[str] = []  # drawn: the balancer's, then any gone but in the window
        self._colours: dict[str, int] = {}  # a server's colour, kept from when it was first seen

    @property
    def since(self) -> int | None:
        return max(self._samples) if self._samples else None

    @property
    def samples(self) -> list[Sample]:
        return [self._samples[t] for t in sorted(self._samples)]

    def add(self, answer: Any) -> bool:
        """Take a ``/history`` answer; True when it brought a new second (or, the balancer's
        clock having stepped back, emptied the history so the next read starts again)."""
        if not isinstance(answer, dict):
            return False
        now = real(answer.get("now"))
        if now is not None and self.since is not None and clock_stepped_back(now, self.since):
            self._samples.clear()
            return True
        fresh = [s for s in map(_sample, _list(answer.get("samples"))) if s is not None]
        fresh = [s for s in fresh if s.t not in self._samples]
        for sample in fresh:
            self._samples[sample.t] = sample
        if self._samples:
            oldest = max(self._samples) - WINDOW_SECONDS
            for t in [t for t in self._samples if t <= oldest]:
                del self._samples[t]
        listed = answer.get("servers")
        self._name_servers(listed if isinstance(listed, list) else [])
        return bool(fresh)

    def colour(self, server: str) -> int:
        """The server's colour number: the same for as long as it is drawn."""
        return self._colours.get(server, 0)

    def _name_servers(self, listed: list[Any]) -> None:
        """The balancer's servers first, then those gone that still have seconds in the
        window (a server removed by discovery keeps its line until it scrolls off)."""
        in_window = {name for sample in self._samples.values() for name in sample.tries}
        names = [name for name in listed if isinstance(name, str)]
        names += sorted(in_window - set(names))
        self.servers = names[:MAX_SERVERS]
        for name in [n for n in self._colours if n not in self.servers]:
            del self._colours[name]
        for name in self.servers:
            if name not in self._colours:
                taken = set(self._colours.values())
                self._colours[name] = next(i for i in range(MAX_SERVERS) if i not in taken)

    def xs(self) -> list[int]:
        """Each sample's second, as seconds before the newest (so the axis ends at 0)."""
        newest = self.since or 0
        return [t - newest for t in sorted(self._samples)]

    def tries(self, server: str) -> list[float]:
        return [sample.tries.get(server, 0.0) for sample in self.samples]

    def p95(self, server: str) -> tuple[list[int], list[float]]:
        """The seconds in which ``server`` answered, and its p95 in each (ms)."""
        newest = self.since or 0
        points = [
            (s.t - newest, s.p95_by_server[server])
            for s in self.samples
            if server in s.p95_by_server
        ]
        return [x for x, _ in points], [y for _, y in points]

    def errors(self) -> dict[str, list[int]]:
        """Errors per second by type: the most frequent types in the window, then "other"."""
        totals: Counter[str] = Counter()
        for sample in self.samples:
            totals.update(sample.errors)
        shown = [kind for kind, _ in totals.most_common(MAX_ERROR_TYPES)]
        lines = {kind: [s.errors.get(kind, 0) for s in self.samples] for kind in shown}
        if len(totals) > len(shown):
            lines["other"] = [
                sum(n for kind, n in s.errors.items() if kind not in shown) for s in self.samples
            ]
        return lines

    def markers(self, events: Iterable[Any]) -> list[Marker]:
        """The events of the window worth a line on the charts: a server going DOWN or UP,
        a kill/stop/start/pause, a fault switched, the algorithm changed."""
        newest = self.since
        if newest is None:
            return []
        found = []
        for event in events:
            marker = _marker(event, newest)
            if marker is not None and -WINDOW_SECONDS <= marker.x <= 1:
                found.append(marker)
        return found


class Trail:
    """A value polled now and then (a server's rate) as ``points`` points of ``step`` seconds
    each: the sparkline covers the same ``points x step`` seconds whatever the refresh rate.

    A point is the mean of the polls in its step; a step no poll fell in (a refresh slower
    than ``step``) repeats the one before, as the rate held until the next poll.
    """

    def __init__(self, points: int, step: float) -> None:
        self.points, self.step = points, step
        self._polls: deque[tuple[float, float]] = deque()

    def add(self, now: float, value: float) -> None:
        """One poll; the newest poll before the span stays, as what its first step held."""
        self._polls.append((now, value))
        start = now - self.points * self.step
        while len(self._polls) > 1 and self._polls[1][0] <= start:
            self._polls.popleft()

    def values(self, now: float) -> list[float]:
        """The points, oldest first, from the first step a poll covers (so fewer at first)."""
        steps: list[list[float]] = [[] for _ in range(self.points)]
        before: list[float] = []  # the value held when the span began, if a poll says it
        for at, value in self._polls:
            age = int((now - at) // self.step)
            if age >= self.points:
                before = [value]
            elif age >= 0:
                steps[self.points - 1 - age].append(value)
        found: list[float] = []
        for polls in steps:
            if polls:
                found.append(fmean(polls))
            elif found or before:
                found.append((found or before)[-1])
        return found


def fit(text: str, length: int = LABEL_LENGTH) -> str:
    """``text`` cut to ``length`` cells with an ellipsis; cut after it is translated, so that
    the catalogue still finds the whole word."""
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


def thin(
    xs: list[int],
    ys: list[float],
    step: int,
    origin: int = 0,
    combine: Callable[[list[float]], float] = fmean,
) -> tuple[list[int], list[float]]:
    """One point per ``step`` seconds, for the seconds ``origin + x`` in the same multiple of
    ``step`` (so a point keeps its value as time goes on), at the newest second of each: a
    chart ``step`` times cheaper to draw, at no loss a screen of its width shows."""
    if step <= 1:
        return xs, ys
    groups: dict[int, list[tuple[int, float]]] = {}
    for x, y in zip(xs, ys, strict=True):
        groups.setdefault((origin + x) // step, []).append((x, y))
    points = [(group[-1][0], combine([y for _, y in group])) for group in groups.values()]
    return [x for x, _ in points], [y for _, y in points]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _sample(raw: Any) -> Sample | None:
    if not isinstance(raw, dict) or isinstance(raw.get("t"), bool):
        return None
    t = raw.get("t")
    if not isinstance(t, int):
        return None
    servers = _dict(raw.get("servers"))
    tries: dict[str, float] = {}
    p95s: dict[str, float] = {}
    for name, numbers in list(servers.items())[:MAX_SERVERS]:
        if isinstance(name, str) and isinstance(numbers, dict):
            tries[name] = min(real(numbers.get("tries")) or 0.0, MAX_COUNT)
            if (p95 := real(numbers.get("p95_ms"))) is not None:
                p95s[name] = min(p95, MAX_MS)
    errors = _dict(raw.get("errors"))
    counted = {
        kind: int(min(n, MAX_COUNT))
        for kind, value in errors.items()
        if isinstance(kind, str) and (n := real(value)) is not None and n > 0
    }
    return Sample(t, tries, p95s, counted)


def _marker(event: Any, newest: int) -> Marker | None:
    if not isinstance(event, dict):
        return None
    when = _epoch(event.get("time"))
    if when is None:
        return None
    x = when - newest
    server = str(event.get("server") or "")[:LABEL_LENGTH]
    kind = event.get("kind")
    if kind == "state" and event.get("to") in (DOWN, UP):
        return Marker(x, str(event["to"]).lower(), server, "")
    if kind == "control" and event.get("ok") is not False:
        action = str(event.get("action") or "")
        if action == "fault":
            fault = _dict(event.get("fault"))
            return Marker(x, "fault", server, str(fault.get("mode") or "")[:DETAIL_LENGTH])
        if action in DRIVER_ACTIONS:
            return Marker(x, "action", server, action)
    if kind == "algorithm":
        return Marker(x, "algorithm", "", str(event.get("to") or "")[:DETAIL_LENGTH])
    return None


def _epoch(stamp: Any) -> float | None:
    """Unix seconds of an ISO 8601 stamp (the balancer's ``time``), or None."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None

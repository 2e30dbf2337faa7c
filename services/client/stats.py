"""What happened during a run: every request's outcome, the tasks that must stay, timings."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from services.client.plan import FORCED, Kind, is_expected

UNEXPECTED_SAMPLES = 10
# The --json report's key for answers without X-Upstream-Server, or no answer (kept as it was:
# scripts read it); the printed report words it in its language.
NO_SERVER_HEADER = "(none / ninguno)"


@dataclass
class Snapshot:
    """The running totals the progress display shows."""

    elapsed: float
    requests: int
    created: int
    expected_errors: int
    unexpected_errors: int
    servers: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class Recorder:
    """Counts outcomes as they come; everything here is touched from one event loop only."""

    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    servers: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    unexpected_samples: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=UNEXPECTED_SAMPLES)
    )
    # (id, title) of each task that stays; the loss check wants both back
    kept: list[tuple[int, str]] = field(default_factory=list)
    creates_failed: int = 0
    retries: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def record(
        self,
        kind: Kind,
        status: str,
        latency: float,
        server: str | None,
        detail: str = "",
    ) -> None:
        """Count one request; ``status`` is the code (``"201"``) or a transport failure name."""
        self.by_kind.setdefault(kind.value, Counter())[status] += 1
        self.latencies.append(latency)
        self.servers[server or NO_SERVER_HEADER] += 1
        if not is_expected(kind, status):
            self.unexpected[status] += 1
            self.unexpected_samples.append(
                {"kind": kind.value, "status": status, "server": server, "detail": detail[:200]}
            )
        elif kind in FORCED:
            self.expected[status] += 1

    def keep(self, task_id: int, title: str) -> None:
        """Remember a task the server said it created, for the loss check at the end."""
        self.kept.append((task_id, title))

    def finish(self) -> None:
        self.finished = time.monotonic()

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            elapsed=self.elapsed,
            requests=self.requests,
            created=len(self.kept),
            expected_errors=sum(self.expected.values()),
            unexpected_errors=sum(self.unexpected.values()),
            servers=dict(self.servers),
        )

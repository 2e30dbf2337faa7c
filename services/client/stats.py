"""What happened during a run: every request's outcome, the tasks that must stay, timings.

Everything here is bounded, whatever the run's length: a steady client runs for days (5/s is
~430,000 requests a day), so latencies go into a sketch of fixed size and the kept tasks into a
window of the newest ones, with exact counts beside them.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from ddsketch import LogCollapsingLowestDenseDDSketch

from services.client.plan import FORCED, Kind, is_expected

UNEXPECTED_SAMPLES = 10
# The --json report's key for answers without X-Upstream-Server, or no answer (kept as it was:
# scripts read it); the printed report words it in its language.
NO_SERVER_HEADER = "(none / ninguno)"
# X-Upstream-Server comes from the network: the recorder counts at most MAX_SERVERS names, each
# cut at MAX_SERVER_NAME characters, and every answer from a further name under OTHER_SERVERS.
MAX_SERVERS = 32
MAX_SERVER_NAME = 100
OTHER_SERVERS = "(others / otros)"
# What the report and the progress line call those two keys (services/client/i18n.py).
SERVER_KEYS = {NO_SERVER_HEADER: "no_server_header", OTHER_SERVERS: "other_servers"}


# Every percentile the report prints is within 1 % of the exact nearest-rank one
# (services.common.percentile on every latency); the sketch then holds at most BIN_LIMIT bins,
# which at 1 % span 1 ns to 10^8 s, so it never has to merge any.
RELATIVE_ACCURACY = 0.01
BIN_LIMIT = 2048
# The newest created tasks the loss check looks for by id and title: 1.6 MB at most (two 8-byte
# integers each), and about 100 pages of the task list to read back.
KEPT_WINDOW = 100_000
LARGEST_ID = 2**63 - 1  # what an id the window keeps can be (array type "q")


class Latencies:
    """Count, sum, maximum and a DDSketch of the latencies (s): memory that does not grow."""

    def __init__(self) -> None:
        self._sketch = LogCollapsingLowestDenseDDSketch(RELATIVE_ACCURACY, bin_limit=BIN_LIMIT)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self._sketch.add(seconds)
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The nearest-rank percentile (``q`` in 0..100), as services.common.percentile
        defines it, within RELATIVE_ACCURACY; 0.0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q / 100.0 * self.count))
        # DDSketch takes the value at 0-based rank floor(quantile * (count - 1)): aim at the
        # middle of the rank wanted, so rounding cannot move it to the one before.
        quantile = min(1.0, (rank - 0.5) / (self.count - 1)) if self.count > 1 else 1.0
        return min(self._sketch.get_quantile_value(quantile) or 0.0, self.max)


class KeptTasks:
    """How many tasks the server said it created, and the id and number of the newest
    ``capacity`` (KEPT_WINDOW) of them in a ring of two arrays: what the loss check looks for."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = KEPT_WINDOW if capacity is None else capacity
        self.count = 0
        self._ids = array("q")
        self._numbers = array("q")

    def add(self, task_id: int, number: int) -> None:
        if len(self._ids) < self.capacity:
            self._ids.append(task_id)
            self._numbers.append(number)
        else:
            slot = self.count % self.capacity
            self._ids[slot] = task_id
            self._numbers[slot] = number
        self.count += 1

    def __len__(self) -> int:
        """How many are in the window (what the loss check can look for)."""
        return len(self._ids)

    def window(self) -> list[tuple[int, int]]:
        """(id, number) of each task in the window."""
        return list(zip(self._ids, self._numbers, strict=True))


@dataclass
class StatsSnapshot:
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
    latencies: Latencies = field(default_factory=Latencies)
    servers: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    unexpected_samples: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=UNEXPECTED_SAMPLES)
    )
    kept: KeptTasks = field(default_factory=KeptTasks)  # the tasks that stay
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
        self.latencies.add(latency)
        self.servers[self._server_key(server)] += 1
        if not is_expected(kind, status):
            self.unexpected[status] += 1
            self.unexpected_samples.append(
                {"kind": kind.value, "status": status, "server": server, "detail": detail[:200]}
            )
        elif kind in FORCED:
            self.expected[status] += 1

    def _server_key(self, server: str | None) -> str:
        """The key ``server`` is counted under: bounded in number and in length."""
        name = server[:MAX_SERVER_NAME] if server else NO_SERVER_HEADER
        if name in self.servers or len(self.servers) < MAX_SERVERS:
            return name
        return OTHER_SERVERS

    def keep(self, task_id: int, number: int) -> None:
        """Remember a task the server said it created (its title is the plan's ``number``),
        for the loss check at the end."""
        self.kept.add(task_id, number)

    def finish(self) -> None:
        self.finished = time.monotonic()

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def requests(self) -> int:
        return self.latencies.count

    def snapshot(self) -> StatsSnapshot:
        return StatsSnapshot(
            elapsed=self.elapsed,
            requests=self.requests,
            created=self.kept.count,
            expected_errors=sum(self.expected.values()),
            unexpected_errors=sum(self.unexpected.values()),
            servers=dict(self.servers),
        )

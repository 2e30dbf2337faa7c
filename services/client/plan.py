"""What the virtual users do: the mix of operations, in a fixed, evenly interleaved order.

The order is deterministic (smooth weighted round robin, as nginx picks upstreams), so a run
with ``--tasks 100 --errors 0.1`` always sends the same number of each kind of request and
the counts in the report can be compared with the servers' ``/errors/stats``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """A kind of request; the report counts requests by these names."""

    CREATE = "create"  # a task that stays: the ones ``--tasks`` counts
    EXTRA = "extra"  # a task created only to be completed or deleted
    LIST = "list"
    COMPLETE = "complete"
    DELETE = "delete"
    FORCE_400 = "force_400"  # a bad body
    FORCE_404 = "force_404"  # a missing id
    FORCE_500 = "force_500"  # the course's simulate-error route


FORCED = (Kind.FORCE_400, Kind.FORCE_404, Kind.FORCE_500)

# Statuses each kind is meant to get; anything else is an unexpected error.
# A create may be answered 200 when the server replays an earlier answer (Idempotency-Key).
EXPECTED_STATUS: dict[Kind, frozenset[int]] = {
    Kind.CREATE: frozenset({200, 201}),
    Kind.EXTRA: frozenset({200, 201}),
    Kind.LIST: frozenset({200}),
    Kind.COMPLETE: frozenset({200}),
    Kind.DELETE: frozenset({200}),
    Kind.FORCE_400: frozenset({400}),
    Kind.FORCE_404: frozenset({404}),
    Kind.FORCE_500: frozenset({500}),
}


def is_expected(kind: Kind, status: str) -> bool:
    """Whether ``status`` (a code such as ``"201"``, or a transport failure's name) is an answer
    ``kind`` is meant to get."""
    return status.isdigit() and int(status) in EXPECTED_STATUS[kind]


# Shares of the operations that are not forced errors. COMPLETE and DELETE operations work on
# an extra task they create first (and COMPLETE deletes it afterwards), so only CREATE stays.
NORMAL_MIX: dict[Kind, float] = {
    Kind.CREATE: 0.7,
    Kind.LIST: 0.1,
    Kind.COMPLETE: 0.1,
    Kind.DELETE: 0.1,
}

MAX_ERROR_SHARE = 0.9


def operation_weights(errors: float) -> dict[Kind, float]:
    """Each operation's share of all operations, forced errors split evenly in three."""
    if not 0.0 <= errors <= MAX_ERROR_SHARE:
        raise ValueError(f"the error share must be between 0 and {MAX_ERROR_SHARE}, not {errors}")
    weights = {kind: share * (1.0 - errors) for kind, share in NORMAL_MIX.items()}
    weights.update(dict.fromkeys(FORCED, errors / len(FORCED)))
    return {kind: weight for kind, weight in weights.items() if weight > 0}


@dataclass(frozen=True)
class Step:
    """One operation for a virtual user; ``number`` counts operations of the same kind from 1."""

    kind: Kind
    number: int


class Plan:
    """Hands out operations until ``tasks`` creates have been handed out (or forever)."""

    def __init__(self, errors: float, tasks: int | None) -> None:
        self._weights = operation_weights(errors)
        self._current = dict.fromkeys(self._weights, 0.0)
        self._total = sum(self._weights.values())
        self._tasks = tasks
        self._counts = dict.fromkeys(Kind, 0)

    def next(self) -> Step | None:
        """The next operation, or None once every task of a ``--tasks`` run is handed out."""
        if self._tasks is not None and self._counts[Kind.CREATE] >= self._tasks:
            return None
        kind = self._pick()
        self._counts[kind] += 1
        return Step(kind, self._counts[kind])

    def _pick(self) -> Kind:
        for kind, weight in self._weights.items():
            self._current[kind] += weight
        kind = max(self._current, key=self._current.__getitem__)
        self._current[kind] -= self._total
        return kind


def task_title(client: str, number: int) -> str:
    """The unique title of a task that stays, e.g. ``client1-000042``."""
    return f"{client}-{number:06d}"


def extra_title(client: str, number: int) -> str:
    """The title of a task created only to be completed or deleted."""
    return f"{client}-extra-{number:06d}"

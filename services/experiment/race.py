"""``ticslab experiment race``: the course's earlier lesson. Two servers share one tasks.json;
two clients send 100 concurrent POSTs each, once with the file lock and once with the
``nolock`` fault mode (each create reads the file, adds its task and writes the file back,
with no lock, as naive code does). Whatever a 201 promised and the file does not hold was lost.

With ``--storage postgresql://...`` the same runs follow on a throwaway database of that
server: with a transaction (the normal create), and with ``nolock``'s database twin (``SELECT
max(id) + 1``, then a write, with no transaction), which loses tasks the same way.
"""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from services.experiment.lab import Lab, throwaway_stack
from services.experiment.load import Call, Outcome, run_load
from services.experiment.result import LAB, REPEATS, Claim, Result, combine
from services.experiment.settings import Problems, check_range
from services.taskserver.storage import POSTGRES_INSTALL, POSTGRES_SCHEMES
from services.taskserver.storage.postgres_url import redacted

STORAGES = {"locked": "none", "unlocked": "nolock"}  # storage -> the servers' fault mode
DATABASE_STORAGES = {"transaction": "none", "no_transaction": "nolock"}  # with --storage
MAX_SECONDS = 30.0  # per phase
UNLOCKED_LOSS = 10.0  # %: "loses tasks" needs at least this share of the 201s lost, each run
FIGURES = ["sent", "expected", "stored", "lost", "unanswered", "duplicate_ids", "by_server"]


@dataclass
class RaceSettings:
    clients: int = 2
    posts: int = 100  # per client, all at once
    repeat: int = REPEATS
    storage: str | None = None  # a PostgreSQL server's URL: the database rows too

    def problems(self) -> Problems:
        return [
            *check_range("--clients", self.clients, 1, 8),
            *check_range("--posts", self.posts, 1, 500),
            *check_range("--repeat", self.repeat, 1, 10),
            *storage_problems(self.storage),
        ]


def storage_problems(storage: str | None) -> Problems:
    """``--storage`` names a PostgreSQL server this machine can reach with psycopg, or none."""
    if storage is None:
        return []
    if not storage.lower().startswith(POSTGRES_SCHEMES):
        return [("problem_storage", {})]
    if importlib.util.find_spec("psycopg") is None:
        return [("problem_psycopg", {"install": POSTGRES_INSTALL})]
    return []


def run(settings: RaceSettings) -> Result:
    began = time.monotonic()
    shown = {**vars(settings), "storage": settings.storage and redacted(settings.storage)}
    result = Result("race", shown)
    # The database's runs first: a server that cannot be used is said before the file's runs.
    database = settings.storage
    database_runs = race(settings, DATABASE_STORAGES, database) if database is not None else {}
    runs = {**race(settings, STORAGES), **database_runs}
    result.results = [combine(storage_runs, FIGURES) for storage_runs in runs.values()]
    result.claims = claims(runs)
    result.seconds = time.monotonic() - began
    return result


def race(
    settings: RaceSettings, storages: dict[str, str], database: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Each repeat, every storage's POSTs on one throwaway stack (on a throwaway database of
    ``database``'s server, when given); its rows by storage."""
    runs: dict[str, list[dict[str, Any]]] = {storage: [] for storage in storages}
    with throwaway_stack(algorithm="round_robin", database=database) as lab:
        for number in range(settings.repeat):
            for storage, mode in storages.items():
                for server in lab.servers:
                    lab.set_fault(server, mode)
                outcomes = send_posts(lab, settings, f"{storage} {number + 1}")
                runs[storage].append(row(lab, storage, outcomes))
        for server in lab.servers:
            lab.set_fault(server, "none")
    return runs


def send_posts(lab: Lab, settings: RaceSettings, label: str) -> list[Outcome]:
    """Every client's POSTs at once: one worker per POST."""
    calls = [
        Call("POST", "/tareas", {"title": f"race {label} client{c + 1} #{n}"}, client=c)
        for n in range(settings.posts)
        for c in range(settings.clients)
    ]
    sources: list[str | None] = [None] * settings.clients
    return run_load(lab.balancer_url, calls, len(calls), sources, MAX_SECONDS)


def row(lab: Lab, storage: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """``expected``: creates answered 201; ``stored``: those the file holds (same id and
    title); ``lost``: the difference. ``unanswered``: POSTs without a 201 (none is expected;
    they are neither stored nor lost). ``duplicate_ids``: ids a 201 gave to two tasks."""
    created = [outcome.task for outcome in outcomes if outcome.task is not None]
    lost = lab.lost(created)
    ids = Counter(task.get("id") for task in created)
    return {
        "storage": storage,
        "sent": len(outcomes),
        "expected": len(created),
        "stored": len(created) - lost,
        "lost": lost,
        "unanswered": len(outcomes) - len(created),
        "duplicate_ids": sum(n - 1 for n in ids.values() if n > 1),
        "by_server": dict(Counter(o.server for o in outcomes if o.task is not None)),
    }


def claims(runs: dict[str, list[dict[str, Any]]]) -> list[Claim]:
    """The lab's two sentences (the handout does not speak of concurrent writers), each
    checked on every repeat."""
    file_claims = both_claims(runs, "locked", "unlocked", "")
    if "transaction" not in runs:
        return file_claims
    return [*file_claims, *both_claims(runs, "transaction", "no_transaction", "_database")]


def both_claims(
    runs: dict[str, list[dict[str, Any]]], kept: str, naive: str, where: str
) -> list[Claim]:
    """The guarded storage ``kept`` loses nothing; its naive twin ``naive`` loses at least
    ``UNLOCKED_LOSS`` % of the tasks answered 201 (``where``: which storage the "against"
    sentences name, "" for tasks.json)."""
    lost_share = tuple(100 * r["lost"] / (r["expected"] or 1) for r in runs[naive])
    return [
        Claim(
            f"{kept}_keeps_all", LAB, tuple(r["lost"] for r in runs[kept]), 0, False,
            f"against_lost{where}",
        ),
        Claim(
            f"{naive}_loses", LAB, lost_share, UNLOCKED_LOSS, True,
            f"against_lost_share{where}", "%", {"required": f"{UNLOCKED_LOSS:g}"},
        ),
    ]  # fmt: skip

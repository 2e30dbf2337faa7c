"""``ticslab experiment race``: the course's earlier lesson. Two servers share one tasks.json;
two clients send 100 concurrent POSTs each, once with the file lock and once with the
``nolock`` fault mode (each create reads the file, adds its task and writes the file back,
with no lock, as naive code does). Whatever a 201 promised and the file does not hold was lost.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from services.experiment.lab import Lab, throwaway_stack
from services.experiment.load import Call, Outcome, run_load
from services.experiment.result import Claim, Result

STORAGES = {"locked": "none", "unlocked": "nolock"}  # storage -> the servers' fault mode
MAX_SECONDS = 30.0


@dataclass
class Settings:
    clients: int = 2
    posts: int = 100  # per client, all at once

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.clients <= 8:
            found.append("--clients is 1 to 8")
        if not 1 <= self.posts <= 500:
            found.append("--posts is 1 to 500")
        return found


def run(settings: Settings) -> Result:
    began = time.monotonic()
    result = Result("race", vars(settings).copy())
    with throwaway_stack(algorithm="round_robin") as lab:
        for storage, mode in STORAGES.items():
            for server in lab.servers:
                lab.set_fault(server, mode)
            outcomes = send_posts(lab, settings, storage)
            result.results.append(row(lab, storage, outcomes))
        for server in lab.servers:
            lab.set_fault(server, "none")
    result.claims = claims(result.results)
    result.seconds = time.monotonic() - began
    return result


def send_posts(lab: Lab, settings: Settings, storage: str) -> list[Outcome]:
    """Every client's POSTs at once: one worker per POST."""
    calls = [
        Call("POST", "/tareas", {"title": f"race {storage} client{c + 1} #{n}"}, client=c)
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


def claims(rows: list[dict[str, Any]]) -> list[Claim]:
    by_storage = {str(r["storage"]): r for r in rows}
    locked, unlocked = by_storage["locked"], by_storage["unlocked"]
    return [
        Claim(
            "with the file lock, every task answered 201 is in tasks.json",
            "con el bloqueo de archivo, cada tarea respondida con 201 está en tasks.json",
            locked["lost"] == 0,
        ),
        Claim(
            "without the lock, concurrent writers lose tasks that were answered 201",
            "sin el bloqueo, escritores concurrentes pierden tareas que fueron respondidas 201",
            unlocked["lost"] > 0,
        ),
    ]

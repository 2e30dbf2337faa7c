"""``ticslab experiment rollout``: restart every server under steady traffic, once with a
rolling rollout and once all at once, and count what the clients saw and what was lost.

Each strategy gets its own stack, with the balancer's retries off (``--retries 0``), so only
the rollout's own steps can keep a restart from the clients. POSTs flow from before the
rollout starts until a moment after it ends, so every restart happens under load. Both servers
carry a small latency fault (each request's work), so requests are in flight whenever a server
goes: a rolling rollout drains a server and waits for them, a restart of everything at once
does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from services.experiment.lab import Lab, LabError, throwaway_stack
from services.experiment.load import Call, Outcome, failures_by_status, run_load
from services.experiment.result import (
    HANDOUT,
    LAB,
    REPEATS,
    Claim,
    Result,
    combine,
    summed_failures,
)
from services.experiment.settings import Problems, check_range
from services.waiting import wait_ready

STRATEGIES = ("rolling", "restart")
FIGURES = ["requests", "failed", "lost", "seconds"]
MAX_CALLS = 1_000_000  # the rollout's end (or max_seconds) ends the load long before
MAX_SECONDS = 120.0  # a rollout that never ends still ends the run
POLL_SECONDS = 0.1


@dataclass
class RolloutSettings:
    concurrency: int = 4
    work_ms: int = 20  # latency fault on every server
    lead_seconds: float = 0.5  # traffic before the rollout starts, and after it ends
    repeat: int = REPEATS

    def problems(self) -> Problems:
        return [
            *check_range("--concurrency", self.concurrency, 1, 64),
            *check_range("--work-ms", self.work_ms, 0, 1000),
            *check_range("--lead-seconds", self.lead_seconds, 0.1, 10),
            *check_range("--repeat", self.repeat, 1, 10),
        ]


def run(settings: RolloutSettings) -> Result:
    began = time.monotonic()
    result = Result("rollout", vars(settings).copy())
    runs: dict[str, list[dict[str, Any]]] = {strategy: [] for strategy in STRATEGIES}
    for strategy in STRATEGIES:
        with throwaway_stack(algorithm="round_robin", retries=0) as lab:
            for server in lab.servers:
                lab.set_fault(server, "latency", ms=settings.work_ms)
            for number in range(settings.repeat):
                if number:
                    lab.wait_until_all_up()
                outcomes, rollout = load_through_rollout(lab, strategy, settings, number)
                runs[strategy].append(row(lab, strategy, outcomes, rollout))
    result.results = [
        {**combine(each, FIGURES), "failures": summed_failures(each)} for each in runs.values()
    ]
    result.claims = claims(runs)
    result.seconds = time.monotonic() - began
    return result


def load_through_rollout(
    lab: Lab, strategy: str, settings: RolloutSettings, number: int
) -> tuple[list[Outcome], dict[str, Any]]:
    """POSTs from ``lead_seconds`` before the rollout until ``lead_seconds`` after its end;
    the outcomes and the rollout's final state (``GET /control/rollout``)."""
    ended = threading.Event()
    final: dict[str, Any] = {}

    def calls() -> Iterator[Call]:
        for n in range(MAX_CALLS):
            if ended.is_set():
                return
            yield Call("POST", "/tareas", {"title": f"rollout {strategy} {number + 1} #{n}"})

    def roll_out() -> None:
        try:
            final.update(rollout_to_the_end(lab, strategy))
            ended.wait(settings.lead_seconds)  # the traffic just after it, too
        finally:
            ended.set()

    actions = [(settings.lead_seconds, roll_out)]
    outcomes = run_load(
        lab.balancer_url, calls(), settings.concurrency, [None], MAX_SECONDS, actions
    )
    if not final:
        raise LabError("lab_rollout", strategy=strategy, state="-")
    return outcomes, final


def rollout_to_the_end(lab: Lab, strategy: str) -> dict[str, Any]:
    """Start a rollout of ``strategy`` and wait until it has ended (bounded)."""
    lab.control("POST", "/control/rollout", {"strategy": strategy})
    last: dict[str, Any] = {}

    async def probe(client: httpx.AsyncClient) -> str | None:
        nonlocal last
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = await client.get(lab.balancer_url + "/control/rollout")
            last = answer.json()["rollout"] or {}
        return None if last.get("state") in ("done", "failed") else "running"

    async def wait() -> str | None:
        async with httpx.AsyncClient(timeout=2) as client:
            return await wait_ready(lambda: probe(client), MAX_SECONDS, POLL_SECONDS)

    if asyncio.run(wait()) is not None:
        raise LabError("lab_rollout", strategy=strategy, state=last.get("state", "-"))
    return last


def row(
    lab: Lab, strategy: str, outcomes: list[Outcome], rollout: dict[str, Any]
) -> dict[str, Any]:
    """``failed``: what clients saw go wrong; ``lost``: tasks answered 201 that tasks.json
    does not hold; ``seconds``: how long the rollout took."""
    created = [outcome.task for outcome in outcomes if outcome.task is not None]
    statuses = failures_by_status(outcomes)
    return {
        "strategy": strategy,
        "requests": len(outcomes),
        "failed": sum(statuses.values()),
        "failures": statuses,
        "lost": lab.lost(created),
        "seconds": rollout_seconds(rollout),
        "state": rollout.get("state"),
        "reason": rollout.get("reason"),
    }


def rollout_seconds(rollout: dict[str, Any]) -> float:
    """From the rollout's start to its end, by its own timestamps."""
    try:
        started = datetime.fromisoformat(rollout["started"])
        finished = datetime.fromisoformat(rollout["finished"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return round((finished - started).total_seconds(), 2)


def claims(runs: dict[str, list[dict[str, Any]]]) -> list[Claim]:
    """The handout's "deployments with no downtime", and the lab's contrast: the naive
    restart is seen by the clients; neither loses a task."""
    rolling, restart = runs["rolling"], runs["restart"]
    lost = tuple(a["lost"] + b["lost"] for a, b in zip(rolling, restart, strict=True))
    done = tuple(float(r["state"] == "done") for r in rolling)
    return [
        Claim("rolling_no_failures", HANDOUT, tuple(r["failed"] for r in rolling), 0, False,
              "against_failed"),
        Claim("rolling_completes", LAB, done, 1, True, "against_done"),
        Claim("restart_shows", LAB, tuple(r["failed"] for r in restart), 1, True,
              "against_failed"),
        Claim("rollout_nothing_lost", LAB, lost, 0, False, "against_lost"),
    ]  # fmt: skip

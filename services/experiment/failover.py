"""``ticslab experiment failover``: kill a server under load, once with the balancer's retries
and once with ``--retries 0``, and count what the clients saw and what was lost.

Both servers carry a small latency fault (the work of each request), so some requests are
always in flight on the server when it dies: those are the ones retries must save. Each
setting of retries gets one stack; each repeat kills server1 and, before the next, starts it
again and waits until the balancer sees it UP.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from services.balancer.config import BalancerConfig
from services.experiment.lab import Lab, throwaway_stack
from services.experiment.load import Call, Outcome, failed, failures_by_status, run_load
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

VICTIM = "server1"
BUCKET_SECONDS = 0.1  # the chart's resolution
RUNS = {"retries": None, "no retries": 0}  # run -> the balancer's --retries (None: default)
MAX_CALLS = 100_000  # the duration ends the load long before
FIGURES = ["sent", "created", "failed", "lost"]


@dataclass
class FailoverSettings:
    seconds: float = 3.0  # of load per run
    kill_at: float = 1.0  # seconds into the load
    concurrency: int = 8
    work_ms: int = 20  # latency fault on both servers
    repeat: int = REPEATS

    def problems(self) -> Problems:
        kill_at: Problems = [] if 0 <= self.kill_at < self.seconds else [("problem_kill_at", {})]
        return [
            *check_range("--seconds", self.seconds, 1, 60),
            *kill_at,
            *check_range("--concurrency", self.concurrency, 1, 256),
            *check_range("--work-ms", self.work_ms, 0, 1000),
            *check_range("--repeat", self.repeat, 1, 10),
        ]


def run(settings: FailoverSettings) -> Result:
    began = time.monotonic()
    result = Result("failover", vars(settings).copy(), series={"bucket_seconds": BUCKET_SECONDS})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNS}
    for name, retries in RUNS.items():
        with throwaway_stack(algorithm="round_robin", retries=retries) as lab:
            for server in lab.servers:
                lab.set_fault(server, "latency", ms=settings.work_ms)
            for number in range(settings.repeat):
                if number:
                    lab.control("POST", f"/control/servers/{VICTIM}/start")
                    lab.wait_until_all_up()
                outcomes = load_with_a_kill(lab, settings, f"{name} {number + 1}")
                runs[name].append(row(lab, name, outcomes))
                add_timeline(result.series.setdefault(name, {}), outcomes, settings.seconds)
    result.results = [combined(name_runs) for name_runs in runs.values()]
    result.claims = claims(runs)
    result.seconds = time.monotonic() - began
    return result


def load_with_a_kill(lab: Lab, settings: FailoverSettings, run_name: str) -> list[Outcome]:
    calls = (
        Call("POST", "/tareas", {"title": f"failover {run_name} #{n}"}) for n in range(MAX_CALLS)
    )
    kill = (settings.kill_at, lambda: lab.control("POST", f"/control/servers/{VICTIM}/kill"))
    return run_load(lab.balancer_url, calls, settings.concurrency, [None], settings.seconds, [kill])


def row(lab: Lab, name: str, outcomes: list[Outcome]) -> dict[str, Any]:
    """``failed``: what clients saw go wrong (no answer or an error status); ``lost``: tasks
    answered 201 that tasks.json does not hold."""
    created = [outcome.task for outcome in outcomes if outcome.task is not None]
    lost = lab.lost(created)
    statuses = failures_by_status(outcomes)
    return {
        "run": name,
        "retries": BalancerConfig().max_retries if RUNS[name] is None else RUNS[name],
        "sent": len(outcomes),
        "created": len(created),
        "failed": sum(statuses.values()),
        "failures": statuses,
        "lost": lost,
    }


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A setting's row over the repeats: mean and spread of its counts, failures added up."""
    return {**combine(runs, FIGURES), "failures": summed_failures(runs)}


def add_timeline(series: dict[str, list[int]], outcomes: list[Outcome], seconds: float) -> None:
    """Add one run's answers per bucket of the load, ``ok`` and ``failed``, to ``series``: the
    chart shows every repeat's kill at the same moment. Each answer counts when the client got
    it, as a client sees a failure: a request begun just before the kill and cut by it fails
    after the kill, never before."""
    buckets = math.ceil(seconds / BUCKET_SECONDS)
    ok, bad = series.setdefault("ok", [0] * buckets), series.setdefault("failed", [0] * buckets)
    for outcome in outcomes:
        answered = outcome.started + outcome.seconds
        index = min(int(answered / BUCKET_SECONDS), buckets - 1)
        (bad if failed(outcome) else ok)[index] += 1


def claims(runs: dict[str, list[dict[str, Any]]]) -> list[Claim]:
    """The handout's "the system keeps working" (step 6), and the lab's two about retries and
    lost tasks, each checked on every repeat."""
    lost = tuple(
        with_retries["lost"] + without["lost"]
        for with_retries, without in zip(runs["retries"], runs["no retries"], strict=True)
    )
    return [
        Claim(
            "retries_hide_crash", HANDOUT, tuple(r["failed"] for r in runs["retries"]), 0,
            False, "against_failed",
        ),
        Claim(
            "no_retries_show", LAB, tuple(r["failed"] for r in runs["no retries"]), 1, True,
            "against_failed",
        ),
        Claim("nothing_lost", LAB, lost, 0, False, "against_lost"),
    ]  # fmt: skip

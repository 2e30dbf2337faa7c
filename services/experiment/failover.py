"""``ticslab experiment failover``: kill a server under load, once with the balancer's retries
and once with ``--retries 0``, and count what the clients saw and what was lost.

Both servers carry a small latency fault (the work of each request), so some requests are
always in flight on the server when it dies: those are the ones retries must save.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from services.balancer.config import BalancerConfig
from services.experiment.lab import Lab, throwaway_stack
from services.experiment.load import Call, Outcome, failed, run_load
from services.experiment.result import Claim, Result

VICTIM = "server1"
BUCKET_SECONDS = 0.1  # the chart's resolution
RUNS = {"retries": None, "no retries": 0}  # run -> the balancer's --retries (None: default)
MAX_CALLS = 100_000  # the duration ends the load long before


@dataclass
class Settings:
    seconds: float = 4.0  # of load per run
    kill_at: float = 1.5  # seconds into the load
    concurrency: int = 8
    work_ms: int = 20  # latency fault on both servers

    def problems(self) -> list[str]:
        found = []
        if not 1 <= self.seconds <= 60:
            found.append("--seconds is 1 to 60")
        if not 0 <= self.kill_at < self.seconds:
            found.append("--kill-at is 0 or more, and less than --seconds")
        if not 1 <= self.concurrency <= 256:
            found.append("--concurrency is 1 to 256")
        if not 0 <= self.work_ms <= 1000:
            found.append("--work-ms is 0 to 1000")
        return found


def run(settings: Settings) -> Result:
    began = time.monotonic()
    result = Result("failover", vars(settings).copy(), series={"bucket_seconds": BUCKET_SECONDS})
    for name, retries in RUNS.items():
        with throwaway_stack(algorithm="round_robin", retries=retries) as lab:
            for server in lab.servers:
                lab.set_fault(server, "latency", ms=settings.work_ms)
            outcomes = load_with_a_kill(lab, settings, name)
            result.results.append(row(lab, name, outcomes))
            result.series[name] = timeline(outcomes, settings.seconds)
    result.claims = claims(result.results)
    result.seconds = time.monotonic() - began
    return result


def load_with_a_kill(lab: Lab, settings: Settings, run_name: str) -> list[Outcome]:
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
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        if failed(outcome):
            key = str(outcome.status) if outcome.status else "no answer"
            statuses[key] = statuses.get(key, 0) + 1
    return {
        "run": name,
        "retries": BalancerConfig().max_retries if RUNS[name] is None else RUNS[name],
        "sent": len(outcomes),
        "created": len(created),
        "failed": sum(statuses.values()),
        "failures": statuses,
        "lost": lost,
    }


def timeline(outcomes: list[Outcome], seconds: float) -> dict[str, list[int]]:
    """Answers per bucket of the load: ``ok`` and ``failed`` (by when the call began)."""
    buckets = math.ceil(seconds / BUCKET_SECONDS)
    ok, bad = [0] * buckets, [0] * buckets
    for outcome in outcomes:
        index = min(int(outcome.started / BUCKET_SECONDS), buckets - 1)
        (bad if failed(outcome) else ok)[index] += 1
    return {"ok": ok, "failed": bad}


def claims(rows: list[dict[str, Any]]) -> list[Claim]:
    by_run = {row["run"]: row for row in rows}
    return [
        Claim(
            "with retries, no client sees the crash",
            "con reintentos, ningún cliente ve la caída",
            by_run["retries"]["failed"] == 0,
        ),
        Claim(
            "with --retries 0, clients see the requests that were on the dead server fail",
            "con --retries 0, los clientes ven fallar las peticiones que estaban en el servidor "
            "caído",
            by_run["no retries"]["failed"] > 0,
        ),
        Claim(
            "no task answered 201 is lost, with or without retries",
            "ninguna tarea respondida con 201 se pierde, con o sin reintentos",
            all(row["lost"] == 0 for row in rows),
        ),
    ]

"""The client's settings, and the small parser for durations such as ``30s`` or ``2m``."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# What a client does once its run has been reported: exit (the handout's one-shot run), or go on
# with gentle steady traffic until it is stopped, as ``ticslab up``'s clients do (Compose).
THEN_EXIT, THEN_STEADY = "exit", "steady"
STEADY_CONCURRENCY = 2  # virtual users of the steady phase, as ``ticslab up``'s clients


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``30s``, ``1.5s``, ``500ms``, ``2m``, ``1h`` or a bare number (s)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 30s, 500ms, 2m)")
    number, unit = match.groups()
    return float(number) * _UNIT_SECONDS[unit or "s"]


@dataclass(frozen=True)
class ClientConfig:
    """Everything one run needs; ``tasks`` is None when the run is bounded by ``duration``,
    and both are None in the steady phase, which runs until it is stopped."""

    url: str
    name: str
    tasks: int | None = 100
    duration: float | None = None
    concurrency: int = 10
    rate: float = 0.0  # requests per second in total; 0 means no limit
    errors: float = 0.1  # share of operations that force a 400, 404 or 500
    json_path: Path | None = None
    wait: float = 30.0
    timeout: float = 10.0
    retries: int = 3  # extra attempts for a create that got no answer or a 5xx
    progress_every: float = 5.0
    then: str = THEN_EXIT  # THEN_STEADY: steady traffic after the report, until stopped
    steady_rate: float = 5.0  # requests per second of the steady phase
    lang: str = "en"  # of what it prints (--lang, TICSLAB_LANG)

    def steady(self) -> ClientConfig:
        """The settings of the steady phase: unbounded, gentle, titled ``<name>-steady-000001``
        so its tasks are told from the run's, no JSON (the file keeps the run's report)."""
        return replace(
            self,
            name=f"{self.name}-steady",
            tasks=None,
            duration=None,
            rate=self.steady_rate,
            concurrency=STEADY_CONCURRENCY,
            json_path=None,
            then=THEN_EXIT,
        )

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

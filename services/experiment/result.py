"""What an experiment found: its settings, one row per run, and the handout's claims checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Claim:
    """A sentence of the handout (English and Spanish) and whether the numbers bear it out."""

    en: str
    es: str
    held: bool

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.en, "afirmacion": self.es, "held": self.held}


@dataclass
class Result:
    """``results`` rows are plain JSON objects; ``series`` holds what the charts draw over time
    (per run, e.g. answers per interval), kept out of ``results`` so rows stay short."""

    scenario: str
    settings: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        """Every claim held."""
        return all(claim.held for claim in self.claims)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "settings": self.settings,
            "results": self.results,
            "claims": [claim.to_json() for claim in self.claims],
            "series": self.series,
            "seconds": round(self.seconds, 2),
        }


def pick_failures(row: dict[str, Any]) -> str:
    """The sentence both reports show for a plugin whose pick failed."""
    return (
        f"its pick failed {row['algorithm_errors']} times, and round robin answered those "
        f"requests (the balancer's /events say where) / su pick falló "
        f"{row['algorithm_errors']} veces y respondió round robin"
    )

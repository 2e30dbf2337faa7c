"""What an experiment found: its settings, one row per run, and its claims checked.

A claim is a sentence (a catalogue key in ``i18n``), who makes it (the handout, or the lab),
one figure per repeat and a stated bound. It holds only when every repeat's figure is on the
right side of the bound: one lucky run, or a difference inside the noise, does not count.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common import printable
from services.lang import Translator

HANDOUT, LAB = "handout", "lab"
# The rollout table's figures and their decimals (terminal.py and html.py).
ROLLOUT_FIGURES = (("requests", 0), ("failed", 0), ("lost", 0), ("seconds", 1))
REPEATS = 3  # each scenario's default --repeat: a claim must hold three times in a row
# A sentence to show: a catalogue key and its fields. A field may itself be Words, or a list
# of Words (said one after the other, with commas), for sentences built of sentences.
Words = tuple[str, dict[str, Any]]


def say(t: Translator, words: Words) -> str:
    """``words`` in ``t``'s language."""
    key, fields = words
    return t(key, **{name: _said(t, value) for name, value in fields.items()})


def _said(t: Translator, value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(str(_said(t, each)) for each in value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        return say(t, value)
    return value


@dataclass(frozen=True)
class Claim:
    """``key``'s sentence (formatted with ``fields``), made by ``source``. Each repeat gave
    one figure in ``per_run`` (in ``unit``), measured against what ``against`` names; the
    claim needs every figure ``>= required`` (``at_least``) or ``<= required``."""

    key: str
    source: str
    per_run: tuple[float, ...]
    required: float
    at_least: bool
    against: str
    unit: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        """The repeat that came closest to missing (or missed most)."""
        return min(self.per_run) if self.at_least else max(self.per_run)

    @property
    def margin(self) -> float:
        """How far the worst repeat is past the bound; below 0: it missed by that much."""
        gap = self.worst - self.required if self.at_least else self.required - self.worst
        return round(gap, 2)

    @property
    def held(self) -> bool:
        return bool(self.per_run) and self.margin >= 0

    def text(self, t: Translator) -> str:
        return t(f"claim_{self.key}", **self.fields)

    def detail(self, t: Translator) -> str:
        """The numbers behind the verdict, in one line."""
        unit = t.word(f"unit_{self.unit}", self.unit)
        return t(
            "claim_detail",
            against=t(self.against),
            runs=len(self.per_run),
            figure=_figure(self.worst, unit),
            op="≥" if self.at_least else "≤",
            required=_figure(self.required, unit),
            margin=_figure(self.margin, unit),
        )

    def to_json(self, t: Translator) -> dict[str, Any]:
        return {
            "id": self.key,
            "source": self.source,
            "text": self.text(t),
            "held": self.held,
            "margin": self.margin,
            "against": t(self.against),
            "comparison": "at_least" if self.at_least else "at_most",
            "required": self.required,
            "worst": round(self.worst, 2),
            "per_run": [round(value, 2) for value in self.per_run],
            "unit": self.unit,
        }


def _figure(value: float, unit: str) -> str:
    return f"{round(value, 1):g}{' ' + unit if unit else ''}"


@dataclass
class Result:
    """``results`` rows are plain JSON objects (the mean of the repeats, their spread and
    each repeat's row under ``runs``); ``series`` holds what the charts draw over time, kept
    out of ``results`` so rows stay short; ``notes`` are catalogue keys and their fields,
    things a reader must know to read the numbers right."""

    scenario: str
    settings: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[Words] = field(default_factory=list)

    @property
    def held(self) -> bool:
        """Every claim held."""
        return all(claim.held for claim in self.claims)

    @property
    def repeats(self) -> int:
        return int(self.settings.get("repeat", 1))

    def to_json(self, t: Translator) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "lang": t.lang,
            "repeats": self.repeats,
            "settings": self.settings,
            "results": self.results,
            "claims": [claim.to_json(t) for claim in self.claims],
            "notes": [say(t, note) for note in self.notes],
            "series": self.series,
            "seconds": round(self.seconds, 2),
        }


def algorithm_name(name: str, t: Translator) -> str:
    """The handout's name for a built-in algorithm; a plugin's own name, made printable."""
    return t.word(f"algo_{name}", printable(name))


def parameters(result: Result, t: Translator) -> str:
    """The line under a report's title: what was measured, in words."""
    settings = result.settings
    if result.scenario == "algorithms":
        count = settings["ip_clients"]
        clients = (
            t("addresses", count=count, first="127.0.0.2", last=f"127.0.0.{count + 1}")
            if count
            else t("one_address")
        )
        return t("algorithms_params", **settings, clients=clients)
    if result.scenario == "race":
        return t("race_params", **settings)
    if result.scenario == "rollout":
        return t("rollout_params", **{**settings, "lead_seconds": f"{settings['lead_seconds']:g}"})
    return t("failover_params", **{**settings, "kill_at": f"{settings['kill_at']:g}"})


def combine(runs: Sequence[dict[str, Any]], figures: Sequence[str]) -> dict[str, Any]:
    """One row for several repeats: the first run's other fields, each of ``figures`` (a
    number, or a dict of numbers such as a share per server) as the mean of the runs, its
    ``spread`` as ``[min, max]``, and every run's row under ``runs``."""
    row = dict(runs[0])
    spread: dict[str, Any] = {}
    for name in figures:
        if isinstance(runs[0][name], dict):
            keys = sorted({key for run in runs for key in run[name]})
            per_key = {key: [float(run[name].get(key, 0)) for run in runs] for key in keys}
            row[name] = {key: round(statistics.fmean(v), 4) for key, v in per_key.items()}
            spread[name] = {key: [min(v), max(v)] for key, v in per_key.items()}
        else:
            values = [float(run[name]) for run in runs]
            row[name] = round(statistics.fmean(values), 2)
            spread[name] = [min(values), max(values)]
    return {**row, "spread": spread, "runs": list(runs)}


def span(spread: Sequence[float], digits: int = 0, suffix: str = "") -> str:
    """``low–high`` as the reports show a figure's spread (its ``[low, high]``), or one number
    when they round the same."""
    low, high = spread
    first, last = f"{low:.{digits}f}", f"{high:.{digits}f}"
    return f"{first}{suffix}" if first == last else f"{first}–{last}{suffix}"


def summed_failures(runs: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The repeats' ``failures`` (status -> count) added up, for the combined row."""
    failures: dict[str, int] = {}
    for one in runs:
        for status, count in one["failures"].items():
            failures[status] = failures.get(status, 0) + count
    return failures


def failure_counts(row: dict[str, Any], t: Translator) -> str:
    """``502 ×3, no answer ×1``: a row's failures by status, summed over its repeats."""
    return ", ".join(
        f"{t('no_answer') if status == 'no answer' else status} ×{n}"
        for status, n in sorted(row["failures"].items())
    )

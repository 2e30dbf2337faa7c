"""What the scenarios' ``Settings.problems()`` return: each problem a catalogue key and its
fields, so ``ticslab experiment`` refuses bad flags in the reader's language."""

from __future__ import annotations

from services.experiment.result import Words

Problems = list[Words]


def check_range(flag: str, value: float, low: float, high: float) -> Problems:
    """``flag``'s problem when ``value`` is outside ``low..high``, else none."""
    if low <= value <= high:
        return []
    return [("problem_range", {"flag": flag, "low": low, "high": high})]

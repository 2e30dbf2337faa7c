"""The task-server options a rollout may give a server's new process: an allow-list.

A rollout (services/balancer/rollout.py) may start each server again with other options, a
"new version" a class can see (``--fault=unhealthy`` is a broken one, ``--lang=es`` answers
its errors in Spanish). The command is always ``ticslab taskserver`` with the server's own
name, port and tasks file; only these flags may be added, each as one ``--flag=value`` word
with a short plain value, so nothing sent over HTTP ever reaches a shell or another program.
The balancer checks them (400) and the supervisor that runs them checks them again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.common import START_FAULTS

ALLOWED_OPTIONS = ("--fault", "--lang", "--request-timeout", "--max-connections")
MAX_OPTIONS = len(ALLOWED_OPTIONS)
# A value: a word or a number, as the flags above take; never a path, a space or a quote.
OPTION_VALUE = re.compile(r"[A-Za-z0-9._-]{1,24}")
# The values a flag takes, when they are a closed list (the task server checks the rest).
CHOICES: dict[str, tuple[str, ...]] = {"--fault": START_FAULTS, "--lang": ("en", "es")}


def options_problem(options: object) -> str | None:
    """Why ``options`` is not a list of allowed ``--flag=value`` words (each flag at most
    once), in English for the supervisor's log and the rollout's reason; None when it is."""
    if not isinstance(options, list) or len(options) > MAX_OPTIONS:
        return f"options must be a list of at most {MAX_OPTIONS} '--flag=value' strings"
    seen: set[str] = set()
    for option in options:
        flag, _, value = option.partition("=") if isinstance(option, str) else ("", "", "")
        if flag not in ALLOWED_OPTIONS or flag in seen:
            return f"each option is one of {', '.join(ALLOWED_OPTIONS)}, once, as --flag=value"
        if not OPTION_VALUE.fullmatch(value) or value not in CHOICES.get(flag, (value,)):
            return f"{flag} needs a plain value" + (
                f": one of {', '.join(CHOICES[flag])}" if flag in CHOICES else ""
            )
        seen.add(flag)
    return None


def checked_options(options: Sequence[str]) -> tuple[str, ...]:
    """``options`` as a tuple; ValueError (saying why) unless ``options_problem`` accepts them."""
    problem = options_problem(list(options))
    if problem is not None:
        raise ValueError(problem)
    return tuple(options)

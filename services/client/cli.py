"""``ticslab client``: a client emulator that loads the balancer and proves nothing was lost.

Every option has an environment variable (``TICSLAB_URL``, ``TICSLAB_CLIENT_NAME``, ...) so
Compose can configure client containers without overriding the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from services.client.config import THEN_EXIT, THEN_STEADY, ClientConfig, parse_duration
from services.client.i18n import TEXT
from services.client.plan import MAX_ERROR_SHARE
from services.lang import Translator, add_lang_argument, chosen, default_language

DEFAULT_TASKS = 100
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def _refusal(key: str, **values: Any) -> argparse.ArgumentTypeError:
    """A bad option value, in the environment's language (``--lang`` is not read yet)."""
    return argparse.ArgumentTypeError(Translator(TEXT, default_language())(key, **values))


N = TypeVar("N", int, float)


def _number(text: str, kind: Callable[[str], N]) -> N:
    try:
        return kind(text)
    except ValueError:
        raise _refusal("arg_not_number", text=text) from None


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise _refusal("arg_at_least_1", value=value)
    return value


def _client_name(text: str) -> str:
    if not _NAME.match(text):
        raise _refusal("arg_name", text=text)
    return text


def _rate(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise _refusal("arg_rate", value=value)
    return value


def _positive_rate(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise _refusal("arg_positive", value=value)
    return value


def _then(text: str) -> str:
    if text not in (THEN_EXIT, THEN_STEADY):
        raise _refusal("arg_then", text=text, exit=THEN_EXIT, steady=THEN_STEADY)
    return text


def _error_share(text: str) -> float:
    value = _number(text, float)
    if not 0.0 <= value <= MAX_ERROR_SHARE:
        raise _refusal("arg_share", maximum=MAX_ERROR_SHARE, value=value)
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise _refusal("arg_duration", text=text) from None


@dataclass(frozen=True)
class Option:
    """One command-line option and the environment variable that supplies its default."""

    flag: str
    env: str
    default: str | None
    type: Callable[[str], Any]
    metavar: str
    help: str

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add it with the variable's value (or the default) as default; argparse converts it
        with ``type``, so a bad variable is a usage error like a bad flag."""
        shown = f"env {self.env}" + ("; default %(default)s" if self.default else "")
        parser.add_argument(
            self.flag,
            metavar=self.metavar,
            type=self.type,
            default=os.environ.get(self.env) or self.default,
            help=f"{self.help} ({shown})",
        )


OPTIONS = (
    Option("--url", "TICSLAB_URL", "http://localhost:8080", str, "URL", "the balancer's URL"),
    Option(
        "--name", "TICSLAB_CLIENT_NAME", "client1", _client_name, "NAME",
        "this client's name, the prefix of its task titles, e.g. client1-000042",
    ),
    Option(
        "--concurrency", "TICSLAB_CONCURRENCY", "10", _positive_int, "N",
        "virtual users working at once",
    ),
    Option(
        "--rate", "TICSLAB_RATE", "0", _rate, "R", "requests per second in total, 0 for no limit"
    ),
    Option(
        "--errors", "TICSLAB_ERRORS", "0.1", _error_share, "SHARE",
        "share of operations that force a 400, 404 or 500",
    ),
    Option(
        "--json", "TICSLAB_JSON", None, Path, "PATH", "also write the report as JSON to this file"
    ),
    Option(
        "--wait", "TICSLAB_WAIT", "30s", _duration, "D",
        "how long to wait for the balancer's /health",
    ),
    Option("--timeout", "TICSLAB_TIMEOUT", "10s", _duration, "D", "timeout of one request"),
    Option(
        "--progress-every", "TICSLAB_PROGRESS_EVERY", "5s", _duration, "D",
        "seconds between two progress lines when not on a terminal",
    ),
    Option(
        "--then", "TICSLAB_THEN", THEN_EXIT, _then, "exit|steady",
        "after the report: exit, or keep steady traffic until stopped (Ctrl+C, docker stop),"
        " then exit with the run's code",
    ),
    Option(
        "--steady-rate", "TICSLAB_STEADY_RATE", "5", _positive_rate, "R",
        "requests per second of the steady traffic",
    ),
)  # fmt: skip
# --tasks and --duration exclude each other, so their variables are read in config_from_args.
TASKS_ENV, DURATION_ENV = "TICSLAB_TASKS", "TICSLAB_DURATION"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "exit codes / códigos de salida: 0 ok, 1 lost tasks or unexpected errors /"
        " tareas perdidas o errores inesperados, 2 no balancer / sin balanceador,"
        " 130 interrupted / interrumpido (in the steady phase / en la fase constante: the"
        " run's code / el código de la ejecución). See docs/client.md."
    )
    for option in OPTIONS:
        option.add_to(parser)
    add_lang_argument(parser, "language of the report and every line printed")
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument(
        "--tasks",
        metavar="N",
        type=_positive_int,
        help=f"create exactly N tasks that stay, then stop (env {TASKS_ENV}; default"
        f" {DEFAULT_TASKS})",
    )
    bound.add_argument(
        "--duration",
        metavar="D",
        type=_duration,
        help=f"run for this long instead, e.g. 30s or 2m (env {DURATION_ENV})",
    )


def config_from_args(args: argparse.Namespace) -> ClientConfig:
    """The run's settings; ``--tasks``/``--duration`` fall back to their env vars, then 100."""
    tasks, duration = args.tasks, args.duration
    if tasks is None and duration is None:
        if os.environ.get(DURATION_ENV):
            duration = _duration(os.environ[DURATION_ENV])
        else:
            tasks = _positive_int(os.environ.get(TASKS_ENV) or str(DEFAULT_TASKS))
    return ClientConfig(
        url=args.url,
        name=args.name,
        tasks=tasks,
        duration=duration,
        concurrency=args.concurrency,
        rate=args.rate,
        errors=args.errors,
        json_path=args.json,
        wait=args.wait,
        timeout=args.timeout,
        progress_every=args.progress_every,
        then=args.then,
        steady_rate=args.steady_rate,
        lang=chosen(args.lang),
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from services.client.session import run_session

    try:
        config = config_from_args(args)
    except (ValueError, argparse.ArgumentTypeError) as error:
        message = Translator(TEXT, chosen(args.lang))("bad_setting", error=error)
        print(message, file=sys.stderr)
        return 2
    console = Console(soft_wrap=True, highlight=False)
    errors = Console(stderr=True, soft_wrap=True, highlight=False)
    return asyncio.run(run_session(config, console, errors))

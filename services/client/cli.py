"""``ticslab client``: a client emulator that loads the balancer and proves nothing was lost.

Every option has an environment variable (``TICSLAB_URL``, ``TICSLAB_CLIENT_NAME``, ...) so
Compose can configure client containers without overriding the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from pathlib import Path

from services.client.config import ClientConfig, parse_duration
from services.client.plan import MAX_ERROR_SHARE

# option -> environment variable that supplies its default
ENV = {
    "url": "TICSLAB_URL",
    "name": "TICSLAB_CLIENT_NAME",
    "tasks": "TICSLAB_TASKS",
    "duration": "TICSLAB_DURATION",
    "concurrency": "TICSLAB_CONCURRENCY",
    "rate": "TICSLAB_RATE",
    "errors": "TICSLAB_ERRORS",
    "json": "TICSLAB_JSON",
    "wait": "TICSLAB_WAIT",
    "timeout": "TICSLAB_TIMEOUT",
    "progress_every": "TICSLAB_PROGRESS_EVERY",
}
DEFAULT_TASKS = 100
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def _env(option: str, default: str | None) -> str | None:
    return os.environ.get(ENV[option]) or default


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _client_name(text: str) -> str:
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use 1 to 40 letters, digits, '-', '_' or '.' (it starts every title)"
        )
    return text


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more, not {value}")
    return value


def _error_share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= MAX_ERROR_SHARE:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_ERROR_SHARE}, not {value}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "exit codes / códigos de salida: 0 ok, 1 lost tasks or unexpected errors /"
        " tareas perdidas o errores inesperados, 2 no balancer / sin balanceador,"
        " 130 interrupted / interrumpido. See docs/client.md."
    )
    parser.add_argument(
        "--url",
        metavar="URL",
        default=_env("url", "http://localhost:8080"),
        help="the balancer's URL (env TICSLAB_URL; default %(default)s)",
    )
    parser.add_argument(
        "--name",
        metavar="NAME",
        type=_client_name,
        default=_env("name", "client1"),
        help="this client's name, the prefix of its task titles, e.g. client1-000042"
        " (env TICSLAB_CLIENT_NAME; default %(default)s)",
    )
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument(
        "--tasks",
        metavar="N",
        type=_positive_int,
        default=None,
        help=f"create exactly N tasks that stay, then stop (env TICSLAB_TASKS; default"
        f" {DEFAULT_TASKS})",
    )
    bound.add_argument(
        "--duration",
        metavar="D",
        type=_duration,
        default=None,
        help="run for this long instead, e.g. 30s or 2m (env TICSLAB_DURATION)",
    )
    parser.add_argument(
        "--concurrency",
        metavar="N",
        type=_positive_int,
        default=_env("concurrency", "10"),
        help="virtual users working at once (env TICSLAB_CONCURRENCY; default %(default)s)",
    )
    parser.add_argument(
        "--rate",
        metavar="R",
        type=_rate,
        default=_env("rate", "0"),
        help="requests per second in total, 0 for no limit (env TICSLAB_RATE; default %(default)s)",
    )
    parser.add_argument(
        "--errors",
        metavar="SHARE",
        type=_error_share,
        default=_env("errors", "0.1"),
        help="share of operations that force a 400, 404 or 500 (env TICSLAB_ERRORS;"
        " default %(default)s)",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        type=Path,
        default=_env("json", None),
        help="also write the report as JSON to this file (env TICSLAB_JSON)",
    )
    parser.add_argument(
        "--wait",
        metavar="D",
        type=_duration,
        default=_env("wait", "30s"),
        help="how long to wait for the balancer's /health (env TICSLAB_WAIT; default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        metavar="D",
        type=_duration,
        default=_env("timeout", "10s"),
        help="timeout of one request (env TICSLAB_TIMEOUT; default %(default)s)",
    )
    parser.add_argument(
        "--progress-every",
        metavar="D",
        type=_duration,
        default=_env("progress_every", "5s"),
        help="seconds between two progress lines when not on a terminal"
        " (env TICSLAB_PROGRESS_EVERY; default %(default)s)",
    )


def config_from_args(args: argparse.Namespace) -> ClientConfig:
    """The run's settings; ``--tasks``/``--duration`` fall back to their env vars, then 100."""
    tasks, duration = args.tasks, args.duration
    if tasks is None and duration is None:
        if os.environ.get(ENV["duration"]):
            duration = _duration(os.environ[ENV["duration"]])
        else:
            tasks = _positive_int(_env("tasks", str(DEFAULT_TASKS)) or str(DEFAULT_TASKS))
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
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from services.client.session import run_session

    try:
        config = config_from_args(args)
    except (ValueError, argparse.ArgumentTypeError) as error:
        print(f"error: bad client setting / ajuste inválido: {error}")
        return 2
    console = Console(soft_wrap=True, highlight=False)
    errors = Console(stderr=True, soft_wrap=True, highlight=False)
    return asyncio.run(run_session(config, console, errors))

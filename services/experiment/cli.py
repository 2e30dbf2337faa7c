"""``ticslab experiment NAME``: run one experiment, print it, write ``--json``/``--html``.

Exit status: 0 when every claim of the handout held, 3 when the run finished but some claim
did not (the numbers are still printed and written), 1 when its stack could not be started or
driven, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from services.experiment.result import REPEATS
from services.lang import add_lang_argument

CLAIM_FAILED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from services.experiment import algorithms, failover, race, rollout

    sub = parser.add_subparsers(dest="scenario", required=True, metavar="NAME")
    algo = sub.add_parser(
        "algorithms",
        help="the five algorithms (and yours) with one slow server",
        description="The same workload through each algorithm; server2 answers --slow-ms late.",
    )
    defaults = algorithms.AlgorithmsSettings()
    algo.add_argument(
        "--requests", type=int, default=defaults.requests, help="per algorithm and run"
    )
    algo.add_argument("--concurrency", type=int, default=defaults.concurrency)
    algo.add_argument("--slow-ms", type=int, default=defaults.slow_ms, help="server2's delay")
    algo.add_argument(
        "--ip-clients",
        type=int,
        default=defaults.ip_clients,
        metavar="K",
        help="send from K loopback addresses, 127.0.0.2 and up, so IP hash's affinity shows "
        f"(default {algorithms.DEFAULT_IP_CLIENTS} where the system answers on them, else "
        "127.0.0.1 only; 0: all from 127.0.0.1)",
    )
    algo.add_argument(
        "--algorithm",
        dest="plugin",
        metavar="FILE.py:CLASS",
        help="your own algorithm, measured after the built-in ones (docs/algorithm-plugin.md)",
    )
    race_parser = sub.add_parser(
        "race",
        help="concurrent writers with and without the file lock",
        description="Two clients POST at once to two servers sharing tasks.json, with the "
        "lock and without it (the nolock fault mode); counts the tasks lost.",
    )
    race_defaults = race.RaceSettings()
    race_parser.add_argument("--clients", type=int, default=race_defaults.clients)
    race_parser.add_argument(
        "--posts", type=int, default=race_defaults.posts, help="per client, all at once"
    )
    race_parser.add_argument(
        "--storage",
        metavar="URL",
        help="a PostgreSQL server (postgresql://USER@HOST:PORT/DB, its user allowed to create "
        "databases): the same runs follow on a throwaway database of it, with a transaction "
        "and without one",
    )
    fail = sub.add_parser(
        "failover",
        help="kill a server under load, with and without retries",
        description="POSTs under load; server1 is killed --kill-at seconds in, once with the "
        "balancer's retries and once with --retries 0.",
    )
    fail_defaults = failover.FailoverSettings()
    fail.add_argument("--seconds", type=float, default=fail_defaults.seconds, help="of load")
    fail.add_argument("--kill-at", type=float, default=fail_defaults.kill_at)
    fail.add_argument("--concurrency", type=int, default=fail_defaults.concurrency)
    fail.add_argument(
        "--work-ms", type=int, default=fail_defaults.work_ms, help="each request's delay"
    )
    roll = sub.add_parser(
        "rollout",
        help="restart every server under load, rolling and all at once",
        description="POSTs under load while every server is restarted: once by a rolling "
        "rollout (drain, restart, health, back), once all at once (POST /control/rollout).",
    )
    roll_defaults = rollout.RolloutSettings()
    roll.add_argument("--concurrency", type=int, default=roll_defaults.concurrency)
    roll.add_argument(
        "--work-ms", type=int, default=roll_defaults.work_ms, help="each request's delay"
    )
    roll.add_argument(
        "--lead-seconds",
        type=float,
        default=roll_defaults.lead_seconds,
        help="traffic before each rollout and after it",
    )
    for each in (algo, race_parser, fail, roll):
        each.add_argument(
            "--repeat",
            type=int,
            default=REPEATS,
            metavar="N",
            help=f"measure N times; a claim holds only if it holds every time (default {REPEATS})",
        )
        each.add_argument("--json", type=Path, metavar="FILE", help="write the result as JSON")
        each.add_argument("--html", type=Path, metavar="FILE", help="write an HTML report")
        add_lang_argument(each, "the reports' and messages' language")


def scenario(args: argparse.Namespace) -> tuple[Any, Callable[[Any], Any]]:
    """The settings from the flags, and the function that runs them."""
    from services.experiment import algorithms, failover, race, rollout

    if args.scenario == "rollout":
        return rollout.RolloutSettings(
            args.concurrency, args.work_ms, args.lead_seconds, args.repeat
        ), rollout.run
    if args.scenario == "algorithms":
        return algorithms.AlgorithmsSettings(
            args.requests, args.concurrency, args.slow_ms, args.ip_clients, args.plugin,
            args.repeat,
        ), algorithms.run  # fmt: skip
    if args.scenario == "race":
        return race.RaceSettings(args.clients, args.posts, args.repeat, args.storage), race.run
    return failover.FailoverSettings(
        args.seconds, args.kill_at, args.concurrency, args.work_ms, args.repeat
    ), failover.run


def run(args: argparse.Namespace) -> int:
    from services.common import raise_fd_limit
    from services.experiment import html, terminal
    from services.experiment.i18n import CATALOGUE
    from services.experiment.lab import LabError
    from services.experiment.result import say
    from services.lang import Translator, chosen
    from services.stopping import leave, stop_signals

    console = Console(highlight=False)
    t = Translator(CATALOGUE, chosen(args.lang))
    settings, run_scenario = scenario(args)
    problems = settings.problems() + [
        ("problem_folder", {"flag": flag, "path": path, "folder": path.parent})
        for flag, path in (("json", args.json), ("html", args.html))
        if path is not None and not path.parent.is_dir()
    ]
    if problems:
        told = "; ".join(say(t, problem) for problem in problems)
        print(t("bad_flags", name=args.scenario, problems=told), file=sys.stderr)
        return 2
    console.print(t("starting", name=args.scenario), markup=False)
    raise_fd_limit()  # a race holds a connection per POST, all at once
    # A polite kill or a closed terminal unwinds like Ctrl+C: the stack and its folder go.
    leaving = [sig for sig in stop_signals() if sig != signal.SIGINT]
    previous = {sig: signal.signal(sig, leave) for sig in leaving}
    try:
        with console.status(t("measuring", repeat=settings.repeat)):
            result = run_scenario(settings)
    except LabError as error:
        message = t("failed", name=args.scenario, error=error.text(t))
        console.print(message, markup=False)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(terminal.render(result, t))
    written = []
    if args.json:
        report = json.dumps(result.to_json(t), indent=2, ensure_ascii=False)
        args.json.write_text(report + "\n", encoding="utf-8")
        written.append(str(args.json))
    if args.html:
        args.html.write_text(html.page(result, t), encoding="utf-8")
        written.append(str(args.html))
    console.print(terminal.summary_line(result, written, t), markup=False)
    return 0 if result.held else CLAIM_FAILED

"""The ``ticslab`` console script: one subcommand per part of the lab.

Each subcommand lives beside the code it starts, in a ``cli`` module with two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from services import __version__
from services.lifeline import follow_parent

COMMANDS: dict[str, tuple[str, str]] = {
    "taskserver": ("services.taskserver.cli", "run one task server (API /tareas, /api/tasks)"),
    "balancer": ("services.balancer.cli", "run the load balancer in front of the task servers"),
    "client": ("services.client.cli", "run a client emulator that creates tasks and forces errors"),
    "passwd": (
        "services.balancer.passwd",
        "add a user to the balancer's --auth-users file, or change its password",
    ),
    "up": ("services.launcher.cli", "start the whole stack as local processes (no Docker)"),
    "demo": ("services.launcher.demo", "start the local stack and open the dashboard"),
    "dashboard": ("dashboard.cli", "open the Textual dashboard"),
    "experiment": (
        "services.experiment.cli",
        "measure the handout's claims on a throwaway stack (algorithms, race, failover)",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of ``command`` is imported, so start-up stays fast."""
    parser = argparse.ArgumentParser(
        prog="ticslab",
        description="TICS317 load balancing lab / laboratorio de balanceo de carga.",
    )
    parser.add_argument("--version", action="version", version=f"ticslab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(subparser)
            subparser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    follow_parent()  # started by ``ticslab up``: end with it
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``ticslab demo``: ``ticslab up`` plus the dashboard in the same terminal.

The dashboard owns the terminal, so the processes' logs go to files under DATA_DIR/logs.
Quitting the dashboard stops the stack.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from types import FrameType

from rich.console import Console

from services.launcher import cli as up
from services.launcher.logs import FileLogs
from services.launcher.stack import Stack, StartError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dashboard.options import add_display_arguments

    up.add_arguments(parser)
    add_display_arguments(parser)  # --read-only, --refresh, --lang, --theme


def run(args: argparse.Namespace) -> int:
    from dashboard.cli import open_dashboard

    console = Console(highlight=False, soft_wrap=True)
    options = up.options_from_args(args)
    token, _ = up.stack_token(args, options)
    log_dir = options.data_dir / "logs"
    logs = FileLogs(log_dir)
    console.print(f"starting the stack; logs go to {log_dir}/ / registros en {log_dir}/")
    stack = Stack(options, token, logs)
    try:
        stack.start()
    except StartError as error:
        # The error names other programs (a port's holder): text, never markup.
        console.print(f"could not start the stack: {error} (see {log_dir}/)", markup=False)
        logs.close()
        return 1
    leaving = [sig for sig in up.stop_signals() if sig != signal.SIGINT]  # Ctrl+C: a key there
    previous = {sig: signal.signal(sig, leave) for sig in leaving}
    try:
        code = open_dashboard(
            options.balancer_url,
            token,
            read_only=args.read_only,
            refresh=args.refresh,
            lang=args.lang,
            theme=args.theme,
        )
    finally:
        stack.stop()
        logs.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(stopped_line(log_dir))
    return code


def stopped_line(log_dir: Path) -> str:
    """The last thing ``demo`` prints, once every process is gone."""
    return f"stack stopped / servicios detenidos. logs / registros: {log_dir}/"


def leave(signum: int, frame: FrameType | None) -> None:
    """SIGTERM or SIGHUP while the dashboard runs: leave it, so the stack is stopped too."""
    raise SystemExit(128 + signum)

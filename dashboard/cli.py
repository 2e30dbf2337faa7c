"""``ticslab dashboard`` and ``open_dashboard()``, the entry point ``ticslab demo`` calls."""

from __future__ import annotations

import argparse
from typing import Any

from dashboard.main import DashboardApp
from dashboard.options import Options, options_from_args, resolve_options
from dashboard.options import add_arguments as add_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The same flags as ``python -m dashboard`` and ``textual run dashboard``."""
    add_options(parser)


def run(args: argparse.Namespace) -> int:
    """``ticslab dashboard ...``."""
    return run_options(options_from_args(args))


def run_options(options: Options) -> int:
    """Run the app in this terminal until the user quits; the exit code of the app."""
    app = DashboardApp(options)
    app.run()
    return int(app.return_code or 0)


def open_dashboard(url: str, token: str | None = None, **options: Any) -> int:
    """Open the dashboard on ``url``; ``options`` are Options fields (read_only, lang, ...).

    Without ``token`` the token file is tried; with no token at all it opens read-only.
    """
    return run_options(resolve_options(url, token, **options))

"""``ticslab dashboard``, ``open_dashboard()`` (what ``ticslab demo`` opens) and
``serve_web()`` (what ``--web`` serves)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dashboard import web
from dashboard.api import CaFileError
from dashboard.cli_i18n import TEXT
from dashboard.format import safe_url
from dashboard.main import DashboardApp
from dashboard.options import Options, given_token, options_from_args, resolve_options
from dashboard.options import add_arguments as add_options
from services.common import printable
from services.lang import Translator, chosen
from services.lifeline import follow_parent_pid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The same flags as ``python -m dashboard`` and ``textual run dashboard``, and ``--web``."""
    add_options(parser)
    group = parser.add_argument_group("in a browser / en un navegador")
    group.add_argument(
        "--web",
        action="store_true",
        help="serve the dashboard to browsers instead (one dashboard process per tab); "
        "read-only unless --token or TICSLAB_TOKEN is given",
    )
    group.add_argument(
        "--host",
        metavar="ADDRESS",
        help=f"address the page listens on (default {web.DEFAULT_HOST}: this machine only)",
    )
    group.add_argument(
        "--port", type=web.port_number, help=f"port of the page (default {web.DEFAULT_PORT})"
    )
    group.add_argument(
        "--allow-remote-control", action="store_true", help=web.REMOTE_CONTROL_HELP.format("--host")
    )
    # Given by the web server to each tab's dashboard, which then ends with that server.
    parser.add_argument("--served-by", type=int, metavar="PID", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """``ticslab dashboard ...``."""
    if args.served_by is not None:
        follow_parent_pid(args.served_by)  # a killed server's tabs end too
    if args.web:
        return run_web(args)
    if args.host or args.port or args.allow_remote_control:
        print(Translator(TEXT, chosen(args.lang))("web_flags"), file=sys.stderr)
        return 2
    return run_options(options_from_args(args))


def run_options(options: Options) -> int:
    """Run the app in this terminal until the user quits; the exit code of the app (2 when
    its --ca cannot be read)."""
    try:
        app = DashboardApp(options)
    except CaFileError as error:
        t = Translator(TEXT, options.lang)
        print(t("bad_ca", path=error.path, error=error.detail), file=sys.stderr)
        return 2
    app.run()
    return int(app.return_code or 0)


def open_dashboard(url: str, token: str | None = None, **options: Any) -> int:
    """Open the dashboard on ``url``; ``options`` are Options fields (read_only, lang, ...).

    Without ``token`` the token file is tried; with no token at all it opens read-only.
    """
    return run_options(resolve_options(url, token, **options))


def run_web(args: argparse.Namespace) -> int:
    """``ticslab dashboard --web``: control only with a token given (never the token file)."""
    web_options = web.web_options_from_args(
        args, args.url, given_token(args), args.host, args.port, args.ca
    )
    problems = web.problems(web_options)
    if problems:
        print(printable("; ".join(problems)), file=sys.stderr)
        return 1
    t = Translator(TEXT, web_options.dashboard.lang)
    header = t("web_header", url=printable(safe_url(web_options.dashboard.url)))
    entry = f"  dashboard  {web.banner_entry(web_options)}"
    return serve_web(web_options, [header, entry, t("stop_hint")])


def serve_web(web_options: web.WebOptions, banner: list[str]) -> int:
    """Say who else can open the page, print ``banner``, serve until Ctrl+C; 0, or 1 when the
    page could not be served. Check ``web.problems`` first."""
    from dashboard.web_server import serve

    for line in web.exposure_warning(web_options):
        print(printable(line), file=sys.stderr)
    print("\n".join(printable(line) for line in banner), flush=True)
    try:
        serve(web_options)
    except OSError as error:
        t = Translator(TEXT, web_options.dashboard.lang)
        print(printable(t("could_not_serve", error=error)), file=sys.stderr)
        return 1
    return 0

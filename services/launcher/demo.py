"""``ticslab demo``: ``ticslab up`` plus the dashboard in the same terminal, or (``--web``)
served to browsers.

The dashboard owns the terminal, so the processes' logs go to files under DATA_DIR/logs (with
``--web`` too: the terminal keeps the banner). Quitting the dashboard, or Ctrl+C with
``--web``, stops the stack.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from rich.console import Console

from dashboard import web
from services.lang import Translator
from services.launcher import cli as up
from services.launcher.i18n import TEXT
from services.launcher.logs import FileLogs
from services.launcher.stack import Stack, StartError
from services.launcher.windows import EXIT_CODE, refused
from services.stopping import leave, stop_signals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dashboard.options import add_display_arguments

    up.add_stack_arguments(parser)
    add_display_arguments(parser)  # --read-only, --refresh, --lang (the whole stack's too), --theme
    group = parser.add_argument_group("in a browser / en un navegador")
    group.add_argument(
        "--web",
        action="store_true",
        help="serve the dashboard to browsers instead of opening it here; on loopback its "
        "keys control the stack",
    )
    group.add_argument(
        "--web-host",
        metavar="ADDRESS",
        help=f"address the page listens on (default {web.DEFAULT_HOST}: this machine only)",
    )
    group.add_argument(
        "--web-port",
        type=web.port_number,
        metavar="PORT",
        help=f"port of the page (default {web.DEFAULT_PORT})",
    )
    group.add_argument(
        "--allow-remote-control",
        action="store_true",
        help=web.REMOTE_CONTROL_HELP.format("--web-host"),
    )


def run(args: argparse.Namespace) -> int:
    from dashboard.cli import open_dashboard, serve_web

    if refused("demo", args.lang):
        return EXIT_CODE
    console = Console(highlight=False, soft_wrap=True)
    options = up.options_from_args(args)
    t = Translator(TEXT, options.lang)
    if refusal := options.storage_refusal():
        print(f"ticslab demo: {refusal}", file=sys.stderr)
        return 2
    if not args.web and (args.web_host or args.web_port or args.allow_remote_control):
        console.print(t("web_flags"))
        return 2
    token, token_path = up.stack_token(args, options)
    web_options = None
    if args.web:
        url, ca = up.dashboard_url(options), up.dashboard_ca(options)
        web_options = web.web_options_from_args(args, url, token, args.web_host, args.web_port, ca)
        problems = web.problems(web_options, "--web-host")
        if problems:  # before anything starts; --web-host is the user's words: not markup
            console.print(t("could_not_serve", problems="; ".join(problems)), markup=False)
            return 1
    log_dir = options.data_dir / "logs"
    logs = FileLogs(log_dir)
    console.print(t("demo_starting", log_dir=log_dir), markup=False)
    stack = Stack(options, token, logs, token_path)
    try:
        stack.start()
    except StartError as error:
        # The error names other programs (a port's holder): text, never markup.
        console.print(t("could_not_start_logs", error=error, log_dir=log_dir), markup=False)
        logs.close()
        return 1
    leaving = [sig for sig in stop_signals() if sig != signal.SIGINT]  # Ctrl+C: a key there
    previous = {sig: signal.signal(sig, leave) for sig in leaving}
    try:
        if web_options is not None:
            banner = up.banner(options, token_path, web.banner_entry(web_options))
            code = serve_web(web_options, [*banner.splitlines(), t("stop_hint")])
        else:
            for label, value in up.tls_rows(options, t):  # seen again once the dashboard ends
                console.print(f"  {label}  {value}", markup=False)
            code = open_dashboard(
                up.dashboard_url(options),
                token,
                read_only=args.read_only,
                refresh=args.refresh,
                lang=options.lang,
                theme=args.theme,
                ca=up.dashboard_ca(options),
            )
    finally:

        def hurry(signum: int, frame: FrameType | None) -> None:
            """While the stack stops, another signal kills every process at once."""
            stack.request_stop(now=True)

        stopping = {sig: signal.signal(sig, hurry) for sig in stop_signals()}
        stack.stop()
        logs.close()
        for sig, handler in [*stopping.items(), *previous.items()]:
            signal.signal(sig, handler)
    console.print(t("demo_stopped", log_dir=log_dir), markup=False)
    return code

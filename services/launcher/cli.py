"""``ticslab up``: the whole stack as local processes, logs streamed like docker-compose."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from rich.console import Console

from services.balancer.algorithms import ALGORITHMS
from services.balancer.cli import add_tls_arguments
from services.balancer.config import BalancerConfig
from services.balancer.plugin import HOW
from services.common import (
    MAX_WEIGHT,
    add_token_arguments,
    default_token_file,
    weight_from_text,
)
from services.lang import Translator, add_lang_argument, chosen, default_language
from services.launcher.i18n import TEXT
from services.launcher.logs import ConsoleLogs
from services.launcher.stack import HOST, Stack, StackOptions, StartError, TlsOptions
from services.launcher.windows import EXIT_CODE, refused
from services.stopping import stop_signals


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``up``'s options: the stack's and ``--lang``."""
    add_stack_arguments(parser)
    add_lang_argument(
        parser, "language of what is printed and of every process (the balancer's log)"
    )


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """The stack's options, shared with ``demo`` (which has its own ``--lang``)."""
    parser.add_argument("--servers", type=int, default=2, help="task servers (default 2)")
    parser.add_argument("--clients", type=int, default=2, help="client emulators (0 for none)")
    parser.add_argument("--balancer-port", type=int, default=8080)
    parser.add_argument("--first-server-port", type=int, default=5001, help="server1's port")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="holds tasks.json")
    parser.add_argument(
        "--storage",
        default=os.environ.get("TICSLAB_STORAGE", ""),
        metavar="URL",
        help="where every task server keeps the tasks: file:PATH or a path, or "
        "postgresql://USER:PASSWORD@HOST:PORT/DB (pip install -e '.[postgres]'); default: "
        "DATA_DIR/tasks.json (TICSLAB_STORAGE)",
    )
    add_token_arguments(
        parser, "default: TICSLAB_TOKEN or a new one; every process gets it in its environment"
    )
    parser.add_argument(
        "--algorithm",
        metavar=f"NAME|{HOW}",
        help=f"{', '.join(ALGORITHMS)}, or your own class in a Python file, checked before "
        "anything starts (docs/algorithm-plugin.md) (env TICSLAB_ALGORITHM; random)",
    )
    parser.add_argument(
        "--weight",
        action="append",
        type=weight_option,
        default=[],
        metavar="NAME=N",
        help=f"a task server's weight, 0 (no new traffic) to {MAX_WEIGHT} (default 1), "
        "repeatable: --weight server2=3",
    )
    tuning = BalancerConfig()  # the balancer's defaults, for the help
    parser.add_argument(
        "--slow-start",
        type=float,
        metavar="S",
        help="seconds over which a server back in rotation ramps up to its weight (the "
        f"balancer's --slow-start; default {tuning.slow_start:g}: at once)",
    )
    parser.add_argument(
        "--eject-after-5xx",
        type=int,
        metavar="N",
        help="take a server out after N answers in a row were 5xx (the balancer's "
        f"--eject-after-5xx; default {tuning.eject_after_5xx}: off)",
    )
    parser.add_argument(
        "--eject-time",
        type=float,
        metavar="S",
        help="seconds an ejection lasts, times the server's ejections so far (the balancer's "
        f"--eject-time; default {tuning.eject_time:g})",
    )
    parser.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="other servers a failed request is tried on (the balancer's --retries; default "
        f"{tuning.max_retries}; 0 lets clients see every crash)",
    )
    parser.add_argument(
        "--auth-users",
        type=Path,
        metavar="FILE",
        help="an htpasswd file (ticslab passwd): proxied requests need a user's Basic "
        "credentials (the balancer's --auth-users; env TICSLAB_AUTH_USERS; default: none)",
    )
    parser.add_argument(
        "--compress",
        metavar="off|br,zstd,gzip",
        help="compress answers at the balancer with these encodings (the balancer's "
        "--compress; env TICSLAB_COMPRESS; default off)",
    )
    add_tls_arguments(parser)  # the balancer's own TLS flags, passed to it as given


def weight_option(text: str) -> tuple[str, int]:
    """``server2=3`` -> ``("server2", 3)``; whether the server exists is checked later,
    once the number of servers is known."""
    name, _, value = text.partition("=")
    weight = weight_from_text(value)
    if not name.strip() or weight is None:
        # In the environment's language: --lang is not read yet.
        refusal = Translator(TEXT, default_language())("arg_weight", maximum=MAX_WEIGHT, text=text)
        raise argparse.ArgumentTypeError(refusal)
    return name.strip(), weight


def options_from_args(args: argparse.Namespace) -> StackOptions:
    return StackOptions(
        servers=args.servers,
        clients=args.clients,
        balancer_port=args.balancer_port,
        first_server_port=args.first_server_port,
        data_dir=args.data_dir,
        storage=args.storage,
        algorithm=args.algorithm or os.environ.get("TICSLAB_ALGORITHM") or "random",
        weights=dict(args.weight),
        slow_start=args.slow_start,
        eject_after_5xx=args.eject_after_5xx,
        eject_time=args.eject_time,
        retries=args.retries,
        auth_users=args.auth_users or env_path("TICSLAB_AUTH_USERS"),
        compress=args.compress or os.environ.get("TICSLAB_COMPRESS") or None,
        tls=tls_options(args),
        lang=chosen(args.lang),
    )


def env_path(name: str) -> Path | None:
    """The path in variable ``name``, None when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def tls_options(args: argparse.Namespace) -> TlsOptions:
    """The TLS flags (``add_tls_arguments``) as StackOptions holds them."""
    return TlsOptions(
        on=bool(args.tls),
        port=args.tls_port or TlsOptions.port,
        cert=args.tls_cert and Path(args.tls_cert),
        key=args.tls_key and Path(args.tls_key),
        folder=args.tls_dir and Path(args.tls_dir),
        redirect_http=bool(args.redirect_http),
    )


def dashboard_url(options: StackOptions) -> str:
    """The dashboard goes through HTTPS when the balancer serves it (``--redirect-http``
    leaves it no other way), as students' browsers would."""
    if options.tls.enabled:
        return f"https://localhost:{options.tls.port}"
    return options.balancer_url


def dashboard_ca(options: StackOptions) -> str | None:
    """The CA the dashboard checks the balancer with: the local one, with TLS and no
    certificate of the user's (that one is for the system's store)."""
    return None if options.tls.ca is None else str(options.tls.ca)


def dashboard_command(options: StackOptions) -> str:
    """What opens the dashboard on this stack, from another terminal."""
    ca = dashboard_ca(options)
    return f"ticslab dashboard --url {dashboard_url(options)}" + (f" --ca {ca}" if ca else "")


def tls_rows(options: StackOptions, t: Translator) -> list[tuple[str, str]]:
    """The banner's HTTPS lines: the address, the CA to trust, and a curl line that works."""
    tls = options.tls
    if not tls.enabled:
        return []
    https = f"https://localhost:{tls.port}"
    if tls.ca is None:
        return [(t("label_https"), f"{https}  ({t('tls_own_cert', cert=tls.cert)})")]
    return [
        (t("label_https"), https),
        (t("label_ca"), str(tls.ca)),
        (t("label_try"), f"curl --cacert {tls.ca} {https}/health"),
    ]


def stack_token(args: argparse.Namespace, options: StackOptions) -> tuple[str, Path]:
    """The token for this stack (given or new) and the token file of its balancer's address,
    where ``ticslab dashboard --url`` looks for it; ``Stack`` writes it there once the stack
    is up."""
    given = args.token or args.token_file or os.environ.get("TICSLAB_TOKEN")
    token = given or secrets.token_urlsafe(24)
    return token, default_token_file(options.balancer_url)


def banner(options: StackOptions, token_path: Path, dashboard: str | None = None) -> str:
    """What is where, in the stack's language; ``dashboard`` is what its line says
    (``ticslab demo --web``: the page's address), else the command that opens it."""
    t = Translator(TEXT, options.lang)
    servers, clients = options.servers, options.clients
    title = t(
        "banner_title",
        servers=t("servers_1") if servers == 1 else t("servers_n", n=servers),
        clients=t("clients_1") if clients == 1 else t("clients_n", n=clients),
    )
    rows = [
        (
            t("label_balancer"),
            f"{options.balancer_url}  (/status, /events, /errors/stats, /metrics)",
        ),
        *tls_rows(options, t),
    ]
    for number, port in enumerate(options.server_ports, start=1):
        weight = options.weights.get(f"server{number}")
        given = "" if weight is None else "  " + t("weight", weight=weight)
        rows.append((f"server{number}", f"http://{HOST}:{port}{given}"))
    rows += [
        (t("label_tasks"), options.storage_shown),
        *auth_rows(t, options),
        (t("label_token"), f"{token_path}  (Authorization: Bearer $(cat {token_path}))"),
        (t("label_dashboard"), dashboard or dashboard_command(options)),
    ]
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join([title, *(f"  {label:<{width}}{value}" for label, value in rows)])


def auth_rows(t: Translator, options: StackOptions) -> list[tuple[str, str]]:
    """The banner's line for ``--auth-users``: the file, and how to send credentials."""
    if options.auth_users is None:
        return []
    return [(t("label_auth"), t("auth_row", file=options.auth_users))]


def run(args: argparse.Namespace) -> int:
    if refused("up", args.lang):
        return EXIT_CODE
    console = Console(highlight=False, soft_wrap=True)
    logs = ConsoleLogs(console)
    options = options_from_args(args)
    t = Translator(TEXT, options.lang)
    if refusal := options.storage_refusal():
        print(f"ticslab up: {refusal}", file=sys.stderr)
        return 2
    token, token_path = stack_token(args, options)
    stack = Stack(options, token, logs, token_path)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        """The first signal stops everything in order; a second one kills at once."""
        if stop.is_set():
            logs.note(t("killing"))
        stack.request_stop(now=stop.is_set())
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in stop_signals()}
    try:
        try:
            stack.start()
        except StartError as error:
            logs.note(t("could_not_start", error=error))
            return 130 if stop.is_set() else 1
        logs.print(banner(options, token_path))
        logs.print(t("stop_hint"))
        while not stop.wait(0.5):
            pass
        logs.note(t("stopping"))
        stack.stop()
        logs.note(t("stopped"))
        return 0
    finally:
        stack.stop()  # whatever went wrong above (even a closed output), no process is left
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""``ticslab balancer``: the load balancer on :8080 in front of the task servers."""

from __future__ import annotations

import argparse
import sys

from services.balancer.algorithms import ALGORITHMS
from services.balancer.config import (
    MAX_RETRIES,
    BalancerConfig,
    backend_settings,
    env_defaults,
    parse_backend,
)
from services.balancer.plugin import HOW, choose
from services.common import printable
from services.lang import add_lang_argument, chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BalancerConfig()
    parser.add_argument("--host", help="address to listen on (env TICSLAB_HOST; 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env TICSLAB_PORT; 8080)")
    parser.add_argument(
        "--backend",
        action="append",
        type=parse_backend,
        metavar="'NAME=URL [weight=N]'",
        help="a task server, repeatable, with an optional weight from 0 (no new traffic) to "
        "256 (default 1), e.g. 'server1=http://127.0.0.1:5001 weight=3' (env "
        "TICSLAB_BACKENDS=NAME=URL,NAME=URL; default server1=http://127.0.0.1:5001 and "
        "server2=http://127.0.0.1:5002)",
    )
    parser.add_argument(
        "--algorithm",
        metavar=f"NAME|{HOW}",
        help=f"how to pick a server: {', '.join(ALGORITHMS)}, or your own class in a Python "
        "file, loaded at start (docs/algorithm-plugin.md) (env TICSLAB_ALGORITHM; random)",
    )
    for flag, value, text in (
        ("--connect-timeout", defaults.connect_timeout, "seconds to open a connection"),
        (
            "--response-timeout",
            defaults.response_timeout,
            "seconds a server may stay silent: before its answer's headers, and between two "
            "pieces of its body (a transfer that keeps going is never cut)",
        ),
        (
            "--request-timeout",
            defaults.request_timeout,
            "seconds a client has to send its request headers, and for each pause in its body "
            "(408 after)",
        ),
        (
            "--keep-alive-timeout",
            defaults.keep_alive_timeout,
            "seconds an idle client connection is kept open",
        ),
        ("--check-interval", defaults.check_interval, "seconds between health checks"),
        ("--fast-check-interval", defaults.fast_check_interval, "interval while state changes"),
        ("--check-timeout", defaults.check_timeout, "seconds a health check may take"),
    ):
        parser.add_argument(flag, type=float, default=value, help=f"{text} (default {value:g})")
    for flag, value, text in (
        ("--max-body-size", defaults.max_body_bytes, "bytes of a request body (413 past it)"),
        (
            "--max-header-size",
            defaults.max_header_bytes,
            "bytes of a request's header section (431 past it)",
        ),
    ):
        parser.add_argument(flag, type=int, default=value, help=f"{text} (default {value})")
    parser.add_argument(
        "--max-connections",
        type=int,
        help="open client connections, 503 past it (default: as many as the file-descriptor "
        "limit allows, two per connection)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name /control answers besides localhost, IP addresses and the Compose "
        "service names; repeatable (env TICSLAB_ALLOWED_HOSTS=NAME,NAME)",
    )
    parser.add_argument(
        "--health-path",
        help=f"path of each server's health check, 200 = healthy (env TICSLAB_HEALTH_PATH; "
        f"{defaults.check_path})",
    )
    parser.add_argument(
        "--slow-start",
        type=float,
        default=defaults.slow_start,
        metavar="S",
        help="seconds over which a server back in rotation ramps up from 5%% to its full weight "
        "(HAProxy's slowstart; default 0: at once)",
    )
    parser.add_argument(
        "--eject-after-5xx",
        type=int,
        default=defaults.eject_after_5xx,
        metavar="N",
        help="take a server out after N answers in a row were 5xx, never the last one left "
        "(outlier ejection; default 0: off, so forced errors stay in the counts)",
    )
    parser.add_argument(
        "--eject-time",
        type=float,
        default=defaults.eject_time,
        metavar="S",
        help=f"seconds an ejection lasts, times the server's ejections so far, up to 6 "
        f"(default {defaults.eject_time:g})",
    )
    parser.add_argument("--fall", type=int, default=defaults.fall, help="failed checks to DOWN")
    parser.add_argument("--rise", type=int, default=defaults.rise, help="passed checks to UP")
    parser.add_argument(
        "--retries",
        type=int,
        default=defaults.max_retries,
        metavar="N",
        help=f"other servers a failed request is tried on before the client sees the failure "
        f"(0 to {MAX_RETRIES}; default {defaults.max_retries}; 0 shows every crash to clients)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    add_lang_argument(
        parser, "language of the log lines and of errors to requests without Accept-Language"
    )
    parser.add_argument(
        "--token", help="bearer token for /control writes (env TICSLAB_TOKEN; default: generated)"
    )
    parser.add_argument(
        "--driver",
        choices=("auto", "docker", "local", "none"),
        help="what carries out stop/start/kill/pause (env TICSLAB_DRIVER; auto)",
    )
    parser.add_argument(
        "--discover",
        choices=("docker",),
        help="follow the task-server containers of our Compose project (env TICSLAB_DISCOVER)",
    )


def config_from_args(args: argparse.Namespace) -> BalancerConfig:
    """Flags win over ``TICSLAB_*`` variables, which win over the handout's defaults."""
    settings = env_defaults()
    for name in ("host", "port", "algorithm", "token", "driver", "discover"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.health_path is not None:
        settings["check_path"] = args.health_path
    if args.allowed_host:
        settings["allowed_hosts"] = args.allowed_host
    if args.backend:
        settings.update(backend_settings(args.backend))
    elif settings.get("discover") == "docker" and "backends" not in settings:
        settings["backends"] = []  # discovery supplies them
    settings["algorithm"], settings["plugin"] = choose(str(settings.get("algorithm", "random")))
    return BalancerConfig(
        **settings,  # type: ignore[arg-type]
        connect_timeout=args.connect_timeout,
        response_timeout=args.response_timeout,
        request_timeout=args.request_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        max_body_bytes=args.max_body_size,
        max_header_bytes=args.max_header_size,
        max_connections=args.max_connections,
        check_interval=args.check_interval,
        fast_check_interval=args.fast_check_interval,
        check_timeout=args.check_timeout,
        fall=args.fall,
        rise=args.rise,
        max_retries=args.retries,
        slow_start=args.slow_start,
        eject_after_5xx=args.eject_after_5xx,
        eject_time=args.eject_time,
        lang=chosen(args.lang),
    )


def run(args: argparse.Namespace) -> int:
    from services.balancer.app import create_app
    from services.balancer.control import ensure_token
    from services.balancer.edge import serve_edge

    try:
        config = config_from_args(args)
        config.token = ensure_token(config.token, f"http://{config.host}:{config.port}")
        app = create_app(config)  # a plugin's constructor runs again here
    except ValueError as error:  # PluginError too: one line naming the file, no traceback
        print(f"ticslab balancer: {printable(str(error))}", file=sys.stderr)
        return 2
    serve_edge(app, config, log_level=args.log_level)
    return 0

"""``ticslab balancer``: the load balancer on :8080 in front of the task servers."""

from __future__ import annotations

import argparse
import sys

from services.balancer.config import ALGORITHMS, BalancerConfig, env_defaults, parse_backend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BalancerConfig()
    parser.add_argument("--host", help="address to listen on (env TICSLAB_HOST; 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env TICSLAB_PORT; 8080)")
    parser.add_argument(
        "--backend",
        action="append",
        type=parse_backend,
        metavar="NAME=URL",
        help="a task server, repeatable (env TICSLAB_BACKENDS=NAME=URL,NAME=URL; default "
        "server1=http://127.0.0.1:5001 and server2=http://127.0.0.1:5002)",
    )
    parser.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        help="how to pick a server (env TICSLAB_ALGORITHM; random)",
    )
    for flag, value, text in (
        ("--connect-timeout", defaults.connect_timeout, "seconds to open a connection"),
        ("--response-timeout", defaults.response_timeout, "seconds to wait for an answer, per try"),
        ("--check-interval", defaults.check_interval, "seconds between health checks"),
        ("--fast-check-interval", defaults.fast_check_interval, "interval while state changes"),
        ("--check-timeout", defaults.check_timeout, "seconds a health check may take"),
    ):
        parser.add_argument(flag, type=float, default=value, help=f"{text} (default {value:g})")
    parser.add_argument("--fall", type=int, default=defaults.fall, help="failed checks to DOWN")
    parser.add_argument("--rise", type=int, default=defaults.rise, help="passed checks to UP")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
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
    if args.backend:
        settings["backends"] = args.backend
    elif settings.get("discover") == "docker" and "backends" not in settings:
        settings["backends"] = []  # discovery supplies them
    return BalancerConfig(
        **settings,  # type: ignore[arg-type]
        connect_timeout=args.connect_timeout,
        response_timeout=args.response_timeout,
        check_interval=args.check_interval,
        fast_check_interval=args.fast_check_interval,
        check_timeout=args.check_timeout,
        fall=args.fall,
        rise=args.rise,
    )


def run(args: argparse.Namespace) -> int:
    from services.balancer.app import create_app
    from services.balancer.control import ensure_token
    from services.common import serve

    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"ticslab balancer: {error}", file=sys.stderr)
        return 2
    config.token = ensure_token(config.token)
    # The balancer is the edge: the client is the socket's peer, whatever headers it sends.
    app = create_app(config)
    serve(app, config.host, config.port, log_level=args.log_level, proxy_headers=False)
    return 0

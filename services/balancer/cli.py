"""``ticslab balancer``: the load balancer on :8080 in front of the task servers."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from services.balancer.algorithms import ALGORITHMS
from services.balancer.compression import parse_encodings
from services.balancer.config import (
    MAX_DISCOVER_INTERVAL,
    MAX_RETRIES,
    MIN_DISCOVER_INTERVAL,
    BalancerConfig,
    backend_settings,
    parse_backend,
    parse_dns_name,
    parse_nameserver,
)
from services.balancer.plugin import HOW, choose
from services.common import add_token_arguments, printable
from services.lang import add_lang_argument, chosen

T = TypeVar("T")
# Flags read from elsewhere: services/lang.py reads TICSLAB_LANG itself.
NOT_SETTINGS = frozenset({"help", "lang", "token_file"})  # --token-file beats TICSLAB_TOKEN
# Each flag's variable is TICSLAB_ and its name, except these, which hold a comma-separated
# list of what the flag repeats.
LIST_VARIABLES = {"backend": "TICSLAB_BACKENDS", "allowed_host": "TICSLAB_ALLOWED_HOSTS"}
# Flags whose setting in BalancerConfig has another name.
FIELDS = {
    "health_path": "check_path",
    "max_body_size": "max_body_bytes",
    "max_header_size": "max_header_bytes",
    "retries": "max_retries",
    "allowed_host": "allowed_hosts",
}
NOT_CONFIG = frozenset({"log_level"})  # how it is served, not what it does: run() reads it


def seconds(text: str) -> float:
    """A time in seconds above 0 (a timeout or interval of 0 or infinity never works)."""
    return _seconds(text, zero=False)


def seconds_or_zero(text: str) -> float:
    return _seconds(text, zero=True)


def _seconds(text: str, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 if zero else value > 0) or not value < math.inf:
        floor = "0 or more" if zero else "above 0"
        raise argparse.ArgumentTypeError(f"expected seconds, {floor}; got {text!r}")
    return value


def seconds_within(low: float, high: float) -> Callable[[str], float]:
    """A type for times in seconds from ``low`` to ``high``."""

    def parse(text: str) -> float:
        value = seconds(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected seconds, {low:g} to {high:g}; got {text!r}")
        return value

    return parse


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """A type for whole numbers from ``low`` (to ``high``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            span = f"{low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"expected a whole number, {span}; got {text!r}")
        return value

    return parse


def compress_encodings(text: str) -> tuple[str, ...]:
    try:
        return parse_encodings(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag, each with its variable named in ``--help`` (``given_values`` reads them)."""
    defaults = BalancerConfig()
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=whole(1, 65535), help="port to listen on (default 8080)")
    parser.add_argument(
        "--backend",
        action="append",
        type=parse_backend,
        metavar="'NAME=URL [weight=N]'",
        help="a task server, repeatable, with an optional weight from 0 (no new traffic) to "
        "256 (default 1), e.g. 'server1=http://127.0.0.1:5001 weight=3' (default "
        "server1=http://127.0.0.1:5001 and server2=http://127.0.0.1:5002; in the variable: "
        "NAME=URL,NAME=URL)",
    )
    parser.add_argument(
        "--algorithm",
        metavar=f"NAME|{HOW}",
        help=f"how to pick a server: {', '.join(ALGORITHMS)}, or your own class in a Python "
        "file, loaded at start (docs/algorithm-plugin.md) (default random)",
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
        (
            "--upstream-keepalive",
            defaults.upstream_keepalive,
            "seconds an idle pooled connection to a server is kept: keep it below the servers' "
            "own keep-alive timeout",
        ),
        ("--check-interval", defaults.check_interval, "seconds between health checks"),
        ("--fast-check-interval", defaults.fast_check_interval, "interval while state changes"),
        (
            "--check-timeout",
            defaults.check_timeout,
            "seconds a health check may take (a timed-out check is not counted while the "
            "server answers live traffic)",
        ),
    ):
        parser.add_argument(flag, type=seconds, metavar="S", help=f"{text} (default {value:g})")
    for flag, value, text in (
        ("--max-body-size", defaults.max_body_bytes, "bytes of a request body (413 past it)"),
        (
            "--max-header-size",
            defaults.max_header_bytes,
            "bytes of a request's header section (431 past it)",
        ),
    ):
        parser.add_argument(flag, type=whole(1), metavar="BYTES", help=f"{text} (default {value})")
    parser.add_argument(
        "--max-connections",
        type=whole(1),
        metavar="N",
        help="open client connections, 503 past it (default: as many as the file-descriptor "
        "limit allows, two per connection)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a Host name /control answers besides localhost, IP addresses and the Compose "
        "service names; repeatable (in the variable: NAME,NAME)",
    )
    parser.add_argument(
        "--health-path",
        metavar="PATH",
        help=f"path of each server's health check, 200 = healthy (default {defaults.check_path})",
    )
    parser.add_argument(
        "--slow-start",
        type=seconds_or_zero,
        metavar="S",
        help="seconds over which a server back in rotation ramps up from 5%% to its full weight "
        "(HAProxy's slowstart; default 0: at once)",
    )
    parser.add_argument(
        "--eject-after-5xx",
        type=whole(0),
        metavar="N",
        help="take a server out after N answers in a row were 5xx, never the last one left "
        "(outlier ejection; default 0: off, so forced errors stay in the counts)",
    )
    parser.add_argument(
        "--eject-time",
        type=seconds,
        metavar="S",
        help=f"seconds an ejection lasts, times the server's ejections so far, up to 6 "
        f"(default {defaults.eject_time:g})",
    )
    parser.add_argument(
        "--fall",
        type=whole(1),
        metavar="N",
        help=f"failed checks to DOWN (default {defaults.fall})",
    )
    parser.add_argument(
        "--rise", type=whole(1), metavar="N", help=f"passed checks to UP (default {defaults.rise})"
    )
    parser.add_argument(
        "--retries",
        type=whole(0, MAX_RETRIES),
        metavar="N",
        help=f"other servers a failed request is tried on before the client sees the failure "
        f"(0 to {MAX_RETRIES}; default {defaults.max_retries}; 0 shows every crash to clients)",
    )
    parser.add_argument(
        "--compress",
        type=compress_encodings,
        metavar="off|br,zstd,gzip",
        help="compress answers (JSON, text, JS, CSS, SVG of 1 KiB or more) with the encodings "
        "listed, chosen by the client's Accept-Encoding, ties in the order given (default off)",
    )
    parser.add_argument("--log-level", metavar="LEVEL", help="uvicorn log level (default info)")
    add_lang_argument(
        parser, "language of the log lines and of errors to requests without Accept-Language"
    )
    add_token_arguments(parser, "bearer token for /control writes; default: generated")
    parser.add_argument(
        "--driver",
        choices=("auto", "docker", "swarm", "local", "none"),
        help="what carries out stop/start/kill/pause (default auto)",
    )
    parser.add_argument(
        "--discover",
        choices=("docker", "dns"),
        help="follow the task-server containers of our Compose project (docker), or the "
        "addresses a DNS name gives (dns: Swarm's tasks.NAME, a Kubernetes headless Service)",
    )
    add_dns_arguments(parser)
    parser.add_argument(
        "--auth-users",
        metavar="FILE",
        help="an htpasswd file of bcrypt hashes (ticslab passwd, htpasswd -B): proxied "
        "requests need Basic credentials of one of its users (default: none needed)",
    )
    add_tls_arguments(parser)
    for action in settings_flags(parser):
        action.help = f"{action.help} [env {variable(action.dest)}]"


def add_dns_arguments(parser: argparse.ArgumentParser) -> None:
    """``--discover dns``'s settings (dns_discovery.py)."""
    defaults = BalancerConfig()
    parser.add_argument(
        "--discover-name",
        type=usage(parse_dns_name),
        metavar="NAME",
        help=f"the name whose A and AAAA records are the servers (default "
        f"{defaults.discover_name}; a final dot skips the search domains)",
    )
    parser.add_argument(
        "--discover-port",
        type=whole(1, 65535),
        metavar="N",
        help=f"the port of the servers it finds (default {defaults.discover_port})",
    )
    parser.add_argument(
        "--discover-interval",
        type=seconds_within(MIN_DISCOVER_INTERVAL, MAX_DISCOVER_INTERVAL),
        metavar="S",
        help=f"seconds between two lookups, {MIN_DISCOVER_INTERVAL:g} to "
        f"{MAX_DISCOVER_INTERVAL:g} (default {defaults.discover_interval:g})",
    )
    parser.add_argument(
        "--discover-dns",
        type=usage(parse_nameserver),
        metavar="ADDRESS[:PORT]",
        help="the nameserver to ask (default: the system's, /etc/resolv.conf)",
    )


def usage(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` as an argparse type: its ValueError's words, not "invalid value"."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return checked


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """TLS termination (tls.py); ``ticslab up``/``demo`` take the same flags."""
    defaults = BalancerConfig()
    parser.add_argument(
        "--tls",
        action="store_const",
        const=True,
        help="also serve HTTPS on --tls-port (on with --tls-cert too)",
    )
    parser.add_argument(
        "--tls-port",
        type=whole(1, 65535),
        metavar="N",
        help=f"the HTTPS port (default {defaults.tls_port})",
    )
    parser.add_argument(
        "--tls-cert", metavar="FILE", help="your PEM certificate (default: the local CA's)"
    )
    parser.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="where the local CA (ca.pem) and its certificate are made once and reused "
        "(default: ~/.local/state/ticslab/tls)",
    )
    parser.add_argument(
        "--redirect-http",
        action="store_const",
        const=True,
        help="the HTTP port answers 308 to HTTPS, except /health (needs TLS)",
    )


def switch(text: str) -> bool:
    """An on/off flag's variable: 1/true/yes/on or 0/false/no/off (ValueError otherwise)."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1 or 0; got {text!r}")


def settings_flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The flags that have a ``TICSLAB_*`` variable: all but --help and --lang."""
    return [a for a in parser._actions if a.option_strings and a.dest not in NOT_SETTINGS]


def variable(dest: str) -> str:
    return LIST_VARIABLES.get(dest, f"TICSLAB_{dest.upper()}")


def from_environment(action: argparse.Action, name: str, text: str) -> object:
    """``text`` of variable ``name`` read as ``action``'s flag reads it; ValueError naming the
    variable (a usage error, exit 2) when it cannot be."""
    convert = action.type if callable(action.type) else str
    if action.const is True:  # an on/off flag (--tls): its variable says 1 or 0
        convert = switch
    try:
        if action.dest in LIST_VARIABLES:
            return [convert(part.strip()) for part in text.split(",") if part.strip()]
        value = convert(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        raise ValueError(f"{name}: {error}") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{name}: {text!r} is not one of {', '.join(action.choices)}")
    return value


def given_values(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, object]:
    """Each flag's value: from the command line, else from its ``TICSLAB_*`` variable (an
    empty one is unset, as Compose passes ``${X:-}``); flags left at neither are absent."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    values: dict[str, object] = {}
    for action in settings_flags(parser):
        value = getattr(args, action.dest, None)
        name = variable(action.dest)
        if value is None and environ.get(name, "").strip():
            value = from_environment(action, name, environ[name].strip())
        if value is not None:
            values[action.dest] = value
    if getattr(args, "token_file", None):  # never together with --token
        values["token"] = args.token_file
    values["lang"] = chosen(getattr(args, "lang", None))  # TICSLAB_LANG is read by services.lang
    return values


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> BalancerConfig:
    """Flags win over ``TICSLAB_*`` variables, which win over the defaults."""
    return config_from_values(given_values(args, os.environ if environ is None else environ))


def config_from_values(values: dict[str, object]) -> BalancerConfig:
    settings: dict[str, Any] = {
        FIELDS.get(dest, dest): value
        for dest, value in values.items()
        if dest not in NOT_CONFIG and dest != "backend"
    }
    if isinstance(backends := values.get("backend"), list):  # --backend given (argparse's list)
        settings.update(backend_settings(backends))
    elif settings.get("discover") in ("docker", "dns"):
        settings["backends"] = []  # discovery supplies them
    settings["algorithm"], settings["plugin"] = choose(str(settings.get("algorithm", "random")))
    return BalancerConfig(**settings)


def run(args: argparse.Namespace) -> int:
    from services.balancer.app import create_app
    from services.balancer.control import ensure_token
    from services.balancer.edge import serve_edge
    from services.balancer.htpasswd import load_users
    from services.balancer.tls import tls_files

    try:
        values = given_values(args, os.environ)
        config = config_from_values(values)
        if config.auth_users:  # refused before a token file is written for a balancer that won't
            load_users(Path(config.auth_users))  # run
        config.token = ensure_token(config.token, f"http://{config.host}:{config.port}")
        app = create_app(config)  # a plugin's constructor runs again here
        tls = tls_files(config)  # the user's checked, or the local CA's made, before serving
    except ValueError as error:  # PluginError, CertificateError too: one line, no traceback
        print(f"ticslab balancer: {printable(str(error))}", file=sys.stderr)
        return 2
    serve_edge(app, config, log_level=str(values.get("log_level", "info")), tls=tls)
    return 0

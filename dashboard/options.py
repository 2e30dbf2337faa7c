"""The dashboard's options, read from flags, environment and the token file at start-up.

Parsing happens when the app starts (never at import) so that ``textual run dashboard
--url ...``, ``python -m dashboard ...`` and ``ticslab dashboard ...`` share one parser.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from dashboard.cli_i18n import TEXT as CLI_TEXT
from services.common import add_token_arguments, default_token_file, read_token_file
from services.lang import Translator, add_lang_argument, chosen, default_language

DEFAULT_URL = "http://localhost:8080"
CONTRAST_THEME = "ticslab-contrast"
MIN_REFRESH = 0.25
MAX_REFRESH = 30.0


@dataclass(frozen=True)
class Options:
    """Everything the app needs to start; the token never reaches the screen."""

    url: str = DEFAULT_URL
    token: str | None = None
    read_only: bool = False
    refresh: float = 1.0
    lang: str = "en"
    theme: str | None = None
    ca: str | None = None  # the CA file an https:// balancer's certificate is checked with


def positive_seconds(text: str) -> float:
    """An argparse type: a refresh period within the bounds the poller accepts."""
    t = Translator(CLI_TEXT, default_language())  # --lang is not read yet
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(t("arg_not_seconds", text=text)) from None
    if not MIN_REFRESH <= value <= MAX_REFRESH:
        refusal = t("arg_refresh", low=MIN_REFRESH, high=MAX_REFRESH, value=value)
        raise argparse.ArgumentTypeError(refusal)
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The dashboard's flags (shared by every way of starting it)."""
    parser.add_argument(
        "--url",
        default=os.environ.get("TICSLAB_URL", DEFAULT_URL),
        help="balancer URL (env TICSLAB_URL, default %(default)s)",
    )
    parser.add_argument(
        "--ca",
        default=os.environ.get("TICSLAB_CA"),
        metavar="FILE",
        help="for an https:// URL: the CA that signed the balancer's certificate, e.g. the "
        "local one ticslab up --tls names (env TICSLAB_CA; default: the system's store)",
    )
    add_token_arguments(
        parser,
        "else env TICSLAB_TOKEN, else the token file of the balancer at --url, "
        f"e.g. {default_token_file()}",
    )
    add_display_arguments(parser)


def add_display_arguments(parser: argparse.ArgumentParser) -> None:
    """How the dashboard looks and polls (``ticslab demo`` takes these too)."""
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="projector mode: no controls (automatic without a token)",
    )
    parser.add_argument(
        "--refresh",
        type=positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between polls (default %(default)s)",
    )
    add_lang_argument(parser)
    parser.add_argument("--theme", default=None, help="Textual theme name")


def resolve_options(
    url: str,
    token: str | None = None,
    *,
    read_only: bool = False,
    refresh: float = 1.0,
    lang: str | None = None,
    theme: str | None = None,
    ca: str | None = None,
) -> Options:
    """The one place that fills in the token from the token file and the language from
    ``TICSLAB_LANG`` or the locale, and turns read-only on when there is no token. A
    read-only dashboard (a projector, a read-only web tab) never reads the token file."""
    token = None if read_only else token or read_token_file(default_token_file(url))
    return Options(
        url=url.rstrip("/"),
        token=token,
        read_only=bool(read_only or not token),
        refresh=refresh,
        lang=chosen(lang),
        theme=theme,
        ca=ca,
    )


def options_from_args(args: argparse.Namespace) -> Options:
    """Options from parsed flags (``ticslab dashboard`` and ``parse_options``)."""
    return resolve_options(
        args.url,
        given_token(args),
        read_only=args.read_only,
        refresh=args.refresh,
        lang=args.lang,
        theme=args.theme,
        ca=args.ca,
    )


def given_token(args: argparse.Namespace) -> str | None:
    """``--token``, else ``--token-file``'s, else TICSLAB_TOKEN (None: the token file of the
    balancer's address is tried later, except by ``--web``)."""
    return args.token or args.token_file or os.environ.get("TICSLAB_TOKEN")


def parse_options(argv: list[str]) -> Options:
    """Options from command-line words (used by ``textual run dashboard ...``)."""
    parser = argparse.ArgumentParser(prog="dashboard", description="ticslab dashboard")
    add_arguments(parser)
    return options_from_args(parser.parse_args(argv))

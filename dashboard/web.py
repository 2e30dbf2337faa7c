"""The dashboard in a browser: who may do what, and the command each browser tab runs.

``ticslab dashboard --web`` and ``ticslab demo --web`` serve the dashboard with textual-serve
(``dashboard/web_server.py``), which starts one dashboard process per browser tab. What those
processes may do is decided here, once, from the flags:

- control (the keys that stop servers) needs a token given on the command line or in
  ``TICSLAB_TOKEN`` (``ticslab demo`` gives its stack's). The token file is not read: handing
  control to a browser is asked for, never found;
- when the page listens beyond this machine (``--host`` not loopback) control also needs
  ``--allow-remote-control``: the page asks for no password, so without it everyone who reaches
  the page only watches.

The token reaches the dashboards through their environment, never a command line (``ps``
shows those to every user) nor the page.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import socket
import sys
from dataclasses import dataclass

from dashboard.cli_i18n import TEXT as CLI_TEXT
from dashboard.options import Options
from services.binding import bind_error
from services.lang import Translator, chosen, default_language

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
TOKEN_ENV = "TICSLAB_TOKEN"
TOKEN_FILE_ENV = "TICSLAB_TOKEN_FILE"
WILDCARDS = frozenset({"0.0.0.0", "::"})

ASKED = "read-only / solo lectura"
NO_TOKEN = "read-only: no --token or TICSLAB_TOKEN / solo lectura: sin --token ni TICSLAB_TOKEN"
REMOTE = (
    "read-only: control beyond this machine needs --allow-remote-control / solo lectura: el "
    "control desde otras máquinas requiere --allow-remote-control"
)
CONTROL = "control: its keys stop servers / control: sus teclas detienen servidores"

REMOTE_CONTROL_HELP = (  # .format(the command's --host flag)
    "with a {} other than loopback, give the browsers control too (anyone who reaches the "
    "page can then stop servers); without it they only watch"
)


@dataclass(frozen=True)
class WebOptions:
    """Where the page listens and the options of every tab's dashboard."""

    host: str
    port: int
    dashboard: Options  # token None unless the tabs get control
    mode: str  # CONTROL, or why the tabs are read-only (English / Spanish)

    @property
    def netloc(self) -> str:
        """``host:port`` as a browser writes it in ``Host`` and ``Origin``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def control(self) -> bool:
        return not self.dashboard.read_only


def web_options(
    url: str,
    token: str | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    read_only: bool = False,
    allow_remote_control: bool = False,
    refresh: float = 1.0,
    lang: str | None = None,
    theme: str | None = None,
    ca: str | None = None,
) -> WebOptions:
    """The one place that decides whether the tabs get control (see the module's docstring)."""
    if read_only:
        mode = ASKED
    elif not token:
        mode = NO_TOKEN
    elif not (is_loopback(host) or allow_remote_control):
        mode = REMOTE
    else:
        mode = CONTROL
    control = mode == CONTROL
    dashboard = Options(
        url=url.rstrip("/"),
        token=token if control else None,
        read_only=not control,
        refresh=refresh,
        lang=chosen(lang),
        theme=theme,
        ca=ca,
    )
    return WebOptions(host, port, dashboard, mode)


def web_options_from_args(
    args: argparse.Namespace,
    url: str,
    token: str | None,
    host: str | None,
    port: int | None,
    ca: str | None = None,
) -> WebOptions:
    """``web_options`` with the display and control flags both ``dashboard --web`` and
    ``demo --web`` take (``--read-only``, ``--allow-remote-control``, ``--refresh``,
    ``--lang``, ``--theme``); each names its own host and port flags, and the CA of an
    https:// balancer (``--ca``, or the stack's local one)."""
    return web_options(
        url,
        token,
        host=host or DEFAULT_HOST,
        port=port or DEFAULT_PORT,
        read_only=args.read_only,
        allow_remote_control=args.allow_remote_control,
        refresh=args.refresh,
        lang=args.lang,
        theme=args.theme,
        ca=ca,
    )


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host``: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may well be reachable from the network


def port_number(text: str) -> int:
    """An argparse type: a TCP port to listen on."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        # In the environment's language: --lang is not read yet.
        t = Translator(CLI_TEXT, default_language())
        raise argparse.ArgumentTypeError(t("arg_port", text=text))
    return int(text)


def problems(web: WebOptions, host_flag: str = "--host") -> list[str]:
    """Why the page cannot be served as asked, in words of the dashboard's language (empty
    when it can); ``host_flag`` is how the command spells ``--host``."""
    t = Translator(CLI_TEXT, web.dashboard.lang)
    if os.name == "nt":
        return [t("no_windows")]
    if web.host in WILDCARDS:
        return [t("wildcard", flag=host_flag, host=web.host)]
    problem = listen_problem(web.host, web.port, host_flag, web.dashboard.lang)
    return [problem] if problem else []


def listen_problem(host: str, port: int, host_flag: str = "--host", lang: str = "en") -> str | None:
    """Why ``host:port`` cannot be listened on now (None when it can), checked before anything
    starts so that ``ticslab demo --web`` does not start a stack it cannot show."""
    t = Translator(CLI_TEXT, lang)
    error = bind_error(host, port)
    if isinstance(error, socket.gaierror):
        return t("bad_host", flag=host_flag, host=host, error=error.strerror or error)
    if error is not None:
        return t("cannot_listen", host=host, port=port, error=error.strerror or error)
    return None


def dashboard_command(web: WebOptions, server_pid: int) -> str:
    """The command textual-serve runs for each tab, through a shell: the words are quoted by
    ``shlex.join``, and ``exec`` leaves no shell in between, so the dashboard is the server's
    own child and can watch it (``--served-by``). The token is not here (``hand_over_token``);
    a read-only tab runs through ``env`` with ``TICSLAB_TOKEN_FILE`` set to ``/dev/null``."""
    options = web.dashboard
    argv = [
        sys.executable, "-m", "services.cli", "dashboard", "--url", options.url,
        "--refresh", str(options.refresh), "--lang", options.lang,
        "--served-by", str(server_pid),
    ]  # fmt: skip
    if options.theme:
        argv += ["--theme", options.theme]
    if options.ca:
        argv += ["--ca", options.ca]
    if not options.read_only:
        return "exec " + shlex.join(argv)
    # A read-only tab is given no way to the token file: its path is the empty /dev/null.
    no_token_file = f"{TOKEN_FILE_ENV}={os.devnull}"
    return "exec " + shlex.join(["env", no_token_file, *argv, "--read-only"])


def hand_over_token(web: WebOptions) -> None:
    """Put the token, when the tabs get control, in this process's environment, which
    textual-serve copies for each tab's dashboard (it takes no environment of its own); else
    take out any ``TICSLAB_TOKEN`` of the user's, so no tab's dashboard has one."""
    os.environ.pop(TOKEN_ENV, None)
    if web.dashboard.token:
        os.environ[TOKEN_ENV] = web.dashboard.token


def banner_entry(web: WebOptions) -> str:
    """What the banner's ``dashboard`` line says: the page's address and what its keys do."""
    return f"{web.url}  ({web.mode})"


def exposure_warning(web: WebOptions) -> list[str]:
    """Who else can open the page, in English and Spanish, when it listens beyond this
    machine (no lines when it does not)."""
    if is_loopback(web.host):
        return []
    if web.control:
        can = "stop, kill and pause servers from it", "detener, matar y congelar servidores"
    else:
        can = "watch it (read-only)", "verlo (solo lectura)"
    return [
        f"warning: every machine that can reach {web.host} (your network, maybe more) can open "
        f"the dashboard at {web.url}, with no password, and {can[0]}.",
        f"aviso: toda máquina que llegue a {web.host} (tu red, quizá más) puede abrir el panel "
        f"en {web.url}, sin contraseña, y {can[1]}.",
    ]

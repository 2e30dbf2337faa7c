"""The few pieces the task server and the balancer truly share, free of any web framework.

Both expose the course's ``/errors/stats`` shape, both keep a bearer token in a token file
and both log the same way (what needs Starlette, their JSON answers, the token guard and
``serve``, is in services/web.py, so the dashboard and the client never load it). The names
one service asks for and another carries out are here too: fault modes (balancer -> task server)
and driver actions (balancer -> ``ticslab up``'s supervisor). Every part that shows text from
the network (the dashboard, the client's report, ``ticslab up``'s logs) shows it through
``printable``.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import logging
import math
import os
import re
import signal
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Iterable
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from services.lang import Catalogue, Translator, default_language

# A task server declares on its health answers that it deduplicates ``Idempotency-Key`` across
# every server of the pool (they share tasks.json): only then does the balancer send a POST
# that may have reached a server again (docs/design/balancer.md, "Retries").
KEYS_HEADER = "Idempotency-Key-Support"
KEYS_SHARED = "shared"
# The dashboard's User-Agent: the balancer's log says an action came from the dashboard.
DASHBOARD_AGENT = "ticslab-dashboard"
# The fault modes a task server can be put in (services/taskserver/faults.py): the balancer's
# /control passes on only these, and the dashboard offers each. ``nolock`` loses tasks on
# purpose (services/taskserver/nolock.py); no mode but ``none`` is ever a default.
FAULT_MODES = ("none", "error", "latency", "hang", "unhealthy", "nolock")
# The modes a task server may start in (``--fault``): a broken new version for a rollout to
# meet; ``hang`` ends by itself and ``nolock`` loses tasks, so neither is a start-up choice.
START_FAULTS = ("none", "error", "latency", "unhealthy")
# The parameters of the modes that take any, when a request names none: the task server's
# defaults (faults.py), and what the dashboard's fault menu sends and says.
FAULT_DEFAULTS: dict[str, float] = {"rate": 0.5, "ms": 500, "max_seconds": 30.0}
# A balancer weight (HAProxy's): 0 takes no new traffic, 256 is the most. The dashboard
# bounds its weight keys by it, so it lives here, not with the balancer's server.
MAX_WEIGHT = 256
# What a driver does to a task server's container or process: the balancer's /control and
# drivers, and the supervisor of ``ticslab up`` behind its local driver. The last two freeze
# and thaw; a process can only where SIGSTOP and SIGCONT exist (not on Windows).
FREEZE_ACTIONS = ("pause", "unpause")
DRIVER_ACTIONS = ("stop", "start", "kill", "restart", *FREEZE_ACTIONS)
CAN_FREEZE = hasattr(signal, "SIGSTOP")
# What an operator sets a server to by hand, each with the lower-case action of its name
# (``PUT /control/servers/{name}/drain``): DRAIN ends its requests and takes no new ones, MAINT
# is out of rotation, READY hands it back to its checks (UP or DOWN). The balancer, its
# /control and the dashboard share them.
DRAIN, MAINT, READY = "DRAIN", "MAINT", "READY"
ADMIN_STATES = (DRAIN, MAINT, READY)
# Scaling out and in live (``POST /control/servers``): at most this many task servers in all,
# so a loop of adds (a key held down, a script gone wrong) cannot fill the machine with
# processes or containers; 16 is far past what the class's two-core laptops can show usefully.
MAX_SERVERS = 16
# A name a new server may be given: it becomes a path segment, a log prefix and a process or
# container name, so only a short identifier (``server3``, ``extra-1``) is accepted.
SERVER_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,31}"
# A server's states as the balancer's /status names them (services/balancer/server.py): the
# dashboard draws each, and does not import the balancer. NEW: a server that appeared while
# the balancer runs (discovery), with no traffic until a check passes.
UP, DOWN, EJECTED, NEW = "UP", "DOWN", "EJECTED", "NEW"
SERVER_STATES = (UP, DOWN, DRAIN, MAINT, EJECTED, NEW)
ADMIN_ACTIONS = {state.lower(): state for state in ADMIN_STATES}
# The actions on a process of this machine (the supervisor's, so its local driver's too).
LOCAL_ACTIONS = tuple(a for a in DRIVER_ACTIONS if CAN_FREEZE or a not in FREEZE_ACTIONS)
# How long one /control action may take, so its caller (the dashboard) waits for its answer:
# (connect, answer) seconds of the hold a pause first asks of the server (control.py), then of
# the driver (the slowest: the local supervisor's restart, its 5 s stop and up to 20 s for the
# new process to listen; Docker's stop and restart wait 5 s). Those calls are bounded by these.
QUIESCE_WAIT = (1.0, 2.0)
DRIVER_WAIT = (2.0, 30.0)
CONTROL_ACTION_SECONDS = sum(QUIESCE_WAIT) + sum(DRIVER_WAIT)
RECENT_ERRORS = 10
# The course's scripts read these three keys; they are always present, even at zero.
COURSE_ERROR_TYPES = ("400_BAD_REQUEST", "404_NOT_FOUND", "500_INTERNAL_ERROR")
# A history's newest second this far past the wall clock's now means the clock was stepped
# back (NTP, a suspended laptop): the balancer's /history and the dashboard's charts restart.
CLOCK_STEP_SECONDS = 5


def clock_stepped_back(now: float, newest: float) -> bool:
    """``now`` is so far before the ``newest`` second recorded that the clock went back."""
    return now < newest - CLOCK_STEP_SECONDS


# What a terminal acts on instead of showing: C0 controls (ESC starts a sequence, CR and LF
# move the cursor), DEL, C1 controls (U+009B is an 8-bit CSI) and the bidi marks, overrides
# and isolates (U+202E shows what follows reversed).
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with each character a terminal would act on written as its Python escape
    (``\\x1b``, ``\\n``, ``\\u202e``): shown, never obeyed. Idempotent."""
    return UNPRINTABLE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


class PrintableLog(logging.Filter):
    """Escapes a record before its handler writes it: a log line may carry a request path
    (uvicorn percent-decodes ``%1b`` into ESC), a server's name or its error message, and it
    ends on a terminal. A traceback's frames keep their lines; any other part of it (an
    exception's message) is one line, whatever it holds."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = printable(record.getMessage().rstrip("\n"))
        record.args = None
        record.__dict__.pop("color_message", None)  # uvicorn's coloured copy, not escaped
        if record.exc_info:
            lines: list[str] = []
            for chunk in traceback.format_exception(*record.exc_info):
                chunk = chunk.strip("\n")
                lines += chunk.split("\n") if chunk.startswith("  File ") else [chunk]
            record.exc_text = "\n".join(map(printable, lines))
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging settings with ``PrintableLog`` on the handlers its lines go through,
    and the ``ticslab.*`` loggers' lines on the same stream, with their time."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"printable": {"()": PrintableLog}}
    # The lab's own lines (a server went DOWN, a retry) carry the time they happened, so a
    # class can follow the story in ``ticslab up``'s output, a log file or ``docker logs``.
    config["formatters"]["timed"] = {
        **config["formatters"]["default"],
        "fmt": "%(asctime)s %(levelprefix)s %(message)s",
        "datefmt": "%Y-%m-%d %H:%M:%S",
    }
    config["handlers"]["ticslab"] = {**config["handlers"]["default"], "formatter": "timed"}
    for handler in ("default", "access", "ticslab"):  # access lines carry request paths
        config["handlers"][handler]["filters"] = ["printable"]
    config["loggers"]["ticslab"] = {"handlers": ["ticslab"], "level": "INFO", "propagate": False}
    return config


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted list; 0.0 when empty.
    The one definition: the balancer's /status and the client's report both use it."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def raise_fd_limit() -> int | None:
    """Raise the soft limit of open files to the hard one, as HAProxy does: the balancer and
    ``ticslab experiment`` hold a socket per connection. Returns the limit now in force; None
    when there is none (unlimited, or Windows, which has no such limit to read)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # e.g. macOS refuses RLIM_INFINITY: keep the soft limit
    return None if soft == resource.RLIM_INFINITY else soft


def weight_from_text(text: str) -> int | None:
    """A weight written on a command line (``3``): a whole number from 0 to ``MAX_WEIGHT``,
    or None. The balancer's ``--backend`` and ``ticslab up --weight`` both read it so."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) <= MAX_WEIGHT else None


def error_message(payload: bytes, field: str = "error") -> str | None:
    """The ``error`` field of a JSON error body (``field``: ``message`` from Docker), if it
    has one: every part that reports why another refused reads it here."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    value = data.get(field) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


class Answer(Protocol):
    """An HTTP answer as httpx gives it (a Protocol, so this module imports no client)."""

    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    @property
    def reason_phrase(self) -> str: ...


def answer_text(answer: Answer, field: str = "error") -> str:
    """Why the other side refused, in its words: ``field`` of its JSON answer (``error`` from
    our services, ``message`` from Docker), else its text, else the reason phrase."""
    message = error_message(answer.content, field)
    return message or answer.text.strip() or answer.reason_phrase


def count(number: int, noun: str) -> str:
    """``1 check``, ``2 checks``: event reasons are read by students."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def error_type(status: int) -> str:
    """The course's key for a status, e.g. ``400_BAD_REQUEST`` or ``500_INTERNAL_ERROR``."""
    if status == 500:
        return "500_INTERNAL_ERROR"
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "ERROR"
    return f"{status}_{phrase.upper().replace(' ', '_').replace('-', '_')}"


def utc_now_iso() -> str:
    """Current time as ISO 8601 UTC with milliseconds, the format every timestamp here uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ErrorLog:
    """Counts every 4xx/5xx answered and keeps the most recent ones (the course's shape)."""

    def __init__(self, recent: int = RECENT_ERRORS) -> None:
        self._by_type: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._recent: deque[dict[str, Any]] = deque(maxlen=recent)

    def record(
        self,
        status: int,
        message: str,
        endpoint: str,
        *,
        kind: str | None = None,
        server: str | None = None,
    ) -> None:
        """Record one error answer; ``kind`` overrides the type derived from ``status``."""
        kind = kind or error_type(status)
        self._by_type[kind] += 1
        self._by_status[status] += 1
        entry: dict[str, Any] = {
            "timestamp": utc_now_iso(),
            "type": kind,
            "status": status,
            "message": message,
            "endpoint": endpoint,
        }
        if server is not None:
            entry["server"] = server
        self._recent.append(entry)

    @property
    def total(self) -> int:
        return sum(self._by_type.values())

    @property
    def by_type(self) -> dict[str, int]:
        """Errors counted by type since start or reset, the types seen only (a copy): the
        balancer's history takes their differences each second."""
        return dict(self._by_type)

    def stats(self) -> dict[str, Any]:
        """``total_errors``, ``error_types``, ``recent_errors`` (newest first) and ``by_status``."""
        types = dict.fromkeys(COURSE_ERROR_TYPES, 0) | dict(self._by_type)
        return {
            "total_errors": self.total,
            "error_types": types,
            "recent_errors": list(reversed(self._recent)),
            "by_status": {str(code): n for code, n in sorted(self._by_status.items())},
        }

    def reset(self) -> None:
        self._by_type.clear()
        self._by_status.clear()
        self._recent.clear()


def allowed_hosts_from_env(environ: dict[str, str] | None = None) -> list[str]:
    """The extra names in ``TICSLAB_ALLOWED_HOSTS`` (comma-separated)."""
    text = (os.environ if environ is None else environ).get("TICSLAB_ALLOWED_HOSTS", "")
    return [name.strip() for name in text.split(",") if name.strip()]


def host_name(host: str) -> str:
    """``Host`` without its port, lower case, without a trailing dot: ``[::1]:80`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, _, port = host.rpartition(":")
    return (name if name and port.isdigit() else host).rstrip(".")


def host_allowed(host: str | None, extra: Iterable[str] = ()) -> bool:
    """Whether a control or admin request's ``Host`` names this lab, and not the domain of a
    web page whose DNS an attacker pointed at 127.0.0.1 (DNS rebinding).

    Such a page can only send its own name, a registered domain with a dot in it. So an IP
    address, a single-label name (``localhost``, the Compose service and container names such
    as ``balancer`` or ``ticslab-server-1``) and the names in ``extra`` are allowed.
    """
    if host is None:
        return True  # HTTP/1.0 without Host: no browser sends that
    name = host_name(host)
    if "." not in name or name in {host_name(e) for e in extra}:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


DEFAULT_BALANCER_URL = "http://127.0.0.1:8080"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"})


CA_FILE = "ca.pem"  # the local CA's certificate, in the TLS folder


def default_token_file(url: str = DEFAULT_BALANCER_URL) -> Path:
    """Where the token of the balancer at ``url`` is kept: one file per balancer address, so
    two stacks on one machine never overwrite each other's (``TICSLAB_TOKEN_FILE`` wins)."""
    override = os.environ.get("TICSLAB_TOKEN_FILE")
    if override:
        return Path(override)
    parsed = urlsplit(url if "//" in url else f"//{url}")
    host = (parsed.hostname or "127.0.0.1").lower()
    host = "127.0.0.1" if host in LOOPBACK_NAMES else host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    key = "".join(c if c.isalnum() or c in ".-" else "_" for c in f"{host}-{port}")
    return state_dir() / "tokens" / key


def state_dir() -> Path:
    """ticslab's folder of things kept between runs (tokens, the local TLS CA)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ticslab"


def default_tls_dir() -> Path:
    """Where the balancer makes its local CA and certificate (``--tls-dir`` wins); the CA a
    client trusts is ``CA_FILE`` in it."""
    return state_dir() / "tls"


def read_token_file(path: Path) -> str | None:
    """The token stored in ``path``, or None when there is no readable token file."""
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def write_token_file(token: str, path: Path) -> Path:
    """Store ``token`` in a file only its owner can read (mode 0600), creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return path


# What the --token flags say, at parse time: in the environment's language (--lang is not read).
TOKEN_TEXT: Catalogue = {
    "en": {
        "token_visible": "warning: --token is visible to every user of this machine (ps, "
        "/proc); use --token-file FILE or the TICSLAB_TOKEN variable instead",
        "token_unreadable": "no token in {path!r}: it cannot be read or is empty",
        "token_help": "control token; every user of this machine sees it in ps: prefer "
        "--token-file or TICSLAB_TOKEN",
        "token_file_help": "read the control token from FILE (its first line), out of sight of ps",
    },
    "es": {
        "token_visible": "aviso: --token es visible para todos los usuarios de este equipo "
        "(ps, /proc); usa --token-file ARCHIVO o la variable TICSLAB_TOKEN",
        "token_unreadable": "no hay token en {path!r}: no se puede leer o está vacío",
        "token_help": "token de control; todo usuario de este equipo lo ve en ps: mejor "
        "--token-file o TICSLAB_TOKEN",
        "token_file_help": "lee el token de control de ARCHIVO (su primera línea), fuera de "
        "la vista de ps",
    },
}


class VisibleToken(argparse.Action):
    """``--token``: taken, with a warning on stderr that ``ps`` shows it to every user."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(Translator(TOKEN_TEXT, default_language())("token_visible"), file=sys.stderr)
        setattr(namespace, self.dest, values)


def token_from_file(text: str) -> str:
    """``--token-file FILE``'s type: the token in FILE, or a usage error naming it."""
    token = read_token_file(Path(text))
    if token is None:
        refusal = Translator(TOKEN_TEXT, default_language())("token_unreadable", path=text)
        raise argparse.ArgumentTypeError(refusal)
    return token.splitlines()[0].strip()


def add_token_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """``--token`` (warned about) or ``--token-file FILE`` (its token in ``args.token_file``);
    ``default`` says what is used without either."""
    t = Translator(TOKEN_TEXT, default_language())
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--token", action=VisibleToken, help=f"{t('token_help')} ({default})")
    group.add_argument(
        "--token-file", type=token_from_file, metavar="FILE", help=t("token_file_help")
    )


class Uptime:
    """Seconds since construction, on the monotonic clock."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self._start, 3)

"""The balancer's settings: one dataclass, filled from the command line or the environment
(cli.py: every flag has a ``TICSLAB_*`` variable)."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from yarl import URL

from services.balancer.algorithms import ALGORITHMS
from services.balancer.plugin import HOW, Plugin
from services.balancer.server import DEFAULT_WEIGHT
from services.common import MAX_WEIGHT, weight_from_text

# A failed try is retried on other servers at most this often (--retries; there are rarely
# more servers than that to try).
MAX_RETRIES = 10
# --discover-interval: at least this often (a busy loop of queries helps nobody), and at
# least once a minute (a server gone from DNS must not stay in rotation for longer).
MIN_DISCOVER_INTERVAL, MAX_DISCOVER_INTERVAL = 0.1, 60.0
# A name --discover-name may poll: DNS letters, digits, hyphens, underscores, dots.
DNS_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_-]{1,63}(\.[A-Za-z0-9_-]{1,63})*\.?")
DEFAULT_BACKENDS = "server1=http://127.0.0.1:5001,server2=http://127.0.0.1:5002"


@dataclass
class BalancerConfig:
    """Everything the balancer needs to start; times are in seconds."""

    host: str = "127.0.0.1"
    port: int = 8080
    backends: list[tuple[str, str]] = field(
        default_factory=lambda: [(b.name, b.url) for b in parse_backends(DEFAULT_BACKENDS)]
    )
    algorithm: str = "random"
    # A student's own algorithm (plugin.py), loaded at start from --algorithm FILE.py:CLASS
    # (never over the network); its name is one more algorithm, switchable live.
    plugin: Plugin | None = None
    # Weights by server name (HAProxy's ``weight``, 0-256); a server not named has weight 1.
    weights: dict[str, int] = field(default_factory=dict)
    # A server back in rotation ramps its weight up over this many seconds (HAProxy's
    # ``slowstart``); 0: at once.
    slow_start: float = 0.0
    # Outlier ejection (Envoy's consecutive_5xx): after this many 5xx answers in a row a
    # server is out for eject_time seconds, times its ejections so far (up to 6); 0: off.
    eject_after_5xx: int = 0
    eject_time: float = 10.0
    # Per-phase timeouts (docs/design/balancer.md), never a total: to connect to a server,
    # then the longest it may stay silent (before its answer's headers, and between two
    # pieces of its body), as HAProxy's ``timeout connect`` and ``timeout server``.
    connect_timeout: float = 0.5
    response_timeout: float = 5.0
    # The client's side (HAProxy's ``timeout http-request``, ``timeout http-keep-alive``):
    # a request's headers, and each pause in its body, within request_timeout; an idle
    # keep-alive connection is closed after keep_alive_timeout.
    request_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    # A pooled connection to a server is dropped after this many idle seconds: shorter than
    # the servers' own idle timeout (gunicorn's 2 s, uvicorn's 5 s), so a request is not sent
    # on a connection the server is closing (nginx's upstream ``keepalive_timeout``).
    upstream_keepalive: float = 1.0
    check_interval: float = 1.0
    # While a server is changing state (one failure seen while UP, one success while DOWN) it
    # is checked this often, so fall/rise complete quickly (HAProxy's ``fastinter``).
    fast_check_interval: float = 0.25
    # As HAProxy, whose ``timeout check`` is ``inter`` unless set: a whole interval. 0.5 s let
    # a server stalled for about a second flap on a busy laptop (bench/bench_checks.py).
    check_timeout: float = 1.0
    check_path: str = "/health"
    fall: int = 2
    rise: int = 2
    # How often each server's own /errors/stats is fetched, beside the health check.
    server_stats_interval: float = 3.0
    max_retries: int = 2
    max_body_bytes: int = 10 * 1024 * 1024  # request bodies are buffered: 413 past this
    max_header_bytes: int = 64 * 1024  # a request's header section: 431 past this
    # Open client connections; None: as many as the file-descriptor limit allows.
    max_connections: int | None = None
    # Control (docs/design/control.md): bearer token for /control writes, the driver that
    # acts on servers (auto, docker, local, none) and backend discovery (None or "docker").
    token: str | None = None
    driver: str = "auto"
    discover: str | None = None
    # --discover dns (dns_discovery.py): the name whose A/AAAA records are the servers, the
    # port they listen on (A records carry none; the task servers' default), how often it is
    # asked, and the nameserver asked (None: the system's, /etc/resolv.conf).
    discover_name: str = "tasks.server"
    discover_port: int = 5001
    discover_interval: float = 1.0
    discover_dns: tuple[str, int] | None = None
    # Host names besides loopback, IP addresses and the Compose service names that control
    # requests may carry (DNS rebinding guard, services/common.py).
    allowed_hosts: list[str] = field(default_factory=list)
    # The class's language (services/lang.py): of the log lines, and of error answers to
    # requests without Accept-Language.
    lang: str = "en"
    # An htpasswd file of bcrypt hashes (auth.py): proxied requests then need Basic
    # credentials of one of its users; None: no authentication.
    auth_users: str | None = None
    # Answers compressed at the edge with these encodings, in order of preference (empty:
    # off); services/balancer/compression.py.
    compress: tuple[str, ...] = ()
    # TLS termination (tls.py): an HTTPS port beside the HTTP one, off unless asked for (tls)
    # or a certificate is given; without one, a local CA's in tls_dir (None: the state folder).
    tls: bool = False
    tls_port: int = 8443
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_dir: str | None = None
    redirect_http: bool = False  # the HTTP port answers 308 to HTTPS, but for /health

    def __post_init__(self) -> None:
        if self.algorithm not in self.algorithm_names:
            raise ValueError(
                f"unknown algorithm {self.algorithm!r}; choose one of "
                f"{', '.join(self.algorithm_names)}, or your own as {HOW}"
            )
        names = [name for name, _ in self.backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique: {', '.join(names)}")
        for name, value in {"fall": self.fall, "rise": self.rise}.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        for name, weight in self.weights.items():
            if not 0 <= weight <= MAX_WEIGHT:
                raise ValueError(f"backend {name}: the weight must be 0 to {MAX_WEIGHT}")
        if not (0 <= self.slow_start < math.inf and 0 < self.eject_time < math.inf):
            raise ValueError("--slow-start is 0 or more seconds, --eject-time more than 0")
        if not 0 <= self.max_retries <= MAX_RETRIES:
            raise ValueError(f"--retries is 0 to {MAX_RETRIES}")
        if self.eject_after_5xx < 0:
            raise ValueError("--eject-after-5xx is 0 (off) or more")
        if not MIN_DISCOVER_INTERVAL <= self.discover_interval <= MAX_DISCOVER_INTERVAL:
            raise ValueError(
                f"--discover-interval is {MIN_DISCOVER_INTERVAL:g} to "
                f"{MAX_DISCOVER_INTERVAL:g} seconds"
            )
        if not self.check_path.startswith("/"):
            raise ValueError(f"the health path must start with /; got {self.check_path!r}")
        self._check_tls()

    def _check_tls(self) -> None:
        """What the settings alone show; the files are checked at start (tls.py)."""
        if self.tls_enabled and self.tls_port == self.port:
            raise ValueError(f"--tls-port must differ from --port; both are {self.port}")

    @property
    def tls_enabled(self) -> bool:
        return self.tls or self.tls_cert is not None

    @property
    def algorithm_names(self) -> tuple[str, ...]:
        """The built-ins, then the plugin's, in the order the dashboard cycles them."""
        return ALGORITHMS if self.plugin is None else (*ALGORITHMS, self.plugin.name)


class Backend(NamedTuple):
    name: str
    url: str
    weight: int = DEFAULT_WEIGHT


def parse_backend(text: str) -> Backend:
    """``server1=http://127.0.0.1:5001``, optionally followed by `` weight=3`` (nginx's
    syntax; 0 to 256)."""
    name, sep, rest = text.strip().partition("=")
    url, _, option = rest.strip().partition(" ")
    name, url = name.strip(), url.strip().rstrip("/")
    if not sep or not name or not url:
        raise ValueError(f"a backend is NAME=URL, e.g. server1=http://127.0.0.1:5001; got {text!r}")
    weight = parse_weight(name, option.strip()) if option.strip() else DEFAULT_WEIGHT
    if not url.startswith(("http://", "https://")):
        raise ValueError(
            f"backend {name}: the URL must start with http:// or https://; got {url!r}"
        )
    parsed = URL(url)
    if not parsed.host or parsed.raw_path not in ("", "/") or parsed.query_string or parsed.user:
        raise ValueError(
            f"backend {name}: the URL is scheme://host:port only (no path, query or user); "
            f"got {url!r}"
        )
    return Backend(name, url, weight)


def parse_weight(name: str, option: str) -> int:
    key, _, value = option.partition("=")
    weight = weight_from_text(value) if key.strip() == "weight" else None
    if weight is None:
        raise ValueError(
            f"backend {name}: after the URL only 'weight=N' (0 to {MAX_WEIGHT}); got {option!r}"
        )
    return weight


def parse_backends(text: str) -> list[Backend]:
    """A comma-separated list of ``NAME=URL[ weight=N]`` (the form of ``TICSLAB_BACKENDS``)."""
    return [parse_backend(part) for part in text.split(",") if part.strip()]


def backend_settings(backends: list[Backend]) -> dict[str, object]:
    """``backends`` and ``weights`` settings of a parsed backend list."""
    return {
        "backends": [(backend.name, backend.url) for backend in backends],
        "weights": {b.name: b.weight for b in backends if b.weight != DEFAULT_WEIGHT},
    }


def parse_dns_name(text: str) -> str:
    """A name for ``--discover-name``: ``tasks.server``, ``server.ticslab.svc.cluster.local``
    (a final dot: asked as is, without the resolver's search domains)."""
    name = text.strip()
    if not DNS_NAME.fullmatch(name):
        raise ValueError(f"expected a DNS name such as tasks.server; got {text!r}")
    return name


def parse_nameserver(text: str) -> tuple[str, int]:
    """``ADDRESS[:PORT]`` (``[ADDRESS]:PORT`` for IPv6) of the nameserver ``--discover dns``
    asks; port 53 unless given. An address, not a name: it is what resolves names."""
    host, port = text.strip(), "53"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535:
        raise ValueError(f"expected ADDRESS[:PORT], e.g. 127.0.0.11 or 10.0.0.2:53; got {text!r}")
    return str(address), number

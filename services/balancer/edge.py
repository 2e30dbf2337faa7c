"""How the balancer is served: uvicorn with the guarded protocol (services/protocol.py).

The balancer is the edge of the lab: every client connection costs a file descriptor, and so
does each connection it opens to a server, so each connection counts two descriptors; and
each may hold ``STREAM_BYTES`` of buffers, so the cap also fits half the memory the process
may use (services/protocol.py ``connection_cap``).
"""

from __future__ import annotations

import gc
import logging

from starlette.types import ASGIApp

from services.balancer.certificates import TlsFiles
from services.balancer.compression import COMPRESSOR_BYTES
from services.balancer.config import BalancerConfig
from services.balancer.proxy import UpstreamAborted
from services.balancer.tls import RedirectToHttps, https_listener
from services.protocol import Limits, serve_guarded

FDS_PER_CONNECTION = 2  # the client's, and the upstream one it may hold
# What one client connection may hold at most, a slow reader of a large answer included
# (~0.4 MiB measured by bench/bench_stream_memory.py, rounded up).
STREAM_BYTES = 512 * 1024
# The youngest generation is collected after this many allocations (CPython's default: 2,000).
# A proxied request allocates a few hundred objects and leaves almost no cycles, so at the
# default the collector ran every few requests for little: 5 % of the balancer's CPU
# proxy-bound (docs/benchmarks.md, "Proxy hop").
GC_YOUNG_THRESHOLD = 50_000


class HideAbortedAnswers(logging.Filter):
    """uvicorn logs a traceback for an exception raised after an answer began; an upstream
    that broke off its answer is no bug, and the proxy already logged it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], UpstreamAborted))


def bytes_per_connection(config: BalancerConfig) -> int:
    """What one client connection may hold: a stream's buffers, and its compressor when
    ``--compress`` is on."""
    return STREAM_BYTES + (COMPRESSOR_BYTES if config.compress else 0)


def settle_garbage_collector() -> None:
    """Before serving: what exists now (modules, routes, the app) lives as long as the
    process, so it is moved out of the collector's sight (``gc.freeze``), and the young
    generation is collected less often (``GC_YOUNG_THRESHOLD``)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def serve_edge(
    app: ASGIApp, config: BalancerConfig, log_level: str = "info", tls: TlsFiles | None = None
) -> None:
    """Serve ``app`` on the configured address with the client-side limits in force, and on
    the HTTPS port too with ``tls`` (services/balancer/tls.py)."""
    limits = Limits(
        request_timeout=config.request_timeout,
        max_header_bytes=config.max_header_bytes,
        max_connections=config.max_connections,
        max_body_bytes=config.max_body_bytes,
        lang=config.lang,
    )
    logging.getLogger("uvicorn.error").addFilter(HideAbortedAnswers())
    also = [] if tls is None else [https_listener(app, config, tls)]
    if tls is not None and config.redirect_http:
        app = RedirectToHttps(app, config.tls_port, config.lang)
    settle_garbage_collector()
    serve_guarded(
        app,
        config.host,
        config.port,
        limits,
        # Each listener counts its own connections: together they fit in the same budget.
        fds_each=FDS_PER_CONNECTION * (1 + len(also)),
        bytes_each=bytes_per_connection(config) * (1 + len(also)),
        keep_alive_timeout=config.keep_alive_timeout,
        log_level=log_level,
        # Upgrade requests reach the proxy as plain HTTP, which answers WebSocket ones 501.
        ws="none",
        # The edge: the client is the socket's peer, whatever X-Forwarded-* headers it sends.
        proxy_headers=False,
        also=also,
    )

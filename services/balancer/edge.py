"""How the balancer is served: uvicorn with the guarded protocol, within the process's limits.

The balancer is the edge of the lab: every client connection costs a file descriptor, and so
does each connection it opens to a server. So at start the soft descriptor limit is raised to
the hard one (as HAProxy does) and the connection cap is lowered, if need be, to fit in it;
and to fit in half the memory the process may use, at ``STREAM_BYTES`` a connection (HAProxy's
``maxconn`` is derived from its memory limit, ``-m``, likewise).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from services.balancer.config import BalancerConfig
from services.balancer.protocol import GuardedHttpProtocol, Limits
from services.balancer.proxy import UpstreamAborted
from services.common import raise_fd_limit, serve

# Descriptors kept for everything but client connections and their upstream ones: listening
# sockets, health checks, logs, the Docker socket.
RESERVED_FDS = 64
UNLIMITED = 1_000_000  # connections, where the descriptor limit is infinite
# What one client connection may hold at most, a slow reader of a large answer included
# (~0.4 MiB measured by bench/bench_stream_memory.py, rounded up).
STREAM_BYTES = 512 * 1024
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory.max")  # a container's limit (cgroup v2)
log = logging.getLogger("ticslab.balancer")


def connection_cap(wanted: int | None, fd_limit: int | None, memory: int | None = None) -> int:
    """The most client connections that fit (each may hold an upstream connection too, and
    ``STREAM_BYTES`` of buffers in half of ``memory``), or ``wanted`` if fewer; ``fd_limit``
    or ``memory`` None: no limit of that kind."""
    fits = UNLIMITED if fd_limit is None else (fd_limit - RESERVED_FDS) // 2
    if memory is not None:
        fits = min(fits, memory // 2 // STREAM_BYTES)
    return max(1, min(fits, wanted or fits))


def memory_limit(cgroup: Path = CGROUP_MEMORY) -> int | None:
    """Bytes of memory this process may use: the machine's, or its container's if less;
    None where neither can be read."""
    try:
        limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        limits = []
    try:
        text = cgroup.read_text().strip()
    except OSError:
        text = "max"
    if text.isdigit():
        limits.append(int(text))
    return min(limits, default=None)


class HideAbortedAnswers(logging.Filter):
    """uvicorn logs a traceback for an exception raised after an answer began; an upstream
    that broke off its answer is no bug, and the proxy already logged it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], UpstreamAborted))


def serve_edge(app: Any, config: BalancerConfig, log_level: str = "info") -> None:
    """Serve ``app`` on the configured address with the client-side limits in force."""
    cap = connection_cap(config.max_connections, raise_fd_limit(), memory_limit())
    if config.max_connections and cap < config.max_connections:
        log.warning(
            "at most %d connections: the file-descriptor limit or the memory allows no more", cap
        )
    limits = Limits(
        request_timeout=config.request_timeout,
        max_header_bytes=config.max_header_bytes,
        max_connections=cap,
        lang=config.lang,
    )
    logging.getLogger("uvicorn.error").addFilter(HideAbortedAnswers())
    serve(
        app,
        config.host,
        config.port,
        log_level=log_level,
        http=GuardedHttpProtocol.with_limits(limits),
        timeout_keep_alive=config.keep_alive_timeout,
        # Upgrade requests reach the proxy as plain HTTP, which answers WebSocket ones 501.
        ws="none",
        # The edge: the client is the socket's peer, whatever X-Forwarded-* headers it sends.
        proxy_headers=False,
    )

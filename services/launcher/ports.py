"""Is a port free? Checked before anything starts, so nothing is left half-started."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

from services.binding import bind_error


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound now."""
    return bind_error(host, port) is None


def taken_ports(ports: list[int], host: str = "127.0.0.1") -> list[int]:
    """The ports of ``ports`` that something else already uses."""
    return [port for port in ports if not port_is_free(port, host)]


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to a port the kernel picks, for a server we run ourselves."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


def holder(port: int) -> tuple[int, str, bool] | None:
    """Who listens on ``port``, for ``ticslab up``'s refusal: its pid, its command line and
    whether it is ticslab's (None if unknown).

    An earlier ticslab stack (one whose launcher was killed before this version tied its
    processes to it, or a process started by hand) is named with the command that stops it.
    """
    try:
        listening = [
            c for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        ]  # fmt: skip
        if not listening:
            return None
        process = psutil.Process(listening[0].pid)
        argv = process.cmdline()
    except (psutil.Error, OSError):
        return None
    ours = "services.cli" in argv or any(Path(arg).name == "ticslab" for arg in argv[:2])
    return process.pid, " ".join(argv), ours


def listens(pid: int, port: int) -> bool:
    """True when process ``pid`` itself has a socket listening on ``port`` (so an answer on
    that port comes from it, not from another program that holds the port)."""
    try:
        process = psutil.Process(pid)
        # psutil 6 renamed connections() to net_connections()
        found = getattr(process, "net_connections", None) or process.connections
        sockets = found(kind="tcp")
    except (psutil.Error, OSError):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in sockets)

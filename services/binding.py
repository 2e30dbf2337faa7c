"""Can this address be listened on? One answer for ``ticslab up``, the experiments and
``ticslab dashboard --web``, in a module with no third-party imports so the dashboard image
(which has no psutil, unlike services/launcher/ports.py) can ask too."""

from __future__ import annotations

import os
import socket


def bind_error(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound now (None when it can), as uvicorn and aiohttp bind:
    with SO_REUSEADDR on POSIX. A host that does not resolve is a ``socket.gaierror``.
    ``ticslab up``, the experiments and ``ticslab dashboard --web`` all check here."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as error:
        return error
    with socket.socket(family, kind, proto) as sock:
        if os.name != "nt":  # on Windows SO_REUSEADDR would let us bind a port in use
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            return error
    return None

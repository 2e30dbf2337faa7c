"""Backends nobody here wrote, or wrote on raw sockets, for the balancer's conformance tests.

- ``Httpbin``: the real httpbin (PyPI) under gunicorn, as a separate process: a third-party
  backend with slow answers (/delay, /drip), streams and echoes.
- ``RawBackend``: an HTTP/1.1 server on raw sockets in a thread. It records every request's
  bytes exactly as they arrived and answers with scripted bytes, so rules about bytes (a
  target kept as sent, trailers, a Connection-named answer header, an answer cut short) can
  be checked without any HTTP library in between.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from support import ServiceProcess, free_port

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


def httpbin() -> ServiceProcess:
    """httpbin under gunicorn on a free port (threads, so slow answers overlap); not started.
    Its health path for the balancer is ``/status/200``."""
    port = free_port()
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
    args = ["-b", f"127.0.0.1:{port}", "-k", "gthread", "--threads", "16", "-w", "1"]
    args += ["--log-level", "warning", "--timeout", "60", "httpbin:app"]
    # On SIGTERM, a request still asleep in /delay/N is not waited for (a test closes it).
    args += ["--graceful-timeout", "1"]
    return ServiceProcess(args, port, program=[gunicorn])


class RawBackend:
    """Answers ``answer(request_bytes)`` to every request but the balancer's own (``/health``
    and ``/errors/stats``: ``OK``); keeps every other request's bytes in ``requests``.
    ``answer`` may return bytes, or a callable that writes to the socket itself (to cut an
    answer short)."""

    def __init__(self, answer: Callable[[bytes], bytes | Callable[[socket.socket], None]]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                backend._serve(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> RawBackend:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the balancer may close a pooled connection
            self._exchange(sock)

    def _exchange(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        buffer = b""
        while True:
            request, buffer = read_request(sock, buffer)
            if request is None:
                return
            if request.startswith((b"GET /health ", b"GET /errors/stats ")):  # the balancer's
                sock.sendall(OK)
                continue
            self.requests.append(request)
            reply = self.answer(request)
            if callable(reply):
                reply(sock)
                return
            sock.sendall(reply)


def read_request(sock: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
    """One request's bytes (head and a content-length or chunked body) and what follows."""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None, b""
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while b"\r\n0\r\n" not in b"\r\n" + rest or not rest.endswith(b"\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                return None, b""
            rest += data
        return head + b"\r\n\r\n" + rest, b""
    length = 0
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            return None, b""
        rest += data
    return head + b"\r\n\r\n" + rest[:length], rest[length:]

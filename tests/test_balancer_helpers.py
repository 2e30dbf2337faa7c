"""Helpers for the balancer tests (no tests here): an echo backend and a balancer process.

The echo backend is a real uvicorn server on 127.0.0.1 in a thread of the test process; it
tells back exactly what it received, so pass-through can be checked byte for byte, and it can
be slowed or made unhealthy on demand.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from support import ServiceProcess, free_port, taskserver, wait_until

from services.common import KEYS_HEADER, KEYS_SHARED


class EchoBackend:
    """A tiny HTTP server: ``/health`` and, on any other path, an echo of the request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.delay = 0.0  # seconds added to every echo answer
        self.health_delay = 0.0  # seconds added to every /health answer
        self.healthy = True
        self.health_error = "told to fail"  # the reason /health gives while unhealthy
        self.declares_keys = False  # says Idempotency-Key-Support: shared on /health
        self.hits = 0
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def _app(self) -> Starlette:
        async def health(request: Request) -> Response:
            if self.health_delay:
                await asyncio.sleep(self.health_delay)
            if not self.healthy:
                return JSONResponse({"status": "error", "error": self.health_error}, 503)
            declared = {KEYS_HEADER: KEYS_SHARED} if self.declares_keys else {}
            return JSONResponse({"status": "ok", "server": self.name}, headers=declared)

        async def echo(request: Request) -> Response:
            self.hits += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            body = await request.body()
            status = int(request.query_params.get("status", "200"))
            payload = {
                "server": self.name,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": body.decode("latin-1"),
            }
            if status >= 400:
                payload["error"] = f"echo asked to answer {status}"
            headers = {"X-Echo-Custom": "kept", "X-Backend": self.name}
            if "hop" in request.query_params:  # hop-by-hop headers the balancer must drop
                headers |= {"Proxy-Authenticate": "Basic", "Keep-Alive": "timeout=99"}
            return JSONResponse(payload, status, headers=headers)

        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
        return Starlette(
            routes=[Route("/health", health), Route("/{path:path}", echo, methods=methods)]
        )

    def start(self) -> EchoBackend:
        self._thread.start()
        wait_until(lambda: self._server.started, timeout=10, what=f"echo {self.name}")
        return self

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class Blackhole:
    """A port that never completes a TCP handshake: a listener whose backlog is full, so the
    kernel drops new SYNs and a client's connect hangs until its own timeout."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(self._listener.getsockname())
            self._fillers.append(filler)

    def close(self) -> None:
        for sock in (*self._fillers, self._listener):
            sock.close()


TOKEN = "balancer-test-token"  # given, so no test balancer writes the user's token file


def balancer_process(
    backends: list[tuple[str, str]], algorithm: str = "round_robin", *extra: str
) -> ServiceProcess:
    """A real ``ticslab balancer`` with fast checks (0.2 s), not yet started; ``extra`` flags
    come last, so they override the defaults here."""
    port = free_port()
    args = ["balancer", "--host", "127.0.0.1", "--port", str(port), "--algorithm", algorithm]
    args += ["--token", TOKEN, "--driver", "none"]
    for name, url in backends:
        args += ["--backend", f"{name}={url}"]
    args += ["--check-interval", "0.2", "--fast-check-interval", "0.1", "--check-timeout", "0.3"]
    return ServiceProcess([*args, "--log-level", "warning", *extra], port)


def status_of(balancer: ServiceProcess) -> dict:
    return httpx.get(balancer.url + "/status", timeout=5).json()


def state_of(balancer: ServiceProcess, name: str) -> str:
    return next(s["state"] for s in status_of(balancer)["servers"] if s["name"] == name)


def task_servers(
    tmp_path: Path, count: int = 2, env: dict[str, str] | None = None
) -> list[ServiceProcess]:
    """``count`` started task servers sharing one tasks.json."""
    tasks_file = tmp_path / "tasks.json"
    return [taskserver(f"server{i}", tasks_file, env=env).start() for i in range(1, count + 1)]

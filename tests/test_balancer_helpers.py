"""Helpers for the balancer tests (no tests here): an echo backend and a balancer process.

The echo backend is a real uvicorn server on 127.0.0.1 in a thread of the test process; it
tells back exactly what it received, so pass-through can be checked byte for byte, and it can
be slowed or made unhealthy on demand.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from support import ServiceProcess, free_port, taskserver, wait_until


class EchoBackend:
    """A tiny HTTP server: ``/health`` and, on any other path, an echo of the request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.delay = 0.0  # seconds added to every echo answer
        self.healthy = True
        self.hits = 0
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def _app(self) -> Starlette:
        async def health(request: Request) -> Response:
            if not self.healthy:
                return JSONResponse({"status": "error", "error": "told to fail"}, 503)
            return JSONResponse({"status": "ok", "server": self.name})

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
            return JSONResponse(
                payload, status, headers={"X-Echo-Custom": "kept", "X-Backend": self.name}
            )

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


def balancer_process(
    backends: list[tuple[str, str]], algorithm: str = "round_robin", *extra: str
) -> ServiceProcess:
    """A real ``ticslab balancer`` with fast checks (0.2 s), not yet started."""
    port = free_port()
    args = ["balancer", "--host", "127.0.0.1", "--port", str(port), "--algorithm", algorithm]
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

"""The balancer as one ASGI app: its own few routes, and a proxy for every other path.

The path check is a set lookup done before anything else, so proxied requests never pay for
Starlette's routing or middleware (measured: a bare ASGI callable in front of aiohttp is about
1.4x faster than a Starlette route doing the same).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.balancer.auth import EdgeAuth, edge_checker
from services.balancer.balancer import Balancer
from services.balancer.compression import compressing
from services.balancer.config import BalancerConfig
from services.balancer.control import Control
from services.balancer.discovery import DockerDiscovery
from services.balancer.dns_discovery import DnsDiscovery
from services.balancer.health import HealthChecker
from services.balancer.history import TrafficHistory
from services.balancer.proxy import Proxy
from services.balancer.routes import balancer_routes
from services.balancer.scaling import scaling_routes
from services.common import host_allowed
from services.web import asked_language, foreign_host_error, json_error


def owned_routes(balancer: Balancer, history: TrafficHistory, control: Control) -> list[BaseRoute]:
    """Every route the balancer answers itself; any other path is proxied to a server."""
    return [
        *balancer_routes(balancer, history),
        *scaling_routes(control),  # before control's /control mount, which would take them
        *control.routes(),
    ]


class OwnedPaths:
    """Which paths belong to the routes: exact paths, and prefixes of templated ones."""

    def __init__(self, routes: list[BaseRoute]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for route in routes:
            if isinstance(route, Mount):
                exact.add(route.path)
                prefixes.append(route.path + "/")
            elif isinstance(route, Route):
                if "{" in route.path:
                    prefixes.append(route.path[: route.path.index("{")])
                else:
                    exact.add(route.path)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)

    def __contains__(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)


GUARDED_PREFIXES = ("/control", "/admin")  # answered only for allowed Host names


def host_problem(hosts: list[bytes], http_version: str) -> str | None:
    """The error code of why the request's ``Host`` headers are unacceptable (RFC 9112
    section 3.2), or None."""
    if len(hosts) > 1:
        return "host_repeated"
    if not hosts and http_version == "1.1":
        return "host_missing"
    return None


def scope_language(scope: Scope, default: str) -> str:
    """The language of an error answer to the request of ``scope``."""
    return asked_language(Headers(scope=scope), default)


def raw_path(scope: Scope) -> str:
    """The path as the client wrote it: ``/%68ealth`` is no route of ours but a server's path
    (HAProxy matches raw paths so; the proxy forwards it as written)."""
    raw: bytes | None = scope.get("raw_path")
    return scope["path"] if raw is None else raw.decode("latin-1")


class BalancerApp:
    """ASGI entry point: owned paths go to a small Starlette app, the rest to the proxy."""

    def __init__(
        self,
        proxy: Proxy,
        admin: Starlette,
        owned: OwnedPaths,
        config: BalancerConfig,
        edge: ASGIApp | None = None,
    ) -> None:
        self.proxy = proxy
        self.edge = edge or proxy  # what proxied requests pass through first (auth.py)
        self.admin = admin
        self.owned = owned
        self.allowed_hosts = config.allowed_hosts
        self.lang = config.lang

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = [value for name, value in scope["headers"] if name == b"host"]
            problem = host_problem(hosts, scope["http_version"])
            if problem is not None:
                lang = scope_language(scope, self.lang)
                await json_error(400, code=problem, lang=lang)(scope, receive, send)
                return
            path = raw_path(scope)
            if path not in self.owned:
                await self.edge(scope, receive, send)
                return
            host = hosts[0].decode("latin-1") if hosts else None
            if path.startswith(GUARDED_PREFIXES) and not host_allowed(host, self.allowed_hosts):
                lang = scope_language(scope, self.lang)
                await foreign_host_error(host, lang)(scope, receive, send)
                return
        await self.admin(scope, receive, send)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own 404/405 on owned paths, as the JSON error every other answer uses."""
    assert isinstance(error, HTTPException)
    lang = scope_language(request.scope, request.app.state.lang)
    where = {"method": request.method, "path": request.url.path}
    if error.status_code == 405:
        allowed = ", ".join(sorted(m.strip() for m in (error.headers or {})["Allow"].split(",")))
        response = json_error(405, code="method_not_allowed", lang=lang, allowed=allowed, **where)
        response.headers["Allow"] = allowed
        return response
    if error.status_code == 404:
        return json_error(404, code="control_not_found", lang=lang, **where)
    return json_error(error.status_code, error.detail, path=request.url.path)


def create_app(config: BalancerConfig) -> BalancerApp:
    """The balancer app; servers are checked and the upstream session opened at startup."""
    balancer = Balancer(config)
    health = HealthChecker(
        config, on_verdict=balancer.record_check, on_crash=balancer.record_failure
    )
    balancer.checks = health
    proxy = Proxy(balancer, config)
    checker = edge_checker(config.auth_users)  # a bad users file: ValueError, one line
    # Proxied requests pass the authentication first, then the proxy answers, compressed when
    # --compress asks (the balancer's own routes are neither).
    compressed = compressing(proxy, balancer.compression)
    edge = EdgeAuth(compressed, balancer, config.lang, checker)
    # Without a configured token nobody can use /control writes (the CLI always sets one).
    control = Control(balancer, config.token or secrets.token_urlsafe(24), config.driver)
    discovery: DockerDiscovery | DnsDiscovery | None = None
    if config.discover == "docker":
        discovery = DockerDiscovery(balancer)
    elif config.discover == "dns":
        discovery = DnsDiscovery(balancer, config)  # no system nameserver: ValueError, one line
    history = TrafficHistory(balancer)
    routes = owned_routes(balancer, history, control)
    control.rollouts.renewed += [proxy.forget_address, health.forget_address]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """Each part is closed on the way out, in reverse order, and so is every part already
        started when a later one fails to start (a driver or discovery that cannot work)."""
        async with AsyncExitStack() as started:
            balancer.journal.start(balancer.record_failure)
            started.push_async_callback(balancer.journal.stop)  # last: says every retry
            await proxy.start()
            started.push_async_callback(proxy.stop)
            if checker is not None:
                started.callback(checker.close)
            balancer.start()
            history.start()
            started.push_async_callback(history.stop)
            await health.start(balancer.servers)
            started.push_async_callback(health.stop)
            await control.start()
            started.push_async_callback(control.stop)
            if discovery is not None:
                await discovery.start()
                started.push_async_callback(discovery.stop)
            yield

    admin = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
    )
    admin.state.lang = config.lang
    return BalancerApp(proxy, admin, OwnedPaths(routes), config, edge)

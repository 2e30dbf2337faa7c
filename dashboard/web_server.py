"""The web server behind ``--web``: textual-serve's page, and one dashboard process per tab.

textual-serve's ``Server`` serves the page and, for each browser connection to ``/ws``, runs
the command ``dashboard/web.py`` builds and relays its screen; when the tab closes it tells
that dashboard to quit. This subclass adds what a page on a network needs:

- ``/ws`` only for the page itself: its ``Host`` and ``Origin`` must be the server's address,
  so no other web site's page (a cross-site WebSocket, or DNS rebinding) can start or drive a
  dashboard, which may hold control;
- at most ``MAX_VIEWERS`` tabs at once: each is a process of its own;
- on Ctrl+C or SIGTERM every tab's session is ended, so its dashboard quits before the server
  returns (a killed server's dashboards end by themselves: ``web.follow_server``);
- its own logging, warnings only and escaped (``PrintableLog``), and no logo: the caller
  prints the banner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiohttp import web
from textual_serve.server import Server

from dashboard.web import WebOptions, dashboard_command, hand_over_token
from services.common import PrintableLog

TITLE = "ticslab dashboard"
MAX_VIEWERS = 16  # tabs at once; a dashboard process takes about 60 MB
STOP_SECONDS = 5.0  # for the tabs' dashboards to quit when the server stops
REAP_SECONDS = 0.2


class DashboardServer(Server):
    """textual-serve's server for ``web``'s dashboards, guarded as the module says."""

    def __init__(self, web_options: WebOptions) -> None:
        super().__init__(
            dashboard_command(web_options, os.getpid()),
            host=web_options.host,
            port=web_options.port,
            title=TITLE,
            public_url=web_options.url,
        )
        self.web = web_options
        self.sessions: set[asyncio.Task[object]] = set()

    def from_the_page(self, request: web.Request) -> bool:
        """The request names this server, and comes from its own page (browsers always send
        ``Origin`` with a WebSocket; a page of another site cannot send this one)."""
        return (
            request.host.lower() == self.web.netloc.lower()
            and request.headers.get("Origin", "").lower() == self.web.url.lower()
        )

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        """The page, at the one address its WebSocket is built for (``localhost`` is sent to
        ``127.0.0.1``, and a rebound name away)."""
        if request.host.lower() != self.web.netloc.lower():
            raise web.HTTPTemporaryRedirect(self.web.url + "/")
        response = await super().handle_index(request)
        # Never inside another site's frame: its page could lure keys (1 stops a server) into
        # a hidden one, whose WebSocket would carry this page's own Origin.
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        return response

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        if not self.from_the_page(request):
            return web.Response(status=403, text="open the dashboard from its own page\n")
        if len(self.sessions) >= MAX_VIEWERS:
            return web.Response(status=503, text=f"{MAX_VIEWERS} viewers already\n")
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        try:
            return await super().handle_websocket(request)
        finally:
            self.sessions.discard(task)

    async def on_startup(self, app: web.Application) -> None:
        """No logo: ``ticslab dashboard --web`` and ``ticslab demo --web`` print a banner."""

    async def on_shutdown(self, app: web.Application) -> None:
        """End every session: textual-serve then tells its dashboard to quit and waits for its
        output to end (aiohttp would otherwise wait a minute for the open WebSockets)."""
        if not self.sessions:
            return
        for task in self.sessions:
            task.cancel()
        await asyncio.wait(self.sessions, timeout=STOP_SECONDS)
        # A dashboard's output ends a moment before its process is reaped, which asyncio does
        # on this loop: keep it open that moment (else asyncio warns that the loop is closed).
        await asyncio.sleep(REAP_SECONDS)

    def initialize_logging(self) -> None:
        """Warnings and errors of textual-serve and aiohttp, escaped: an access line would
        carry a request's path and headers."""
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(PrintableLog())
        for name in ("textual-serve", "aiohttp"):
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            logger.setLevel(logging.WARNING)
            logger.propagate = False


def serve(web_options: WebOptions) -> None:
    """Serve the page until Ctrl+C or SIGTERM (main thread only: it takes those signals)."""
    hand_over_token(web_options)
    DashboardServer(web_options).serve()

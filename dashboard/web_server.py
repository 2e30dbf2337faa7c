"""The web server behind ``--web``: textual-serve's page, and one dashboard process per tab.

textual-serve's ``Server`` serves the page and, for each browser connection to ``/ws``, runs
the command ``dashboard/web.py`` builds and relays its screen; when the tab closes it tells
that dashboard to quit. This subclass adds what a page on a network needs:

- ``/ws`` only for the page itself: its ``Host`` and ``Origin`` must be the server's address,
  so no other web site's page (a cross-site WebSocket, or DNS rebinding) can start or drive a
  dashboard, which may hold control;
- at most ``MAX_VIEWERS`` tab processes alive at once, counted until each has exited (not
  while its session lasts): a process that outlives its tab still holds its slot;
- the terminal size a tab asks for, at first and in every resize, clamped to ``MAX_COLUMNS``
  x ``MAX_ROWS`` (a 10000x10000 screen cost a process 1.5 GB);
- a tab's output is read until it ends, even after the browser is gone, so no process blocks
  writing to a pipe nobody reads; one that has not quit ``QUIT_SECONDS`` after its session
  ended gets SIGTERM, then after ``TERM_SECONDS`` SIGKILL;
- on Ctrl+C or SIGTERM every tab's session is ended, so its dashboard quits before the server
  returns (a killed server's dashboards end by themselves:
  ``services.lifeline.follow_parent_pid``);
- its own logging, warnings only and escaped (``PrintableLog``), and no logo: the caller
  prints the banner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from asyncio.subprocess import Process

from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server

from dashboard.web import WebOptions, dashboard_command, hand_over_token
from services.common import PrintableLog

TITLE = "ticslab dashboard"
MAX_VIEWERS = 16  # tab processes at once; a dashboard process takes about 60 MB
# A 4K screen at a small font is about 480x135 cells; the dashboard needs 100x30. Beyond that
# the page only costs memory: Textual keeps a few buffers of width x height cells.
MAX_COLUMNS = 500
MAX_ROWS = 200
QUIT_SECONDS = 3.0  # for a tab's dashboard to quit after its session ended, before SIGTERM
TERM_SECONDS = 2.0  # after SIGTERM, before SIGKILL
STOP_SECONDS = QUIT_SECONDS + TERM_SECONDS + 1.0  # for every tab to end when the server stops
REAP_SECONDS = 0.2
EXIT_POLL_SECONDS = 0.05

log = logging.getLogger("textual-serve")


def clamped(width: object, height: object) -> tuple[int, int]:
    """A terminal size within 1..``MAX_COLUMNS`` x 1..``MAX_ROWS``; 80x24 for what is not a
    whole number (the size comes from the page, i.e. from anyone who can reach it)."""

    def bounded(value: object, default: int, most: int) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return default
        return min(max(value, 1), most)

    return bounded(width, 80, MAX_COLUMNS), bounded(height, 24, MAX_ROWS)


class TabProcess(AppService):
    """One tab's dashboard process: its size clamped, its output read to the end, and ended
    by force if it does not quit (see the module's docstring)."""

    def __init__(self, server: DashboardServer, websocket: web.WebSocketResponse) -> None:
        async def close() -> None:
            await websocket.close()

        super().__init__(
            server.command,
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=close,
            download_manager=server.download_manager,
            debug=server.debug,
        )
        self.server = server

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Process:
        process = await super()._open_app_process(*clamped(width, height))
        self.server.track(process)
        return process

    async def set_terminal_size(self, width: int, height: int) -> None:
        await super().set_terminal_size(*clamped(width, height))

    async def on_data(self, payload: bytes) -> None:
        """To the browser while it is there; once it is gone, read and dropped, so that the
        process never blocks on a full pipe (textual-serve stops reading when a send fails)."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await super().on_data(payload)

    async def stop(self) -> None:
        """Ask the dashboard to quit; SIGTERM, then SIGKILL, to one that has not exited
        ``QUIT_SECONDS`` later. Its output is read all along, so it is never blocked on it."""
        reader, process = self._task, self._process
        if reader is None or process is None:
            return
        self._task = None
        loop = asyncio.get_running_loop()
        quit_by = loop.time() + QUIT_SECONDS
        await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        with contextlib.suppress(TimeoutError):  # its input may be full: it reads no more
            await asyncio.wait_for(self.send_meta({"type": "quit"}), QUIT_SECONDS)
        await asyncio.wait({reader}, timeout=max(quit_by - loop.time(), 0))
        if not await exited(process, quit_by - loop.time()):
            log.warning("a tab's dashboard (pid %s) did not quit: SIGTERM", process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            if not await exited(process, TERM_SECONDS):
                log.warning("a tab's dashboard (pid %s) ignored SIGTERM: SIGKILL", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await exited(process, TERM_SECONDS)
        # Its output ends with it; a bound all the same, should a child of its hold the pipe.
        if not (await asyncio.wait({reader}, timeout=TERM_SECONDS))[0]:
            reader.cancel()


async def exited(process: Process, seconds: float) -> bool:
    """Whether ``process`` has exited within ``seconds``, polled: ``Process.wait()`` also
    waits for its pipes to close."""
    deadline = asyncio.get_running_loop().time() + seconds
    while process.returncode is None and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(EXIT_POLL_SECONDS)
    return process.returncode is not None


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
        self.processes: set[Process] = set()  # the tabs' dashboards, pruned once exited

    def track(self, process: Process) -> None:
        """Count ``process`` against ``MAX_VIEWERS`` until it has exited."""
        self.processes.add(process)

    def live_tabs(self) -> int:
        """How many tab processes have not exited, whether or not their session lasts."""
        self.processes = {process for process in self.processes if process.returncode is None}
        return len(self.processes)

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

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        if not self.from_the_page(request):
            raise web.HTTPForbidden(text="open the dashboard from its own page\n")
        if self.live_tabs() >= MAX_VIEWERS:
            raise web.HTTPServiceUnavailable(text=f"{MAX_VIEWERS} viewers already\n")
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        try:
            return await self._session(request)
        finally:
            self.sessions.discard(task)

    async def _session(self, request: web.Request) -> web.WebSocketResponse:
        """textual-serve's session, with a ``TabProcess`` and the first size clamped."""
        websocket = web.WebSocketResponse(heartbeat=15)
        tab = TabProcess(self, websocket)
        try:
            await websocket.prepare(request)
            await tab.start(*clamped(request.query.get("width"), request.query.get("height")))
            await self._process_messages(websocket, tab)
        except asyncio.CancelledError:
            await websocket.close()
        except Exception as error:
            log.warning("a tab's session ended: %s", error)
        finally:
            await tab.stop()
        return websocket

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

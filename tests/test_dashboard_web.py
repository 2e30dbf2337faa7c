"""``ticslab dashboard --web`` and ``ticslab demo --web``: who gets control, the command each
browser tab runs, the page and its guards on a real server in front of a real balancer, each
tab's dashboard process ending with its tab and with the server (slow), and the page in a real
headless Chromium (marker ``browser``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import aiohttp.web
import httpx
import psutil
import pytest
from aiohttp.test_utils import make_mocked_request
from browser import Chromium, chromium_problem
from support import TICSLAB, free_port, free_run, wait_until, wait_until_async
from test_balancer_helpers import TOKEN, EchoBackend, balancer_process

from dashboard import web, web_server
from dashboard.web_server import DashboardServer, clamped
from services import lifeline
from services.cli import main

needs_chromium = pytest.mark.skipif(chromium_problem() is not None, reason=str(chromium_problem()))


def options(host: str = "127.0.0.1", token: str | None = "t0ken", **flags: bool) -> web.WebOptions:
    return web.web_options("http://127.0.0.1:8080/", token, host=host, port=8000, **flags)


# Who gets control.


@pytest.mark.parametrize(
    ("host", "token", "flags", "mode"),
    [
        ("127.0.0.1", "t0ken", {}, web.CONTROL),
        ("localhost", "t0ken", {}, web.CONTROL),
        ("::1", "t0ken", {}, web.CONTROL),
        ("127.0.0.1", None, {}, web.NO_TOKEN),
        ("127.0.0.1", "t0ken", {"read_only": True}, web.ASKED),
        ("192.168.1.20", "t0ken", {}, web.REMOTE),
        ("lab-pc.local", "t0ken", {}, web.REMOTE),
        ("192.168.1.20", "t0ken", {"allow_remote_control": True}, web.CONTROL),
        ("192.168.1.20", None, {"allow_remote_control": True}, web.NO_TOKEN),
        ("192.168.1.20", "t0ken", {"allow_remote_control": True, "read_only": True}, web.ASKED),
    ],
)
def test_control_needs_a_token_and_loopback_or_the_flag(
    host: str, token: str | None, flags: dict[str, bool], mode: str
) -> None:
    served = options(host, token, **flags)
    assert served.mode == mode
    assert served.control == (mode == web.CONTROL)
    assert served.dashboard.read_only == (mode != web.CONTROL)
    assert served.dashboard.token == (token if mode == web.CONTROL else None)
    assert f"({mode})" in web.banner_entry(served)


def test_the_page_s_address_is_what_a_browser_writes() -> None:
    assert options().url == "http://127.0.0.1:8000"
    assert web.web_options("http://b:8080", None, host="::1", port=8000).url == "http://[::1]:8000"
    assert web.web_options("http://b:8080", None, host="pc", port=80).netloc == "pc"


# The command each tab runs, and its token.


def test_each_tab_runs_quoted_words_without_the_token() -> None:
    hostile = "http://127.0.0.1:8080/$(touch pwned)'; rm -rf ~ #"
    served = web.web_options(hostile, "s3cret", port=8000, lang="es", theme="my theme")
    command = web.dashboard_command(served, 4242)
    assert command.startswith("exec ")  # no shell left between the server and its dashboard
    words = shlex.split(command)[1:]
    assert words[1:4] == ["-m", "services.cli", "dashboard"]
    assert words[words.index("--url") + 1] == hostile.rstrip("/")  # one word, as given
    assert words[words.index("--served-by") + 1] == "4242"
    assert words[words.index("--theme") + 1] == "my theme"
    assert words[words.index("--lang") + 1] == "es"
    assert "--read-only" not in words
    assert "s3cret" not in command
    read_only = web.dashboard_command(options(token=None), 1)
    assert shlex.split(read_only)[-1] == "--read-only"


def test_the_token_reaches_the_tabs_by_the_environment_only_with_control(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(web.TOKEN_ENV, "the-user-s")
    web.hand_over_token(options(token="t0ken"))
    assert os.environ[web.TOKEN_ENV] == "t0ken"
    web.hand_over_token(options(token="t0ken", read_only=True))
    assert web.TOKEN_ENV not in os.environ
    monkeypatch.setenv(web.TOKEN_ENV, "the-user-s")
    web.hand_over_token(options("192.168.1.20"))
    assert web.TOKEN_ENV not in os.environ


# Where it listens.


def test_another_machine_s_reach_is_said_in_both_languages() -> None:
    assert web.exposure_warning(options("127.0.0.1")) == []
    assert web.exposure_warning(options("localhost")) == []
    english, spanish = web.exposure_warning(options("192.168.1.20"))
    assert "every machine that can reach 192.168.1.20" in english
    assert "http://192.168.1.20:8000" in english and "http://192.168.1.20:8000" in spanish
    assert "watch it (read-only)" in english and "verlo (solo lectura)" in spanish
    english, spanish = web.exposure_warning(options("192.168.1.20", allow_remote_control=True))
    assert "stop, kill and pause servers" in english and "detener, matar" in spanish


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_every_address_at_once_is_refused_saying_what_to_give(host: str) -> None:
    (problem,) = web.problems(options(host))
    assert f"--host {host} listens on every address" in problem
    assert "--host 192.168.1.20" in problem


def test_a_port_in_use_or_an_unknown_host_is_refused_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problem = web.listen_problem("127.0.0.1", port)
    assert problem is not None and f"cannot listen on 127.0.0.1:{port}" in problem
    assert web.listen_problem("no-such-host.invalid", 8000) is not None
    assert web.listen_problem("127.0.0.1", free_port()) is None


def test_web_flags_without_web_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--host", "192.168.1.20"]) == 2
    assert "go with --web" in capsys.readouterr().err
    assert main(["demo", "--web-port", "8001"]) == 2
    assert "go with --web" in capsys.readouterr().out


def test_demo_refuses_a_page_it_cannot_serve_before_starting_the_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--web", "--web-host", "0.0.0.0", "--data-dir", str(tmp_path / "data")]
    assert main(["demo", *args]) == 1
    assert "could not serve the dashboard: --web-host 0.0.0.0" in capsys.readouterr().out
    assert not (tmp_path / "data").exists()  # nothing started


# The server's guards, in-process.


async def test_the_socket_is_only_for_the_page_itself_and_at_most_max_viewers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web_server, "MAX_VIEWERS", 2)
    server = DashboardServer(options())
    page = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}
    refused = [
        {"Host": "127.0.0.1:8000"},  # no Origin: not a browser's page
        {**page, "Origin": "http://evil.example"},  # another site's page
        {**page, "Origin": "null"},  # a sandboxed frame or a file
        {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"},  # DNS rebinding
    ]
    for headers in refused:
        with pytest.raises(aiohttp.web.HTTPForbidden):  # aiohttp answers it: 403
            await server.handle_websocket(make_mocked_request("GET", "/ws", headers=headers))
    assert server.from_the_page(make_mocked_request("GET", "/ws", headers=page))
    # Live tab processes count, not sessions: two of them, whose sessions are long gone.
    tabs = [await asyncio.create_subprocess_exec("sleep", "30") for _ in range(2)]
    for tab in tabs:
        server.track(tab)
    try:
        with pytest.raises(aiohttp.web.HTTPServiceUnavailable):
            await server.handle_websocket(make_mocked_request("GET", "/ws", headers=page))
    finally:
        for tab in tabs:
            tab.kill()
            await tab.wait()
    assert server.live_tabs() == 0


# Each tab's process, on a real server in this process running real commands (issue 23, 13).


def test_a_tab_s_terminal_size_is_clamped() -> None:
    assert clamped(10000, "1500") == (web_server.MAX_COLUMNS, web_server.MAX_ROWS)
    assert clamped("140", 40) == (140, 40)
    assert clamped(0, -5) == (1, 1)
    assert clamped(None, "1e9") == (80, 24)
    assert clamped(True, [1]) == (80, 24)


class ServedCommand:
    """A ``DashboardServer`` in this process on a free port whose tabs run ``command`` (a
    shell line, as textual-serve runs it) instead of a dashboard."""

    def __init__(self, command: str) -> None:
        served = web.web_options("http://127.0.0.1:9", None, port=free_port())
        self.server = DashboardServer(served)
        self.server.command = command
        self.url = served.url

    async def __aenter__(self) -> ServedCommand:
        self.runner = aiohttp.web.AppRunner(await self.server._make_app())
        await self.runner.setup()
        await aiohttp.web.TCPSite(self.runner, "127.0.0.1", self.server.web.port).start()
        self.http = aiohttp.ClientSession()
        return self

    async def connect(self, width: int = 140, height: int = 40) -> aiohttp.ClientWebSocketResponse:
        address = f"{self.url}/ws?width={width}&height={height}"
        return await self.http.ws_connect(address, origin=self.url)

    async def refused(self) -> bool:
        """Whether a new tab is refused for lack of a slot (503)."""
        try:
            ws = await self.connect()
        except aiohttp.WSServerHandshakeError as error:
            return error.status == 503
        await ws.close()
        return False

    async def __aexit__(self, *exc: object) -> None:
        """Once every tab's session has ended (its process reaped, its pipes closed)."""
        await self.http.close()
        try:
            await wait_until_async(lambda: not self.server.sessions, 10, what="sessions ended")
        finally:
            for process in list(self.server.processes):  # only when a test failed
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await self.runner.cleanup()


async def test_the_first_size_and_every_resize_are_clamped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_server, "QUIT_SECONDS", 0.2)  # cat does not quit: SIGTERM ends it
    sizes, received = tmp_path / "sizes", tmp_path / "stdin"
    command = f'echo "$COLUMNS $ROWS" > {sizes}; exec cat > {received}'
    async with ServedCommand(command) as served:
        ws = await served.connect(10000, 10000)
        await wait_until_async(lambda: sizes.exists() and sizes.read_text(), 10, what="sizes")
        assert sizes.read_text().split() == ["500", "200"]
        await ws.send_json(["resize", {"width": 1500, "height": 1500}])
        await ws.send_json(["resize", {"width": "many", "height": 30}])
        await wait_until_async(lambda: received.read_bytes().count(b"resize") == 2, 10)
        resizes = [
            json.loads(part[part.index(b"{") :].split(b"}")[0] + b"}")
            for part in received.read_bytes().split(b"M")[1:]
        ]
        assert [(r["width"], r["height"]) for r in resizes] == [(500, 200), (80, 30)]
        await ws.close()


def running_script(script: Path) -> list[psutil.Process]:
    """The processes of this test's server's tabs running ``script``, not yet exited."""
    kids = psutil.Process().children(recursive=True)
    return [kid for kid in kids if str(script) in command_line(kid) and running(kid)]


# Writes 4 KiB packets, ignoring SIGTERM and its stdin (so it never hears "quit").
STUBBORN = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = sys.stdout.buffer
out.write(b"__GANGLION__\n")
for _ in range(30_000):  # 2 minutes at most
    out.write(b"D" + (4096).to_bytes(4, "big") + b"x" * 4096)
    out.flush()
    time.sleep(0.004)
"""


@pytest.mark.slow
async def test_a_tab_process_that_does_not_quit_is_killed_and_holds_its_slot_till_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_server, "MAX_VIEWERS", 1)
    monkeypatch.setattr(web_server, "QUIT_SECONDS", 0.5)
    monkeypatch.setattr(web_server, "TERM_SECONDS", 0.5)
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    async with ServedCommand(f"exec {shlex.quote(sys.executable)} {script}") as served:
        ws = await served.connect()
        await ws.receive_bytes(timeout=10)  # it runs, and its output reaches the tab
        (process,) = running_script(script)
        assert await served.refused()  # one tab process at most
        await ws.close()
        assert await served.refused()  # its session is over, but its process still lives
        await wait_until_async(lambda: not running(process), 10, what="SIGTERM, then SIGKILL")
        assert not await served.refused()


# Writes 1 MiB once it has been told to quit, then exits: blocked for good if nobody reads.
TALKS_ON_QUIT = r"""
import signal, sys, pathlib
done = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: (done.write_text("terminated"), sys.exit(1)))
out = sys.stdout.buffer
out.write(b"__GANGLION__\n")
out.flush()
seen = b""
while b'"quit"' not in seen:
    chunk = sys.stdin.buffer.read1(4096)
    if not chunk:
        break
    seen = seen[-64:] + chunk
for _ in range(256):
    out.write(b"D" + (4096).to_bytes(4, "big") + b"x" * 4096)
out.flush()
done.write_text("quit")
"""


async def test_a_tab_s_output_is_read_to_the_end_after_its_browser_has_gone(
    tmp_path: Path,
) -> None:
    script, done = tmp_path / "talks.py", tmp_path / "done"
    script.write_text(TALKS_ON_QUIT)
    command = f"exec {shlex.quote(sys.executable)} {script} {done}"
    async with ServedCommand(command) as served:
        ws = await served.connect()
        await wait_until_async(lambda: running_script(script), 10, what="its process")
        (process,) = running_script(script)
        await ws.close()
        await wait_until_async(lambda: done.exists() and done.read_text(), 10, what="its end")
        assert done.read_text() == "quit"  # it said all it had to, then quit: no SIGTERM
        await wait_until_async(lambda: not running(process), 10, what="its exit")


# A real server in front of a real balancer.


class WebServer:
    """``ticslab dashboard --web`` on a free port, its output in a file; stopped on ``close``."""

    def __init__(self, folder: Path, url: str, *flags: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [*TICSLAB, "dashboard", "--web", "--url", url, "--port", str(self.port)]
        self.command += flags
        self.env = {**os.environ, **(env or {})}
        self.log = folder / f"web-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WebServer:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(self._answers, timeout=20, what="the web dashboard to listen")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"it exited with {self.proc.returncode}: {self.output()}")
        httpx.get(self.url, timeout=1)
        return True

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def dashboards(self) -> list[psutil.Process]:
        assert self.proc is not None
        return tabs_of(self.proc.pid)

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        left = self.dashboards()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for process in psutil.wait_procs(left, timeout=5)[1]:
            process.kill()


def tabs_of(pid: int) -> list[psutil.Process]:
    """The dashboards a web server (``pid``) started for its tabs."""
    try:
        kids = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    return [kid for kid in kids if "--served-by" in command_line(kid)]


def command_line(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Tab:
    """What a browser tab does, without the browser: the page's WebSocket, answering pings
    and the server's close; what the tab's dashboard draws, as text."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.output = ""

    async def __aenter__(self) -> Tab:
        self._http = aiohttp.ClientSession()
        address = f"{self.url}/ws?width=140&height=40"
        self.ws = await self._http.ws_connect(address, origin=self.url)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.output = (self.output + message.data.decode(errors="replace"))[-100_000:]

    async def wait_for(self, *words: str, timeout: float = 30) -> None:
        await wait_until_async(
            lambda: all(word in self.output for word in words), timeout, what=f"{words} drawn"
        )

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self._reader
        await self._http.close()


@pytest.fixture(scope="module")
def balancer(echoes: list[EchoBackend]):
    process = balancer_process([(echo.name, echo.url) for echo in echoes]).start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def served(balancer, tmp_path_factory: pytest.TempPathFactory):
    """The web dashboard with control: the balancer's token given in TICSLAB_TOKEN."""
    folder = tmp_path_factory.mktemp("web")
    server = WebServer(folder, balancer.url, env={"TICSLAB_TOKEN": TOKEN}).start()
    yield server
    server.close()


def test_the_page_is_served_without_token_or_command(served: WebServer) -> None:
    page = httpx.get(served.url + "/", timeout=5)
    assert page.status_code == 200
    assert "ticslab dashboard" in page.text
    assert f'data-session-websocket-url="ws://127.0.0.1:{served.port}/ws"' in page.text
    assert TOKEN not in page.text
    assert "services.cli" not in page.text
    assert served.proc is not None
    assert TOKEN not in " ".join(psutil.Process(served.proc.pid).cmdline())
    # Never framed by another site, which could lure keys into a hidden frame.
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_the_banner_names_the_page_and_that_its_keys_control(served: WebServer) -> None:
    output = served.output()
    assert f"  dashboard  http://127.0.0.1:{served.port}  ({web.CONTROL})" in output
    assert "Ctrl+C stops it." in output
    assert TOKEN not in output
    assert "warning" not in output  # loopback


def test_another_name_for_the_server_is_sent_to_its_address(served: WebServer) -> None:
    for host in (f"localhost:{served.port}", f"rebound.example:{served.port}"):
        answer = httpx.get(served.url + "/", headers={"Host": host}, timeout=5)
        assert answer.status_code == 307
        assert answer.headers["location"] == served.url + "/"


def test_a_socket_from_another_page_starts_no_dashboard(served: WebServer) -> None:
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    upgrade["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
    for origin in ("http://evil.example", f"http://localhost:{served.port}"):
        answer = httpx.get(served.url + "/ws", headers={**upgrade, "Origin": origin}, timeout=5)
        assert answer.status_code == 403
    assert served.dashboards() == []


# Each tab's dashboard: started per tab, ended with the tab and with the server (slow).


@pytest.mark.slow
async def test_each_tab_has_a_dashboard_holding_the_token_only_in_its_environment(
    served: WebServer,
) -> None:
    async with Tab(served.url) as tab:
        await tab.wait_for("server1", "server2")
        (dashboard,) = served.dashboards()
        assert dashboard.environ()["TICSLAB_TOKEN"] == TOKEN
        assert TOKEN not in " ".join(dashboard.cmdline())
        assert "--read-only" not in dashboard.cmdline()
        assert "READ-ONLY" not in tab.output
    await wait_until_async(lambda: not running(dashboard), 10, what="the tab's dashboard to end")
    assert served.dashboards() == []


@pytest.mark.slow
async def test_read_only_tabs_get_no_token_even_when_the_server_has_one(
    balancer, tmp_path: Path
) -> None:
    env = {"TICSLAB_TOKEN": TOKEN}
    server = WebServer(tmp_path, balancer.url, "--read-only", env=env).start()
    try:
        assert f"({web.ASKED})" in server.output()
        async with Tab(server.url) as tab:
            await tab.wait_for("server1", "READ-ONLY")
            (dashboard,) = server.dashboards()
            assert "TICSLAB_TOKEN" not in dashboard.environ()
            assert dashboard.cmdline()[-1] == "--read-only"
    finally:
        server.close()


@pytest.mark.slow
async def test_a_read_only_tab_has_no_way_to_the_token_file(balancer, tmp_path: Path) -> None:
    """The token file is a FIFO nobody writes: opening it would block the tab's dashboard
    before its first poll. The page is read-only, so it must never try."""
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    env = {"TICSLAB_TOKEN_FILE": str(fifo)}
    server = WebServer(tmp_path, balancer.url, "--read-only", env=env).start()
    try:
        async with Tab(server.url) as tab:
            await tab.wait_for("server1", "READ-ONLY")
            (dashboard,) = server.dashboards()
            assert dashboard.environ()["TICSLAB_TOKEN_FILE"] == os.devnull
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_stopping_the_server_ends_every_tab_s_dashboard_first(
    balancer, tmp_path: Path, how: signal.Signals
) -> None:
    server = WebServer(tmp_path, balancer.url).start()
    assert server.proc is not None
    try:
        async with Tab(server.url) as first, Tab(server.url) as second:
            await first.wait_for("server1")
            await second.wait_for("server1")
            dashboards = server.dashboards()
            assert len(dashboards) == 2
            server.proc.send_signal(how)
            assert await asyncio.to_thread(server.proc.wait, 10) == 0
            assert not any(map(running, dashboards))  # ended before the server returned
    finally:
        server.close()


@pytest.mark.slow
async def test_a_killed_server_s_dashboards_end_by_themselves(balancer, tmp_path: Path) -> None:
    server = WebServer(tmp_path, balancer.url).start()
    assert server.proc is not None
    dashboards: list[psutil.Process] = []
    try:
        async with Tab(server.url) as tab:
            await tab.wait_for("server1")
            dashboards = server.dashboards()
            assert len(dashboards) == 1
            server.proc.kill()
            within = 2 * lifeline.PARENT_POLL_SECONDS + 1
            await wait_until_async(lambda: not running(dashboards[0]), within, what="its end")
    finally:
        server.close()
        for dashboard in filter(running, dashboards):  # only when the test failed
            dashboard.kill()


class Demo:
    """``ticslab demo --web`` on free ports, its token in a file of its own."""

    def __init__(self, tmp: Path) -> None:
        self.balancer_url = f"http://127.0.0.1:{free_port()}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_file = tmp / "token"
        self.log = tmp / "demo.log"
        self.data = tmp / "data"
        self.command = [
            *TICSLAB, "demo", "--web", "--web-port", str(self.port), "--servers", "2",
            "--clients", "0", "--balancer-port", self.balancer_url.rsplit(":", 1)[1],
            "--first-server-port", str(free_run(2)), "--data-dir", str(self.data),
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Demo:
        env = {**os.environ, "TICSLAB_TOKEN_FILE": str(self.token_file)}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.command, env=env, stdout=out, stderr=out)
        wait_until(self._ready, timeout=40, what="ticslab demo --web to start")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"demo exited with {self.proc.returncode}: {self.output()}")
        return "Ctrl+C stops everything" in self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def everyone(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children(recursive=True)

    def close(self) -> None:
        """Ctrl+C; SIGKILL to it and to what it left after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        left = self.everyone()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for process in psutil.wait_procs(left, timeout=5)[1]:
            process.kill()


@pytest.mark.slow
async def test_demo_web_gives_its_tabs_the_stack_s_token_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    demo = Demo(tmp_path).start()
    assert demo.proc is not None
    try:
        assert f"  dashboard  {demo.url}  ({web.CONTROL})" in demo.output()
        token = demo.token_file.read_text().strip()
        async with Tab(demo.url) as tab:
            await tab.wait_for("server1", "server2")
            (dashboard,) = tabs_of(demo.proc.pid)
            assert dashboard.environ()["TICSLAB_TOKEN"] == token
            assert all(token not in " ".join(command_line(p)) for p in demo.everyone())
            everyone = demo.everyone()  # two task servers, the balancer, the tab's dashboard
            assert len(everyone) == 4
            demo.proc.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(demo.proc.wait, 30) == 0
        assert not any(map(running, everyone))
        assert demo.output().rstrip().endswith(f"stack stopped; logs: {demo.data}/logs/")
    finally:
        demo.close()


# In a real browser.


@pytest.mark.browser
@needs_chromium
async def test_chromium_shows_the_servers_and_closing_it_ends_its_dashboard(
    balancer, tmp_path: Path
) -> None:
    server = WebServer(tmp_path, balancer.url).start()  # no token: read-only
    chromium = await Chromium().start()
    try:
        await chromium.open(server.url + "/")
        await chromium.wait_for_text("server1", "server2", "READ-ONLY")
        (dashboard,) = server.dashboards()
        assert dashboard.cmdline()[-1] == "--read-only"
        await chromium.close()
        await wait_until_async(lambda: not running(dashboard), 10, what="the tab's dashboard")
    finally:
        await chromium.close()
        server.close()


@pytest.mark.browser
@needs_chromium
async def test_chromium_stops_a_server_of_the_demo_stack_with_a_key(tmp_path: Path) -> None:
    demo = Demo(tmp_path).start()
    chromium = await Chromium().start()

    def state_of_server2() -> str:
        servers = httpx.get(demo.balancer_url + "/status", timeout=5).json()["servers"]
        return next(s["state"] for s in servers if s["name"] == "server2")

    try:
        await chromium.open(demo.url + "/")
        await chromium.wait_for_text("server1", "server2", "Start/stop")
        await chromium.press("2")
        await asyncio.to_thread(
            wait_until, lambda: state_of_server2() == "DOWN", 15, what="server2 stopped"
        )
        await chromium.wait_for_text("server2: stop → stopped")
    finally:
        await chromium.close()
        demo.close()

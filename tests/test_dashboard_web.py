"""``ticslab dashboard --web`` and ``ticslab demo --web``: who gets control, the command each
browser tab runs, the page and its guards on a real server in front of a real balancer, each
tab's dashboard process ending with its tab and with the server (slow), and the page in a real
headless Chromium (marker ``browser``)."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp
import httpx
import psutil
import pytest
from aiohttp.test_utils import make_mocked_request
from browser import Chromium, chromium_problem
from support import TICSLAB, free_port, free_run, wait_until, wait_until_async
from test_balancer_helpers import TOKEN, EchoBackend, balancer_process

from dashboard import web
from dashboard.web_server import MAX_VIEWERS, DashboardServer
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


async def test_the_socket_is_only_for_the_page_itself_and_at_most_max_viewers() -> None:
    server = DashboardServer(options())
    page = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}
    refused = [
        {"Host": "127.0.0.1:8000"},  # no Origin: not a browser's page
        {**page, "Origin": "http://evil.example"},  # another site's page
        {**page, "Origin": "null"},  # a sandboxed frame or a file
        {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"},  # DNS rebinding
    ]
    for headers in refused:
        answer = await server.handle_websocket(make_mocked_request("GET", "/ws", headers=headers))
        assert answer.status == 403, headers
    assert server.from_the_page(make_mocked_request("GET", "/ws", headers=page))
    server.sessions.update(asyncio.ensure_future(asyncio.sleep(0)) for _ in range(MAX_VIEWERS))
    answer = await server.handle_websocket(make_mocked_request("GET", "/ws", headers=page))
    assert answer.status == 503
    await asyncio.gather(*server.sessions)


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
            await wait_until_async(
                lambda: not running(dashboards[0]), 2 * web.PARENT_POLL_SECONDS + 1, what="its end"
            )
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

"""Pilot tests of the dashboard against a real stack on 127.0.0.1.

``ticslab up`` (balancer + two task servers + the supervisor its local driver uses) runs once
for the module; the disconnection test starts and kills its own balancer process.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fixtures.dashboard.balancer import rendered
from support import ACTED_ON, ServiceProcess, free_port, wait_until
from textual.pilot import Pilot
from textual.widgets import Button, Label

from dashboard.api import BalancerClient
from dashboard.main import DashboardApp
from dashboard.options import Options
from dashboard.poll import TASKS_SHOWN

TOKEN = "dashboard-test-token"
SIZE = (100, 30)


def two_free_ports() -> int:
    """A port p with p and p + 1 both free (``ticslab up`` numbers servers consecutively)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    data = tmp_path_factory.mktemp("stack")
    port = free_port()
    args = ["up", "--servers", "2", "--clients", "0", "--balancer-port", str(port)]
    args += ["--first-server-port", str(two_free_ports()), "--data-dir", str(data)]
    args += ["--token", TOKEN]
    process = ServiceProcess(args, port, env={"TICSLAB_TOKEN_FILE": str(data / "token")})
    process.start(timeout=30)
    try:
        wait_until(lambda: status(process.url)["servers_up"] == 2, timeout=20, what="2 UP")
        yield process
    finally:
        process.close()


def status(url: str) -> dict[str, Any]:
    return httpx.get(url + "/status", timeout=5).json()


def dashboard(url: str, **fields: Any) -> DashboardApp:
    options = Options(url=url, token=TOKEN, refresh=0.5, lang="en")
    return DashboardApp(replace(options, **fields))


async def until(pilot: Pilot, check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Let the app run until ``check()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)
    return result


def state_on_screen(app: DashboardApp, server: str) -> str:
    return app.servers.get_cell(server, "state").plain.strip()


def digits(app: DashboardApp, id: str) -> str:
    return app.query_one(f"#{id} Digits").value


async def test_screen_matches_status(stack: ServiceProcess) -> None:
    app = dashboard(stack.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status, "the first poll")
        live = status(stack.url)
        shown = app.status
        assert shown is not None
        assert [s["name"] for s in shown["servers"]] == [s["name"] for s in live["servers"]]
        for server in shown["servers"]:
            name = server["name"]
            assert state_on_screen(app, name) == server["state"] == "UP"
            assert app.servers.get_cell(name, "responses") == "/".join(
                str(server["responses"][k]) for k in ("2xx", "4xx", "5xx")
            )
        assert digits(app, "total-requests") == str(shown["requests_total"])
        assert digits(app, "total-up") == f"{live['servers_up']}/{live['servers_total']}"
        assert str(app.query_one("#algorithm").content) == f"Algorithm: {live['algorithm']}"
        assert app.banner.display is False
        assert TOKEN not in app.export_screenshot()


@pytest.mark.slow  # 1.4-3 s; .ci/run runs it: the default run stays near 3 minutes
async def test_key_1_stops_server1_and_the_screen_shows_it_down(stack: ServiceProcess) -> None:
    app = dashboard(stack.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status, "the first poll")
        await pilot.press("1")
        await until(pilot, lambda: state_on_screen(app, "server1") == "DOWN", "server1 DOWN")
        assert status(stack.url)["servers"][0]["state"] == "DOWN"
        assert digits(app, "total-up") == "1/2"
        # 1 again starts it: the stack is left as it was found.
        await pilot.press("1")
        await until(pilot, lambda: state_on_screen(app, "server1") == "UP", "server1 UP")


async def test_a_changes_the_algorithm(stack: ServiceProcess) -> None:
    app = dashboard(stack.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status, "the first poll")
        before = status(stack.url)
        names = before["algorithms"]
        expected = names[(names.index(before["algorithm"]) + 1) % len(names)]
        await pilot.press("a")
        label = app.query_one("#algorithm")
        await until(pilot, lambda: expected in str(label.content), f"{expected} on screen")
        assert status(stack.url)["algorithm"] == expected


class RecordingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, remembering the method of every request sent."""

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.methods.append(request.method)
        return await super().handle_async_request(request)


@pytest.mark.slow  # 2-2.3 s: the default run stays near 3 minutes
async def test_read_only_offers_no_control_and_sends_no_write(stack: ServiceProcess) -> None:
    transport = RecordingTransport()
    events_before = httpx.get(stack.url + "/events").json()["last_id"]
    options = Options(url=stack.url, token=None, read_only=True, refresh=0.5, lang="en")
    app = DashboardApp(options, transport=transport)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status, "the first poll")
        assert list(app.query(Button)) == []
        assert str(app.query_one("#badge").content) == "READ-ONLY"
        assert app.theme == "ticslab-contrast"
        for key in ("1", "2", "t", "k", "p", "u", "d", "m", "a", "r", "f"):
            await pilot.press(key)
        assert not app.check_action("toggle_server", (1,))
        # A write reaching the client layer (e.g. from a future handler) is refused there too.
        assert app.client.read_only
        polls = len(transport.methods)
        await until(pilot, lambda: len(transport.methods) > polls + 3, "more polls")
        assert set(transport.methods) == {"GET"}
        assert len(app.screen_stack) == 1  # the fault screen never opened
    after = status(stack.url)
    assert [s["state"] for s in after["servers"]] == ["UP", "UP"]
    new_events = httpx.get(stack.url + "/events", params={"since": events_before}).json()
    assert [e for e in new_events["events"] if e["kind"] in ("control", "algorithm")] == []


@pytest.mark.slow  # 2-2.3 s: the default run stays near 3 minutes
async def test_disconnected_banner_appears_and_clears(
    stack: ServiceProcess, tmp_path: Path
) -> None:
    backend = status(stack.url)["servers"][1]["url"]
    port = free_port()
    args = ["balancer", "--host", "127.0.0.1", "--port", str(port), "--token", "x"]
    balancer = ServiceProcess([*args, "--backend", f"server2={backend}"], port)
    app = dashboard(balancer.url)
    async with app.run_test(size=SIZE) as pilot:
        # It starts with the balancer down.
        await until(pilot, lambda: app.polling.failures > 0, "a failed poll")
        assert app.banner.display and "DISCONNECTED" in str(app.banner.content)
        try:
            balancer.start()
            await until(pilot, lambda: app.status and not app.banner.display, "reconnection")
            assert state_on_screen(app, "server2") in ("UP", "DOWN")
            balancer.kill()
            await until(pilot, lambda: app.banner.display, "the banner after the balancer died")
            assert app.screen.has_class("-disconnected")
            assert app.servers.row_count == 1  # the last data is kept, dimmed
            assert str(app.query_one("#connection").content) == "DISCONNECTED"
        finally:
            balancer.close()


async def test_a_refused_action_is_explained_in_words(stack: ServiceProcess) -> None:
    app = dashboard(stack.url, token="not-the-token")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status, "the first poll")
        await pilot.press("a")
        messages = await until(
            pilot,
            lambda: [n.message for n in app._notifications if "token" in n.message],
            "a notification about the token",
        )
        assert "refused: wrong or missing token" in messages[0]
    assert status(stack.url)["algorithm"] == app.status["algorithm"]


async def test_every_answer_is_decoded_off_the_ui_thread(
    stack: ServiceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long task list or event log must never stall the screen while it is parsed."""
    decoders: list[threading.Thread] = []
    for module in (orjson, json):
        real = module.loads

        def recording(*args: Any, real: Any = real, **kwargs: Any) -> Any:
            decoders.append(threading.current_thread())
            return real(*args, **kwargs)

        monkeypatch.setattr(module, "loads", recording)
    app = dashboard(stack.url)
    async with app.run_test(size=SIZE) as pilot:
        # Tasks are read last in a poll, after /status, /errors/stats and /events.
        await until(pilot, lambda: app.tasks_panel.border_title != "Tasks: -", "the tasks")
    assert len(decoders) >= 4  # /status, /errors/stats, /events, /tareas at least
    assert threading.main_thread() not in decoders


async def test_only_the_newest_tasks_are_read_with_the_stored_total(
    stack: ServiceProcess,
) -> None:
    titles = [f"page-{n}" for n in range(TASKS_SHOWN + 1)]
    with httpx.Client(base_url=stack.url) as http:
        for title in titles:
            http.post("/tareas", json={"title": title}).raise_for_status()
        stored = int(http.get("/tareas?limit=0").headers["x-total-count"])
    client = BalancerClient(stack.url)
    try:
        tasks = await client.tasks(TASKS_SHOWN)
    finally:
        await client.aclose()
    assert tasks.total == stored > TASKS_SHOWN
    assert [t["title"] for t in tasks.newest] == titles[::-1][:TASKS_SHOWN]


async def test_a_hostile_title_and_path_from_the_stack_are_shown_escaped(
    stack: ServiceProcess,
) -> None:
    title = "\x1b]0;pwned\x07 [/oops]"
    httpx.post(stack.url + "/tareas", json={"title": title}).raise_for_status()
    assert httpx.get(stack.url + "/%1b[5;41m%0d%0aFAKE").status_code == 404
    app = dashboard(stack.url)
    async with app.run_test(size=(240, 40)) as pilot:
        tasks = await until(
            pilot,
            lambda: [x for x in rendered(app.tasks_panel) if "\\x1b]0;pwned\\x07 [/oops]" in x],
            "the hostile title",
        )
        errors = await until(
            pilot,
            lambda: [x for x in rendered(app.errors_panel) if "GET /\\x1b[5;41m\\r\\nFAKE" in x],
            "the hostile path",
        )
        assert not ACTED_ON.search("".join(tasks + errors))


@pytest.mark.slow
async def test_the_charts_mark_a_server_stopped_under_them(stack: ServiceProcess) -> None:
    """On a real stack: open the charts, stop server1 with ``1`` (keys work under them), and
    its DOWN shows as a labelled line; a second dashboard opened later draws the same
    history (the balancer keeps it, not the dashboard)."""
    app = dashboard(stack.url)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status, "the first poll")
        await pilot.press("c")
        await until(
            pilot, lambda: len(app.polling.poller.history.samples) >= 2, "two seconds of history"
        )
        await pilot.press("1")
        await until(
            pilot,
            lambda: "↓server1" in " ".join(rendered(app.query_one("#chart-requests"))),
            "the DOWN marker on the chart",
        )
        seen = app.polling.poller.history.samples
        await pilot.press("1")  # start it again: the stack is left as it was found
        await until(pilot, lambda: status(stack.url)["servers"][0]["state"] == "UP", "server1 UP")
    late = dashboard(stack.url)
    async with late.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: late.status, "the first poll")
        await pilot.press("c")
        await until(pilot, lambda: late.polling.poller.history.samples, "the history")
        assert late.polling.poller.history.samples[: len(seen)] == seen


def fault_of(url: str, name: str) -> Any:
    return next(s for s in status(url)["servers"] if s["name"] == name)["fault"]


@pytest.mark.slow  # a stop and a start of server2: 3-5 s
async def test_a_fault_picked_with_f_is_in_its_row_until_the_process_is_stopped(
    stack: ServiceProcess,
) -> None:
    """f on server2, latency: /status carries it and the row says it in Spanish; stopping the
    server (a new process has no fault) ends it on both."""
    app = dashboard(stack.url, lang="es")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status, "the first poll")
        await pilot.press("down", "f")
        await until(pilot, lambda: app.screen.id == "fault", "the fault picker")
        await pilot.press("2")  # latency, 300 ms
        column = app.servers.columns
        await until(pilot, lambda: "fault" in [k.value for k in column], "the Falla column")
        assert app.servers.get_cell("server2", "fault").plain == "latencia"
        assert fault_of(stack.url, "server2") == {"mode": "latency", "ms": 500}
        assert fault_of(stack.url, "server1") is None
        await pilot.press("2")  # stop server2
        await until(pilot, lambda: "fault" not in [k.value for k in column], "no Falla column")
        assert fault_of(stack.url, "server2") is None
        await pilot.press("2")  # start it again: the stack is left as it was found
        await until(pilot, lambda: state_on_screen(app, "server2") == "UP", "server2 UP")
        assert fault_of(stack.url, "server2") is None


@pytest.mark.slow
async def test_shift_r_starts_a_rolling_restart_and_the_status_bar_follows_it(
    stack: ServiceProcess,
) -> None:
    """R: every server restarted one at a time; the status bar says each step while it runs
    (in Spanish here) and nothing once it is done; the stack is left with both UP."""
    app = dashboard(stack.url, lang="es", refresh=0.25)
    seen: set[str] = set()

    def rollout() -> dict[str, Any] | None:
        return httpx.get(stack.url + "/control/rollout", timeout=5).json()["rollout"]

    def shown() -> str:
        label = app.query_one("#rollout", Label)
        if label.display:
            seen.add(str(label.content))
        return str(label.content)

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.status, "the first poll")
        await pilot.press("R")
        await until(pilot, lambda: [shown()] and (rollout() or {}).get("state") == "done", "done")
        await until(pilot, lambda: not app.query_one("#rollout", Label).display, "bar cleared")
    assert any(text.startswith("reinicio gradual ") for text in seen), seen
    finished = rollout()
    assert finished is not None and finished["state"] == "done"
    assert all(result["result"] == "restarted" for result in finished["servers"].values())
    wait_until(lambda: status(stack.url)["servers_up"] == 2, timeout=20, what="2 UP")

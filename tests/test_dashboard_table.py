"""The server table and the panels: what each row shows, the layout with 1 to 16
servers, the share bar, the selection mark, the weight and state columns."""

from __future__ import annotations

import time

import pytest
from fixtures.dashboard.balancer import (
    FixtureBalancer,
    fixture_app,
    loaded,
    rendered,
    until_found,
)
from textual.widgets import Button, Static

from dashboard.states import STATE_STYLES
from services.balancer.server import Server


async def test_a_server_that_takes_no_new_traffic_shows_zero_share_and_rate_at_once() -> None:
    """Drained, stopped or weight 0: the 10 s window still holds its old traffic, the table
    says what it gets now (the balancer's share is 0 already, its rate is not); an UP server
    with a weight keeps the window's numbers."""
    balancer = FixtureBalancer(4)
    servers = balancer.answers["/status"]["servers"]
    servers[0] |= {"state": "DRAIN", "share_10s": 0.0}
    servers[1] |= {"weight": 0, "share_10s": 0.0}
    servers[2] |= {"state": "DOWN", "share_10s": 0.0, "tries_per_second": 9.5}
    app = fixture_app(balancer=balancer, lang="es")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        table = app.servers
        for name in ("server1", "server2", "server3"):
            assert table.get_cell(name, "share").plain.split()[-1] == "0%", name
            assert table.get_cell(name, "rps").split()[0] == "0", name
        assert table.get_cell("server4", "share").plain.split()[-1] == "50%"
        assert table.get_cell("server4", "rps").split()[0] == "20.5"


@pytest.mark.smoke
@pytest.mark.parametrize("servers", [1, 16])
async def test_layout_fits_100x30_with_no_dead_band(servers: int) -> None:
    app = fixture_app(servers, lang="es")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        table = app.servers
        assert table.row_count == servers
        assert table.virtual_size.width <= table.scrollable_content_region.width
        if servers == 1:
            assert table.region.height == 2  # the header and its one row, nothing more
        else:
            assert 10 <= table.region.height < 17 and table.max_scroll_y > 0  # it scrolls
        controls = app.query_one("#controls")
        for panel in (app.errors_panel, app.tasks_panel, app.events_panel):
            assert panel.region.y == table.region.bottom  # right under the table
            assert panel.region.bottom == controls.region.y  # down to the buttons
            assert panel.region.height >= 8 and panel.region.right <= 100
        assert app.events_panel.region.width > app.tasks_panel.region.width
        assert [b.region.right <= 100 for b in controls.query(Button)] == [True] * 9


@pytest.mark.parametrize(
    ("width", "lang", "bar"), [(100, "es", 5), (100, "en", 6), (160, "en", 30)]
)
async def test_share_bar_is_wide_and_grows_with_the_screen(width: int, lang: str, bar: int) -> None:
    """16 servers (the widest names): the bar takes every spare cell, up to 30."""
    app = fixture_app(16, lang=lang)
    async with app.run_test(size=(width, 30)) as pilot:
        await loaded(pilot)
        share = app.servers.get_cell("server1", "share").plain
        assert share.rstrip("%").split() == [
            "█" * round(bar / 2) + "░" * (bar - round(bar / 2)),
            "50",
        ]
        assert app.servers.virtual_size.width <= app.servers.scrollable_content_region.width


async def test_the_selected_server_is_marked_without_colour() -> None:
    app = fixture_app(3, lang="es")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("down")
        await pilot.pause()
        marks = [app.servers.get_cell(f"server{n}", "server").plain[0] for n in (1, 2, 3)]
        assert marks == [" ", "▶", " "]
        assert app.servers.selected_server == "server2"


async def test_the_weight_column_marks_a_slow_start() -> None:
    app = fixture_app(3)  # server2: weight 3, ramping (effective 1.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        cells = [app.servers.get_cell(f"server{n}", "weight") for n in (1, 2, 3)]
        assert cells == ["1", "3↗", "1"]
        assert "3↗" in rendered(app.servers)[2]


@pytest.mark.parametrize(
    ("lang", "legend"),
    [("en", "EJECTED answered too many 5xx in a row"), ("es", "EJECTED (EXPULSADO)")],
)
async def test_an_ejected_server_has_its_own_colour_a_way_back_with_d_and_a_legend(
    lang: str, legend: str
) -> None:
    balancer = FixtureBalancer(3)
    balancer.answers["/status"]["servers"][2] |= {"state": "EJECTED", "ejected_for": 8.5}
    app = fixture_app(balancer=balancer, lang=lang)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        cell = app.servers.get_cell("server3", "state")
        assert cell.plain.strip() == "EJECTED" and "EJECTED" in rendered(app.servers)[3]
        others = {STATE_STYLES[state] for state in ("UP", "DOWN", "DRAIN", "MAINT")}
        assert cell.style == STATE_STYLES["EJECTED"] and cell.style not in others
        await pilot.press("down", "down", "d")  # READY ends the ejection now
        await until_found(pilot, lambda: balancer.writes)
        assert balancer.writes[0].url.path == "/control/servers/server3/ready"
        await pilot.press("question_mark")
        await pilot.pause()
        help_texts = app.screen.query(".help-text").results(Static)
        assert legend in " ".join(str(text.content) for text in help_texts)


@pytest.mark.smoke
async def test_the_newest_event_stays_visible_when_the_panel_shrinks() -> None:
    balancer = FixtureBalancer(1)
    events = [{"id": n, "kind": "stats", "who": f"10.0.0.{n}"} for n in range(1, 41)]
    balancer.answers["/events"] = {"last_id": 40, "events": events}
    app = fixture_app(balancer=balancer)
    async with app.run_test(size=(100, 36)) as pilot:
        await loaded(pilot)
        panel = app.events_panel
        assert panel.max_scroll_y > 0 and panel.scroll_y == panel.max_scroll_y
        await pilot.resize_terminal(100, 30)  # as when the disconnected banner appears
        await pilot.pause()
        assert panel.scroll_y == panel.max_scroll_y
        assert "10.0.0.40" in app.export_screenshot()


def test_a_servers_fault_lasts_until_none_or_a_hangs_end() -> None:
    """What /status says of the fault set through /control (services/balancer/server.py)."""
    server = Server("server1", "http://127.0.0.1:5001")
    now = time.monotonic()
    assert server.fault_now(now) is None
    server.set_fault({"mode": "error", "rate": 0.5})
    assert server.fault_now(now + 3600) == {"mode": "error", "rate": 0.5}
    server.set_fault({"mode": "hang", "max_seconds": 30.0, "remaining_seconds": 30.0})
    assert server.fault_now(time.monotonic()) == {"mode": "hang", "max_seconds": 30.0}
    assert server.fault_now(time.monotonic() + 31) is None  # the task server ended it too
    server.set_fault({"mode": "none"})
    assert server.fault_now(now) is None

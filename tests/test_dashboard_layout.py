"""The dashboard on a student's 80x24 terminal: the server table never scrolls sideways (``w``
switches its traffic and detail columns), the panels come one at a time (``v``), the totals
take one line; from 100x30 up everything is shown at once and ``v`` and ``w`` are not offered.

Fixed data (tests/fixtures/dashboard); the SVGs of the same layouts are in
tests/test_dashboard_snapshots.py.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import sys
import termios
import time

import pytest
from fixtures.dashboard.balancer import FixtureBalancer, fixture_app, loaded, rendered, words
from textual.geometry import Size
from textual.pilot import Pilot
from textual.widgets import Button, Header, Label
from textual.widgets._footer import FooterKey

from dashboard.main import DashboardApp
from dashboard.terminal import reads_the_terminal, terminal_size
from dashboard.widgets.servers import DETAIL_COLUMNS, TRAFFIC_COLUMNS, WIDE_COLUMNS

SMALL = (80, 24)
READ_ONLY = {"token": None, "read_only": True}


def columns(app: DashboardApp) -> tuple[str, ...]:
    return tuple(str(key.value) for key in app.servers.columns)


def fits_its_width(app: DashboardApp) -> bool:
    """The table's rows fit its width: nothing to scroll sideways, no horizontal scrollbar."""
    table = app.servers
    return (
        table.virtual_size.width <= table.scrollable_content_region.width
        and table.max_scroll_x == 0
        and not table.show_horizontal_scrollbar
    )


def shown_panels(app: DashboardApp) -> list[str | None]:
    return [panel.id for panel in app.panels.panels if panel.region.width]


def footer_keys(app: DashboardApp, width: int) -> set[str]:
    """The keys the Footer shows inside the screen's ``width``."""
    return {
        key.key_display
        for key in app.query(FooterKey)
        if key.region.width and key.region.right <= width
    }


async def press(pilot: Pilot, *keys: str) -> None:
    await pilot.press(*keys)
    await pilot.pause()


@pytest.mark.smoke
@pytest.mark.parametrize("lang", ["en", "es"])
async def test_at_80_columns_the_table_never_scrolls_sideways_and_w_shows_the_rest(
    lang: str,
) -> None:
    """16 servers (the widest names): the traffic columns with a share bar of at least 10
    cells; ``w`` the detail columns, also without scrolling; ``w`` again, back."""
    app = fixture_app(16, lang=lang)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        assert columns(app) == TRAFFIC_COLUMNS and fits_its_width(app)
        bar = app.servers.get_cell("server1", "share").plain.split()[0]
        assert len(bar) >= 10
        await press(pilot, "w")
        assert columns(app) == DETAIL_COLUMNS and fits_its_width(app)
        assert app.servers.get_cell("server1", "errors") == "20/20/10"
        assert "✓ 200" in rendered(app.servers)[1]
        await press(pilot, "w")
        assert columns(app) == TRAFFIC_COLUMNS and fits_its_width(app)


@pytest.mark.parametrize("options", [{}, READ_ONLY], ids=["normal", "read-only"])
async def test_at_80_columns_v_shows_one_panel_at_a_time_full_width(options: dict) -> None:
    balancer = FixtureBalancer(3)
    app = fixture_app(balancer=balancer, **options)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        assert shown_panels(app) == ["events"] and app.events_panel.region.width == 80
        assert {"v", "w"} <= footer_keys(app, 80)
        await press(pilot, "v")
        assert shown_panels(app) == ["errors"]
        assert "21:44:38 500 server1 POST /api/tasks/simulate-error" in words(app.errors_panel)
        await press(pilot, "v")
        assert shown_panels(app) == ["tasks"] and "#42 server1 client1-000042" in words(
            app.tasks_panel
        )
        await press(pilot, "v")
        assert shown_panels(app) == ["events"]
        assert balancer.writes == []
        assert len(app.query(Button)) == (0 if options else 9)


async def test_events_that_come_while_the_events_panel_is_hidden_are_not_cut_at_20_cells() -> None:
    balancer = FixtureBalancer(3)
    app = fixture_app(balancer=balancer)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        await press(pilot, "v")  # the errors panel; the events panel is hidden
        reason = "the whole sentence on one line of eighty cells"
        failure = {"id": 15, "time": "2026-11-26T21:50:00.000Z", "kind": "failure"}
        balancer.answers["/events"] = {"last_id": 15, "events": [failure | {"reason": reason}]}
        balancer.answers["/status"]["requests_total"] += 1
        app.polling.poll_now()
        deadline = time.monotonic() + 10
        while (app.status or {}).get("requests_total") != 1501:
            assert time.monotonic() < deadline, "the second poll never came"
            await pilot.pause(0.05)
        await press(pilot, "v", "v")
        assert shown_panels(app) == ["events"]
        assert any(f"FAILURE: {reason}" in line for line in rendered(app.events_panel))


async def test_resized_to_100x30_everything_is_shown_and_v_and_w_are_no_longer_offered() -> None:
    """Under 30 rows no header and the totals in one line; at 100x30 everything as before."""
    app = fixture_app(3)
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        assert not app.query_one(Header).region.height and app.totals.region.height == 1
        values = [str(label.content) for label in app.query(".total-value").results(Label)]
        assert values == ["1500", "132", "2/3"]
        assert {"v", "w"} <= footer_keys(app, 80)
        await pilot.resize_terminal(100, 30)
        await press(pilot, "v", "w")
        assert app.query_one(Header).region.height == 1 and app.totals.region.height == 3
        assert columns(app) == WIDE_COLUMNS and fits_its_width(app)
        assert shown_panels(app) == ["errors", "tasks", "events"]
        assert not {"v", "w"} & footer_keys(app, 100)


def with_faults(servers: int) -> FixtureBalancer:
    """The fixtures with server1 on ``latency`` and server2 on ``nolock`` (docs/api.md)."""
    balancer = FixtureBalancer(servers)
    rows = balancer.answers["/status"]["servers"]
    rows[0]["fault"] = {"mode": "latency", "ms": 300}
    rows[1]["fault"] = {"mode": "nolock"}
    return balancer


FAULT_WORDS = {"en": ("latency", "nolock"), "es": ("latencia", "sin candado")}


@pytest.mark.parametrize(
    ("lang", "servers", "size"),
    [("es", 16, (100, 30)), ("es", 16, SMALL), ("en", 3, (160, 45))],
)
async def test_a_servers_fault_is_in_its_row_and_the_table_still_fits(
    lang: str, servers: int, size: tuple[int, int]
) -> None:
    """The fault column comes after the state while a fault is on, in the chosen language,
    nolock in red; the columns a fault lesson needs least make room for it, so the table
    never scrolls sideways (at 80 columns in both column sets)."""
    app = fixture_app(balancer=with_faults(servers), lang=lang)
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        for _ in range(2 if size == SMALL else 1):
            shown = columns(app)
            assert shown[shown.index("state") + 1] == "fault" and fits_its_width(app), shown
            cells = [app.servers.get_cell(name, "fault") for name in ("server1", "server2")]
            assert tuple(cell.plain for cell in cells) == FAULT_WORDS[lang]
            assert "red" in str(cells[1].style)
            lines = rendered(app.servers)
            assert FAULT_WORDS[lang][1] in lines[2]
            assert not app.servers.get_cell("server3", "fault").plain
            await press(pilot, "w")  # at 80 columns, the detail columns


async def test_events_wrap_again_at_the_new_width_after_a_resize() -> None:
    """Wrapped at 45 cells at 100 columns, each event is one line at 160, and wrapped again
    (every word kept) back at 100."""
    app = fixture_app(3)
    sentence = "21:32:00 server3 added: http://ticslab-server3-1:5001 (by docker)"
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert not reads_the_terminal(app)  # headless: Textual's size, not a pty's
        assert not any(sentence in line for line in rendered(app.events_panel))
        await pilot.resize_terminal(160, 45)
        await pilot.pause()
        assert any(sentence in line for line in rendered(app.events_panel))
        assert len(app.events_panel.lines) == 5  # one line per event
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        assert not any(sentence in line for line in rendered(app.events_panel))
        logged = " ".join(" ".join(line.text.split()) for line in app.events_panel.lines)
        assert sentence in logged and len(app.events_panel.lines) > 5


@pytest.mark.slow  # two rounds of the 0.5 s check: 3-5 s on a loaded machine
async def test_the_dashboard_follows_a_terminal_size_textual_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``docker-compose run``'s race: the app drawn at 80x24 in a 150-column pty that sent no
    SIGWINCH. The periodic check posts the pty's size, and keeps following it."""
    monkeypatch.setattr("dashboard.main.reads_the_terminal", lambda app: True)
    pty_size = Size(150, 40)
    app = fixture_app(3)
    app.read_terminal_size = lambda: pty_size
    async with app.run_test(size=SMALL) as pilot:
        await loaded(pilot)
        deadline = time.monotonic() + 10
        while app.screen.size != pty_size:
            assert time.monotonic() < deadline, f"still {app.screen.size}"
            await pilot.pause(0.05)
        await pilot.pause()
        assert columns(app) == WIDE_COLUMNS and app.servers.size.width == 150
        pty_size = Size(120, 30)
        while app.screen.size != pty_size:
            assert time.monotonic() < deadline + 10, f"still {app.screen.size}"
            await pilot.pause(0.05)


def test_terminal_size_is_the_kernels_size_of_the_pty_even_without_sigwinch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Set on the pty's master side (as docker does), read on the side the app draws on."""
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
        with os.fdopen(os.dup(slave), "w") as stdout:
            monkeypatch.setattr(sys, "__stdout__", stdout)
            assert terminal_size() == Size(150, 40)
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
            assert terminal_size() == Size(120, 30)
        with open(os.devnull, "w") as stdout:
            monkeypatch.setattr(sys, "__stdout__", stdout)
            assert terminal_size() is None
    finally:
        os.close(master)
        os.close(slave)


async def test_a_fault_mode_from_the_network_is_escaped_and_cut_and_the_column_ends() -> None:
    """With the last fault gone, the column goes and what gave way comes back."""
    balancer = FixtureBalancer(3)
    hostile = "[bold]\x1b[31m" + "x" * 500
    balancer.answers["/status"]["servers"][0]["fault"] = {"mode": hostile}
    balancer.answers["/status"]["servers"][1]["fault"] = {"mode": ["not", "text"]}
    app = fixture_app(balancer=balancer)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert app.servers.get_cell("server1", "fault").plain == "[bold]\\x1b[…"
        assert fits_its_width(app)
        assert app.status is not None
        app.status["servers"][0]["fault"] = None
        app.servers.show(app.status["servers"])
        await pilot.pause()
        assert columns(app) == WIDE_COLUMNS and fits_its_width(app)

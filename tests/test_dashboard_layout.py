"""The dashboard on a student's 80x24 terminal: the server table never scrolls sideways (``w``
switches its traffic and detail columns), the panels come one at a time (``v``), the totals
take one line; from 100x30 up everything is shown at once and ``v`` and ``w`` are not offered.

Fixed data (tests/fixtures/dashboard); the SVGs of the same layouts are in
tests/test_dashboard_snapshots.py.
"""

from __future__ import annotations

import time

import pytest
from fixtures.dashboard.balancer import FixtureBalancer, fixture_app, loaded, rendered, words
from textual.pilot import Pilot
from textual.widgets import Button, Header, Label
from textual.widgets._footer import FooterKey

from dashboard.main import DashboardApp
from dashboard.widgets.servers import DETAIL_COLUMNS, TRAFFIC_COLUMNS, WIDTHS

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
        app.poll_now()
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
        assert columns(app) == tuple(WIDTHS) and fits_its_width(app)
        assert shown_panels(app) == ["errors", "tasks", "events"]
        assert not {"v", "w"} & footer_keys(app, 100)

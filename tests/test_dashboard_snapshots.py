"""Snapshot tests of the dashboard from fixed JSON (tests/fixtures/dashboard), clocks frozen.

The fixtures follow docs/api.md. Only one poll happens (refresh 30 s), so sparklines and
counters cannot move between runs; event times are shown in UTC (TZ pinned). Update with
``pytest tests/test_dashboard_snapshots.py --snapshot-update`` after checking the SVGs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fixtures.dashboard.balancer import fixture_app, loaded
from textual.pilot import Pilot

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_main_screen(snap_compare) -> None:
    assert snap_compare(fixture_app(), terminal_size=SIZE, run_before=loaded)


def test_read_only_projector_mode_in_spanish(snap_compare) -> None:
    app = fixture_app(token=None, read_only=True, lang="es")
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded)


def test_help_screen(snap_compare) -> None:
    async def open_help(pilot: Pilot) -> None:
        await loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(fixture_app(), terminal_size=SIZE, run_before=open_help)


def test_sixteen_servers_fit_100_columns(snap_compare) -> None:
    assert snap_compare(fixture_app(servers=16), terminal_size=SIZE, run_before=loaded)

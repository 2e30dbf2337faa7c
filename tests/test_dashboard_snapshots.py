"""Snapshot tests of the dashboard from fixed JSON (tests/fixtures/dashboard), clocks frozen.

The fixtures follow docs/api.md. Only one poll happens (refresh 30 s), so sparklines and
counters cannot move between runs; event times are shown in UTC (TZ pinned). Update with
``pytest -m snapshot tests/test_dashboard_snapshots.py --snapshot-update`` after checking the SVGs.

The SVGs are what one set of versions draws (.ci/constraints-snapshots.txt): with any other
textual or rich, a pixel may move, so this module skips and says which version differs.
``.ci/run`` installs the pinned set and sets ``REQUIRE_SNAPSHOTS=1``, which turns that skip
into a failure, so CI always compares.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from fixtures.dashboard.balancer import FixtureBalancer, fixture_app, loaded, open_charts
from textual.pilot import Pilot

# Not in the default run: they only compare at the pinned versions, where .ci/run runs them.
pytestmark = pytest.mark.snapshot

SIZE = (100, 30)
LAPTOP = (80, 24)  # a student's default terminal (docs/dashboard.md, "Small terminals")
PROJECTOR = (160, 45)
PINS = Path(__file__).resolve().parents[1] / ".ci" / "constraints-snapshots.txt"


def pinned_versions(path: Path = PINS) -> dict[str, str]:
    """The ``name==version`` lines of the constraints file, by distribution name."""
    pins = {}
    for line in path.read_text().splitlines():
        name, _, pinned = line.split("#", 1)[0].partition("==")
        if pinned:
            pins[name.strip()] = pinned.strip()
    return pins


def differences(pins: dict[str, str]) -> list[str]:
    """Each pinned distribution installed at another version (or not at all)."""
    found = []
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "none"
        if installed != pinned:
            found.append(f"{name} {installed} (pinned {pinned})")
    return found


DIFFERENCES = differences(pinned_versions())


@pytest.fixture(autouse=True)
def pinned_versions_only() -> None:
    if not DIFFERENCES:
        return
    reason = (
        f"the SVGs were drawn with the versions in .ci/constraints-snapshots.txt and this venv "
        f"has {', '.join(DIFFERENCES)}; to compare them: "
        f".venv/bin/pip install -c .ci/constraints-snapshots.txt -e '.[dev]'"
    )
    if os.environ.get("REQUIRE_SNAPSHOTS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


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


def test_help_screen_column_legend_in_spanish(snap_compare) -> None:
    async def open_help_at_the_legend(pilot: Pilot) -> None:
        await loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        pilot.app.screen.query_one("#help-body").scroll_end(animate=False)
        await pilot.pause()

    app = fixture_app(lang="es")
    assert snap_compare(app, terminal_size=SIZE, run_before=open_help_at_the_legend)


def test_laptop_80x24(snap_compare) -> None:
    """The traffic columns with no sideways scrolling, the events panel alone, totals in a line."""
    assert snap_compare(fixture_app(), terminal_size=LAPTOP, run_before=loaded)


def test_laptop_80x24_details_and_errors_read_only_in_spanish(snap_compare) -> None:
    """After ``w`` and ``v``: the detail columns and the errors panel, full width."""

    async def details_and_errors(pilot: Pilot) -> None:
        await loaded(pilot)
        await pilot.press("w", "v")
        await pilot.pause()

    app = fixture_app(token=None, read_only=True, lang="es")
    assert snap_compare(app, terminal_size=LAPTOP, run_before=details_and_errors)


def test_projector_160x45_read_only(snap_compare) -> None:
    app = fixture_app(token=None, read_only=True)
    assert snap_compare(app, terminal_size=PROJECTOR, run_before=loaded)


def test_chart_view(snap_compare) -> None:
    """Five minutes of fixed history: server2 joining, server3's slow spell and its 500s,
    server3 stopped, the algorithm switched; each event a line on the time axis."""
    assert snap_compare(fixture_app(), terminal_size=SIZE, run_before=open_charts)


def test_chart_view_on_the_projector_in_spanish(snap_compare) -> None:
    app = fixture_app(token=None, read_only=True, lang="es")
    assert snap_compare(app, terminal_size=PROJECTOR, run_before=open_charts)


def test_chart_view_on_a_laptop(snap_compare) -> None:
    assert snap_compare(fixture_app(), terminal_size=LAPTOP, run_before=open_charts)


def with_faults() -> FixtureBalancer:
    """server1 on latency, server2 on nolock (/status's ``fault``, docs/api.md)."""
    balancer = FixtureBalancer()
    rows = balancer.answers["/status"]["servers"]
    rows[0]["fault"] = {"mode": "latency", "ms": 300}
    rows[1]["fault"] = {"mode": "nolock"}
    return balancer


def test_faults_in_their_rows_in_spanish(snap_compare) -> None:
    """The Falla column after the state; time in state and 400/404/500 give way at 100."""
    app = fixture_app(balancer=with_faults(), lang="es")
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded)


def test_faults_in_their_rows_on_a_laptop(snap_compare) -> None:
    assert snap_compare(
        fixture_app(balancer=with_faults()), terminal_size=LAPTOP, run_before=loaded
    )


def test_read_only_help_in_spanish(snap_compare) -> None:
    """What read-only is for and how a teacher gets control, with no hint of a mistake."""

    async def open_help(pilot: Pilot) -> None:
        await loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    app = fixture_app(token=None, read_only=True, lang="es")
    assert snap_compare(app, terminal_size=SIZE, run_before=open_help)

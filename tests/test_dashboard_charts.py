"""The chart view: the history model on hostile and known data, the markers and their
labels, and the view in the app (key, incremental reads, read-only, no /history)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx
import pytest
from fixtures.dashboard.balancer import FixtureBalancer, fixture_app, loaded, open_charts, words

from dashboard.history import WINDOW_SECONDS, Marker, SampleWindow, thin
from dashboard.i18n import Translator
from dashboard.widgets.charts import ChartsView, TrafficChart

T0 = 1_764_670_000  # a unix second


def sample(t: int, **fields: Any) -> dict[str, Any]:
    return {"t": t, "servers": {"s1": {"tries": 3, "p95_ms": 2.0}}, "errors": {}, **fields}


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def test_history_keeps_the_newest_five_minutes_and_says_what_to_ask_for_next() -> None:
    history = SampleWindow()
    assert history.since is None and history.markers([{"kind": "state"}]) == []
    assert history.add({"servers": ["s1"], "samples": [sample(T0 + i) for i in range(400)]})
    assert history.since == T0 + 399
    assert len(history.samples) == WINDOW_SECONDS
    assert history.xs()[0] == -(WINDOW_SECONDS - 1) and history.xs()[-1] == 0
    assert not history.add({"samples": [sample(T0 + 399)]})  # nothing new
    assert history.add({"samples": [sample(T0 + 400)]}) and history.since == T0 + 400


@pytest.mark.parametrize(
    "answer",
    [
        None, [], "x", {"samples": "x"}, {"samples": [None, 1, "x"]},
        {"samples": [{"t": True}, {"t": "1"}, {"t": 1.5}]},
        {"servers": "s1", "samples": [{"t": T0, "servers": {"s1": "x"}, "errors": [1]}]},
    ],
)  # fmt: skip
def test_answers_of_the_wrong_shape_are_skipped_never_fatal(answer: Any) -> None:
    history = SampleWindow()
    history.add(answer)
    assert history.tries("s1") in ([], [0.0])


def test_numbers_that_are_not_finite_count_as_none() -> None:
    history = SampleWindow()
    odd = {
        "t": T0,
        "servers": {"s1": {"tries": float("nan"), "p95_ms": "1"}},
        "errors": {"404_NOT_FOUND": float("inf"), "500_INTERNAL_ERROR": -3},
    }
    history.add({"servers": ["s1"], "samples": [odd]})
    assert history.tries("s1") == [0.0]
    assert history.p95("s1") == ([], [])
    assert history.errors() == {}


def test_errors_get_a_line_per_frequent_type_and_one_for_the_rest() -> None:
    history = SampleWindow()
    kinds = ["500_INTERNAL_ERROR", "404_NOT_FOUND", "400_BAD_REQUEST", "502_BAD_GATEWAY"]
    samples = [
        sample(T0 + i, errors={kind: i + 1 for kind in kinds} | {"503_X": 1, "504_Y": 1})
        for i in range(3)
    ]
    history.add({"samples": samples})
    lines = history.errors()
    assert list(lines)[:4] == kinds and lines["other"] == [2, 2, 2]


def test_markers_are_the_events_that_explain_a_change() -> None:
    history = SampleWindow()
    history.add({"samples": [sample(T0)]})
    events = [
        {"kind": "state", "time": iso(T0 - 10), "server": "s1", "from": "UP", "to": "DOWN"},
        {"kind": "state", "time": iso(T0 - 5), "server": "s1", "to": "UP"},
        {"kind": "state", "time": iso(T0 - 5), "server": "s1", "to": "DRAIN"},  # no marker
        {"kind": "control", "time": iso(T0 - 20), "server": "s2", "action": "kill", "ok": True},
        {"kind": "control", "time": iso(T0 - 21), "server": "s2", "action": "kill", "ok": False},
        {"kind": "control", "time": iso(T0 - 30), "server": "s2", "action": "fault",
         "fault": {"mode": "latency", "ms": 300}},
        {"kind": "algorithm", "time": iso(T0 - 40), "from": "random", "to": "round_robin"},
        {"kind": "state", "time": iso(T0 - WINDOW_SECONDS - 5), "server": "s1", "to": "UP"},
        {"kind": "state", "time": "yesterday", "server": "s1", "to": "UP"},
        "not an event",
    ]  # fmt: skip
    assert history.markers(events) == [
        Marker(-10, "down", "s1", ""),
        Marker(-5, "up", "s1", ""),
        Marker(-20, "action", "s2", "kill"),
        Marker(-30, "fault", "s2", "latency"),
        Marker(-40, "algorithm", "", "round_robin"),
    ]


def test_a_server_going_down_keeps_its_label_beside_a_newer_algorithm_change() -> None:
    chart = TrafficChart(Translator("en"), "chart_requests", "c")
    markers = [
        Marker(-61, "action", "server3", "stop"),
        Marker(-60, "down", "server3", ""),
        Marker(-50, "algorithm", "", "round_robin"),
        Marker(-200, "up", "server2", ""),
    ]
    ticks, labels = chart.ticks(markers)
    assert labels[:2] == ["↓server3", "↑server2"]  # the stop and the algorithm: lines only
    assert {"-1m", "-3m"}.isdisjoint(labels) and {"-5m", "-4m", "-2m", "now"} <= set(labels)
    assert ticks[:2] == [-60, -200]


@pytest.mark.parametrize("read_only", [False, True])
async def test_c_shows_the_charts_in_place_of_the_tables_and_back(read_only: bool) -> None:
    balancer = FixtureBalancer()
    app = fixture_app(balancer=balancer, read_only=read_only)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert not any(r.url.path == "/history" for r in balancer.requests)  # only when open
        await open_charts(pilot)
        assert app.query_one("#charts").display and not app.query_one("#body").display
        if read_only:  # refused anyway (``?`` says why): no advice to go back to a table
            await pilot.press("k")
            await pilot.pause()
            assert not [n for n in app._notifications if "charts hide" in n.message]
        text = words(app.query_one("#chart-requests"))
        assert "↑server2" in text and "↓server3" in text and "now" in text
        app.polling.poll_now()
        first = len(balancer.requests)
        deadline = time.monotonic() + 10
        while not any(r.url.path == "/history" for r in balancer.requests[first:]):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        asked = [r for r in balancer.requests if r.url.path == "/history"]
        assert "since" not in asked[0].url.params  # the whole window first
        assert asked[-1].url.params["since"] == str(
            app.polling.poller.history.since
        )  # then what's new
        await pilot.press("c")
        await pilot.pause()
        assert app.query_one("#body").display and not app.query_one("#charts").display
        if not read_only:
            await pilot.press("down")  # the table has the focus again: the arrows select
            await pilot.pause()
            assert app.servers.selected_server == "server2"


async def test_a_balancer_without_history_says_so_on_the_charts() -> None:
    balancer = FixtureBalancer()
    del balancer.answers["/history"]  # answered 404
    app = fixture_app(balancer=balancer)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("c")
        deadline = time.monotonic() + 10
        while "keeps no history" not in words(app.query_one("#chart-requests")):
            assert time.monotonic() < deadline, words(app.query_one("#chart-requests"))
            await pilot.pause(0.05)


async def test_labels_from_the_network_are_drawn_as_text() -> None:
    balancer = FixtureBalancer()
    events = balancer.answers["/events"]["events"]
    hostile = {"id": 99, "time": "2026-11-26T21:42:30.000Z", "server": "[bold]x\x1b[31m"}
    events.append({**events[-2], **hostile})  # a server going DOWN
    app = fixture_app(balancer=balancer)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_charts(pilot)
        text = words(app.query_one("#chart-requests"))
        assert "↓[bold]x\\x1b" in text


def test_the_fixture_history_answers_since() -> None:
    balancer = FixtureBalancer()
    with httpx.Client(transport=balancer.transport, base_url="http://b") as client:
        newest = balancer.answers["/history"]["samples"][-1]["t"]
        assert client.get("/history", params={"since": newest - 3}).json()["samples"][0]["t"] == (
            newest - 2
        )


def test_thin_combines_the_seconds_of_each_multiple_of_step_so_points_hold_still() -> None:
    xs, ys = list(range(-6, 1)), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert thin(xs, ys, 1) == (xs, ys)
    # Seconds 100..106: groups 99-101, 102-104, 105-107, each at its newest second.
    assert thin(xs, ys, 3, origin=106) == ([-5, -2, 0], [1.5, 4.0, 6.5])
    assert thin(xs, ys, 3, origin=106, combine=max) == ([-5, -2, 0], [2.0, 5.0, 7.0])
    # A second later the first groups keep their values (they only move left).
    later = thin([x - 1 for x in xs] + [0], [*ys, 8.0], 3, origin=107)
    assert later == ([-6, -3, 0], [1.5, 4.0, 7.0])
    assert thin([], [], 3) == ([], [])


def test_the_charts_are_drawn_again_only_when_a_point_begins_or_a_marker_comes() -> None:
    history = SampleWindow()
    view = ChartsView(Translator("en"), history, events_kept=10)
    drawn: list[int] = []
    for chart in view.charts:
        chart.draw = lambda history, markers, note: drawn.append(1)  # type: ignore[method-assign]
    step = view.charts[0].step()  # not laid out: as at 100 columns, 3 s a point
    start = T0 - T0 % step
    draws = []
    for second in range(2 * step):
        history.add({"samples": [sample(start + second)]})
        view.draw(history, [])
        draws.append(len(drawn) // 3)
    assert draws == [1] * step + [2] * step  # once at the start, once at the next point
    view.draw(history, [Marker(0, "down", "s1", "")])  # a marker: at once
    assert len(drawn) == 9


def test_a_server_removed_keeps_its_line_and_no_server_changes_colour() -> None:
    history = SampleWindow()
    both = {"a": {"tries": 1}, "b": {"tries": 1}, "c": {"tries": 1}}
    history.add({"servers": ["a", "b", "c"], "samples": [sample(T0, servers=both)]})
    colours = {name: history.colour(name) for name in "abc"}
    gone = {"a": {"tries": 1}, "c": {"tries": 1}}
    history.add({"servers": ["a", "c"], "samples": [sample(T0 + 1, servers=gone)]})
    assert history.servers == ["a", "c", "b"]  # b still has a second in the window
    assert {name: history.colour(name) for name in "abc"} == colours
    history.add({"servers": ["a", "c"], "samples": [sample(T0 + 400, servers=gone)]})
    assert history.servers == ["a", "c"]  # b's seconds scrolled off


def test_a_balancer_clock_stepped_back_starts_the_history_again() -> None:
    history = SampleWindow()
    history.add({"now": T0 + 10.5, "samples": [sample(T0 + i) for i in range(10)]})
    assert history.add({"now": T0 - 3600.0, "samples": []})  # stepped back an hour
    assert history.since is None  # the next read asks for the whole window again


def test_numbers_too_big_to_draw_are_cut() -> None:
    history = SampleWindow()
    huge = {"s1": {"tries": 1e308, "p95_ms": 1e308}}
    history.add({"servers": ["s1"], "samples": [sample(T0, servers=huge)]})
    assert history.tries("s1") == [1e9] and history.p95("s1") == ([0], [1e7])


async def test_under_the_charts_keys_on_the_hidden_selection_say_why_number_keys_act() -> None:
    """A refused key says so, naming the key as pressed and what it does; it sends nothing."""
    lang, said = (
        "es",
        (
            "k (Matar) actúa sobre el servidor seleccionado, que los gráficos ocultan: primero "
            "presiona c para volver a la tabla."
        ),
    )
    balancer = FixtureBalancer()
    app = fixture_app(balancer=balancer, lang=lang)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_charts(pilot)
        await pilot.press("k", "d", "greater_than_sign", "comma")
        await pilot.pause()
        assert balancer.writes == []  # nothing on screen names the selected server
        notes = [note.message for note in app._notifications]
        assert notes[0] == said
        weight = Translator(lang)("short_weight")
        assert [note.split(")")[0] for note in notes[1:]] == [
            f"d ({Translator(lang)('short_drain')}",
            f"> ({weight}",
            f", ({weight}",
        ]
        await pilot.press("1")
        deadline = time.monotonic() + 10
        while not balancer.writes:
            assert time.monotonic() < deadline, "1 did not act under the charts"
            await pilot.pause(0.05)
        assert "server1" in str(balancer.writes[0].url)


def test_error_types_and_marker_words_are_translated_whole_then_fitted() -> None:
    english = TrafficChart(Translator("en"), "chart_requests", "c")
    assert english.t.error_type("500_INTERNAL_ERROR") == "500 internal error"
    assert english.t.error_type("599_NEWER_ONE") == "599 newer one"
    assert english.label(Marker(0, "algorithm", "", "least_connections")) == "least_connect…"
    spanish = TrafficChart(Translator("es"), "chart_requests", "c")
    assert spanish.label(Marker(0, "algorithm", "", "least_connections")) == "Menor número…"
    assert spanish.label(Marker(0, "fault", "server2", "unhealthy")) == "server2 no saludable"


async def test_error_legends_and_algorithm_labels_are_translated_then_fitted() -> None:
    """The errors chart names the types as the errors panel does, never ``500_INTERNAL_ERROR``;
    an algorithm's name is translated whole, then cut to the axis label's length."""
    lang, legend, algorithm = "es", ["500 error interno", "404 no encontrado"], "Menor número…"
    balancer = FixtureBalancer()
    events = balancer.answers["/events"]["events"]
    switch = {"id": 98, "time": "2026-11-26T21:42:00.000Z", "kind": "algorithm", "server": None}
    events.append(switch | {"from": "round_robin", "to": "least_connections", "who": "x"})
    app = fixture_app(balancer=balancer, lang=lang)
    async with app.run_test(size=(160, 45)) as pilot:
        await open_charts(pilot)
        chart = app.query_one("#chart-errors")
        text = words(chart)
        assert all(name in text for name in legend)
        assert "INTERNAL" not in text and "NOT_FOUND" not in text
        assert algorithm in words(app.query_one("#chart-requests"))
        assert "least_connecti " not in words(app.query_one("#chart-requests"))


async def test_opening_the_charts_while_refresh_is_paused_still_reads_the_history() -> None:
    app = fixture_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("space")
        await open_charts(pilot)  # fails (deadline) if no /history is read while paused


@pytest.mark.parametrize("cells", [68, 88, 148])  # the plot at 80, 100 and 160 columns
def test_no_two_labels_on_the_time_axis_overlap(
    cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    chart = TrafficChart(Translator("es"), "chart_requests", "c")
    monkeypatch.setattr(chart, "plot_cells", lambda: cells)
    markers = [
        Marker(-155, "fault", "server3", "latency"),
        Marker(-100, "action", "server12", "kill"),
        Marker(-98, "down", "server12", ""),
        Marker(-20, "algorithm", "", "least_connections"),
        Marker(-8, "up", "server12", ""),
    ]
    ticks, labels = chart.ticks(markers)
    per_cell = WINDOW_SECONDS / cells
    centres = [
        ((x + WINDOW_SECONDS) / per_cell, len(text)) for x, text in zip(ticks, labels, strict=True)
    ]
    spans = sorted((centre - width / 2, centre + width / 2) for centre, width in centres)
    assert all(left[1] < right[0] for left, right in itertools.pairwise(spans)), labels
    assert "↓server12" in labels  # a server going DOWN always gets its label

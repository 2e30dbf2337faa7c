"""How the dashboard writes values: durations, numbers, bars, sparklines, the URL, the
weight cell, and hostile text from the network shown plain and harmless."""

from __future__ import annotations

import httpx
import pytest
from fixtures.dashboard.balancer import (
    FixtureBalancer,
    fixture_app,
    loaded,
    rendered,
    until_found,
    words,
)
from support import ACTED_ON
from textual.widgets._toast import Toast

from dashboard import format as fmt
from dashboard.history import Trail
from dashboard.main import DashboardApp
from dashboard.options import (
    Options,
)
from dashboard.widgets.servers import SPARK_POINTS, SPARK_STEP, weight_text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (5.9, "5s"), (61, "1m01s"), (3 * 3600 + 300, "3h05m"), (2 * 86400, "2d00h")],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert fmt.duration(seconds) == text


@pytest.mark.parametrize("hostile", ["12", "[/x]", float("nan"), float("inf"), True, [1], {}])
def test_numbers_that_are_not_numbers_show_as_missing(hostile: object) -> None:
    """A misbehaving balancer's /status can put anything where a number goes."""
    assert fmt.number(hostile) == fmt.duration(hostile) == "-"
    assert fmt.share_bar(hostile, width=4) == fmt.share_bar(None, width=4)
    assert fmt.sparkline([hostile, 2], width=2) == "▁█"
    assert fmt.local_time(hostile if not isinstance(hostile, str) else None) == "--:--:--"


def test_share_bar_and_sparkline_have_fixed_width() -> None:
    assert fmt.share_bar(50.0, width=4) == "██░░  50%"
    assert fmt.share_bar(250.0, width=4) == "████ 100%"
    assert fmt.sparkline([0, 5, 10], width=4) == " ▁▅█"
    assert fmt.sparkline([], width=4) == "    "


def test_safe_url_hides_credentials() -> None:
    assert fmt.safe_url("http://user:secret@host:8080/x") == "http://host:8080/x"
    assert fmt.safe_url("http://host:8080") == "http://host:8080"


def test_weight_cell() -> None:
    """The weight, marked while a slow start ramps it; ``-`` from a balancer without."""
    assert weight_text({"weight": 3, "effective_weight": 3.0}) == "3"
    assert weight_text({"weight": 256, "effective_weight": 12.8}) == "256↗"
    assert weight_text({"weight": 0, "effective_weight": 0}) == "0"
    assert weight_text({}) == weight_text({"weight": "3"}) == "-"


def hostile_balancer() -> FixtureBalancer:
    """The fixtures with a hostile task title, error path and discovered server."""
    balancer = FixtureBalancer()
    balancer.answers["/tareas"].append(
        {"id": 43, "title": "\x1b]0;pwned\x07", "completed": False, "server": "\x9b2J"}
    )
    recent = balancer.answers["/errors/stats"]["recent_errors"]
    recent[0]["endpoint"] = "GET /\r\nFAKE"
    events = balancer.answers["/events"]
    hostile = {"id": 15, "kind": "discovery", "server": "s\u202eX", "action": "added"}
    hostile |= {"url": "\x1b[5;41mblink", "who": "docker"}
    events["events"].append(hostile)
    events["last_id"] = 15
    return balancer


@pytest.mark.smoke
async def test_control_characters_from_the_network_are_shown_escaped() -> None:
    app = fixture_app(balancer=hostile_balancer())
    async with app.run_test(size=(240, 40)) as pilot:
        await loaded(pilot)
        tasks, errors, events = (
            rendered(w) for w in (app.tasks_panel, app.errors_panel, app.events_panel)
        )
        assert any("#43 \\x9b2J \\x1b]0;pwned\\x07" in line for line in tasks)
        assert any("GET /\\r\\nFAKE" in line for line in errors)
        assert not any(line.lstrip("│ ").startswith("FAKE") for line in errors)  # no fake line
        assert any("s\\u202eX added: \\x1b[5;41mblink" in line for line in events)
        for line in tasks + errors + events:
            assert not ACTED_ON.search(line), repr(line)


@pytest.mark.smoke
async def test_markup_from_the_network_is_shown_as_written() -> None:
    balancer = FixtureBalancer()
    balancer.answers["/status"]["algorithm"] = "[/oops]"
    balancer.answers["/status"]["servers"][0]["name"] = "[@click=app.quit]x[/]"
    balancer.answers["/tareas"].append(
        {"id": 43, "title": "[bold red]x[/]", "completed": False, "server": "[/oops]"}
    )
    app = fixture_app(balancer=balancer)
    async with app.run_test(size=(240, 40)) as pilot:
        await loaded(pilot)
        assert any("#43 [/oops] [bold red]x[/]" in line for line in rendered(app.tasks_panel))
        assert rendered(app.query_one("#algorithm"))[0].strip() == "Algorithm: [/oops]"
        assert any("▶ 1 [@click=app.quit]x[/]" in line for line in rendered(app.servers))
        await pilot.press("f")  # the fault menu of the selected, oddly named, server
        await pilot.pause()
        title = rendered(app.screen.query_one("#fault-body"))[0]
        assert "Fault mode for [@click=app.quit]x[/]" in title


async def test_a_hostile_error_message_is_shown_plain_in_the_banner_and_a_notification() -> None:
    message = "[/oops] \x1b[2J"
    balancer = FixtureBalancer()
    refuse = False

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method != "GET" or (refuse and request.url.path == "/status"):
            return httpx.Response(409, json={"error": message})
        return balancer.handle(request)

    options = Options(url="http://b", token="t", refresh=0.25, lang="en")
    app = DashboardApp(options, transport=httpx.MockTransport(answer))
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        await loaded(pilot)
        await pilot.press("r")  # reset stats: refused with the message
        toasts = await until_found(pilot, lambda: list(app.screen.query(Toast)))
        toast = words(toasts[0])
        assert "[/oops] \\x1b[2J" in toast and not ACTED_ON.search(toast)
        refuse = True
        await until_found(pilot, lambda: app.banner.display)
        banner = words(app.banner)
        assert "[/oops] \\x1b[2J" in banner and not ACTED_ON.search(banner)


@pytest.mark.parametrize("refresh", [0.25, 1.0, 2.0, 10.0])
def test_the_rate_sparkline_spans_the_same_seconds_at_any_refresh(refresh: float) -> None:
    """A rate that was 10, then 0 for the last 10 s: the older half of the points is high
    whatever the refresh (4 polls of 0.25 s showed only the last second: all zero)."""
    trail = Trail(SPARK_POINTS, SPARK_STEP)
    now = 1000.0
    for k in range(int(60 / refresh) + 1):
        now = 1000.0 + k * refresh
        trail.add(now, 10.0 if now <= 1050.0 else 0.0)
    points = trail.values(now)
    assert len(points) == SPARK_POINTS
    # A 10 s refresh cannot tell when in its 10 s the rate fell: the step between repeats.
    assert [round(p) for p in points][:2] == [10, 10] and points[-1] == 0
    assert fmt.sparkline(points, SPARK_POINTS)[:2] == "██"

"""The HTTP client (read-only guard, errors in words, quoted server names) and the
polls (events reloaded, answers of the wrong shape, tasks, back-off, no overlapping polls,
failures said), and how a poll reaches the widgets."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest
from fixtures.dashboard.balancer import (
    FixtureBalancer,
    fixture_app,
    loaded,
    until_found,
    words,
)
from textual.widgets import Digits, Label
from textual.widgets._toast import Toast

from dashboard.api import ApiError, BalancerClient, ReadOnlyError, Unreachable
from dashboard.main import DashboardApp
from dashboard.options import (
    Options,
)
from dashboard.poll import TASKS_SHOWN, Poller, backoff_delay
from dashboard.polling import PollFailure


@pytest.mark.smoke
async def test_read_only_client_sends_no_write() -> None:
    balancer = FixtureBalancer()
    client = BalancerClient("http://b", "token", read_only=True, transport=balancer.transport)
    for write in (
        client.server_action("server1", "stop"),
        client.set_algorithm("round_robin"),
        client.reset_stats(),
        client.set_fault("server1", {"mode": "hang"}),
        client.set_weight("server1", 3),
    ):
        with pytest.raises(ReadOnlyError):
            await write
    assert (await client.status())["algorithm"] == "round_robin"
    assert balancer.writes == []
    await client.aclose()


@pytest.mark.smoke
async def test_client_errors_are_words() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "missing or wrong token"})

    client = BalancerClient("http://b", "bad", transport=httpx.MockTransport(refuse))
    with pytest.raises(ApiError) as caught:
        await client.server_action("server1", "stop")
    assert (caught.value.status, caught.value.message) == (401, "missing or wrong token")
    await client.aclose()

    unreachable = BalancerClient("http://127.0.0.1:9", "t")
    with pytest.raises(Unreachable):
        await unreachable.status()
    await unreachable.aclose()


async def test_a_transport_error_is_told_with_its_control_characters_escaped() -> None:
    def garbled(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("illegal status line: \x1b]0;x\x07", request=request)

    client = BalancerClient("http://b", transport=httpx.MockTransport(garbled))
    with pytest.raises(Unreachable) as caught:
        await client.status()
    assert caught.value.message == "cannot reach the balancer: illegal status line: \\x1b]0;x\\x07"
    await client.aclose()


async def test_poller_reloads_events_when_the_balancer_restarts() -> None:
    balancer = FixtureBalancer()
    poller = Poller(BalancerClient("http://b", transport=balancer.transport))
    first = await poller.fetch()
    assert [e["id"] for e in first.new_events] == [10, 11, 12, 13, 14]
    assert (await poller.fetch()).new_events == []
    balancer.answers["/events"] = {"last_id": 2, "events": [{"id": 1}, {"id": 2}]}
    restarted = await poller.fetch()
    assert restarted.events_restarted
    assert [e["id"] for e in restarted.new_events] == [1, 2]


async def test_secondary_answers_of_the_wrong_shape_are_ignored_not_fatal() -> None:
    balancer = FixtureBalancer()
    task = {"id": 1, "title": "t", "completed": False, "server": "server1"}
    balancer.answers["/errors/stats"] = ["not", "an", "object"]
    balancer.answers["/events"] = {"last_id": 3, "events": [{"id": "x"}, 7, {"id": 3}]}
    balancer.answers["/tareas"] = ["text", task]
    poller = Poller(BalancerClient("http://b", transport=balancer.transport))
    snapshot = await poller.fetch()
    assert snapshot.errors is None
    assert snapshot.new_events == [{"id": 3}]
    assert snapshot.tasks is not None and snapshot.tasks.newest == [task]
    balancer.answers["/events"] = [1, 2, 3]
    assert (await poller.fetch()).new_events == []


@pytest.mark.smoke
async def test_tasks_are_read_newest_first_and_counted_from_x_total_count() -> None:
    """Only the newest tasks the panel shows travel, however many are stored."""
    balancer = FixtureBalancer()
    newest = balancer.answers["/tareas"][::-1][:TASKS_SHOWN]

    def paged(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/tareas":
            return balancer.handle(request)
        balancer.requests.append(request)
        return httpx.Response(200, json=newest, headers={"X-Total-Count": "100000"})

    poller = Poller(BalancerClient("http://b", transport=httpx.MockTransport(paged)))
    tasks = (await poller.fetch()).tasks
    asked = [r.url.params for r in balancer.requests if r.url.path == "/tareas"]
    assert asked == [httpx.QueryParams({"order": "desc", "limit": str(TASKS_SHOWN)})]
    assert tasks is not None and (tasks.total, tasks.newest) == (100_000, newest)


async def test_a_server_that_does_not_page_still_shows_its_newest_tasks() -> None:
    """The seed's API ignores the query: the whole list, oldest first, no X-Total-Count."""
    balancer = FixtureBalancer()
    whole = balancer.answers["/tareas"]

    def unpaged(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/tareas":
            return httpx.Response(200, json=whole)
        return balancer.handle(request)

    poller = Poller(BalancerClient("http://b", transport=httpx.MockTransport(unpaged)))
    tasks = (await poller.fetch()).tasks
    assert tasks is not None and tasks.total == len(whole) == 42
    assert [t["id"] for t in tasks.newest] == list(range(42, 42 - TASKS_SHOWN, -1))


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 1.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.slow
async def test_a_slow_balancer_never_gets_overlapping_polls() -> None:
    """Each /status takes longer than the refresh period: polls still complete, one at a time."""
    balancer = FixtureBalancer()
    active, most, done = 0, 0, 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal active, most, done
        if request.url.path != "/status":
            return balancer.handle(request)
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.6)
        active -= 1
        done += 1
        return balancer.handle(request)

    options = Options(url="http://b", token="t", refresh=0.25, lang="en")
    app = DashboardApp(options, transport=httpx.MockTransport(slow))
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + 10
        while done < 3:
            assert time.monotonic() < deadline, "polls did not complete"
            await pilot.pause(0.05)
        await pilot.press("space", "space", "plus")  # a resume or rate change wakes, never stacks
        await pilot.pause(0.7)
        assert app.status is not None and app.polling.failures == 0
    assert most == 1


# Nothing freezes (issue 23, item 8): a poll or a control worker that raises says so, and the
# dashboard goes on.


@pytest.mark.parametrize(
    ("lang", "label", "banner"),
    [
        ("en", "POLL ERROR", "POLL ERROR reading"),
        pytest.param("es", "ERROR DE LECTURA", "ERROR DE LECTURA de", marks=pytest.mark.slow),
    ],
)
async def test_a_malformed_status_is_said_in_the_status_bar_and_the_next_poll_runs(
    lang: str, label: str, banner: str
) -> None:
    balancer = FixtureBalancer()
    good = balancer.answers["/status"]
    app = fixture_app(balancer=balancer, refresh=0.25, lang=lang)
    async with app.run_test(size=(160, 40)) as pilot:
        await loaded(pilot)
        # A string where a number is expected: int() of it raises inside apply().
        balancer.answers["/status"] = {**good, "requests_total": "many \x1b[2J"}
        connection = app.status_bar.query_one("#connection", Label)
        await until_found(pilot, lambda: str(connection.content) == label)
        said = words(app.banner)
        assert banner in said and "ValueError" in said and "\\x1b[2J" in said
        balancer.answers["/status"] = good  # the next poll comes, and shows it
        await until_found(pilot, lambda: not app.banner.display)
        assert str(connection.content) == app.t("connected")
        balancer.answers["/status"] = {**good, "servers_up": "x"}  # raises in the poller
        await until_found(pilot, lambda: "TypeError" in words(app.banner))
        balancer.answers["/status"] = good
        await until_found(pilot, lambda: not app.banner.display)


async def test_a_control_answer_of_the_wrong_shape_is_said_and_the_next_action_works() -> None:
    balancer = FixtureBalancer()
    balancer.write_answer = ["not", "an", "object"]  # result.get() raises in the worker
    app = fixture_app(balancer=balancer, lang="es")
    async with app.run_test(size=(160, 40), notifications=True) as pilot:
        await loaded(pilot)
        await pilot.press("a")  # the next algorithm: its answer is read with .get()
        toasts = await until_found(pilot, lambda: list(app.screen.query(Toast)))
        said = words(toasts[0])
        assert "send_algorithm terminó con un error: AttributeError" in said
        balancer.write_answer = {"ok": True}
        await pilot.press("r")
        await until_found(
            pilot, lambda: any(app.t("n_reset") in words(t) for t in app.screen.query(Toast))
        )


# Server names in control URLs (issue 23, item 22).


async def test_a_server_name_is_one_quoted_segment_of_the_control_url() -> None:
    balancer = FixtureBalancer()
    client = BalancerClient("http://b", "token", transport=balancer.transport)
    name = "a/b?c #d"
    await client.server_action(name, "stop")
    await client.set_fault(name, {"mode": "hang"})
    await client.set_weight(name, 3)
    await client.aclose()
    paths = [request.url.raw_path for request in balancer.writes]
    assert paths == [
        b"/control/servers/a%2Fb%3Fc%20%23d/stop",
        b"/control/servers/a%2Fb%3Fc%20%23d/fault",
        b"/control/servers/a%2Fb%3Fc%20%23d/weight",
    ]
    assert all(not request.url.query for request in balancer.writes)


async def test_a_poll_reaches_the_widgets_through_the_apps_reactives() -> None:
    """Setting ``polled`` (as the poll controller does) redraws every widget that watches it,
    the app calling none of them; ``poll_failed`` dims the screen and names the failure."""
    app = fixture_app(3)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        assert app.polled is not None
        status = {**app.polled.status, "requests_total": 4242, "algorithm": "ip_hash"}
        app.polled = dataclasses.replace(app.polled, status=status, new_events=[])
        await pilot.pause()
        assert app.query_one("#total-requests Digits", Digits).value == "4242"
        assert str(app.query_one("#algorithm", Label).content) == "Algorithm: ip_hash"
        app.poll_failed = PollFailure("disconnected", "gone")
        await pilot.pause()
        assert app.banner.display and str(app.banner.content) == "gone"
        assert app.screen.has_class("-disconnected")

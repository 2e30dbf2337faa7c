"""The dashboard's scaling keys: ``n`` adds a task server, ``x`` removes the selected one;
read-only mode sends neither."""

from __future__ import annotations

import pytest
from fixtures.dashboard.balancer import FixtureBalancer, fixture_app, loaded, until_found, words
from textual.widgets._toast import Toast


async def test_n_adds_a_server_and_x_removes_the_selected_one() -> None:
    balancer = FixtureBalancer(3)
    balancer.write_answer = {"server": "server4", "url": "http://127.0.0.1:5004", "state": "NEW"}
    app = fixture_app(balancer=balancer)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await loaded(pilot)
        await pilot.press("n")
        await until_found(pilot, lambda: len(balancer.writes) == 1)
        added = "server4 added: it takes traffic after its first health check."
        await until_found(pilot, lambda: any(added in words(t) for t in app.screen.query(Toast)))
        await pilot.press("down", "x")  # server2
        await until_found(pilot, lambda: len(balancer.writes) == 2)
    sent = [(r.method, r.url.path, r.content) for r in balancer.writes]
    assert sent == [
        ("POST", "/control/servers", b"{}"),
        ("DELETE", "/control/servers/server2", b""),
    ]
    assert {r.headers["authorization"] for r in balancer.writes} == {"Bearer t0ken"}


@pytest.mark.slow  # a dashboard waiting out a pause: 1-3 s on a loaded machine
async def test_scaling_keys_do_nothing_in_read_only_mode() -> None:
    balancer = FixtureBalancer(3)
    app = fixture_app(balancer=balancer, token=None, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("n", "down", "x")
        await pilot.pause(0.3)
        assert balancer.writes == []

"""Dashboard parts that need no running balancer: formatting, options, the client's
read-only guard, event bookkeeping, the layout with 1 to 16 servers at 100x30, and hostile
text from the network shown plain and harmless."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.dashboard.balancer import FixtureBalancer, fixture_app, loaded, rendered, words
from support import ACTED_ON, events_of_every_kind
from textual.widgets import Button, Label, Static
from textual.widgets._footer import FooterKey
from textual.widgets._toast import Toast

from dashboard import format as fmt
from dashboard.api import ApiError, BalancerClient, ReadOnlyError, Unreachable
from dashboard.history import Trail
from dashboard.i18n import EN, ES, Translator
from dashboard.keys import KEYS, WRITE_ACTIONS, key_label
from dashboard.main import DashboardApp
from dashboard.options import (
    Options,
    add_arguments,
    options_from_args,
    parse_options,
    resolve_options,
)
from dashboard.poll import TASKS_SHOWN, Poller, backoff_delay
from dashboard.screens.fault import CLASS_PARAMETERS, FAULTS
from dashboard.widgets.panels import ErrorsPanel, EventsPanel
from dashboard.widgets.servers import SPARK_POINTS, SPARK_STEP, STATE_STYLES, weight_text
from services.balancer.algorithms import ALGORITHMS
from services.balancer.control import ADMIN_ACTIONS
from services.balancer.drivers.docker import RESULTS
from services.balancer.messages import EventText
from services.balancer.server import Server
from services.common import DRIVER_ACTIONS, FAULT_MODES


def test_every_text_exists_in_both_languages() -> None:
    assert set(EN) == set(ES)
    assert all(ES[key] for key in ES)
    assert {key.text for key in KEYS} <= set(EN)


# The only texts written the same in both languages: numbers, state names, placeholders and
# the handout's own words. Any other Spanish text that equals the English was not translated.
SAME_IN_BOTH = {
    "col_latency",  # p50/p95ms
    "col_responses",  # 2xx/4xx/5xx
    "col_errors",  # 400/404/500
    "n_action_ok",
}


def test_every_english_text_has_its_spanish_words() -> None:
    """A new English text with no Spanish, or with the English copied, fails here."""
    same = {key for key in EN if ES.get(key) == EN[key]}
    assert same == SAME_IN_BOTH


def test_every_word_the_balancer_sends_has_a_spanish_one() -> None:
    """Actions, their results, fault modes and algorithms, read from the balancer's own
    tables: a new one shown raw (English) in the Spanish UI fails here."""
    t = Translator("es")
    for action in [*DRIVER_ACTIONS, *ADMIN_ACTIONS, "fault", "added", "removed"]:
        assert t.term("action", action) != action
    for action, result in RESULTS.items():
        assert t.result(action, result) != result
    assert t.result("start", "already running") == "ya estaba en ejecución"
    assert t.result("stop", "already exited") == "ya estaba detenido"
    assert t.result("fault", "latency") == "latencia"
    assert all(t.term("mode", mode) != mode for mode in set(FAULT_MODES) - {"error"})
    handout = ["Aleatorio", "Round Robin", "Menor número de conexiones", "Tiempo de respuesta"]
    assert [t.term("alg", name) for name in ALGORITHMS] == [*handout, "Hash IP"]
    assert t.term("alg", "newer_one") == "newer_one"  # a newer balancer's word, as sent


def test_a_student_algorithms_name_is_shown_as_sent_and_printable() -> None:
    """A plugin's name comes from a student's code (docs/algorithm-plugin.md)."""
    for lang in ("en", "es"):
        assert Translator(lang).term("alg", "dos_al_azar") == "dos_al_azar"
        assert Translator(lang).term("alg", "mío\x1b[2J\u202e") == "mío\\x1b[2J\\u202e"


async def test_the_spanish_ui_shows_events_algorithms_and_faults_in_spanish() -> None:
    app = fixture_app(3, lang="es")
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        timeline = " ".join(" ".join(line.text for line in app.events_panel.lines).split())
        for said in (
            "server2 DOWN → UP: chequeos superados seguidos: 2",
            "server3 detener → detenido (por 127.0.0.1)",
            "server3 UP → DOWN: conexión rechazada con tráfico real",
            "algoritmo Aleatorio → Round Robin (por 127.0.0.1)",
            "server3 agregado:",
        ):
            assert said in timeline
        assert str(app.query_one("#algorithm", Label).content) == "Algoritmo: Round Robin"
        await pilot.press("f")
        await pilot.pause()
        picker = [str(button.label) for button in app.screen.query(Button)]
        assert picker == [
            "0  ninguna: sano",
            "1  error: la mitad de las respuestas son 500",
            "2  latencia: +300 ms por solicitud",
            "3  cuelgue: sin respuesta por 30 s",
            "4  no saludable: /health responde 503",
            "5  sin candado: escribe tasks.json sin el bloqueo de archivo — PIERDE TAREAS a "
            "propósito (lección de condiciones de carrera)",
        ]


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


@pytest.mark.parametrize("lang", ["en", "es"])
async def test_the_help_explains_every_column_of_the_server_table(lang: str) -> None:
    app = fixture_app(3, lang=lang)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        legend = app.screen.query_one("#help-columns", Static)
        shown = words(legend)
        assert len(app.servers.columns) == 11
        for key in (column.value for column in app.servers.columns):
            assert app.t(f"col_{key}") in shown
            assert " ".join(app.t(f"legend_{key}").split()[:4]) in shown


def test_every_fault_mode_is_offered_with_a_text() -> None:
    """The picker follows the task server's modes: a new mode needs its ``fault_<mode>``."""
    assert [body["mode"] for _, body in FAULTS] == list(FAULT_MODES)
    assert {f"fault_{mode}" for mode in FAULT_MODES} <= set(EN)
    assert set(CLASS_PARAMETERS) <= set(FAULT_MODES)


@pytest.mark.parametrize(
    ("lang", "warning", "notice"),
    [
        (
            "en",
            "nolock: writes tasks.json without the file lock — LOSES TASKS on purpose "
            "(race-condition lesson)",
            "server1: fault mode is now nolock.",
        ),
        (
            "es",
            "sin candado: escribe tasks.json sin el bloqueo de archivo — PIERDE TAREAS a "
            "propósito (lección de condiciones de carrera)",
            "server1: el modo de falla ahora es sin candado.",
        ),
    ],
)
async def test_the_fault_menu_offers_nolock_with_its_warning(
    lang: str, warning: str, notice: str
) -> None:
    """The mode that loses tasks on purpose says so, in red, whole on a 100x30 screen."""
    balancer = FixtureBalancer()
    app = fixture_app(balancer=balancer, lang=lang)
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await loaded(pilot)
        await pilot.press("f")
        await pilot.pause()
        button = app.screen.query_one("#fault-nolock", Button)
        assert str(button.label) == f"5  {warning}"
        assert button.variant == "error"
        assert app.screen.region.contains_region(button.region)
        assert words(button).strip("▔▁ ") == f"5 {warning}"  # wrapped, never cut
        await pilot.press("5")
        (sent,) = await until_found(pilot, lambda: balancer.writes)
        assert sent.url.path == "/control/servers/server1/fault"
        assert json.loads(sent.content) == {"mode": "nolock"}
        toasts = await until_found(pilot, lambda: list(app.screen.query(Toast)))
        assert notice in [words(toast) for toast in toasts]


def test_error_types_are_named_in_the_chosen_language() -> None:
    stats = {"error_types": {"400_BAD_REQUEST": 2, "500_INTERNAL_ERROR": 1, "418_IM_A_TEAPOT": 1}}
    spanish = ErrorsPanel(Translator("es")).render_stats(stats).plain
    assert "inválida" in spanish and "error interno" in spanish
    assert "im a teapot" in spanish  # a status without a translation keeps the course's name
    assert "bad request" in ErrorsPanel(Translator("en")).render_stats(stats).plain


@pytest.mark.slow  # 3-7 s: some 27 keys pressed one by one; .ci/run runs it
async def test_every_control_key_is_a_write_action() -> None:
    """Every key of the table, pressed once on a read-write dashboard of nine servers (a
    picker it opens answered with its first choice): the keys that sent a control request are
    exactly the table's write keys, the ones read-only mode refuses. A new control key not
    marked ``write`` fails here, and so does a write key that sends nothing."""
    balancer = FixtureBalancer(9)
    app = fixture_app(balancer=balancer)
    sent: set[str] = set()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        for key in sorted(KEYS, key=lambda key: key.action == "quit"):  # quit ends the run
            before = len(balancer.writes)
            await pilot.press(key.keys.split(",")[0])
            await pilot.pause()
            for answer in ("1", "escape"):  # the fault picker's first mode; help closes
                if app.screen is not app.screen_main:
                    await pilot.press(answer)
                    await pilot.pause()
            await until_found(
                pilot,
                lambda: all(w.is_finished for w in app.workers if w.group == "control"),
            )
            if len(balancer.writes) > before:
                sent.add(key.action)
            if app.poller.charts_open:  # the charts hide the row the next key acts on
                app.action_toggle_charts()
                await pilot.pause()
    assert sent == {key.action for key in KEYS if key.write}
    assert {action.partition("(")[0] for action in sent} == WRITE_ACTIONS  # the guard's set


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


def test_options_from_environment_and_token_file(monkeypatch, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("TICSLAB_TOKEN", raising=False)
    monkeypatch.setenv("TICSLAB_URL", "http://10.0.0.5:8080/")
    monkeypatch.setenv("LANG", "es_CL.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.delenv("TICSLAB_LANG", raising=False)
    options = parse_options([])
    assert options == Options(url="http://10.0.0.5:8080", token="from-file", lang="es")
    assert parse_options(["--read-only", "--lang", "en"]).read_only


def test_ticslab_lang_picks_the_language_over_the_locale_and_the_flag_over_both(
    monkeypatch, tmp_path
) -> None:
    """A container has no Spanish locale (LANG=C.UTF-8 in the image): TICSLAB_LANG says."""
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(tmp_path / "missing"))
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("TICSLAB_LANG", "es")
    assert parse_options([]).lang == "es"
    assert parse_options(["--lang", "en"]).lang == "en"
    assert resolve_options("http://b").lang == "es"  # open_dashboard's path, without argparse
    monkeypatch.setenv("TICSLAB_LANG", "EN")
    monkeypatch.setenv("LANG", "es_ES.UTF-8")
    assert parse_options([]).lang == "en"
    assert parse_options(["--lang", "es"]).lang == "es"


def test_a_bad_ticslab_lang_is_a_usage_error_like_a_bad_flag(monkeypatch, capsys) -> None:
    monkeypatch.setenv("TICSLAB_LANG", "fr")
    with pytest.raises(SystemExit) as exit_info:
        parse_options([])
    assert exit_info.value.code == 2
    assert "--lang: 'fr': use es or en" in capsys.readouterr().err
    assert parse_options(["--lang", "es"]).lang == "es"  # a flag replaces the variable


def test_no_token_means_read_only(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(tmp_path / "missing"))
    monkeypatch.delenv("TICSLAB_TOKEN", raising=False)
    assert parse_options(["--url", "http://127.0.0.1:9"]).read_only


def test_bad_refresh_is_refused_in_words(capsys) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        options_from_args(parser.parse_args(["--refresh", "0"]))
    assert "refresh must be between" in capsys.readouterr().err


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


def test_weight_cell() -> None:
    """The weight, marked while a slow start ramps it; ``-`` from a balancer without."""
    assert weight_text({"weight": 3, "effective_weight": 3.0}) == "3"
    assert weight_text({"weight": 256, "effective_weight": 12.8}) == "256↗"
    assert weight_text({"weight": 0, "effective_weight": 0}) == "0"
    assert weight_text({}) == weight_text({"weight": "3"}) == "-"


async def test_the_weight_column_marks_a_slow_start() -> None:
    app = fixture_app(3)  # server2: weight 3, ramping (effective 1.2)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        cells = [app.servers.get_cell(f"server{n}", "weight") for n in (1, 2, 3)]
        assert cells == ["1", "3↗", "1"]
        assert "3↗" in rendered(app.servers)[2]


async def test_weight_keys_send_one_step_from_the_weight_the_balancer_has_now() -> None:
    """``>`` and ``<`` on the selected row; the step starts from the balancer's weight, not
    the screen's (a poll old), so quick presses add up; at 0 (or 256) nothing is sent."""
    balancer = FixtureBalancer(3)
    servers = balancer.answers["/status"]["servers"]
    servers[2]["weight"] = 0
    app = fixture_app(balancer=balancer)

    def sent() -> list[tuple[str, str, Any]]:
        return [(r.method, r.url.path, json.loads(r.content)) for r in balancer.writes]

    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await loaded(pilot)
        await pilot.press("down", "greater_than_sign")  # server2, weight 3
        await until_found(pilot, lambda: len(balancer.writes) == 1)
        servers[1]["weight"] = 4  # what the balancer did; the screen still says 3
        await pilot.press("full_stop")
        await until_found(pilot, lambda: len(balancer.writes) == 2)
        await pilot.press("less_than_sign")
        await until_found(pilot, lambda: len(balancer.writes) == 3)
        await pilot.press("down", "comma")  # server3, weight 0
        limit = "server3: the weight is already 0 (0 to 256)."
        await until_found(pilot, lambda: any(limit in words(t) for t in app.screen.query(Toast)))
        path = "/control/servers/server2/weight"
        assert sent() == [
            ("PUT", path, {"weight": 4}),
            ("PUT", path, {"weight": 5}),
            ("PUT", path, {"weight": 3}),
        ]
        assert {r.headers["authorization"] for r in balancer.writes} == {"Bearer t0ken"}


@pytest.mark.slow  # 1.2-3 s; .ci/run runs it: the default run stays near 3 minutes
async def test_weight_keys_do_nothing_in_read_only_mode() -> None:
    balancer = FixtureBalancer(3)
    app = fixture_app(balancer=balancer, token=None, read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        before = len(balancer.requests)
        await pilot.press("greater_than_sign", "less_than_sign", "full_stop", "comma")
        await pilot.pause(0.3)
        assert balancer.requests[before:] == []  # refused before even reading the weight


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
@pytest.mark.parametrize("lang", ["en", "es"])
async def test_footer_shows_the_essential_keys_at_100_columns(lang: str) -> None:
    app = fixture_app(3, lang=lang)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        shown = {
            key.key_display
            for key in app.query(FooterKey)
            if key.region.width and key.region.right <= 100
        }
        assert {"?", "1-9", "</>", "a", "c", "q"} <= shown
        assert "^p" not in shown  # the command palette still opens, it just takes no room


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
        assert app.status is not None and app.failures == 0
    assert most == 1


async def test_the_events_panel_says_every_event_in_the_balancers_sentences() -> None:
    """The panel's line is the time, then the balancer's own sentence (messages.py)."""
    events = await events_of_every_kind()
    for lang in ("en", "es"):
        panel, text = EventsPanel(Translator(lang)), EventText(lang)
        for event in events:
            assert panel.render_event(event).plain[9:] == text.sentence(event)
    discovery = [event for event in events if event["kind"] == "discovery"]
    shown = {
        lang: [EventsPanel(Translator(lang)).render_event(e).plain[9:] for e in discovery]
        for lang in ("en", "es")
    }
    assert shown == {
        "en": [
            "server3 added: http://ticslab-server3-1:5001 (by docker)",
            "server3 removed: http://ticslab-server3-1:5001 (by docker)",
        ],
        "es": [
            "server3 agregado: http://ticslab-server3-1:5001 (por docker)",
            "server3 quitado: http://ticslab-server3-1:5001 (por docker)",
        ],
    }
    failed = [event for event in events if event["kind"] == "algorithm_error"]
    assert len(failed) == 1  # the second came within ALGORITHM_ERROR_QUIET of the first
    plugin = {**failed[0], "algorithm": "mi_algoritmo"}  # a plugin's name is shown as sent
    assert EventsPanel(Translator("es")).render_event(plugin).plain[9:] == (
        "algoritmo mi_algoritmo FALLÓ en /lab/mine.py:7: ZeroDivisionError: division by zero; "
        "respondió round robin en su lugar"
    )
    returned = {**plugin, "where": "/lab/mine.py:5", "error": None, "returned": "None"}
    assert EventsPanel(Translator("en")).render_event(returned).plain[9:] == (
        "algorithm mi_algoritmo FAILED at /lab/mine.py:5: pick returned None, not one of the "
        "servers it was given; round robin answered instead"
    )


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


async def until_found(pilot, check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {check}"
        await pilot.pause(0.05)
    return found


def test_the_read_only_help_says_what_it_is_for_in_english_too() -> None:
    said = EN["help_read_only"]
    assert "READ-ONLY, for the projector" in said and "teacher" in said
    assert "--token" in said and "TICSLAB_TOKEN" in said and "start with a" not in said


async def test_the_read_only_help_says_what_read_only_is_for_and_how_control_is_had() -> None:
    """Chosen on purpose for the projector: no hint of a mistake to fix."""
    means, wrong = ["SOLO LECTURA, para el proyector", "no envían nada", "docente"], "inicie"
    app = fixture_app(3, lang="es", read_only=True, token=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        said = " ".join(str(app.screen.query_one("#help-read-only", Static).content).split())
        assert all(part in said for part in means) and wrong not in said
        assert "--token" in said and "TICSLAB_TOKEN" in said
        legend = words(app.screen.query_one("#help-columns", Static))
        assert app.t("col_fault") in legend  # the fault column, shown only while one is on


DOCS = Path(__file__).resolve().parents[1] / "docs" / "dashboard.md"


def docs_rows(cells: int) -> list[list[str]]:
    """The rows of docs/dashboard.md's tables with ``cells`` cells, split and stripped."""
    rows = []
    for line in DOCS.read_text().splitlines():
        parts = [part.strip() for part in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(parts) == cells and not parts[0].startswith("-"):
            rows.append(parts)
    return rows


def test_the_docs_list_every_binding_as_the_footer_and_the_help_show_it() -> None:
    en, es = Translator("en"), Translator("es")
    expected, seen = [], set()
    for key in KEYS:
        if key.text in seen:
            continue
        seen.add(key.text)
        labels = dict.fromkeys([key_label(key, en), key_label(key, es)])
        word = key.short or key.text
        footer = f"{en(word)} / {es(word)}" if key.show else "—"
        expected.append([" / ".join(f"`{label}`" for label in labels), footer])
        expected[-1] += [en(key.text), es(key.text)]
    documented = [row for row in docs_rows(4) if row[0] != "key" and row[0].startswith("`")]
    assert documented == expected


FOOTER_MODES: dict[str, dict[str, Any]] = {
    "control": {},
    "control, charts (`c`)": {},
    "read-only": {"token": None, "read_only": True},
}


@pytest.mark.slow  # six dashboards a language: 8-14 s on a loaded machine
@pytest.mark.parametrize("lang", ["en", "es"])
async def test_the_docs_show_the_footer_as_it_is_drawn(lang: str) -> None:
    """Each mode's footer at 100 and at 80 columns, key by key, as docs/dashboard.md says."""
    rows = {(row[0], row[1]): row[2:] for row in docs_rows(4) if row[0] in ("en", "es")}
    for mode, options in FOOTER_MODES.items():
        wide, narrow = (
            re.findall(r"`([^`]+)` ([^·]+?)(?: ·|$)", cell) for cell in rows[lang, mode]
        )
        for size, keys in (((100, 30), wide), ((80, 24), [*wide[:1], *narrow, *wide[1:]])):
            app = fixture_app(3, lang=lang, **options)
            async with app.run_test(size=size) as pilot:
                await loaded(pilot)
                if "charts" in mode:
                    await pilot.press("c")
                    await pilot.pause()
                shown = [(key.key_display, key.description) for key in app.query(FooterKey)]
                assert shown == keys, (mode, size)


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


# A read-only dashboard never reads the token file (issue 23, item 21).


def test_a_read_only_dashboard_does_not_read_the_token_file(monkeypatch, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("TICSLAB_TOKEN_FILE", str(token_file))
    monkeypatch.delenv("TICSLAB_TOKEN", raising=False)
    assert resolve_options("http://b", read_only=True).token is None
    assert parse_options(["--read-only"]).token is None
    assert resolve_options("http://b").token == "from-file"  # control still finds it


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

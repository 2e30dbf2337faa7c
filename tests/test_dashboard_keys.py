"""The keys: the key table's write actions, the weight keys, the fault menu, the
footer, and the docs that list every binding."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fixtures.dashboard.balancer import (
    FixtureBalancer,
    fixture_app,
    loaded,
    until_found,
    words,
)
from textual.widgets import Button
from textual.widgets._footer import FooterKey
from textual.widgets._toast import Toast

from dashboard.i18n import EN, Translator
from dashboard.keys import KEYS, WRITE_ACTIONS, key_label
from dashboard.screens.fault import CLASS_PARAMETERS, FAULTS, fault_text
from services.common import FAULT_MODES
from services.taskserver.faults import FaultState


def test_every_fault_mode_is_offered_with_a_text() -> None:
    """The picker follows the task server's modes: a new mode needs its ``fault_<mode>``."""
    assert [body["mode"] for _, body in FAULTS] == list(FAULT_MODES)
    assert {f"fault_{mode}" for mode in FAULT_MODES} <= set(EN)
    assert set(CLASS_PARAMETERS) <= set(FAULT_MODES)


def test_the_fault_menu_sends_the_task_servers_defaults() -> None:
    """Each choice puts a server in the state a bare ``{"mode": ...}`` does (its defaults)."""
    for mode, body in FAULTS:
        assert FaultState().set(body) == FaultState().set({"mode": mode})


@pytest.mark.parametrize("lang", ["en", "es"])
def test_each_fault_choice_says_the_numbers_it_sends(lang: str) -> None:
    t = Translator(lang)
    assert "500 ms" in fault_text(t, "latency") and "30 s" in fault_text(t, "hang")
    for mode, parameters in CLASS_PARAMETERS.items():
        numbers = [f"{value:g}" for name, value in parameters.items() if name != "rate"]
        assert all(number in fault_text(t, mode) for number in numbers)


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
            if app.charts_open:  # the charts hide the row the next key acts on
                app.action_toggle_charts()
                await pilot.pause()
    assert sent == {key.action for key in KEYS if key.write}
    assert {action.partition("(")[0] for action in sent} == WRITE_ACTIONS  # the guard's set


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

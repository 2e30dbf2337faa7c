"""Dashboard texts in both languages: every key translated, the balancer's words and
sentences in Spanish, error types, the help's column legend and read-only help."""

from __future__ import annotations

import pytest
from fixtures.dashboard.balancer import (
    fixture_app,
    loaded,
    words,
)
from support import events_of_every_kind
from textual.widgets import Button, Label, Static

from dashboard.i18n import EN, ES, Translator
from dashboard.keys import KEYS
from dashboard.widgets.panels import ErrorsPanel, EventsPanel
from services.balancer.algorithms import ALGORITHMS
from services.balancer.drivers.docker import RESULTS
from services.balancer.messages import EventText
from services.common import ADMIN_ACTIONS, DRIVER_ACTIONS, FAULT_MODES


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
            "2  latencia: +500 ms por solicitud",
            "3  cuelgue: sin respuesta por 30 s",
            "4  no saludable: /health responde 503",
            "5  sin candado: escribe tasks.json sin el bloqueo de archivo — PIERDE TAREAS a "
            "propósito (lección de condiciones de carrera)",
        ]


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


def test_error_types_are_named_in_the_chosen_language() -> None:
    stats = {"error_types": {"400_BAD_REQUEST": 2, "500_INTERNAL_ERROR": 1, "418_IM_A_TEAPOT": 1}}
    spanish = ErrorsPanel(Translator("es")).render_stats(stats).plain
    assert "inválida" in spanish and "error interno" in spanish
    assert "im a teapot" in spanish  # a status without a translation keeps the course's name
    assert "bad request" in ErrorsPanel(Translator("en")).render_stats(stats).plain


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

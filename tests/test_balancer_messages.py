"""The one catalogue of event sentences (services/balancer/messages.py), which the balancer's
log and the dashboard's events panel both speak: complete in both languages, a sentence for
every event kind and reason code, details from the network translated or marked as the
system's own words, and nothing a terminal would obey."""

from __future__ import annotations

import logging
from string import Formatter

import aiohttp
import httpx
import pytest
from starlette.applications import Starlette
from support import ACTED_ON, events_of_every_kind, state_events_of_every_reason

from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.balancer.control import Control
from services.balancer.events import KINDS, REASON_CODES
from services.balancer.health import connection_failure_text
from services.balancer.journal import MAX_PAIRS, Journal, level
from services.balancer.messages import CATALOGUE, EN, ES, EventText
from services.balancer.upstream import (
    ConnectFailed,
    ConnectTimeout,
    CutShort,
    Disconnected,
    ServerSilent,
)
from services.common import DASHBOARD_AGENT
from services.lang import missing_keys

# Written the same in both languages: placeholders, and words that are Spanish too.
# A rollout's step: every word in it is a term said in the language (strategy, step).
SAME_IN_BOTH = {"ev_state", "ev_state_first", "ev_other", "mode_error", "ev_rollout"}
# English keeps the balancer's own words (the event's ``reason``, a detail as it came).
AS_SENT_IN_ENGLISH = {key for key in EN if key.startswith(("reason_", "detail_", "os_"))}


def test_both_languages_have_the_same_sentences() -> None:
    assert missing_keys(CATALOGUE) == {}
    assert all(ES.values())


def test_every_english_sentence_has_its_spanish_words() -> None:
    same = {key for key in EN if ES[key] == EN[key]}
    assert same == SAME_IN_BOTH


@pytest.mark.parametrize("kind", KINDS)
def test_every_event_kind_has_a_sentence(kind: str) -> None:
    """``KINDS`` is every kind ``EventLog.add`` accepts: one without ``ev_<kind>`` would be
    told as the catch-all ``ev_other``."""
    assert EventText.text_key({"kind": kind, "from": "UP"}) == f"ev_{kind}"


@pytest.mark.parametrize("code", REASON_CODES)
def test_every_reason_code_has_a_sentence_in_both_languages(code: str) -> None:
    assert EN[f"reason_{code}"] and ES[f"reason_{code}"] != EN[f"reason_{code}"]


async def test_every_event_the_balancer_emits_is_said_with_its_own_fields() -> None:
    events = await events_of_every_kind()
    assert {event["kind"] for event in events} == set(KINDS)
    for event in events:
        key = EventText.text_key(event)
        carried = {name for name, value in event.items() if value is not None}
        for catalogue in (EN, ES):
            formatted = {name for _, name, _, _ in Formatter().parse(catalogue[key]) if name}
            assert formatted <= carried, f"{key} shows {formatted - carried}, absent: {event}"
        for lang in ("en", "es"):
            assert "{" not in EventText(lang).sentence(event)


async def test_every_state_change_reads_in_spanish_from_its_reason_code() -> None:
    """No English reason is left in Spanish, English says the balancer's words, and an
    unknown code (or a missing field) falls back to ``reason``."""
    events = await state_events_of_every_reason()
    english, spanish = EventText("en"), EventText("es")
    for event in events:
        assert english.reason(event) == event["reason"]
        assert event["reason"] not in spanish.reason(event), event
    failed = next(event for event in events if event["reason_code"] == "checks_failed")
    assert spanish.reason(failed) == "(mensaje del sistema) timeout (2 chequeos fallidos seguidos)"
    ejected = next(event for event in events if event["reason_code"] == "ejected")
    assert spanish.reason(ejected) == "2 respuestas 5xx seguidas; fuera por 0.01 s"
    newer = {"kind": "state", "reason": "went to lunch", "reason_code": "lunch"}
    assert spanish.reason(newer) == "went to lunch"
    assert spanish.reason({**failed, "checks": None}) == failed["reason"]  # a field missing


async def test_an_action_from_the_dashboard_says_so_and_who_asked() -> None:
    """The dashboard names itself (its User-Agent): its actions read "desde el panel"; the
    same action from curl does not, and neither has the token in it."""
    balancer = Balancer(BalancerConfig(backends=[("server1", "http://127.0.0.1:5001")]))
    control = Control(balancer, "s3cret-token", "none")
    transport = httpx.ASGITransport(Starlette(routes=control.routes()))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for agent in (DASHBOARD_AGENT, "curl/8.5.0"):
            headers = {"Authorization": "Bearer s3cret-token", "User-Agent": agent}
            answer = await http.post("/control/servers/server1/drain", headers=headers)
            assert answer.status_code == 200
    said = [EventText("es").sentence(e) for e in balancer.events.since(0) if e["kind"] == "control"]
    assert said == [
        "server1 drenar → DRAIN (desde el panel, por 127.0.0.1)",
        "server1 drenar → DRAIN (por 127.0.0.1)",
    ]


def failures() -> list[tuple[BaseException, str]]:
    """Errors the health checks and the proxy meet, with the Spanish the log must say."""
    refused = aiohttp.ClientConnectorError(None, ConnectionRefusedError(111, "Connection refused"))
    unknown = OSError(-2, "Name or service not known")
    return [
        (refused, "conexión rechazada"),
        (TimeoutError(), "sin respuesta en 0.5 s"),
        (ConnectionResetError(), "conexión cortada por el otro lado"),
        (aiohttp.ClientPayloadError("x"), "respuesta cortada a medias"),
        (
            aiohttp.ClientConnectorError(None, unknown),
            "no se puede conectar: nombre o servicio desconocido",
        ),
        (
            aiohttp.ClientConnectorError(None, OSError(99, "Cannot assign requested address")),
            "no se puede conectar: (mensaje del sistema) Cannot assign requested address",
        ),
        (aiohttp.ClientError(), "error de conexión: ClientError"),
        # the proxy's own client (services/balancer/upstream.py) says the same
        (ConnectFailed(ConnectionRefusedError(111, "Connection refused")), "conexión rechazada"),
        (ConnectFailed(unknown), "no se puede conectar: nombre o servicio desconocido"),
        (ConnectTimeout(), "sin respuesta en 0.5 s"),
        (ServerSilent(), "sin respuesta en 0.5 s"),
        (Disconnected(before_answer=True), "conexión cortada por el otro lado"),
        (CutShort(), "respuesta cortada a medias"),
    ]


@pytest.mark.parametrize(("error", "spanish"), failures())
def test_each_connection_failure_is_said_in_spanish_with_its_numbers(
    error: BaseException, spanish: str
) -> None:
    """The balancer's own words (health.connection_failure_text) are known: a change to them that
    the catalogue misses fails here."""
    detail = connection_failure_text(error, 0.5)
    assert EventText("es").detail(detail) == spanish
    assert EventText("en").detail(detail) == detail  # English: as the system said it


@pytest.mark.parametrize(
    ("detail", "spanish"),
    [
        ("200 OK", "respondió 200"),
        ("503 Service Unavailable: storage is read-only", "respondió 503: (mensaje del sistema) "
         "storage is read-only"),
        ("Docker refused to stop: container is marked for removal",
         "Docker se negó a detener: (mensaje del sistema) container is marked for removal"),
        ("Docker engine at /var/run/docker.sock did not answer: connection refused",
         "Docker en /var/run/docker.sock no respondió: conexión rechazada"),
        ("disk on fire", "(mensaje del sistema) disk on fire"),
    ],
)  # fmt: skip
def test_http_docker_and_unknown_details(detail: str, spanish: str) -> None:
    assert EventText("es").detail(detail) == spanish
    assert EventText("en").detail(detail) == detail


def test_a_hostile_detail_is_shown_never_obeyed() -> None:
    """A health check's body is the server's to choose: escape codes and bidi controls in it
    are written out, in the detail and in the whole sentence."""
    hostile = "503 Service Unavailable: \x1b[2J\x1b]0;pwned\x07\u202eevil\nnext"
    event = {
        "kind": "state", "server": "server1\x1b[31m", "from": "UP", "to": "DOWN",
        "reason": f"2 checks failed: {hostile}", "reason_code": "checks_failed",
        "checks": 2, "detail": hostile,
    }  # fmt: skip
    for lang in ("en", "es"):
        said = EventText(lang).sentence(event)
        assert not ACTED_ON.search(said), said
        assert "\\x1b[2J" in said and "\\u202e" in said
    assert "(mensaje del sistema) \\x1b[2J" in EventText("es").sentence(event)


def test_the_level_says_what_broke() -> None:
    assert level({"kind": "state", "to": "DOWN"}) == logging.WARNING
    assert level({"kind": "state", "to": "UP"}) == logging.INFO
    assert level({"kind": "control", "ok": False}) == logging.WARNING
    assert level({"kind": "control", "ok": True}) == logging.INFO
    assert level({"kind": "failure"}) == logging.ERROR


def test_retries_are_summed_up_per_pair_in_bounded_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One line per (failed on, answered by) pair at each flush, never one per request; past
    ``MAX_PAIRS`` pairs the summary comes early rather than growing."""
    journal = Journal("es")
    with caplog.at_level(logging.INFO, logger="ticslab.balancer"):
        for _ in range(3):
            journal.retried("server1", "server2")
        journal.retried("server2", "server1")
        journal.flush()
        journal.flush()  # nothing new: nothing said
    assert [record.getMessage() for record in caplog.records] == [
        "1 solicitud reintentada en server1 en los últimos 5 s (falló primero en server2)",
        "3 solicitudes reintentadas en server2 en los últimos 5 s (fallaron primero en server1)",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ticslab.balancer"):
        for number in range(MAX_PAIRS + 1):
            journal.retried(f"s{number}", "server1")
            assert len(journal._retried) <= MAX_PAIRS
    assert len(caplog.records) == MAX_PAIRS  # the early summary, before the last pair


def test_a_sentence_that_cannot_be_said_never_stops_a_state_change(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log listens inside ``EventLog.add``: a bug in a sentence is logged, and the
    server's state still changes."""
    balancer = Balancer(BalancerConfig(backends=[("server1", "http://127.0.0.1:5001")]))

    def broken(event: object) -> str:
        raise KeyError("missing")

    monkeypatch.setattr(balancer.journal.text, "sentence", broken)
    with caplog.at_level(logging.INFO, logger="ticslab.balancer"):
        assert balancer.set_admin_state("server1", "DRAIN") == "DRAIN"
    assert balancer.events.since(0)[-1]["to"] == "DRAIN"
    assert "could not say the state event" in caplog.text

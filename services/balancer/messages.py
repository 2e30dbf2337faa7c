"""The one catalogue of event sentences: the balancer's log lines and the dashboard's events
panel both say an event (services/balancer/events.py) with ``EventText``, so each sentence is
written once, in Spanish and English.

Details that come from the network or the operating system (``connection refused``, ``timeout
after 0.5 s``, Docker's refusals) are said in the chosen language when they are known; any
other is shown as the system's own words, marked as such (``(mensaje del sistema) ...``) and
made ``printable``.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from typing import Any

from services.balancer.algorithms import HANDOUT_NAMES
from services.common import printable
from services.lang import Translator

EN: dict[str, str] = {
    "ev_start": "balancer started: algorithm {algorithm}, servers {servers}",
    "ev_state": "{server} {from} → {to}: {reason}",
    "ev_state_first": "{server} → {to}: {reason}",
    "ev_control": "{server} {action} → {result} (by {who})",
    "ev_control_dashboard": "{server} {action} → {result} (from the dashboard, by {who})",
    "ev_control_failed": "{server} {action} FAILED: {result} (by {who})",
    "ev_algorithm": "algorithm {from} → {to} (by {who})",
    "ev_algorithm_error": "algorithm {algorithm} FAILED at {where}: {error}; round robin "
    "answered instead",
    "ev_algorithm_error_returned": "algorithm {algorithm} FAILED at {where}: pick returned "
    "{returned}, not one of the servers it was given; round robin answered instead",
    "ev_algorithm_slow": "algorithm {algorithm} is SLOW at {where}: one pick took "
    "{milliseconds} ms, and every request waited for it",
    "ev_weight": "{server} weight {from} → {to} (by {who})",
    "ev_discovery": "{server} {action}: {url} (by {who})",
    # --discover dns (dns_discovery.py): its lookups failing and answering again, its bound.
    "ev_discovery_lookup_failed": "DNS lookup of {query} FAILED: {reason}; the servers it "
    "gave last are kept ({kept})",
    "ev_discovery_lookup_recovered": "DNS lookup of {query} answers again",
    "ev_discovery_limit_reached": "DNS lookup of {query} gave more servers than the "
    "{count} allowed; the rest are left out",
    "ev_stats": "statistics reset (by {who})",
    "ev_failure": "FAILURE: {reason}",
    "ev_other": "{kind}: {server} {reason}",
    # A rollout (services/balancer/rollout.py): its start, each step of a server, its end.
    "ev_rollout_started": "{strategy} started: {names} (by {who})",
    "ev_rollout": "{strategy} {position}/{total}: {server} {step}",
    "ev_rollout_done": "{strategy} done: {total} servers restarted",
    "ev_rollout_failed": "{strategy} FAILED at {server} ({step}): {why}",
    "strategy_rolling": "rolling restart",
    "strategy_restart": "restart of every server at once",
    "step_drain": "draining",
    "step_settle": "waiting for its requests in flight",
    "step_restart": "restarting",
    "step_health": "waiting for health",
    "step_return": "back in rotation",
    "rollout_why_busy": "{server} still had {in_flight} requests in flight after {seconds:g} s",
    "rollout_why_driver": "{server} could not be restarted: {detail}",
    "rollout_why_unhealthy": "{server} was not healthy within {seconds:g} s: {detail}",
    "rollout_why_removed": "{server} is no longer one of the balancer's servers",
    "rollout_why_stopped": "the balancer stopped during the rollout",
    "rollout_why_error": "the rollout stopped on an unexpected error: {detail}",
    # Retries that hid a failure from clients, summed up (services/balancer/journal.py).
    "retried": "{count} requests retried on {server} in the last {seconds} s (failed first on "
    "{failed})",
    "retried_one": "1 request retried on {server} in the last {seconds} s (failed first on "
    "{failed})",
    # The same server on a new connection: the pooled one it reused had been closed by it.
    "resent": "{count} requests sent again to {server} on a new connection in the last "
    "{seconds} s (it had closed the pooled one)",
    "resent_one": "1 request sent again to {server} on a new connection in the last {seconds} s "
    "(it had closed the pooled one)",
    # State reasons by ``reason_code`` (events.py): in English, the balancer's own words.
    "reason_first_check_passed": "{reason}",
    "reason_checks_passed": "{reason}",
    "reason_checks_failed": "{reason}",
    "reason_refused_live": "{reason}",
    "reason_live_failures": "{reason}",
    "reason_ejected": "{reason}",
    "reason_ejection_over": "{reason}",
    "reason_set_drain": "{reason}",
    "reason_set_maint": "{reason}",
    "reason_set_ready": "{reason}",
    # Details from the network or the OS (``EventText.detail``): in English, as they came.
    "detail_refused": "connection refused",
    "detail_timeout": "timeout after {seconds} s",
    "detail_reset": "connection reset",
    "detail_cut": "answer cut short",
    "detail_connect": "cannot connect: {why}",
    "detail_connection_error": "connection error: {name}",
    "detail_http": "{status} {phrase}",
    "detail_http_why": "{status} {phrase}: {why}",
    "detail_docker_refused": "Docker refused to {action}: {why}",
    "detail_docker_failed": "Docker failed to {action}: {why}",
    "detail_docker_silent": "Docker engine at {where} did not answer: {why}",
    "os_unknown_name": "Name or service not known",
    "os_name_lookup": "Temporary failure in name resolution",
    "os_no_route": "No route to host",
    "os_unreachable": "Network is unreachable",
    "os_refused": "Connection refused",
    "os_reset": "Connection reset by peer",
    "system_words": "{text}",
    # Words the balancer sends (``EventText.term``): actions, their results, process states,
    # fault modes, algorithms; in English, as sent.
    "action_start": "start",
    "action_stop": "stop",
    "action_kill": "kill",
    "action_restart": "restart",
    "action_pause": "pause",
    "action_unpause": "unpause",
    "action_drain": "drain",
    "action_maint": "maint",
    "action_ready": "ready",
    "action_fault": "fault",
    "action_added": "added",
    "action_removed": "removed",
    "action_add": "add a server",
    "action_remove": "remove",
    "result_started": "started",
    "result_stopped": "stopped",
    "result_killed": "killed",
    "result_restarted": "restarted",
    "result_paused": "paused",
    "result_unpaused": "unpaused",
    "result_already": "already {state}",
    "process_running": "running",
    "process_exited": "exited",
    "process_paused": "paused",
    "process_created": "created",
    "process_restarting": "restarting",
    "process_removed": "removed",
    "mode_none": "none",
    "mode_error": "error",
    "mode_latency": "latency",
    "mode_hang": "hang",
    "mode_unhealthy": "unhealthy",
    "mode_nolock": "nolock",
    "alg_random": "random",
    "alg_round_robin": "round_robin",
    "alg_least_connections": "least_connections",
    "alg_response_time": "response_time",
    "alg_ip_hash": "ip_hash",
}

ES: dict[str, str] = {
    "ev_start": "balanceador iniciado: algoritmo {algorithm}, servidores {servers}",
    "ev_state": "{server} {from} → {to}: {reason}",
    "ev_state_first": "{server} → {to}: {reason}",
    "ev_control": "{server} {action} → {result} (por {who})",
    "ev_control_dashboard": "{server} {action} → {result} (desde el panel, por {who})",
    "ev_control_failed": "{server} {action} FALLÓ: {result} (por {who})",
    "ev_algorithm": "algoritmo {from} → {to} (por {who})",
    "ev_algorithm_error": "algoritmo {algorithm} FALLÓ en {where}: {error}; respondió round "
    "robin en su lugar",
    "ev_algorithm_error_returned": "algoritmo {algorithm} FALLÓ en {where}: pick devolvió "
    "{returned}, que no es uno de los servidores que recibió; respondió round robin en su lugar",
    "ev_algorithm_slow": "algoritmo {algorithm} LENTO en {where}: una elección tardó "
    "{milliseconds} ms, y todas las solicitudes la esperaron",
    "ev_weight": "{server} peso {from} → {to} (por {who})",
    "ev_discovery": "{server} {action}: {url} (por {who})",
    "ev_discovery_lookup_failed": "la consulta DNS de {query} FALLÓ: {reason}; se mantienen "
    "los servidores de su última respuesta ({kept})",
    "ev_discovery_lookup_recovered": "la consulta DNS de {query} responde de nuevo",
    "ev_discovery_limit_reached": "la consulta DNS de {query} dio más servidores que los "
    "{count} permitidos; el resto queda fuera",
    "ev_stats": "estadísticas puestas a cero (por {who})",
    "ev_failure": "FALLA: {reason}",
    "ev_other": "{kind}: {server} {reason}",
    "ev_rollout_started": "{strategy} iniciado: {names} (por {who})",
    "ev_rollout": "{strategy} {position}/{total}: {server} {step}",
    "ev_rollout_done": "{strategy} terminado: {total} servidores reiniciados",
    "ev_rollout_failed": "{strategy} FALLÓ en {server} ({step}): {why}",
    "strategy_rolling": "reinicio gradual",
    "strategy_restart": "reinicio de todos a la vez",
    "step_drain": "drenando",
    "step_settle": "esperando sus solicitudes en curso",
    "step_restart": "reiniciando",
    "step_health": "esperando su chequeo de salud",
    "step_return": "de vuelta en la rotación",
    "rollout_why_busy": "{server} seguía con {in_flight} solicitudes en curso después de "
    "{seconds:g} s",
    "rollout_why_driver": "{server} no se pudo reiniciar: {detail}",
    "rollout_why_unhealthy": "{server} no quedó sano en {seconds:g} s: {detail}",
    "rollout_why_removed": "{server} ya no es uno de los servidores del balanceador",
    "rollout_why_stopped": "el balanceador se detuvo durante el despliegue",
    "rollout_why_error": "el despliegue se detuvo por un error inesperado: {detail}",
    "retried": "{count} solicitudes reintentadas en {server} en los últimos {seconds} s "
    "(fallaron primero en {failed})",
    "retried_one": "1 solicitud reintentada en {server} en los últimos {seconds} s (falló "
    "primero en {failed})",
    "resent": "{count} solicitudes reenviadas a {server} por una conexión nueva en los últimos "
    "{seconds} s (había cerrado la que se reutilizaba)",
    "resent_one": "1 solicitud reenviada a {server} por una conexión nueva en los últimos "
    "{seconds} s (había cerrado la que se reutilizaba)",
    "reason_first_check_passed": "primer veredicto: chequeo superado ({detail})",
    "reason_checks_passed": "chequeos superados seguidos: {checks}",
    "reason_checks_failed": "{detail} ({checks} chequeos fallidos seguidos)",
    "reason_refused_live": "conexión rechazada con tráfico real",
    "reason_live_failures": "{detail} ({failures} fallas seguidas con tráfico real)",
    "reason_ejected": "{answers} respuestas 5xx seguidas; fuera por {seconds} s",
    "reason_ejection_over": "fin de la expulsión",
    "reason_set_drain": "drenaje pedido por control",
    "reason_set_maint": "mantención pedida por control",
    "reason_set_ready": "vuelta al servicio pedida por control",
    "detail_refused": "conexión rechazada",
    "detail_timeout": "sin respuesta en {seconds} s",
    "detail_reset": "conexión cortada por el otro lado",
    "detail_cut": "respuesta cortada a medias",
    "detail_connect": "no se puede conectar: {why}",
    "detail_connection_error": "error de conexión: {name}",
    "detail_http": "respondió {status}",
    "detail_http_why": "respondió {status}: {why}",
    "detail_docker_refused": "Docker se negó a {action}: {why}",
    "detail_docker_failed": "Docker falló al intentar {action}: {why}",
    "detail_docker_silent": "Docker en {where} no respondió: {why}",
    "os_unknown_name": "nombre o servicio desconocido",
    "os_name_lookup": "falla temporal al resolver el nombre",
    "os_no_route": "no hay ruta al host",
    "os_unreachable": "la red no está disponible",
    "os_refused": "conexión rechazada",
    "os_reset": "conexión cortada por el otro lado",
    "system_words": "(mensaje del sistema) {text}",
    "action_start": "iniciar",
    "action_stop": "detener",
    "action_kill": "matar",
    "action_restart": "reiniciar",
    "action_pause": "congelar",
    "action_unpause": "descongelar",
    "action_drain": "drenar",
    "action_maint": "mantención",
    "action_ready": "listo",
    "action_fault": "falla",
    "action_added": "agregado",
    "action_removed": "quitado",
    "action_add": "agregar un servidor",
    "action_remove": "quitar",
    "result_started": "iniciado",
    "result_stopped": "detenido",
    "result_killed": "matado",
    "result_restarted": "reiniciado",
    "result_paused": "congelado",
    "result_unpaused": "descongelado",
    "result_already": "ya estaba {state}",
    "process_running": "en ejecución",
    "process_exited": "detenido",
    "process_paused": "congelado",
    "process_created": "creado",
    "process_restarting": "reiniciándose",
    "process_removed": "eliminado",
    "mode_none": "ninguna",
    "mode_error": "error",
    "mode_latency": "latencia",
    "mode_hang": "cuelgue",
    "mode_unhealthy": "no saludable",
    "mode_nolock": "sin candado",
    **{f"alg_{name}": text for name, text in HANDOUT_NAMES.items()},
}

CATALOGUE: dict[str, dict[str, str]] = {"en": EN, "es": ES}

# The details the balancer and its drivers write (health.connection_failure_text, a check's HTTP
# status and the server's reason, drivers/docker.py's refusals), each with the key that says
# it and the fields it carries; ``why`` parts are said again through ``detail``, so a known
# operating-system error inside one is translated too. Anchored and bounded: a detail is
# at most a few hundred characters, and these patterns never backtrack far.
DETAILS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.DOTALL), key)
    for pattern, key in (
        (r"connection refused", "detail_refused"),
        (r"timeout after (?P<seconds>[0-9.]+) s", "detail_timeout"),
        (r"connection reset", "detail_reset"),
        (r"answer cut short", "detail_cut"),
        (r"cannot connect: (?P<why>.+)", "detail_connect"),
        (r"connection error: (?P<name>\w+)", "detail_connection_error"),
        (r"(?P<status>[1-5][0-9][0-9]) (?P<phrase>[A-Za-z' -]*?): (?P<why>.+)", "detail_http_why"),
        (r"(?P<status>[1-5][0-9][0-9]) ?(?P<phrase>[A-Za-z' -]*)", "detail_http"),
        (r"Docker refused to (?P<action>\w+): (?P<why>.+)", "detail_docker_refused"),
        (r"Docker failed to (?P<action>\w+): (?P<why>.+)", "detail_docker_failed"),
        (r"Docker engine at (?P<where>\S+) did not answer: (?P<why>.+)", "detail_docker_silent"),
    )
)
# The operating system's own sentences (strerror) the lab meets, by the key that says them.
OS_WORDS = {EN[key].lower(): key for key in EN if key.startswith("os_")}
# Fields of a detail that are said again (a reason inside a reason), and those that are
# words of a protocol or a program (an HTTP phrase, an exception's class): kept as sent.
NESTED = ("why",)
# The fields an event's sentence may name, as the balancer sends them ("-" when absent).
EVENT_FIELDS = (
    "server", "from", "to", "reason", "action", "result", "who", "url", "kind",
    "where", "error", "returned",  # an algorithm_error's
    "milliseconds",  # an algorithm_slow's
    "query", "kept", "count",  # a DNS discovery's (ev_discovery_*)
)  # fmt: skip
# The fields a state reason may name (docs/api.md); numbers are written as ``3`` or ``0.5``.
REASON_FIELDS = ("detail", "checks", "failures", "answers", "seconds")


def number(value: object) -> str | None:
    """``value`` written as a reason shows it (``2``, ``0.5``); None if it is no finite number
    (a misbehaving balancer's text, null or NaN: the reason is then the English one)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return f"{value:g}"


class EventText(Translator):
    """An event, a word the balancer sends, or a detail from the network, in one language."""

    def __init__(self, lang: str) -> None:
        super().__init__(CATALOGUE, lang)

    def term(self, kind: str, word: object) -> str:
        """A word the balancer sends (``action``, ``result``, ``process``, ``mode``, ``alg``)
        in the chosen language: ``<kind>_<word>`` from the catalogue, else the word as sent (a
        newer balancer's, a plugin algorithm's name from a student's code), made printable."""
        return self.word(f"{kind}_{word}", printable(str(word)))

    def result(self, action: object, result: object) -> str:
        """A control action's result: ``stopped``, ``already exited``, a state, a fault mode."""
        if action == "fault":
            return self.term("mode", result)
        text = str(result)
        if text.startswith("already "):
            return self("result_already", state=self.term("process", text.removeprefix("already ")))
        return self.term("result", text)

    def detail(self, text: object) -> str:
        """A detail from the network or the OS in the chosen language, its numbers kept; one
        the catalogue does not know is the system's own words, marked so, made printable."""
        raw = printable(str(text))
        for pattern, key in DETAILS:
            if (match := pattern.fullmatch(raw)) is not None:
                fields = match.groupdict()
                for name in NESTED:
                    if name in fields:
                        fields[name] = self.detail(fields[name])
                if "action" in fields:  # a control action Docker refused: its word
                    fields["action"] = self.term("action", fields["action"])
                return self(key, **fields).rstrip()
        if (os_key := OS_WORDS.get(raw.lower())) is not None:
            return self(os_key)
        return self("system_words", text=raw)

    def reason(self, event: Mapping[str, Any]) -> str:
        """A state change's reason from its ``reason_code`` and fields, in the chosen language;
        the balancer's English ``reason`` for a code the catalogue lacks (a newer balancer's)
        or an event without the fields its code names."""
        reason = printable(str(event.get("reason") or "-"))
        key = f"reason_{event.get('reason_code')}"
        if not self.knows(key):
            return reason
        fields: dict[str, str] = {}
        for name in REASON_FIELDS:
            value = event.get(name)
            if value is None:
                continue
            said = self.detail(value) if name == "detail" else number(value)
            if said is not None:
                fields[name] = said
        try:
            return self(key, reason=reason, **fields)
        except KeyError:  # a field its sentence names is missing
            return reason

    @staticmethod
    def text_key(event: Mapping[str, Any]) -> str:
        """``ev_<kind>`` or a variant of it; ``ev_other`` for a kind the catalogue lacks (a
        newer balancer's), so an unknown kind is shown, never a crash."""
        kind = event.get("kind")
        if kind == "control" and event.get("ok") is False:
            return "ev_control_failed"
        if kind == "control" and event.get("via") == "dashboard":
            return "ev_control_dashboard"
        if kind == "state" and event.get("from") is None:
            return "ev_state_first"  # a server's first verdict: nothing to change from
        if kind == "rollout" and f"ev_rollout_{event.get('phase')}" in EN:
            return f"ev_rollout_{event.get('phase')}"  # started, done, failed; else a step
        if kind == "discovery" and f"ev_discovery_{event.get('action')}" in EN:
            return f"ev_discovery_{event.get('action')}"  # DNS: a lookup failed, answers...
        if kind == "algorithm_error" and event.get("returned") is not None:
            return "ev_algorithm_error_returned"  # a pick that returned no server of its own
        key = f"ev_{kind}"
        return key if key in EN else "ev_other"

    def sentence(self, event: Mapping[str, Any]) -> str:
        """The event in one line of the chosen language, printable whatever it carries."""
        values = {
            key: printable(str(event.get(key))) if event.get(key) is not None else "-"
            for key in EVENT_FIELDS
        }
        values["algorithm"] = self.term("alg", event.get("algorithm") or "-")
        servers = event.get("servers")
        values["servers"] = printable(", ".join(map(str, servers or {}))) or "-"
        kind = event.get("kind")
        if kind == "algorithm":
            values["from"] = self.term("alg", values["from"])
            values["to"] = self.term("alg", values["to"])
        elif kind == "state":
            values["reason"] = self.reason(event)
        elif kind in ("control", "discovery"):
            values["action"] = self.term("action", values["action"])
            if kind == "discovery" and event.get("reason") is not None:  # a lookup's failure
                values["reason"] = self.detail(event["reason"])
            if kind == "control" and event.get("ok") is False:  # a driver's or server's words
                values["result"] = self.detail(values["result"])
            elif kind == "control":
                values["result"] = self.result(event.get("action"), values["result"])
        elif kind == "rollout":
            values.update(self.rollout_fields(event))
        return self(self.text_key(event), **values)

    def rollout_fields(self, event: Mapping[str, Any]) -> dict[str, str]:
        """A rollout event's words: its strategy, step and, when it failed, why."""
        said = {
            "strategy": self.term("strategy", event.get("strategy")),
            "step": self.term("step", event.get("step")),
            "names": printable(str(event.get("names") or "-")),
            "position": printable(str(event.get("position"))),
            "total": printable(str(event.get("total"))),
            "why": self.detail(event.get("reason") or "-"),
        }
        key = f"rollout_why_{event.get('why')}"
        fields = {name: event.get(name) for name in ("in_flight", "seconds", "detail")}
        if self.knows(key):
            fields["detail"] = self.detail(fields["detail"] or "-")
            fields["server"] = printable(str(event.get("server")))
            with contextlib.suppress(KeyError, ValueError, TypeError):  # a field missing
                said["why"] = self(key, **fields)
        return said

    def retried(self, server: str, failed: str, count: int, seconds: float) -> str:
        """Requests that failed on ``failed`` and were answered by ``server`` meanwhile (the
        same server: sent again on a new connection, the pooled one having been closed)."""
        key = "resent" if server == failed else "retried"
        key += "_one" if count == 1 else ""
        names = {"server": printable(server), "failed": printable(failed)}
        return self(key, count=count, seconds=f"{seconds:g}", **names)

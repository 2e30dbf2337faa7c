"""Every word the dashboard shows, in Spanish and English (``--lang`` picks); the events'
sentences are the balancer's (services/balancer/messages.py)."""

from __future__ import annotations

from services.balancer.messages import EventText
from services.lang import Translator as BaseTranslator

EN: dict[str, str] = {
    "title": "ticslab · load balancer",
    # Server table columns.
    "col_server": "Server",
    "col_state": "State",
    "col_since": "For",
    "col_weight": "Wt",
    "col_share": "Share 10s",
    "col_rps": "Req/s",
    "col_busy": "Busy",
    "col_latency": "p50/p95ms",
    "col_responses": "2xx/4xx/5xx",
    "col_errors": "400/404/500",
    "col_check": "Check",
    "col_fault": "Fault",
    # Totals and status bar.
    "total_requests": "Requests",
    "total_errors": "Errors",
    "total_up": "Servers up",
    "compression": "compressed: {percent} of {before} ({saved} saved)",
    "compression_none": "compression on: nothing compressed yet",
    "algorithm": "Algorithm",
    "connected": "connected",
    "connecting": "connecting",
    "disconnected": "DISCONNECTED",
    "poll_error": "POLL ERROR",
    "every": "every {seconds}s",
    "paused": "PAUSED",
    "read_only_badge": "READ-ONLY",
    "banner_connecting": "Connecting to {url} ...",
    "banner_poll_error": (
        "POLL ERROR reading {url}: {reason}. Showing the last data received; "
        "polling again in {delay}s (attempt {attempt})."
    ),
    "banner_disconnected": (
        "DISCONNECTED from {url}: {reason}. Showing the last data received; "
        "retrying in {delay}s (attempt {attempt})."
    ),
    # Panels.
    "errors_title": "Errors by type",
    "errors_recent": "Most recent",
    "error_400": "bad request",
    "error_401": "unauthorized",
    "error_403": "forbidden",
    "error_404": "not found",
    "error_405": "method not allowed",
    "error_413": "content too large",
    "error_429": "too many requests",
    "error_500": "internal error",
    "error_502": "bad gateway",
    "error_503": "service unavailable",
    "error_504": "gateway timeout",
    "errors_none": "No errors yet.",
    "no_backend": "no server",
    "tasks_title": "Tasks: {count}",
    "tasks_none": "No tasks yet.",
    "tasks_unavailable": "Tasks unavailable (no server UP).",
    "events_title": "Events",
    # Keys (Footer and help).
    "key_toggle_n": "Start/stop server",
    "key_toggle": "Start/stop selected",
    "key_kill": "Kill (crash)",
    "key_pause": "Pause (hang)",
    "key_unpause": "Unpause",
    "key_drain": "Drain/ready",
    "key_maint": "Maintenance",
    "key_fault": "Fault mode",
    "key_weight": "Weight of the selected server: > adds 1, < takes 1 (0 to 256; 0: no new "
    "traffic)",
    "key_algorithm": "Next algorithm",
    "key_rollout": "Rolling restart of every server, one at a time (drain, restart, health, back)",
    "key_reset": "Reset stats",
    "key_add_server": "Add a task server (scale out)",
    "key_remove_server": "Remove the selected server (drained first: scale in)",
    "key_refresh_pause": "Pause refresh",
    "key_faster": "Faster",
    "key_slower": "Slower",
    "key_help": "Help",
    "key_charts": "Charts of the last 5 minutes / back to the tables",
    "short_charts": "Charts",
    "chart_requests": "Requests per second, per server",
    "chart_errors": "Errors per second, by type",
    "chart_latency": "p95 latency per server (ms)",
    "chart_now": "now",
    "chart_other": "other",
    "chart_waiting": "waiting for the first seconds of history",
    "chart_no_history": "this balancer keeps no history (/history)",
    "key_quit": "Quit",
    "key_next_panel": "Next panel: errors, tasks, events (under 100 columns, one at a time)",
    "key_columns": "Server table: traffic or detail columns (under 100 columns)",
    "keyname_space": "space",
    # Footer words (short: the footer must fit 100 columns).
    "short_toggle_n": "Start/stop",
    "short_kill": "Kill",
    "short_pause": "Hang",
    "short_drain": "Drain",
    "short_weight": "Weight",
    "short_algorithm": "Algorithm",
    "short_refresh_pause": "Pause",
    "short_next_panel": "Next panel",
    "short_columns": "Columns",
    # Buttons.
    "btn_toggle": "Start/stop",
    "btn_kill": "Kill",
    "btn_pause": "Pause",
    "btn_unpause": "Unpause",
    "btn_drain": "Drain/ready",
    "btn_maint": "Maint.",
    "btn_fault": "Fault…",
    "btn_algorithm": "Algorithm",
    "btn_reset": "Reset stats",
    # Notifications.
    "n_action_ok": "{server}: {action} → {result}",
    "n_algorithm": "Algorithm: {previous} → {algorithm}",
    "n_rollout": "{strategy} started: {servers}",
    "n_reset": "Statistics reset.",
    "n_added": "{server} added: it takes traffic after its first health check.",
    "n_removed": "{server} removed: drained, stopped and forgotten.",
    "n_fault": "{server}: fault mode is now {mode}.",
    "n_weight": "{server}: weight {previous} → {weight}",
    "n_weight_limit": "{server}: the weight is already {weight} (0 to 256).",
    "n_failed": "{what} failed: {message}",
    "n_worker_error": "{what} ended with an error: {message}",
    "n_bad_token": "{what} refused: wrong or missing token ({message}).",
    "n_conflict": "{what} is not possible with this driver: {message}",
    "n_driver": "{what}: the driver failed: {message}",
    "n_unreachable": "{what}: the balancer is unreachable ({message}).",
    "n_read_only": "Read-only dashboard: controls are disabled.",
    "n_no_server": "There is no server {number}.",
    "n_no_selection": "Select a server first (arrow keys).",
    "n_no_data": "No data from the balancer yet.",
    "n_charts_refused": "{pressed} ({action}) acts on the selected server, which the charts hide: "
    "press c to go back to the table first.",
    "n_refresh_paused": "Refresh paused (space resumes).",
    "n_refresh_resumed": "Refresh resumed.",
    "n_refresh_rate": "Refreshing every {seconds}s.",
    # Help screen.
    "help_title": "Keys",
    "help_intro": "Control keys act on server N (1-9) or on the selected row (arrow keys).",
    "help_read_only": "READ-ONLY, for the projector: this screen only watches; the keys "
    "that change servers are struck through and send nothing. Control is for the teacher's "
    "own dashboard, started with the token (ticslab dashboard finds it on the machine that "
    "runs the stack, or --token / TICSLAB_TOKEN).",
    "help_close": "Escape or ? closes this help.",
    "help_states": "States: UP serves traffic; DOWN failed its checks or was stopped; "
    "DRAIN finishes its requests and takes no new ones; MAINT is out of rotation; EJECTED "
    "answered too many 5xx in a row and is out for a while (outlier ejection); NEW just "
    "appeared (a replica scaled up) and takes no traffic until its first check passes.",
    "help_columns": "Columns",
    "legend_server": "the number key that acts on it (1-9) and its name",
    "legend_state": "UP, DOWN, DRAIN, MAINT, EJECTED or NEW (see States)",
    "legend_since": "how long it has been in that state",
    "legend_weight": "its weight: its part of new traffic (0: none); ↗ while a slow start "
    "ramps it up",
    "legend_share": "its part of the requests of the last 10 s among the servers taking new "
    "traffic (together 100 %); 0 at once when it takes none (not UP, or weight 0)",
    "legend_rps": "requests per second over the last 10 s and their trend over 20 s; 0 at "
    "once when it takes no new traffic",
    "legend_busy": "requests in flight: sent to it, not answered yet",
    "legend_latency": "answer time over the last 60 s: half took at most p50 ms, 95 in 100 "
    "at most p95 ms (- when none)",
    "legend_responses": "answers by class: success, client error, server error",
    "legend_errors": "errors by status: bad request, not found, internal error",
    "legend_check": "its last health check: ✓ or ✗ and the HTTP status",
    "legend_fault": "the fault mode set on it (f), shown only while one is on (nolock in red: "
    "it loses tasks)",
    # Fault screen.
    "fault_title": "Fault mode for {server}",
    "fault_none": "none: healthy",
    "fault_error": "error: half of the answers are 500",
    "fault_latency": "latency: +{ms} ms per request",
    "fault_hang": "hang: no answer for {max_seconds} s",
    "fault_unhealthy": "unhealthy: /health answers 503",
    "fault_nolock": (
        "nolock: writes tasks.json without the file lock — LOSES TASKS on purpose "
        "(race-condition lesson)"
    ),
    "cancel": "Cancel",
}

ES: dict[str, str] = {
    "title": "ticslab · balanceador de carga",
    "col_server": "Servidor",
    "col_state": "Estado",
    "col_since": "Tiempo",
    "col_weight": "Peso",
    "col_share": "Parte 10 s",
    "col_rps": "Sol/s",
    "col_busy": "Carga",
    "col_latency": "p50/p95ms",
    "col_responses": "2xx/4xx/5xx",
    "col_errors": "400/404/500",
    "col_check": "Salud",
    "col_fault": "Falla",
    "total_requests": "Solicitudes",
    "total_errors": "Errores",
    "total_up": "Servidores UP",
    "compression": "comprimido: {percent} de {before} ({saved} ahorrados)",
    "compression_none": "compresión activa: nada comprimido aún",
    "algorithm": "Algoritmo",
    "connected": "conectado",
    "connecting": "conectando",
    "disconnected": "DESCONECTADO",
    "poll_error": "ERROR DE LECTURA",
    "every": "cada {seconds}s",
    "paused": "EN PAUSA",
    "read_only_badge": "SOLO LECTURA",
    "banner_connecting": "Conectando con {url} ...",
    "banner_poll_error": (
        "ERROR DE LECTURA de {url}: {reason}. Se muestran los últimos datos recibidos; "
        "nueva lectura en {delay}s (intento {attempt})."
    ),
    "banner_disconnected": (
        "DESCONECTADO de {url}: {reason}. Se muestran los últimos datos recibidos; "
        "reintento en {delay}s (intento {attempt})."
    ),
    "errors_title": "Errores por tipo",
    "errors_recent": "Más recientes",
    "error_400": "inválida",
    "error_401": "sin autorización",
    "error_403": "prohibido",
    "error_404": "no encontrado",
    "error_405": "método no permitido",
    "error_413": "cuerpo muy grande",
    "error_429": "demasiadas solicitudes",
    "error_500": "error interno",
    "error_502": "puerta de enlace",
    "error_503": "no disponible",
    "error_504": "tiempo agotado",
    "errors_none": "Aún no hay errores.",
    "no_backend": "sin servidor",
    "tasks_title": "Tareas: {count}",
    "tasks_none": "Aún no hay tareas.",
    "tasks_unavailable": "Tareas no disponibles (ningún servidor UP).",
    "events_title": "Eventos",
    "key_toggle_n": "Iniciar/detener servidor",
    "key_toggle": "Iniciar/detener seleccionado",
    "key_kill": "Matar (caída)",
    "key_pause": "Congelar",
    "key_unpause": "Descongelar",
    "key_drain": "Drenar/listo",
    "key_maint": "Mantención",
    "key_fault": "Modo de falla",
    "key_weight": "Peso del servidor seleccionado: > suma 1, < resta 1 (0 a 256; 0: sin "
    "tráfico nuevo)",
    "key_algorithm": "Siguiente algoritmo",
    "key_rollout": "Reinicio gradual de todos los servidores, uno a la vez (drenar, reiniciar, "
    "chequeo de salud, volver)",
    "key_reset": "Poner a cero las estadísticas",
    "key_add_server": "Agregar un servidor de tareas (escalar)",
    "key_remove_server": "Quitar el servidor seleccionado (se drena antes: desescalar)",
    "key_refresh_pause": "Pausar refresco",
    "key_faster": "Más rápido",
    "key_slower": "Más lento",
    "key_help": "Ayuda",
    "key_charts": "Gráficos de los últimos 5 minutos / volver a las tablas",
    "short_charts": "Gráficos",
    "chart_requests": "Solicitudes por segundo, por servidor",
    "chart_errors": "Errores por segundo, por tipo",
    "chart_latency": "Latencia p95 por servidor (ms)",
    "chart_now": "ahora",
    "chart_other": "otros",
    "chart_waiting": "esperando los primeros segundos de historia",
    "chart_no_history": "este balanceador no guarda historia (/history)",
    "key_quit": "Salir",
    "key_next_panel": "Panel siguiente: errores, tareas, eventos (con menos de 100 columnas, "
    "uno a la vez)",
    "key_columns": "Tabla de servidores: columnas de tráfico o de detalle (con menos de 100 "
    "columnas)",
    "keyname_space": "espacio",
    "short_toggle_n": "Iniciar/detener",
    "short_kill": "Matar",
    "short_pause": "Congelar",
    "short_drain": "Drenar",
    "short_weight": "Peso",
    "short_algorithm": "Algoritmo",
    "short_refresh_pause": "Pausa",
    "short_next_panel": "Otro panel",
    "short_columns": "Columnas",
    "btn_toggle": "Iniciar/detener",
    "btn_kill": "Matar",
    "btn_pause": "Congelar",
    "btn_unpause": "Descong.",
    "btn_drain": "Drenar",
    "btn_maint": "Mant.",
    "btn_fault": "Falla…",
    "btn_algorithm": "Algoritmo",
    "btn_reset": "Estad. a 0",
    "n_action_ok": "{server}: {action} → {result}",
    "n_algorithm": "Algoritmo: {previous} → {algorithm}",
    "n_rollout": "{strategy} iniciado: {servers}",
    "n_reset": "Estadísticas puestas a cero.",
    "n_added": "{server} agregado: recibe tráfico tras su primer chequeo de salud.",
    "n_removed": "{server} quitado: drenado, detenido y olvidado.",
    "n_fault": "{server}: el modo de falla ahora es {mode}.",
    "n_weight": "{server}: peso {previous} → {weight}",
    "n_weight_limit": "{server}: el peso ya es {weight} (0 a 256).",
    "n_failed": "{what} falló: {message}",
    "n_worker_error": "{what} terminó con un error: {message}",
    "n_bad_token": "{what} rechazado: token incorrecto o ausente ({message}).",
    "n_conflict": "{what} no es posible con este driver: {message}",
    "n_driver": "{what}: falló el driver: {message}",
    "n_unreachable": "{what}: no se puede contactar al balanceador ({message}).",
    "n_read_only": "Panel de solo lectura: los controles están desactivados.",
    "n_no_server": "No existe el servidor {number}.",
    "n_no_selection": "Primero selecciona un servidor (flechas).",
    "n_no_data": "Aún no hay datos del balanceador.",
    "n_charts_refused": "{pressed} ({action}) actúa sobre el servidor seleccionado, que los "
    "gráficos ocultan: primero presiona c para volver a la tabla.",
    "n_refresh_paused": "Refresco en pausa (espacio lo reanuda).",
    "n_refresh_resumed": "Refresco reanudado.",
    "n_refresh_rate": "Refresco cada {seconds}s.",
    "help_title": "Teclas",
    "help_intro": "Las teclas de control actúan sobre el servidor N (1-9) o sobre la fila "
    "seleccionada (flechas).",
    "help_read_only": "SOLO LECTURA, para el proyector: esta pantalla solo observa; las "
    "teclas que cambian servidores aparecen tachadas y no envían nada. El control es para el "
    "panel del docente, iniciado con el token (ticslab dashboard lo encuentra en el "
    "equipo que ejecuta el laboratorio, o --token / TICSLAB_TOKEN).",
    "help_close": "Escape o ? cierra esta ayuda.",
    "help_states": "Estados: UP atiende tráfico; DOWN falló sus chequeos o fue detenido; "
    "DRAIN termina sus solicitudes y no recibe nuevas; MAINT está fuera de rotación; EJECTED "
    "(EXPULSADO) respondió demasiados 5xx seguidos y queda fuera un rato; NEW (NUEVO) acaba "
    "de aparecer (una réplica más) y no recibe tráfico hasta pasar su primer chequeo.",
    "help_columns": "Columnas",
    "legend_server": "la tecla numérica que actúa sobre él (1-9) y su nombre",
    "legend_state": "UP, DOWN, DRAIN, MAINT, EJECTED o NEW (ver Estados)",
    "legend_since": "cuánto tiempo lleva en ese estado",
    "legend_weight": "su peso: su parte del tráfico nuevo (0: nada); ↗ mientras un arranque "
    "lento lo hace subir",
    "legend_share": "su parte de las solicitudes de los últimos 10 s entre los servidores que "
    "reciben tráfico nuevo (suman 100 %); 0 de inmediato cuando no recibe (no está UP, o peso 0)",
    "legend_rps": "solicitudes por segundo en los últimos 10 s y su tendencia en 20 s; 0 de "
    "inmediato cuando no recibe tráfico nuevo",
    "legend_busy": "solicitudes en curso: enviadas a él, aún sin respuesta",
    "legend_latency": "tiempo de respuesta en los últimos 60 s: la mitad tardó a lo más p50 ms, "
    "95 de cada 100 a lo más p95 ms (- si no hubo)",
    "legend_responses": "respuestas por clase: éxito, error del cliente, error del servidor",
    "legend_errors": "errores por código: solicitud inválida, no encontrado, error interno",
    "legend_check": "su último chequeo de salud: ✓ o ✗ y el código HTTP",
    "legend_fault": "el modo de falla que tiene puesto (f), visible solo mientras hay uno "
    "(sin candado en rojo: pierde tareas)",
    "fault_title": "Modo de falla de {server}",
    "fault_none": "ninguna: sano",
    "fault_error": "error: la mitad de las respuestas son 500",
    "fault_latency": "latencia: +{ms} ms por solicitud",
    "fault_hang": "cuelgue: sin respuesta por {max_seconds} s",
    "fault_unhealthy": "no saludable: /health responde 503",
    "fault_nolock": (
        "sin candado: escribe tasks.json sin el bloqueo de archivo — PIERDE TAREAS a propósito "
        "(lección de condiciones de carrera)"
    ),
    "cancel": "Cancelar",
}

CATALOGS: dict[str, dict[str, str]] = {"en": EN, "es": ES}


class Translator(BaseTranslator):
    """The dashboard's catalogue; the balancer's words and event sentences come from the
    balancer's own (``events``: services/balancer/messages.py), so the log says them alike."""

    def __init__(self, lang: str) -> None:
        super().__init__(CATALOGS, lang)
        self.events = EventText(self.lang)

    def term(self, kind: str, word: object) -> str:
        """A word in the chosen language: ``<kind>_<word>`` from this catalogue (``keyname``),
        else a word the balancer sends (``EventText.term``: as sent when it is unknown)."""
        key = f"{kind}_{word}"
        return self(key) if key in EN else self.events.term(kind, word)

    def error_type(self, kind: str) -> str:
        """A course error type (``400_BAD_REQUEST``) as its code and its name in the chosen
        language (``400 bad request``); a type the catalogue lacks keeps its own words."""
        code, _, name = kind.partition("_")
        label = f"error_{code}"
        return f"{code} {self.word(label, name.replace('_', ' ').lower())}"

    def result(self, action: object, result: object) -> str:
        """A control action's result: ``stopped``, ``already exited``, a state, a fault mode."""
        return self.events.result(action, result)

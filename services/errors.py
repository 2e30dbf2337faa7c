"""The sentences of every API error the task servers and the balancer answer, by ``code``.

One catalogue for both services: several codes are shared (a foreign Host, a wrong token, a
wrong method, a body too large), and ``docs/api.md`` lists them all in one table. A body is
built only by ``services.web.json_error``: ``{"error": sentence, "code": code, **fields}``,
the fields filling the sentence in and staying in the body, so scripts read ``code`` and the
fields and never the prose (which follows ``Accept-Language``, else the process's language).
"""

from __future__ import annotations

from services.lang import Catalogue

_EXAMPLE_EN = 'send JSON like {{"title": "comprar pan"}}'
_EXAMPLE_ES = 'envía JSON como {{"title": "comprar pan"}}'
_JSON_HINT_EN = "send it with the header 'Content-Type: application/json'"
_JSON_HINT_ES = "envíalo con el encabezado 'Content-Type: application/json'"

ERRORS: Catalogue = {
    "en": {
        # Shared by both services.
        "route_not_found": "there is no route {method} {path}; try GET /tareas, GET /api/tasks "
        "or GET /health",
        "control_not_found": "there is no route {method} {path}; GET /control lists the "
        "servers and their actions",
        "method_not_allowed": "method {method} is not allowed on {path}; use {allowed}",
        "body_too_large": "the body is larger than {limit_bytes} bytes; send a smaller one",
        "foreign_host": "Host {host!r} is not an allowed name for control requests: use "
        "127.0.0.1 or localhost, or allow it with --allowed-host (TICSLAB_ALLOWED_HOSTS)",
        "bad_token": "missing or wrong token: send 'Authorization: Bearer <token>' "
        "(the token is in the token file or TICSLAB_TOKEN)",
        # The task server: input.
        "not_json": f"the Content-Type is {{content_type!r}}, not application/json; "
        f"{_JSON_HINT_EN}",
        "body_empty": f"the body is empty; {_EXAMPLE_EN}",
        "body_not_utf8": "the body is not valid UTF-8 text",
        "body_not_json": f"the body is not valid JSON ({{detail}}); {_EXAMPLE_EN}",
        "body_not_object": f"the body must be a JSON object, not of type {{type}}; {_EXAMPLE_EN}",
        "field_missing": f"the field {{field!r}} is missing; {_EXAMPLE_EN}",
        "unknown_fields": "unknown fields {fields}; a task takes only 'title' and 'completed'",
        "nothing_to_change": 'nothing to change; send {{"title": "..."}} and/or '
        '{{"completed": true}}',
        "title_not_text": "'title' must be text, not of type {type}",
        "title_empty": "'title' must not be empty",
        "title_too_long": "'title' has {length} characters; the maximum is {maximum}",
        "completed_not_bool": "'completed' must be true or false, not of type {type}",
        "bad_order": "'order' must be asc (oldest first) or desc (newest first), not {value!r}",
        "bad_offset": "'offset' must be a whole number (0 or more), not {value!r}",
        "bad_limit": "'limit' must be a whole number from 0 to {maximum}, not {value!r}",
        "bad_idempotency_key": "the Idempotency-Key header must be 1 to {maximum} visible "
        "ASCII characters",
        "two_idempotency_keys": "send one Idempotency-Key header, not {count}: the server "
        "does not guess which one you meant",
        # The task server: tasks, the file, faults, admin.
        "task_not_found": "there is no task with id {id!r}",
        "key_reused": "this Idempotency-Key was already used to create a different task; "
        "send a new key with each new task",
        "tasks_file_busy": "the tasks file is busy: this write waited more than {seconds:g} s "
        "for the writes before it",
        "tasks_file_error": "the tasks file cannot be used: {tasks_file}: {problem}",
        "tasks_journal_damaged": "the tasks file was not repaired: {tasks_file}: {problem}",
        "task_ids_unrecorded": "new tasks are refused, so that no id is given twice: "
        "{tasks_file}: {problem}",
        "storage_unavailable": "the task database cannot be used now: {storage}: {problem}; "
        "try again shortly",
        "storage_timeout": "the task database did not finish in time: {storage}: {problem}; "
        "try again shortly",
        "storage_error": "the task database refused the change: {storage}: {problem}",
        "storage_busy": "the task database is busy: this write waited more than {seconds:g} s "
        "for the writes before it",
        "simulated_error": "simulated error: requested by {endpoint}",
        "unexpected_error": "unexpected server error: {type}",
        "fault_injected": "fault injected: mode 'error' fails {rate:.0%} of requests",
        "bad_fault_mode": "'mode' must be one of {modes}",
        "bad_fault_number": "{name!r} must be a number from {low:g} to {high:g}",
        "admin_off": "admin routes (fault, quiesce) are off: start the server with "
        "TICSLAB_TOKEN set",
        "bad_quiesce": 'send JSON like {{"seconds": 2}}, with no other field',
        "bad_quiesce_seconds": "'seconds' must be above 0 and at most {maximum:g}",
        "writes_not_held": "writes were not held: a write here waited over {seconds:g} s for "
        "the tasks file lock",
        # The balancer: its own routes.
        "host_repeated": "more than one Host header",
        "host_missing": "an HTTP/1.1 request needs a Host header",
        "bad_format": "format must be html or json, not {value!r}",
        "bad_history_since": "since must be unix seconds: a number, 0 or more, of at most 32 "
        "characters; not {value!r}",
        "bad_event_since": "since must be an event id (an integer), not {value!r}",
        "no_server_up": "no task server is UP",
        # The balancer: /control.
        "admin_via_control": "the task servers' /admin routes are not reachable through the "
        "balancer: use /control (PUT /control/servers/{{name}}/fault), which records every "
        "change",
        "unknown_server": "no server named {server!r} (servers: {servers})",
        "unknown_action": "unknown action {action!r}; one of {actions}",
        "driver_unsupported": "the {driver} driver cannot do this: {detail}",
        "driver_failed": "the {driver} driver failed: {detail}",
        "bad_fault_body": 'send a JSON object like {{"mode": "error", "rate": 0.5}}; mode one '
        "of {modes}",
        "fault_not_taken": "{server} did not take the fault: {detail}",
        "fault_refused": "{server} refused the fault ({upstream_status}): {detail}",
        "bad_algorithm": 'send {{"algorithm": NAME}} with NAME one of {algorithms}',
        "algorithm_failed": "the algorithm could not start, the current one stays: {detail}",
        "bad_weight_body": 'send a JSON object with one field, like {{"weight": 3}}',
        "bad_weight": 'send {{"weight": N}}: a weight is a whole number from 0 to {maximum}',
        "bad_scale_body": "send a JSON object with no fields but {fields}, like "
        '{{"name": "server3", "weight": 1}} or {{}}',
        "bad_server_name": "a server name is a letter then up to 31 letters, digits, _ or -",
        "server_exists": "there is already a server named {server!r}",
        "too_many_servers": "there are {count} servers already, the most this lab allows "
        "({maximum})",
        "last_server": "{server} is the last server: removing it would leave nothing to "
        "answer; add another one first",
        "bad_rollout_body": 'send a JSON object like {{"strategy": "rolling"}} (strategy one of '
        "{strategies}; optional drain_seconds, health_seconds and options, flags {flags}): "
        "{detail}",
        "rollout_running": "a rollout is running already; GET /control/rollout shows it",
        # The balancer: proxied requests.
        "bad_target": "the request target must be a path such as /tareas",
        "redirect_bad_host": "this port redirects to HTTPS, but the Host {host!r} is not a "
        "name or address to redirect to: send one Host such as localhost",
        "target_fragment": "the request target must not contain a fragment (#)",
        "target_host_differs": "the request target's host differs from the Host header",
        "header_not_utf8": "a header value is not UTF-8 text",
        "websocket": "the balancer does not proxy WebSocket connections",
        "upgrade_with_body": "protocol upgrades with a body are not supported: use HTTP/1.1",
        "no_server": "no task server available",
        "upstream_reset": "the task server closed the connection without answering",
        "upstream_timeout": "the task server did not answer in time",
        "bad_upstream_status": "{server} answered status {upstream_status}, which is not proxied",
        "bad_upstream_answer": "{server} answered something that is not HTTP",
        # The balancer: its connections (the process's language: no header is read yet).
        "too_many_connections": "too many connections: try again in a moment",
        "headers_too_large": "request header section over {limit_bytes} bytes",
        "unparsable": "invalid HTTP request: it could not be parsed",
        "headers_timeout": "request headers not received within {seconds:g} s",
        "body_timeout": "request body paused for more than {seconds:g} s",
        # The balancer: authentication at the edge (--auth-users).
        "auth_required": "user name and password needed: send them as HTTP Basic "
        "(curl -u USER:PASSWORD)",
        "auth_failed": "wrong user name or password",
        "auth_too_many": "too many failed logins from your address: try again in {seconds} s",
        "auth_busy": "too many logins being checked at once: try again in a moment",
    },
    "es": {
        "route_not_found": "no existe la ruta {method} {path}; prueba GET /tareas, GET "
        "/api/tasks o GET /health",
        "control_not_found": "no existe la ruta {method} {path}; GET /control lista los "
        "servidores y sus acciones",
        "method_not_allowed": "el método {method} no está permitido en {path}; usa {allowed}",
        "body_too_large": "el cuerpo pesa más de {limit_bytes} bytes; envía uno más pequeño",
        "foreign_host": "Host {host!r} no es un nombre permitido para solicitudes de control: "
        "usa 127.0.0.1 o localhost, o permítelo con --allowed-host (TICSLAB_ALLOWED_HOSTS)",
        "bad_token": "falta el token o no es el correcto: envía 'Authorization: Bearer "
        "<token>' (el token está en el archivo de token o en TICSLAB_TOKEN)",
        "not_json": f"el Content-Type es {{content_type!r}}, no application/json; {_JSON_HINT_ES}",
        "body_empty": f"el cuerpo está vacío; {_EXAMPLE_ES}",
        "body_not_utf8": "el cuerpo no es texto UTF-8 válido",
        "body_not_json": f"el cuerpo no es JSON válido ({{detail}}); {_EXAMPLE_ES}",
        "body_not_object": f"el cuerpo debe ser un objeto JSON, no de tipo {{type}}; {_EXAMPLE_ES}",
        "field_missing": f"falta el campo {{field!r}}; {_EXAMPLE_ES}",
        "unknown_fields": "campos desconocidos {fields}; una tarea solo lleva 'title' y "
        "'completed'",
        "nothing_to_change": 'no hay nada que cambiar; envía {{"title": "..."}} y/o '
        '{{"completed": true}}',
        "title_not_text": "'title' debe ser texto, no de tipo {type}",
        "title_empty": "'title' no puede estar vacío",
        "title_too_long": "'title' tiene {length} caracteres; el máximo es {maximum}",
        "completed_not_bool": "'completed' debe ser true o false, no de tipo {type}",
        "bad_order": "'order' debe ser asc (las más antiguas primero) o desc (las más nuevas "
        "primero), no {value!r}",
        "bad_offset": "'offset' debe ser un número entero (0 o más), no {value!r}",
        "bad_limit": "'limit' debe ser un número entero de 0 a {maximum}, no {value!r}",
        "bad_idempotency_key": "el encabezado Idempotency-Key debe tener de 1 a {maximum} "
        "caracteres ASCII visibles",
        "two_idempotency_keys": "envía un solo encabezado Idempotency-Key, no {count}: el "
        "servidor no adivina cuál quisiste usar",
        "task_not_found": "no existe una tarea con id {id!r}",
        "key_reused": "esta Idempotency-Key ya se usó para crear otra tarea; envía una clave "
        "nueva con cada tarea nueva",
        "tasks_file_busy": "el archivo de tareas está ocupado: esta escritura esperó más de "
        "{seconds:g} s a las anteriores",
        "tasks_file_error": "no se puede usar el archivo de tareas: {tasks_file}: {problem}",
        "tasks_journal_damaged": "el archivo de tareas no se reparó: {tasks_file}: {problem}",
        "task_ids_unrecorded": "se rechazan tareas nuevas, para que ningún id se entregue dos "
        "veces: {tasks_file}: {problem}",
        "storage_unavailable": "no se puede usar la base de datos de tareas ahora: {storage}: "
        "{problem}; intenta de nuevo en un momento",
        "storage_timeout": "la base de datos de tareas no terminó a tiempo: {storage}: "
        "{problem}; intenta de nuevo en un momento",
        "storage_error": "la base de datos de tareas rechazó el cambio: {storage}: {problem}",
        "storage_busy": "la base de datos de tareas está ocupada: esta escritura esperó más de "
        "{seconds:g} s a las anteriores",
        "simulated_error": "error simulado: lo pidió {endpoint}",
        "unexpected_error": "error inesperado del servidor: {type}",
        "fault_injected": "falla inyectada: el modo 'error' hace fallar el {rate:.0%} de las "
        "solicitudes",
        "bad_fault_mode": "'mode' debe ser uno de {modes}",
        "bad_fault_number": "{name!r} debe ser un número de {low:g} a {high:g}",
        "admin_off": "las rutas de administración (fault, quiesce) están desactivadas: inicia "
        "el servidor con TICSLAB_TOKEN definido",
        "bad_quiesce": 'envía JSON como {{"seconds": 2}}, sin ningún otro campo',
        "bad_quiesce_seconds": "'seconds' debe ser mayor que 0 y como máximo {maximum:g}",
        "writes_not_held": "no se retuvieron las escrituras: una escritura aquí esperó más de "
        "{seconds:g} s el bloqueo del archivo de tareas",
        "host_repeated": "hay más de un encabezado Host",
        "host_missing": "una solicitud HTTP/1.1 necesita un encabezado Host",
        "bad_format": "format debe ser html o json, no {value!r}",
        "bad_history_since": "since debe ser segundos unix: un número, 0 o más, de a lo más 32 "
        "caracteres; no {value!r}",
        "bad_event_since": "since debe ser un id de evento (un número entero), no {value!r}",
        "no_server_up": "ningún servidor de tareas está UP",
        "admin_via_control": "las rutas /admin de los servidores de tareas no se alcanzan a "
        "través del balanceador: usa /control (PUT /control/servers/{{name}}/fault), que "
        "registra cada cambio",
        "unknown_server": "no hay un servidor llamado {server!r} (servidores: {servers})",
        "unknown_action": "acción desconocida {action!r}; una de {actions}",
        "driver_unsupported": "el driver {driver} no puede hacer esto: {detail}",
        "driver_failed": "el driver {driver} falló: {detail}",
        "bad_fault_body": 'envía un objeto JSON como {{"mode": "error", "rate": 0.5}}; mode '
        "uno de {modes}",
        "fault_not_taken": "{server} no aceptó la falla: {detail}",
        "fault_refused": "{server} rechazó la falla ({upstream_status}): {detail}",
        "bad_algorithm": 'envía {{"algorithm": NOMBRE}} con NOMBRE uno de {algorithms}',
        "algorithm_failed": "el algoritmo no pudo iniciar, sigue el actual: {detail}",
        "bad_weight_body": 'envía un objeto JSON con un solo campo, como {{"weight": 3}}',
        "bad_weight": 'envía {{"weight": N}}: un peso es un número entero de 0 a {maximum}',
        "bad_scale_body": "envía un objeto JSON sin otros campos que {fields}, como "
        '{{"name": "server3", "weight": 1}} o {{}}',
        "bad_server_name": "un nombre de servidor es una letra y hasta 31 letras, dígitos, _ o -",
        "server_exists": "ya hay un servidor llamado {server!r}",
        "too_many_servers": "ya hay {count} servidores, el máximo que permite este laboratorio "
        "({maximum})",
        "last_server": "{server} es el último servidor: quitarlo no dejaría a nadie que "
        "responda; agrega otro primero",
        "bad_rollout_body": 'envía un objeto JSON como {{"strategy": "rolling"}} (strategy uno '
        "de {strategies}; opcionales drain_seconds, health_seconds y options, opciones {flags})"
        ": {detail}",
        "rollout_running": "ya hay un despliegue en curso; GET /control/rollout lo muestra",
        "bad_target": "el destino de la solicitud debe ser una ruta como /tareas",
        "redirect_bad_host": "este puerto redirige a HTTPS, pero el Host {host!r} no es un "
        "nombre ni una dirección a la que redirigir: envía un solo Host, como localhost",
        "target_fragment": "el destino de la solicitud no puede contener un fragmento (#)",
        "target_host_differs": "el host del destino de la solicitud no es el del encabezado Host",
        "header_not_utf8": "el valor de un encabezado no es texto UTF-8",
        "websocket": "el balanceador no reenvía conexiones WebSocket",
        "upgrade_with_body": "no se admiten cambios de protocolo con cuerpo: usa HTTP/1.1",
        "no_server": "no hay ningún servidor de tareas disponible",
        "upstream_reset": "el servidor de tareas cerró la conexión sin responder",
        "upstream_timeout": "el servidor de tareas no respondió a tiempo",
        "bad_upstream_status": "{server} respondió el estado {upstream_status}, que no se reenvía",
        "bad_upstream_answer": "{server} respondió algo que no es HTTP",
        "too_many_connections": "demasiadas conexiones: intenta de nuevo en un momento",
        "headers_too_large": "los encabezados de la solicitud pasan de {limit_bytes} bytes",
        "unparsable": "solicitud HTTP inválida: no se pudo interpretar",
        "headers_timeout": "los encabezados de la solicitud no llegaron en {seconds:g} s",
        "body_timeout": "el cuerpo de la solicitud se detuvo por más de {seconds:g} s",
        "auth_required": "se necesita usuario y contraseña: envíalos como HTTP Basic "
        "(curl -u USUARIO:CONTRASEÑA)",
        "auth_failed": "usuario o contraseña incorrectos",
        "auth_too_many": "demasiados intentos fallidos desde tu dirección: intenta de nuevo en "
        "{seconds} s",
        "auth_busy": "hay demasiados inicios de sesión en revisión: intenta de nuevo en un momento",
    },
}

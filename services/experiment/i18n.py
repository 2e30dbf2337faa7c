"""Every sentence ``ticslab experiment`` shows a person, in English and Spanish.

The reports (terminal, ``--html``, the text fields of ``--json``) and the command's messages
take their words from here through ``services.lang.Translator``; JSON keys and the names of
runs in it stay English, for scripts. The Spanish uses the handout's own names for the
algorithms and "solicitudes" for requests.
"""

from __future__ import annotations

from services.lang import Catalogue

CATALOGUE: Catalogue = {
    "en": {
        # The command's messages.
        "starting": "ticslab experiment {name}: starting a throwaway stack on free ports",
        "measuring": "measuring ({repeat} runs)...",
        "bad_flags": "ticslab experiment {name}: {problems}",
        "failed": "ticslab experiment {name}: {error}",
        "summary": "ticslab experiment {name}: {seconds} s, {repeat} runs",
        "wrote": "; wrote {files}",
        "problem_range": "{flag} is {low} to {high}",
        "problem_kill_at": "--kill-at is 0 or more, and less than --seconds",
        "problem_storage": "--storage is a PostgreSQL server's postgresql:// URL",
        "problem_psycopg": "--storage needs the PostgreSQL driver: {install}",
        "problem_folder": "--{flag} {path}: there is no folder {folder}",
        # Why a throwaway stack could not be started or driven.
        "lab_start": "could not start the experiment's stack: {error}",
        "lab_ports": "found no {count} consecutive free ports on {host}",
        "lab_not_up": "the servers did not all come UP within {seconds} s: {states}",
        "lab_rollout": "the {strategy} rollout did not end (its state: {state})",
        "lab_database": "could not make a throwaway database on {url} (its user needs "
        "CREATEDB): {error}",
        "lab_no_answer": "{method} {path} got no answer: {error}",
        "lab_refused": "{method} {path} answered {status}: {body}",
        "lab_source": "cannot send from {address} ({reason}); on macOS add it first: "
        "sudo ifconfig lo0 alias {address} up",
        # Claims.
        "handout_says": "The handout says",
        "lab_shows": "The lab shows",
        "held": "✔ held",
        "not_held": "✘ did not hold",
        "unit_points": "points",
        "claim_detail": "{against}: worst of {runs} runs {figure}, required {op} {required}, "
        "margin {margin}",
        "claim_round_robin_even": "Round Robin distributes the requests in turn: each server "
        "gets 50 % ± {tolerance} points",
        "against_round_robin_even": "each server's distance from 50 %, in points",
        "claim_response_time_p95": "Response time fits servers of different speeds: with "
        "server2 {slow_ms} ms slower, its p95 is at least {required} % below Random's and "
        "Round Robin's",
        "claim_least_connections_fewer": "Least connections sends the slow server fewer "
        "requests: its share is at least {required} points below Round Robin's, since it holds "
        "its requests longer",
        "against_slow_share": "how much lower server2's share is than with Round Robin in the "
        "same run",
        "against_p95": "how much lower than the lower p95 of Random and Round Robin in the "
        "same run",
        "claim_ip_hash_affinity": "IP hash sends every request from one address to the same server",
        "against_affinity": "the share of each address's requests on its most used server",
        "claim_locked_keeps_all": "With the file lock, every task answered 201 is in tasks.json",
        "against_lost": "tasks answered 201 that tasks.json does not hold",
        "claim_unlocked_loses": "Without the lock, concurrent writers lose at least "
        "{required} % of the tasks answered 201",
        "claim_transaction_keeps_all": "In PostgreSQL, with a transaction per create, every "
        "task answered 201 is in the database",
        "claim_no_transaction_loses": "In PostgreSQL, without a transaction (SELECT max(id) + 1, "
        "then a write), concurrent writers lose at least {required} % of the tasks answered 201",
        "against_lost_database": "tasks answered 201 that the database does not hold",
        "against_lost_share_database": "tasks answered 201 that the database does not hold, as "
        "a share of them",
        "against_lost_share": "tasks answered 201 that tasks.json does not hold, as a share "
        "of them",
        "claim_retries_hide_crash": "If a server fails, the system keeps working: the balancer "
        "sends the requests to the remaining server (with retries, no request failed)",
        "claim_no_retries_show": "With --retries 0, clients see the requests that were on the "
        "dead server fail",
        "against_failed": "requests that failed (no answer or an error status)",
        "claim_nothing_lost": "No task answered 201 is lost, with or without retries",
        "claim_rolling_no_failures": "Deployments with no downtime: a rolling restart of every "
        "server fails no client request",
        "claim_rolling_completes": "The rolling restart reaches its end on every server",
        "against_done": "runs whose rollout ended done (1) rather than failed (0)",
        "claim_restart_shows": "Restarting every server at once, clients see failed requests",
        "claim_rollout_nothing_lost": "No task answered 201 is lost, in either strategy",
        # The rollout experiment.
        "rollout_title": "Rollout: every server restarted under load, {repeat} runs (min–max)",
        "rollout_params": "POSTs, {concurrency} at a time, each with {work_ms} ms of work, retries "
        "off, from "
        "{lead_seconds} s before each rollout until {lead_seconds} s after it",
        "strategy_rolling": "rolling",
        "strategy_restart": "all at once",
        "h_strategy": "Strategy",
        "h_requests": "Requests",
        "h_seconds": "Seconds",
        "rollout_chart": "Requests per run, mean: answered (green) and failed (red)",
        # The algorithms experiment.
        "algo_random": "Random",
        "algo_round_robin": "Round Robin",
        "algo_least_connections": "Least connections",
        "algo_response_time": "Response time",
        "algo_ip_hash": "IP hash",
        "algorithms_title": "Algorithms: share and latency, {repeat} runs (min–max)",
        "algorithms_params": "server2 answers {slow_ms} ms late; per algorithm and run "
        "{requests} reads, {concurrency} at a time, from {clients}",
        "one_address": "127.0.0.1",
        "addresses": "{count} addresses ({first}–{last})",
        "h_algorithm": "Algorithm",
        "h_errors": "Errors",
        "h_affinity": "Affinity",
        "affinity_legend": "Affinity 1.00: each client address always reached the same "
        "server (lowest of the runs)",
        "chart_share": "Share",
        "chart_p95": "p95 (ms, mean of the runs)",
        "pick_failures": "{name}: its pick failed {count} times, and Round Robin answered "
        "those requests (the balancer's /events say where)",
        "ip_fallback": "this system answers only on 127.0.0.1 (macOS?): every request comes "
        "from it. For IP hash over several addresses add them (sudo ifconfig lo0 alias "
        "127.0.0.2 up, and so on) and use --ip-clients K",
        "ip_hash_split": "IP hash put {counts}, always the same ones: it keeps affinity, it does "
        "not look at load",
        "ip_hash_count": "{count} client addresses on {server}",
        "ip_hash_one": "IP hash: every request came from 127.0.0.1, so {server} took them all. "
        "That is luck of the hash, not a lesson about load; several addresses show more: "
        "--ip-clients 6",
        "ip_hash_luck": "IP hash: all {count} client addresses hash to {server}. Which server "
        "takes them is luck of the hash, not a lesson about load; try another --ip-clients",
        # The race experiment.
        "race_title": "Race: tasks answered 201, stored and lost, {repeat} runs (min–max)",
        "race_params": "{clients} clients, {posts} POSTs each, all at once, per run",
        "storage_locked": "with lock",
        "storage_unlocked": "no lock",
        "storage_transaction": "PostgreSQL, transaction",
        "storage_no_transaction": "PostgreSQL, no transaction",
        "h_storage": "Storage",
        "h_sent": "Sent",
        "h_stored": "Stored",
        "h_lost": "Lost",
        "h_no_201": "No 201",
        "h_ids_twice": "Ids twice",
        "race_legend": "Ids twice: one id given to two tasks",
        "race_chart": "Stored (green) and lost (red), mean per run",
        "race_unanswered": "{count} POSTs got no 201 (neither stored nor lost)",
        "tasks_201": "tasks answered 201",
        # The failover experiment.
        "failover_title": "Failover: server1 killed under load, {repeat} runs (min–max)",
        "failover_params": "per run {seconds} s of POSTs, {concurrency} at a time, each with "
        "{work_ms} ms of work; server1 killed at {kill_at} s",
        "run_retries": "with retries",
        "run_no_retries": "no retries",
        "h_run": "Run",
        "h_retries": "Retries",
        "h_failed": "Failed",
        "h_failures": "Failures",
        "no_answer": "no answer",
        "timeline_title": "Answers every {bucket} s, all runs added (red: some failed)",
        "kill_marker": "{kill_at} s: kill server1",
        # HTML.
        "results": "Results",
    },
    "es": {
        "starting": "ticslab experiment {name}: levantando un stack desechable en puertos libres",
        "measuring": "midiendo ({repeat} corridas)...",
        "bad_flags": "ticslab experiment {name}: {problems}",
        "failed": "ticslab experiment {name}: {error}",
        "summary": "ticslab experiment {name}: {seconds} s, {repeat} corridas",
        "wrote": "; archivos escritos: {files}",
        "problem_range": "{flag} va de {low} a {high}",
        "problem_kill_at": "--kill-at es 0 o más, y menor que --seconds",
        "problem_storage": "--storage es la URL postgresql:// de un servidor PostgreSQL",
        "problem_psycopg": "--storage necesita el controlador de PostgreSQL: {install}",
        "problem_folder": "--{flag} {path}: no existe la carpeta {folder}",
        "lab_start": "no se pudo levantar el stack del experimento: {error}",
        "lab_ports": "no hay {count} puertos libres seguidos en {host}",
        "lab_not_up": "los servidores no quedaron todos UP en {seconds} s: {states}",
        "lab_rollout": "el despliegue {strategy} no terminó (su estado: {state})",
        "lab_database": "no se pudo crear una base de datos desechable en {url} (su usuario "
        "necesita CREATEDB): {error}",
        "lab_no_answer": "{method} {path} no tuvo respuesta: {error}",
        "lab_refused": "{method} {path} respondió {status}: {body}",
        "lab_source": "no se puede enviar desde {address} ({reason}); en macOS agrégala "
        "primero: sudo ifconfig lo0 alias {address} up",
        "handout_says": "El apunte dice",
        "lab_shows": "El laboratorio muestra",
        "held": "✔ se cumple",
        "not_held": "✘ no se cumple",
        "unit_points": "puntos",
        "claim_detail": "{against}: peor de {runs} corridas {figure}, se exige {op} "
        "{required}, margen {margin}",
        "claim_round_robin_even": "Round Robin distribuye las solicitudes secuencialmente: "
        "cada servidor recibe 50 % ± {tolerance} puntos",
        "against_round_robin_even": "distancia de cada servidor al 50 %, en puntos",
        "claim_response_time_p95": "Tiempo de respuesta es ideal con servidores "
        "heterogéneos: con server2 {slow_ms} ms más lento, su p95 es al menos {required} % "
        "menor que el de Aleatorio y Round Robin",
        "claim_least_connections_fewer": "Menor número de conexiones envía menos solicitudes "
        "al servidor lento: su parte es al menos {required} puntos menor que con Round Robin, "
        "porque retiene sus solicitudes más tiempo",
        "against_slow_share": "cuánto menor es la parte de server2 que con Round Robin en la "
        "misma corrida",
        "against_p95": "cuánto menor que el menor p95 entre Aleatorio y Round Robin en la "
        "misma corrida",
        "claim_ip_hash_affinity": "Hash IP envía todas las solicitudes de una misma IP al "
        "mismo servidor",
        "against_affinity": "parte de las solicitudes de cada dirección en su servidor más usado",
        "claim_locked_keeps_all": "Con el bloqueo de archivo, cada tarea respondida con 201 "
        "está en tasks.json",
        "against_lost": "tareas respondidas con 201 que tasks.json no tiene",
        "claim_unlocked_loses": "Sin el bloqueo, escritores concurrentes pierden al menos "
        "{required} % de las tareas respondidas con 201",
        "claim_transaction_keeps_all": "En PostgreSQL, con una transacción por cada creación, "
        "cada tarea respondida con 201 está en la base de datos",
        "claim_no_transaction_loses": "En PostgreSQL, sin transacción (SELECT max(id) + 1 y "
        "después una escritura), escritores concurrentes pierden al menos {required} % de las "
        "tareas respondidas con 201",
        "against_lost_database": "tareas respondidas con 201 que la base de datos no tiene",
        "against_lost_share_database": "tareas respondidas con 201 que la base de datos no "
        "tiene, como parte de ellas",
        "against_lost_share": "tareas respondidas con 201 que tasks.json no tiene, como parte "
        "de ellas",
        "claim_retries_hide_crash": "Si un servidor falla, el sistema sigue funcionando: el "
        "balanceador redirige las solicitudes al servidor restante (con reintentos, ninguna "
        "solicitud falló)",
        "claim_no_retries_show": "Con --retries 0, los clientes ven fallar las solicitudes "
        "que estaban en el servidor caído",
        "against_failed": "solicitudes fallidas (sin respuesta o con un estado de error)",
        "claim_nothing_lost": "Ninguna tarea respondida con 201 se pierde, con o sin reintentos",
        "claim_rolling_no_failures": "Despliegues sin tiempo de inactividad: un reinicio gradual "
        "de todos los servidores no hace fallar ninguna solicitud",
        "claim_rolling_completes": "El reinicio gradual llega al final en todos los servidores",
        "against_done": "corridas cuyo despliegue terminó bien (1) y no con falla (0)",
        "claim_restart_shows": "Al reiniciar todos los servidores a la vez, los clientes ven "
        "solicitudes fallidas",
        "claim_rollout_nothing_lost": "Ninguna tarea respondida con 201 se pierde, con "
        "ninguna de las dos estrategias",
        "rollout_title": "Despliegue: todos los servidores reiniciados con carga, {repeat} "
        "corridas (mín–máx)",
        "rollout_params": "POST, {concurrency} a la vez, cada uno con {work_ms} ms de trabajo, "
        "sin reintentos, "
        "desde {lead_seconds} s antes de cada despliegue hasta {lead_seconds} s después",
        "strategy_rolling": "gradual",
        "strategy_restart": "todos a la vez",
        "h_strategy": "Estrategia",
        "h_requests": "Solicitudes",
        "h_seconds": "Segundos",
        "rollout_chart": "Solicitudes por corrida, promedio: respondidas (verde) y fallidas (rojo)",
        "algo_random": "Aleatorio",
        "algo_round_robin": "Round Robin",
        "algo_least_connections": "Menor número de conexiones",
        "algo_response_time": "Tiempo de respuesta",
        "algo_ip_hash": "Hash IP",
        "algorithms_title": "Algoritmos: reparto y latencia, {repeat} corridas (mín–máx)",
        "algorithms_params": "server2 responde {slow_ms} ms tarde; por algoritmo y corrida "
        "{requests} lecturas, {concurrency} a la vez, desde {clients}",
        "one_address": "127.0.0.1",
        "addresses": "{count} direcciones ({first}–{last})",
        "h_algorithm": "Algoritmo",
        "h_errors": "Errores",
        "h_affinity": "Afinidad",
        "affinity_legend": "Afinidad 1.00: cada dirección cliente llegó siempre al mismo "
        "servidor (la menor de las corridas)",
        "chart_share": "Reparto",
        "chart_p95": "p95 (ms, promedio de las corridas)",
        "pick_failures": "{name}: su pick falló {count} veces y Round Robin respondió esas "
        "solicitudes (los /events del balanceador dicen dónde)",
        "ip_fallback": "este sistema solo responde en 127.0.0.1 (¿macOS?): todas las "
        "solicitudes salen de ahí. Para Hash IP con varias direcciones, agrégalas (sudo "
        "ifconfig lo0 alias 127.0.0.2 up, etc.) y usa --ip-clients K",
        "ip_hash_split": "Hash IP dejó {counts}, siempre las mismas: mantiene la afinidad, no "
        "mira la carga",
        "ip_hash_count": "{count} direcciones cliente en {server}",
        "ip_hash_one": "Hash IP: todas las solicitudes salieron de 127.0.0.1, así que {server} "
        "las recibió todas. Es suerte del hash, no una lección sobre la carga; con varias "
        "direcciones se ve más: --ip-clients 6",
        "ip_hash_luck": "Hash IP: las {count} direcciones cliente caen en {server}. Qué "
        "servidor las recibe es suerte del hash, no una lección sobre la carga; prueba otro "
        "--ip-clients",
        "race_title": "Carrera: tareas con 201, guardadas y perdidas, {repeat} corridas (mín–máx)",
        "race_params": "{clients} clientes, {posts} POST cada uno, todos a la vez, por corrida",
        "storage_locked": "con bloqueo",
        "storage_unlocked": "sin bloqueo",
        "storage_transaction": "PostgreSQL, con transacción",
        "storage_no_transaction": "PostgreSQL, sin transacción",
        "h_storage": "Almacenamiento",
        "h_sent": "Enviadas",
        "h_stored": "Guardadas",
        "h_lost": "Perdidas",
        "h_no_201": "Sin 201",
        "h_ids_twice": "Ids repetidos",
        "race_legend": "Ids repetidos: un id dado a dos tareas",
        "race_chart": "Guardadas (verde) y perdidas (rojo), promedio por corrida",
        "race_unanswered": "{count} POST sin 201 (ni guardados ni perdidos)",
        "tasks_201": "tareas con 201",
        "failover_title": "Caída de un servidor con carga: server1 botado, {repeat} corridas "
        "(mín–máx)",
        "failover_params": "por corrida {seconds} s de POST, {concurrency} a la vez, cada uno "
        "con {work_ms} ms de trabajo; server1 se bota a los {kill_at} s",
        "run_retries": "con reintentos",
        "run_no_retries": "sin reintentos",
        "h_run": "Corrida",
        "h_retries": "Reintentos",
        "h_failed": "Fallidas",
        "h_failures": "Fallos",
        "no_answer": "sin respuesta",
        "timeline_title": "Respuestas cada {bucket} s, sumando las corridas (rojo: alguna falló)",
        "kill_marker": "{kill_at} s: se bota server1",
        "results": "Resultados",
    },
}

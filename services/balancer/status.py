"""What ``/status`` and ``/errors/stats`` say: computed from the counters when asked."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from services.balancer.algorithms import HANDOUT_NAMES
from services.balancer.server import Server
from services.common import EJECTED, UP

if TYPE_CHECKING:
    from services.balancer.balancer import Balancer

RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
STATE_COLOURS = {
    "UP": "#1a7f37",
    "DOWN": "#cf222e",
    "DRAIN": "#9a6700",
    "MAINT": "#6e7781",
    "EJECTED": "#bc4c00",
    "NEW": "#57606a",
}
STATE_SPANISH = {
    "UP": "ACTIVO",
    "DOWN": "CAÍDO",
    "DRAIN": "DRENANDO",
    "MAINT": "MANTENCIÓN",
    "EJECTED": "EXPULSADO",
    "NEW": "NUEVO",
}


def shares(counts: list[int]) -> list[float]:
    """Percents of ``counts`` to one decimal that sum to exactly 100.0 when any count is
    above 0 (largest remainder: the tenths lost to rounding go to the largest fractions)."""
    whole = sum(counts)
    if whole <= 0:
        return [0.0] * len(counts)
    exact = [1000 * count / whole for count in counts]  # in tenths of a percent
    tenths = [int(value) for value in exact]
    by_fraction = sorted(range(len(counts)), key=lambda i: tenths[i] - exact[i])
    for i in by_fraction[: 1000 - sum(tenths)]:
        tenths[i] += 1
    return [t / 10 for t in tenths]


def takes_traffic(server: Server) -> bool:
    """UP with a weight above 0: the servers the algorithm may give a new request to."""
    return server.state == UP and server.weight > 0


def server_status(
    server: Server, now: float, share_10s: float, share_total: float
) -> dict[str, Any]:
    stats = server.stats
    return {
        "name": server.name,
        "url": server.url,
        "state": server.state,
        "state_reason": server.state_reason,
        "since": server.since_iso,
        "since_seconds": round(now - server.since, 3),
        "downtime": server.downtime(now),
        "tries_total": stats.tries,
        "in_flight": server.in_flight,
        "share_10s": share_10s,
        "share_total": share_total,
        "tries_per_second": round(stats.rate.per_second(now), 2),
        "latency_ms": stats.percentiles_ms(now),
        "responses": dict(zip(RESPONSE_CLASSES, stats.responses, strict=True)),
        "errors": dict(stats.errors),
        "retries": stats.retries,
        "connect_failures": stats.connect_failures,
        "timeouts": stats.timeouts,
        "resets": stats.resets,
        "idempotency_keys": server.honours_keys,
        "consecutive_failures": server.consecutive_failures,
        "consecutive_successes": server.consecutive_successes,
        "last_check": server.last_check,
        "server_errors": server.server_errors,
        "response_time_ewma_ms": round(server.latency_cost(now) * 1000, 3),
        "weight": server.weight,
        "effective_weight": round(server.effective_weight(now), 2),
        "consecutive_5xx": server.consecutive_5xx,
        "ejections": server.ejections,
        "ejected_for": round(max(0.0, server.ejected_until - now), 1)
        if server.state == EJECTED
        else None,
        "fault": server.fault_now(now),
    }


def status(balancer: Balancer) -> dict[str, Any]:
    """The ``/status`` payload (see docs/api.md)."""
    now = time.monotonic()
    pool = balancer.servers
    # Of the last 10 s, among the servers that take new traffic now: one stopped, drained or
    # set to weight 0 shows 0 at once, and the others' shares still sum to 100.
    recent = shares([s.stats.rate.total(now) if takes_traffic(s) else 0 for s in pool])
    overall = shares([server.stats.tries for server in pool])
    servers = [
        server_status(server, now, *numbers)
        for server, numbers in zip(pool, zip(recent, overall, strict=True), strict=True)
    ]
    up = balancer.servers_up
    return {
        "algorithm": balancer.algorithm,
        "algorithms": list(balancer.algorithm_names),
        "algorithm_errors": balancer.algorithm_errors,
        "uptime": balancer.uptime.seconds,
        "active_servers": up,  # deprecated: the same count as servers_up (docs/api.md)
        "servers_up": up,
        "servers_total": len(balancer.servers),
        "requests_total": balancer.requests_total,
        "in_flight": sum(server.in_flight for server in balancer.servers),
        "requests_per_second": round(balancer.rate.per_second(now), 2),
        "retries": sum(server.stats.retries for server in balancer.servers),
        "no_backend": balancer.no_backend,
        "compression": balancer.compression.snapshot(),
        "servers": servers,
    }


def errors_stats(balancer: Balancer) -> dict[str, Any]:
    """The course's ``/errors/stats`` shape over what the balancer answered, plus ``by_server``."""
    payload = balancer.errors.stats()
    for entry in payload["recent_errors"]:
        entry.setdefault("server", None)  # the balancer's own errors (no server could answer)
    payload["by_server"] = {
        server.name: {
            "total_errors": sum(server.stats.errors.values()),
            "error_types": dict(server.stats.errors),
        }
        for server in balancer.servers
    }
    return payload


def _weight_text(server: dict[str, Any]) -> str:
    """``3``, or ``3 (now 0.6)`` while a slow start ramps it up."""
    weight, effective = server["weight"], server["effective_weight"]
    return str(weight) if effective == weight else f"{weight} (now {effective:g})"


def _algorithm_name(name: str) -> str:
    """The handout's name of a built-in (the page is Spanish first), with the name the API
    and ``--algorithm`` use beside it; a student's own algorithm by its name."""
    handout = HANDOUT_NAMES.get(name)
    if handout is None:
        return f"<b>{html.escape(name)}</b>"
    return f"<b>{handout}</b> <small>({name})</small>"


def _algorithm_errors(data: dict[str, Any]) -> str:
    """A plugin's failed picks, when there were any (the events say where and why)."""
    failed = data["algorithm_errors"]
    if not failed:
        return ""
    return f' (<span style="color:#cf222e">errores / errors: {failed}</span>; ver / see /events)'


def status_html(data: dict[str, Any], refresh_seconds: int = 2) -> str:
    """A page a projector can show: one row per server, refreshing itself."""
    rows = []
    for server in data["servers"]:
        colour = STATE_COLOURS.get(server["state"], "#000")
        latency = server["latency_ms"]
        p95 = "-" if latency["p95"] is None else f"{latency['p95']:.1f}"
        last = server["last_check"] or {}
        rows.append(
            "<tr>"
            f"<td><b>{html.escape(server['name'])}</b><br><small>{html.escape(server['url'])}</small></td>"
            f'<td style="color:{colour}"><b>{server["state"]}</b><br>'
            f"<small>{STATE_SPANISH.get(server['state'], '')}</small></td>"
            f"<td>{server['since_seconds']:.0f} s</td>"
            f"<td>{server['downtime']:.1f} s</td>"
            f"<td>{_weight_text(server)}</td>"
            f"<td>{server['tries_total']}</td>"
            f"<td>{server['in_flight']}</td>"
            f"<td>{server['share_10s']:.0f}%</td>"
            f"<td>{server['tries_per_second']:.1f}</td>"
            f"<td>{p95}</td>"
            f"<td>{server['responses']['4xx']} / {server['responses']['5xx']}</td>"
            f"<td>{server['retries']}</td>"
            f"<td>{html.escape(str(last.get('detail', '-')))}</td>"
            "</tr>"
        )
    headings = (
        "Servidor / Server",
        "Estado / State",
        "Desde / Since",
        "Caído / Downtime",
        "Peso / Weight",
        "Intentos / Tries",
        "En curso / In flight",
        "Parte 10 s / Share",
        "Intentos/s / Tries/s",
        "p95 ms",
        "4xx / 5xx",
        "Reintentos / Retries",
        "Último chequeo / Last check",
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    return f"""<!doctype html>
<html lang="es"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh_seconds}">
<title>ticslab - Estado del balanceador</title>
<style>
body {{ font-family: sans-serif; margin: 2em; font-size: 1.1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: .4em .7em; text-align: left; }}
th {{ background: #f3f3f3; font-size: .85em; }}
</style></head>
<body>
<h1>Balanceador de carga / Load balancer</h1>
<p>Algoritmo / Algorithm: {_algorithm_name(data["algorithm"])}{_algorithm_errors(data)} &middot;
Servidores activos / Active servers: <b>{data["servers_up"]} / {data["servers_total"]}</b>
&middot; Solicitudes / Requests: <b>{data["requests_total"]}</b>
&middot; {data["requests_per_second"]:.1f} sol/s</p>
<table><tr>{head}</tr>
{"".join(rows)}
</table>
<p><small>Se actualiza cada {refresh_seconds} s / refreshes every {refresh_seconds} s.
JSON: <code>curl -H 'Accept: application/json' /status</code></small></p>
<p><small>Ver / see: <a href="/tareas">/tareas</a> · <a href="/health">/health</a> ·
<a href="/errors/stats">/errors/stats</a> · <a href="/events">/events</a> ·
<a href="/metrics">/metrics</a></small></p>
</body></html>
"""

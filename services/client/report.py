"""The final report: one dict (written as ``--json``) and its text rendering for people.

The dict keeps what the servers sent; the rendering shows each text that came from the
network (server names, answers, errors) ``printable`` and never as markup (``shown``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from services.client.checks import LossCheck
from services.client.config import ClientConfig
from services.client.plan import Kind
from services.client.stats import Recorder
from services.common import percentile, printable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
VERDICTS = {
    EXIT_OK: "[green]OK[/]",
    EXIT_FAILED: "[red]FAILED / FALLÓ[/]",
    EXIT_INTERRUPTED: "[yellow]INTERRUPTED / INTERRUMPIDO[/]",
}

KIND_LABELS: dict[str, str] = {
    Kind.CREATE: "create / crear",
    Kind.EXTRA: "extra task / tarea extra",
    Kind.LIST: "list / listar",
    Kind.COMPLETE: "complete / completar",
    Kind.DELETE: "delete / borrar",
    Kind.FORCE_400: "forced 400: bad body / cuerpo inválido",
    Kind.FORCE_404: "forced 404: missing id / id inexistente",
    Kind.FORCE_500: "forced 500: simulate-error",
}


def build_report(
    config: ClientConfig,
    recorder: Recorder,
    check: LossCheck,
    *,
    interrupted: bool,
    run_id: str,
) -> dict[str, Any]:
    """Everything the run found, in the shape docs/client.md documents for ``--json``."""
    latencies = sorted(recorder.latencies)
    elapsed = recorder.elapsed
    total = recorder.requests
    unexpected = sum(recorder.unexpected.values())
    report: dict[str, Any] = {
        "client": config.name,
        "url": config.base_url,
        "run_id": run_id,
        "settings": {
            "tasks": config.tasks,
            "duration_s": config.duration,
            "concurrency": config.concurrency,
            "rate": config.rate,
            "errors": config.errors,
        },
        "interrupted": interrupted,
        "elapsed_s": round(elapsed, 3),
        "requests_total": total,
        "throughput_rps": round(total / elapsed, 2) if elapsed > 0 else 0.0,
        "requests": {
            kind.value: dict(sorted(recorder.by_kind[kind.value].items()))
            for kind in Kind
            if kind.value in recorder.by_kind
        },
        "errors": {
            "expected": sum(recorder.expected.values()),
            "unexpected": unexpected,
            "expected_by_status": dict(sorted(recorder.expected.items())),
            "unexpected_by_status": dict(sorted(recorder.unexpected.items())),
            "unexpected_samples": list(recorder.unexpected_samples),
        },
        "retries": recorder.retries,
        "servers": {
            name: {"requests": count, "percent": round(100.0 * count / total, 1)}
            for name, count in sorted(recorder.servers.items())
        },
        "latency_ms": {
            name: round(1000.0 * value, 2)
            for name, value in (
                ("p50", percentile(latencies, 50)),
                ("p95", percentile(latencies, 95)),
                ("p99", percentile(latencies, 99)),
                ("max", latencies[-1] if latencies else 0.0),
                ("mean", sum(latencies) / len(latencies) if latencies else 0.0),
            )
        },
        "tasks": {
            "target": config.tasks,
            "created": len(recorder.kept),
            "failed": recorder.creates_failed,
            "listed": check.listed,
            "lost_titles": check.lost_titles,
            "check_error": check.error,
        },
        "lost": check.lost_count,
    }
    report["exit_code"] = exit_code(report)
    report["ok"] = report["exit_code"] == EXIT_OK
    return report


def exit_code(report: dict[str, Any]) -> int:
    """130 when interrupted; 0 when nothing was lost and no unexpected error happened; else 1."""
    if report["interrupted"]:
        return EXIT_INTERRUPTED
    clean = report["lost"] == 0 and report["errors"]["unexpected"] == 0
    return EXIT_OK if clean and report["tasks"]["failed"] == 0 else EXIT_FAILED


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def shown(text: object) -> str:
    """Network text for a markup string: control characters escaped, brackets literal."""
    return escape(printable(str(text)))


def _statuses(counts: dict[str, int]) -> str:
    return ", ".join(f"{status}: {n}" for status, n in counts.items()) or "none / ninguno"


def render_report(report: dict[str, Any], console: Console) -> None:
    """Print the report as tables and short lines, English with Spanish beside it."""
    settings = report["settings"]
    bound = (
        f"{settings['tasks']} tasks / tareas"
        if settings["tasks"] is not None
        else f"{settings['duration_s']:g}s"
    )
    rate = f"{settings['rate']:g}/s" if settings["rate"] else "unlimited / sin límite"
    console.print()
    console.print(
        f"[bold]ticslab client report / informe del cliente[/]: {report['client']}"
        f" -> {report['url']}"
    )
    console.print(
        f"run / ejecución: {bound}, concurrency / concurrencia {settings['concurrency']},"
        f" rate / tasa {rate}, errors / errores {settings['errors']:.0%}"
        + ("  [yellow]INTERRUPTED / INTERRUMPIDO[/]" if report["interrupted"] else "")
    )

    table = Table(title="requests by kind and status / solicitudes por tipo y estado")
    table.add_column("kind / tipo")
    table.add_column("requests", justify="right")
    table.add_column("status / estado")
    for kind, counts in report["requests"].items():
        table.add_row(KIND_LABELS.get(kind, kind), str(sum(counts.values())), _statuses(counts))
    table.add_row("[bold]total[/]", f"[bold]{report['requests_total']}[/]", "")
    console.print(table)

    servers = Table(title="traffic per server / tráfico por servidor (X-Upstream-Server)")
    servers.add_column("server / servidor")
    servers.add_column("requests", justify="right")
    servers.add_column("%", justify="right")
    for name, row in report["servers"].items():
        servers.add_row(Text(printable(name)), str(row["requests"]), f"{row['percent']:.1f}")
    console.print(servers)

    errors = report["errors"]
    console.print(
        f"expected errors / errores esperados: {errors['expected']}"
        f" ({_statuses(errors['expected_by_status'])})"
    )
    style = "red" if errors["unexpected"] else "green"
    console.print(
        f"unexpected errors / errores inesperados: [{style}]{errors['unexpected']}[/]"
        + (f" ({_statuses(errors['unexpected_by_status'])})" if errors["unexpected"] else "")
        + (f", retries / reintentos: {report['retries']}" if report["retries"] else "")
    )
    for sample in errors["unexpected_samples"]:
        line = f"  - {sample['kind']} -> {sample['status']} ({sample['server'] or '?'}):"
        console.print(printable(f"{line} {sample['detail']}"), markup=False)
    latency = report["latency_ms"]
    console.print(
        f"latency / latencia: p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms,"
        f" p99 {latency['p99']:.1f} ms (max {latency['max']:.1f} ms)"
    )
    console.print(
        f"throughput / rendimiento: {report['throughput_rps']:.1f} req/s"
        f" ({report['requests_total']} in {report['elapsed_s']:.1f} s)"
    )
    _render_tasks(report, console)


def _render_tasks(report: dict[str, Any], console: Console) -> None:
    tasks = report["tasks"]
    target = f" of {tasks['target']} / de {tasks['target']}" if tasks["target"] is not None else ""
    console.print(
        f"tasks created / tareas creadas: {tasks['created']}{target}"
        + (f", failed / fallidas: {tasks['failed']}" if tasks["failed"] else "")
    )
    if report["lost"] is None:
        console.print(
            f"[red]lost / perdidas: unknown / desconocido[/] ({shown(tasks['check_error'])})"
        )
    else:
        style = "red" if report["lost"] else "green"
        console.print(
            f"lost / perdidas: [{style}]{report['lost']}[/]"
            f" (checked / verificadas {tasks['created']}, listed / listadas {tasks['listed']})"
        )
        if tasks["lost_titles"]:
            console.print("  missing / faltan: " + ", ".join(tasks["lost_titles"]))
    verdict = VERDICTS[report["exit_code"]]
    console.print(f"result / resultado: {verdict} (exit code {report['exit_code']})")


def _lost(report: dict[str, Any]) -> str:
    if report["lost"] is None:
        return f"[red]unknown / desconocido[/] ({shown(report['tasks']['check_error'])})"
    return f"[{'red' if report['lost'] else 'green'}]{report['lost']}[/]"


def render_steady(steady: dict[str, Any], run: dict[str, Any], console: Console) -> None:
    """The steady phase's summary once it is stopped (``steady``, a report of it), then the
    verdict of the run reported before it (``run``), which stays the exit code."""
    shares = ", ".join(
        f"{shown(name)} {row['percent']:.0f}%" for name, row in steady["servers"].items()
    )
    errors = steady["errors"]
    console.print()
    console.print(
        f"[bold]steady traffic / tráfico constante[/]: {steady['client']},"
        f" {steady['requests_total']} req in {steady['elapsed_s']:.1f} s"
        f" ({steady['throughput_rps']:.1f}/s)" + (f"; {shares}" if shares else "")
    )
    console.print(
        f"  errors expected / errores esperados {errors['expected']}, unexpected / inesperados"
        f" [{'red' if errors['unexpected'] else 'green'}]{errors['unexpected']}[/]"
        + (f" ({_statuses(errors['unexpected_by_status'])})" if errors["unexpected"] else "")
    )
    for sample in errors["unexpected_samples"]:
        line = f"  - {sample['kind']} -> {sample['status']} ({sample['server'] or '?'}):"
        console.print(printable(f"{line} {sample['detail']}"), markup=False)
    console.print(
        f"  tasks created / tareas creadas {steady['tasks']['created']},"
        f" lost / perdidas {_lost(steady)} (not in the exit code / no cuenta en el código)"
    )
    for title in steady["tasks"]["lost_titles"]:
        console.print(f"  missing / falta: {shown(title)}")
    console.print(
        f"result of the run / resultado de la ejecución ({run['client']}):"
        f" {VERDICTS[run['exit_code']]}, lost / perdidas {_lost(run)}"
        f" (exit code {run['exit_code']})"
    )

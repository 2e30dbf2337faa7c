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
from services.client.i18n import TEXT
from services.client.plan import Kind
from services.client.stats import SERVER_KEYS, Recorder
from services.common import printable
from services.lang import Translator

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
# The verdict of each exit code: its style and its key in services/client/i18n.py.
VERDICTS = {
    EXIT_OK: ("green", "ok"),
    EXIT_FAILED: ("red", "failed"),
    EXIT_INTERRUPTED: ("yellow", "interrupted"),
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
    latencies = recorder.latencies
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
                ("p50", latencies.percentile(50)),
                ("p95", latencies.percentile(95)),
                ("p99", latencies.percentile(99)),
                ("max", latencies.max),
                ("mean", latencies.mean),
            )
        },
        "tasks": {
            "target": config.tasks,
            "created": recorder.kept.count,
            "checked": check.checked,
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


def _statuses(counts: dict[str, int], t: Translator) -> str:
    return ", ".join(f"{status}: {n}" for status, n in counts.items()) or t("none")


def _verdict(code: int, t: Translator) -> str:
    style, key = VERDICTS[code]
    return f"[{style}]{t(key)}[/]"


def _kind(kind: str, t: Translator) -> str:
    """A kind of request in words (its key in ``--json`` when it has no words)."""
    return t.word(f"kind_{kind}", kind)


def render_report(report: dict[str, Any], console: Console, lang: str = "en") -> None:
    """Print the report as tables and short lines, in ``lang``."""
    t = Translator(TEXT, lang)
    settings = report["settings"]
    bound = (
        t("tasks_bound", n=settings["tasks"])
        if settings["tasks"] is not None
        else f"{settings['duration_s']:g}s"
    )
    rate = f"{settings['rate']:g}/s" if settings["rate"] else t("unlimited")
    console.print()
    console.print(f"[bold]{t('title')}[/]: {shown(report['client'])} -> {shown(report['url'])}")
    run = t(
        "run",
        bound=bound,
        concurrency=settings["concurrency"],
        rate=rate,
        errors=settings["errors"],
    )
    console.print(run + (f"  [yellow]{t('interrupted')}[/]" if report["interrupted"] else ""))

    table = Table(title=t("by_kind"))
    table.add_column(t("kind"))
    table.add_column(t("requests"), justify="right")
    table.add_column(t("status"))
    for kind, counts in report["requests"].items():
        table.add_row(_kind(kind, t), str(sum(counts.values())), _statuses(counts, t))
    table.add_row(f"[bold]{t('total')}[/]", f"[bold]{report['requests_total']}[/]", "")
    console.print(table)

    servers = Table(title=t("per_server"))
    servers.add_column(t("server"))
    servers.add_column(t("requests"), justify="right")
    servers.add_column("%", justify="right")
    for name, row in report["servers"].items():
        shown_name = t(SERVER_KEYS[name]) if name in SERVER_KEYS else printable(name)
        servers.add_row(Text(shown_name), str(row["requests"]), f"{row['percent']:.1f}")
    console.print(servers)

    errors = report["errors"]
    statuses = _statuses(errors["expected_by_status"], t)
    console.print(t("expected", count=errors["expected"], statuses=statuses))
    style = "red" if errors["unexpected"] else "green"
    console.print(
        t("unexpected", count=f"[{style}]{errors['unexpected']}[/]")
        + (f" ({_statuses(errors['unexpected_by_status'], t)})" if errors["unexpected"] else "")
        + (", " + t("retries", count=report["retries"]) if report["retries"] else "")
    )
    _render_samples(errors["unexpected_samples"], console)
    console.print(t("latency", **report["latency_ms"]))
    console.print(
        t(
            "throughput",
            rps=report["throughput_rps"],
            total=report["requests_total"],
            elapsed=report["elapsed_s"],
        )
    )
    _render_tasks(report, console, t)


def _render_samples(samples: list[dict[str, Any]], console: Console) -> None:
    """The unexpected answers kept as examples: network text, printable and never markup."""
    for sample in samples:
        line = f"  - {sample['kind']} -> {sample['status']} ({sample['server'] or '?'}):"
        console.print(printable(f"{line} {sample['detail']}"), markup=False)


def _render_tasks(report: dict[str, Any], console: Console, t: Translator) -> None:
    tasks = report["tasks"]
    target = t("of_target", target=tasks["target"]) if tasks["target"] is not None else ""
    console.print(
        t("created", created=tasks["created"])
        + target
        + (t("created_failed", failed=tasks["failed"]) if tasks["failed"] else "")
    )
    checked = (
        t("checked", checked=tasks["checked"], listed=tasks["listed"])
        if tasks["checked"] == tasks["created"]
        else t(
            "checked_newest",
            checked=tasks["checked"],
            created=tasks["created"],
            listed=tasks["listed"],
        )
    )
    console.print(
        f"{t('lost')}: {_lost(report, t)}" + ("" if report["lost"] is None else f" {checked}")
    )
    if tasks["lost_titles"]:
        console.print(f"  {t('missing')}: " + ", ".join(map(shown, tasks["lost_titles"])))
    code = report["exit_code"]
    console.print(f"{t('result')}: {_verdict(code, t)} ({t('exit_code', code=code)})")


def _lost(report: dict[str, Any], t: Translator) -> str:
    if report["lost"] is None:
        return f"[red]{t('unknown')}[/] ({shown(report['tasks']['check_error'])})"
    return f"[{'red' if report['lost'] else 'green'}]{report['lost']}[/]"


def render_steady(
    steady: dict[str, Any], run: dict[str, Any], console: Console, lang: str = "en"
) -> None:
    """The steady phase's summary once it is stopped (``steady``, a report of it), then the
    verdict of the run reported before it (``run``), which stays the exit code."""
    t = Translator(TEXT, lang)
    shares = ", ".join(
        f"{shown(name)} {row['percent']:.0f}%" for name, row in steady["servers"].items()
    )
    errors = steady["errors"]
    line = t(
        "steady_line",
        requests=steady["requests_total"],
        elapsed=steady["elapsed_s"],
        rps=steady["throughput_rps"],
    )
    console.print()
    console.print(
        f"[bold]{t('steady_title')}[/]: {shown(steady['client'])}, {line}"
        + (f"; {shares}" if shares else "")
    )
    console.print(
        "  "
        + t("steady_errors", expected=errors["expected"])
        + f" [{'red' if errors['unexpected'] else 'green'}]{errors['unexpected']}[/]"
        + (f" ({_statuses(errors['unexpected_by_status'], t)})" if errors["unexpected"] else "")
    )
    _render_samples(errors["unexpected_samples"], console)
    console.print(
        "  "
        + t("steady_tasks", created=steady["tasks"]["created"])
        + f" {_lost(steady, t)} {t('steady_not_counted')}"
    )
    for title in steady["tasks"]["lost_titles"]:
        console.print(f"  {t('missing')}: {shown(title)}")
    code = run["exit_code"]
    console.print(
        f"{t('run_result', client=shown(run['client']))}: {_verdict(code, t)},"
        f" {t('lost')} {_lost(run, t)} ({t('exit_code', code=code)})"
    )

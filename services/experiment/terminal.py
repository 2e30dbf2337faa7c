"""An experiment's result in the terminal: a table, a chart drawn with Rich, the claims.

Every label is in English and Spanish, as the rest of the lab's terminal output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from services.common import printable
from services.experiment.result import Result, pick_failures

SERVER_COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "bright_red")
BAR_WIDTH = 20
SPARKS = " ▁▂▃▄▅▆▇█"


def render(result: Result) -> RenderableType:
    """The whole report for ``result``."""
    body = {"algorithms": _algorithms, "race": _race, "failover": _failover}[result.scenario]
    return Group(*body(result), Text(), _claims(result))


def _algorithms(result: Result) -> list[RenderableType]:
    servers = list(result.results[0]["share"]) if result.results else []
    title = Text(
        "algorithms: share and latency (ms) / algoritmos: reparto y latencia (ms)",
        style="bold",
    )
    table = _table(
        ["algorithm", *servers, "p50", "p95", "p99", "errors", "affinity"],
    )
    for row in result.results:
        table.add_row(
            Text(printable(row["algorithm"])),  # a plugin's name: text, never markup
            *(f"{row['share'][server]:.0%}" for server in servers),
            f"{row['p50_ms']:.0f}",
            f"{row['p95_ms']:.0f}",
            f"{row['p99_ms']:.0f}",
            str(row["errors"]),
            f"{row['affinity']:.2f}",
        )
    legend = _legend(
        "errors = errores, affinity = afinidad (1.00: each client on one server / "
        "cada cliente en un servidor)"
    )
    failing = [_pick_failures(row) for row in result.results if row.get("algorithm_errors")]
    return [title, table, legend, *failing, Text(), _algorithm_chart(result.results, servers)]


def _pick_failures(row: dict[str, Any]) -> Text:
    """A plugin whose pick failed: its row measured round robin for those requests."""
    return Text(f"✘ {printable(row['algorithm'])}: {pick_failures(row)}", style="bold red")


def _algorithm_chart(rows: list[dict[str, Any]], servers: list[str]) -> RenderableType:
    """Per algorithm: its share bar in the servers' colours, and its p95 as a red bar."""
    chart = Table.grid(padding=(0, 1))
    chart.add_row(Text("share / reparto", style="bold"), "", Text("p95", style="bold"))
    slowest = max((row["p95_ms"] for row in rows), default=0.0) or 1.0
    for row in rows:
        p95 = Text("█" * max(1, round(BAR_WIDTH * row["p95_ms"] / slowest)), style="red")
        chart.add_row(
            stacked_bar([row["share"][server] for server in servers]),
            Text(printable(row["algorithm"])),
            p95 + Text(f" {row['p95_ms']:.0f} ms"),
        )
    legend = Text("  ").join(
        Text(f"█ {server}", style=SERVER_COLOURS[i % len(SERVER_COLOURS)])
        for i, server in enumerate(servers)
    )
    return Group(chart, legend)


def _race(result: Result) -> list[RenderableType]:
    title = Text(
        "race: tasks answered 201, stored and lost / carrera: tareas con 201, guardadas, perdidas",
        style="bold",
    )
    table = _table(
        ["storage", "sent", "201", "stored", "lost", "ids twice"],
    )
    table.add_column("stored / lost")
    for row in result.results:
        expected = row["expected"] or 1
        bar = Text("█" * round(BAR_WIDTH * row["stored"] / expected), style="green")
        bar.append("█" * round(BAR_WIDTH * row["lost"] / expected), style="red")
        table.add_row(
            row["storage"], str(row["sent"]), str(row["expected"]), str(row["stored"]),
            str(row["lost"]), str(row["duplicate_ids"]), bar,
        )  # fmt: skip
    legend = _legend(
        "storage = almacenamiento, sent = enviadas, stored = guardadas, lost = perdidas, "
        "ids twice = ids repetidos (one id given to two tasks / un id dado a dos tareas)"
    )
    unanswered = sum(row.get("unanswered", 0) for row in result.results)
    if unanswered:
        note = f"{unanswered} POSTs got no 201 (neither stored nor lost) / sin 201"
        return [title, table, legend, Text(note, style="yellow")]
    return [title, table, legend]


def _failover(result: Result) -> list[RenderableType]:
    title = Text(
        "failover: a server killed under load / caída de un servidor con carga", style="bold"
    )
    table = _table(
        ["run", "retries", "sent", "201", "failed", "lost"],
    )
    table.add_column("failures")
    for row in result.results:
        failures = ", ".join(f"{n}x {status}" for status, n in sorted(row["failures"].items()))
        table.add_row(
            row["run"], str(row["retries"]), str(row["sent"]), str(row["created"]),
            str(row["failed"]), str(row["lost"]), failures or "-",
        )  # fmt: skip
    lines: list[RenderableType] = [
        title,
        table,
        _legend(
            "run = corrida, retries = reintentos, sent = enviadas, failed = fallidas, "
            "lost = perdidas, failures = fallos"
        ),
        Text(),
        Text("answers over time / respuestas en el tiempo", style="bold"),
    ]
    bucket = result.series["bucket_seconds"]
    kill_index = round(result.settings["kill_at"] / bucket)
    for row in result.results:
        series = result.series[row["run"]]
        lines.append(timeline_line(f"{row['run']:<11}", series["ok"], series["failed"]))
    lines.append(
        Text(" " * (11 + kill_index) + f"↑ {result.settings['kill_at']:g} s: kill server1")
    )
    return lines


def _table(headers: list[str]) -> Table:
    """A table whose first column is a name and the others numbers."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _legend(text: str) -> Text:
    """The Spanish for a table's short English headers, under it."""
    return Text(text, style="dim")


def timeline_line(label: str, ok: Sequence[int], bad: Sequence[int]) -> Text:
    """One character per interval: its height is the answers, red if any of them failed."""
    top = max(max(ok, default=0) + max(bad, default=0), 1)
    line = Text(label)
    for good, failed in zip(ok, bad, strict=True):
        spark = SPARKS[min(len(SPARKS) - 1, round((good + failed) / top * (len(SPARKS) - 1)))]
        line.append(spark if spark != " " else "·", style="bold red" if failed else "green")
    return line


def stacked_bar(shares: Sequence[float]) -> Text:
    """One bar split in each server's colour by its share."""
    bar = Text()
    for i, share in enumerate(shares):
        bar.append("█" * round(BAR_WIDTH * share), style=SERVER_COLOURS[i % len(SERVER_COLOURS)])
    return bar


def _claims(result: Result) -> RenderableType:
    lines = [Text("the handout says / el apunte dice", style="bold")]
    for claim in result.claims:
        mark = (
            Text("✔ held / se cumple  ", style="green")
            if claim.held
            else Text("✘ did not hold / no se cumple  ", style="bold red")
        )
        lines.append(mark + Text(f"{claim.en} / {claim.es}"))
    return Group(*lines)


def summary_line(result: Result, written: list[str]) -> str:
    """The last line: how long it took and which files were written."""
    files = f"; wrote {', '.join(written)}" if written else ""
    return f"{result.scenario}: {result.seconds:.1f} s{files}"

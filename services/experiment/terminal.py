"""An experiment's result in the terminal: a table, a chart drawn with Rich, the claims.

Every word comes from ``i18n`` in the reader's language; a figure measured on every repeat
shows its spread (``min–max``). Tables fit 80 columns: the name column wraps, the numbers
never do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from services.experiment.result import (
    HANDOUT,
    LAB,
    ROLLOUT_FIGURES,
    Result,
    algorithm_name,
    failure_counts,
    parameters,
    say,
    span,
)
from services.lang import Translator

SERVER_COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "bright_red")
BAR_WIDTH = 20
SPARKS = " ▁▂▃▄▅▆▇█"
NAME_WIDTH = 14  # names wrap past this, so a table or chart line fits in 80 columns


def render(result: Result, t: Translator) -> RenderableType:
    """The whole report for ``result``."""
    body = {
        "algorithms": _algorithms, "race": _race, "failover": _failover, "rollout": _rollout
    }[result.scenario]  # fmt: skip
    notes = [Text(say(t, note), style="yellow") for note in result.notes]
    return Group(*body(result, t), *notes, Text(), _claims(result, t))


def _heading(result: Result, t: Translator, key: str) -> list[RenderableType]:
    return [
        Text(t(key, repeat=result.repeats), style="bold"),
        Text(parameters(result, t), style="dim"),
    ]


def _algorithms(result: Result, t: Translator) -> list[RenderableType]:
    servers = list(result.results[0]["share"]) if result.results else []
    # p99 stays in the JSON and the HTML page: with it the table would not fit 80 columns.
    table = _table([t("h_algorithm"), *servers, "p50 ms", "p95 ms", t("h_errors"), t("h_affinity")])
    for row in result.results:
        spread = row["spread"]
        table.add_row(
            Text(algorithm_name(row["algorithm"], t)),  # a plugin's name: text, never markup
            *(span([100 * s for s in spread["share"][server]], suffix="%") for server in servers),
            span(spread["p50_ms"]),
            span(spread["p95_ms"]),
            str(row["errors"]),
            f"{row['affinity']:.2f}",
        )
    failing = [
        Text("✘ " + _pick_failures(row, t), style="bold red")
        for row in result.results
        if row.get("algorithm_errors")
    ]
    return [
        *_heading(result, t, "algorithms_title"),
        table,
        Text(t("affinity_legend"), style="dim"),
        *failing,
        Text(),
        _algorithm_chart(result.results, servers, t),
    ]


def _pick_failures(row: dict[str, Any], t: Translator) -> str:
    """A plugin whose pick failed: its row measured Round Robin for those requests."""
    return t(
        "pick_failures", name=algorithm_name(row["algorithm"], t), count=row["algorithm_errors"]
    )


def _algorithm_chart(
    rows: list[dict[str, Any]], servers: list[str], t: Translator
) -> RenderableType:
    """Per algorithm: its mean share bar in the servers' colours, and its p95 as a red bar."""
    chart = Table.grid(padding=(0, 1))
    chart.add_column(no_wrap=True)
    chart.add_column(max_width=NAME_WIDTH, overflow="fold")
    chart.add_column(no_wrap=True)
    chart.add_row(Text(t("chart_share"), style="bold"), "", Text(t("chart_p95"), style="bold"))
    slowest = max((row["p95_ms"] for row in rows), default=0.0) or 1.0
    for row in rows:
        p95 = Text("█" * max(1, round(BAR_WIDTH * row["p95_ms"] / slowest)), style="red")
        chart.add_row(
            stacked_bar([row["share"][server] for server in servers]),
            Text(algorithm_name(row["algorithm"], t)),
            p95 + Text(f" {row['p95_ms']:.0f} ms"),
        )
    legend = Text("  ").join(
        Text(f"█ {server}", style=SERVER_COLOURS[i % len(SERVER_COLOURS)])
        for i, server in enumerate(servers)
    )
    return Group(chart, legend)


def _race(result: Result, t: Translator) -> list[RenderableType]:
    table = _table(
        [t("h_storage"), t("h_sent"), "201", t("h_stored"), t("h_lost"), t("h_ids_twice")]
    )
    chart = Table.grid(padding=(0, 1))
    chart.add_row(Text(t("race_chart"), style="bold"))
    names = [t(f"storage_{row['storage']}") for row in result.results]
    for name, row in zip(names, result.results, strict=True):
        spread = row["spread"]
        figures = ("sent", "expected", "stored", "lost", "duplicate_ids")
        table.add_row(name, *(span(spread[figure]) for figure in figures))
        expected = row["expected"] or 1
        bar = Text("█" * round(BAR_WIDTH * row["stored"] / expected), style="green")
        bar.append("░" * round(BAR_WIDTH * row["lost"] / expected), style="red")
        chart.add_row(Text(f"{name:<{max(map(len, names))}} ") + bar)
    lines = [*_heading(result, t, "race_title"), table, Text(t("race_legend"), style="dim")]
    unanswered = sum(run.get("unanswered", 0) for row in result.results for run in row["runs"])
    if unanswered:
        lines.append(Text(t("race_unanswered", count=unanswered), style="yellow"))
    legend = Text.assemble(("█ ", "green"), t("h_stored"), "  ", ("░ ", "red"), t("h_lost"))
    return [*lines, Text(), chart, legend]


def _failover(result: Result, t: Translator) -> list[RenderableType]:
    table = _table([t("h_run"), t("h_retries"), t("h_sent"), "201", t("h_failed"), t("h_lost")])
    names = {row["run"]: t(f"run_{row['run'].replace(' ', '_')}") for row in result.results}
    failures = []
    for row in result.results:
        spread = row["spread"]
        table.add_row(
            names[row["run"]],
            str(row["retries"]),
            *(span(spread[name]) for name in ("sent", "created", "failed", "lost")),
        )
        if row["failures"]:
            counts = failure_counts(row, t)
            failures.append(Text(f"{t('h_failures')} ({names[row['run']]}): {counts}"))
    bucket = result.series["bucket_seconds"]
    kill_at = result.settings["kill_at"]
    width = max(len(name) for name in names.values()) + 1
    lines: list[RenderableType] = [
        *_heading(result, t, "failover_title"),
        table,
        *failures,
        Text(),
        Text(t("timeline_title", bucket=f"{bucket:g}"), style="bold"),
    ]
    for run, name in names.items():
        series = result.series[run]
        lines.append(timeline_line(f"{name:<{width}}", series["ok"], series["failed"]))
    marker = t("kill_marker", kill_at=f"{kill_at:g}")
    marker = " " * (width + round(kill_at / bucket)) + "↑ " + marker
    lines.append(Text(marker))
    return lines


def _rollout(result: Result, t: Translator) -> list[RenderableType]:
    table = _table([t("h_strategy"), t("h_requests"), t("h_failed"), t("h_lost"), t("h_seconds")])
    failures = []
    for row in result.results:
        name = t(f"strategy_{row['strategy']}")
        spread = row["spread"]
        figures = (span(spread[f], digits) for f, digits in ROLLOUT_FIGURES)
        table.add_row(name, *figures)
        if row["failures"]:
            failures.append(Text(f"{t('h_failures')} ({name}): {failure_counts(row, t)}"))
    return [*_heading(result, t, "rollout_title"), table, *failures]


def _table(headers: list[str]) -> Table:
    """A table whose first column is a name (it may wrap) and the others numbers."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for i, header in enumerate(headers):
        if i == 0:
            table.add_column(header, justify="left", min_width=NAME_WIDTH, overflow="fold")
        else:
            table.add_column(header, justify="right", no_wrap=True)
    return table


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


def _claims(result: Result, t: Translator) -> RenderableType:
    """The handout's claims, then the lab's, each with its verdict and the numbers behind it."""
    lines: list[RenderableType] = []
    for source, title in ((HANDOUT, "handout_says"), (LAB, "lab_shows")):
        claims = [claim for claim in result.claims if claim.source == source]
        if claims:
            lines.append(Text(t(title), style="bold"))
        for claim in claims:
            mark = (
                Text(t("held") + "  ", style="green")
                if claim.held
                else Text(t("not_held") + "  ", style="bold red")
            )
            lines.append(mark + Text(claim.text(t)))
            lines.append(Padding(Text(claim.detail(t), style="dim"), (0, 0, 0, 3)))
    return Group(*lines)


def summary_line(result: Result, written: list[str], t: Translator) -> str:
    """The last line: how long it took and which files were written."""
    files = t("wrote", files=", ".join(written)) if written else ""
    seconds = f"{result.seconds:.1f}"
    return t("summary", name=result.scenario, seconds=seconds, repeat=result.repeats) + files

"""An experiment's result as one self-contained HTML file: inline CSS and SVG charts, no
script and no link, so it opens anywhere without a network (and can be mailed or projected).

Every text from the run goes through ``html.escape``: a plugin's class name is a student's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

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

COLOURS = ("#1f9bb4", "#b4399f", "#d9a21b", "#3a9b3a", "#3b5fc4", "#d43f3a")
OK, BAD = "#3a9b3a", "#d43f3a"
WIDTH, ROW, LABEL = 640, 22, 150
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.held { color: #2a7a2a; } .failed { color: #b52b27; font-weight: bold; }
.note { color: #8a6d00; } small { color: #555; font-weight: normal; }
svg text { font-size: 12px; font-family: system-ui, sans-serif; }
pre { background: #f5f5f5; padding: 1rem; overflow-x: auto; }
"""


def page(result: Result, t: Translator) -> str:
    """The report for ``result``: settings, claims, a table and charts, and the raw JSON."""
    body = {
        "algorithms": _algorithms, "race": _race, "failover": _failover, "rollout": _rollout
    }[result.scenario]  # fmt: skip
    raw = escape(json.dumps(result.to_json(t), indent=2, ensure_ascii=False))
    notes = "".join(f"<p class='note'>{escape(say(t, note))}</p>" for note in result.notes)
    title = escape(t(f"{result.scenario}_title", repeat=result.repeats))
    return (
        f"<!doctype html>\n<html lang='{t.lang}'><head><meta charset='utf-8'>"
        f"<title>ticslab experiment {escape(result.scenario)}</title><style>{STYLE}</style>"
        f"</head><body><h1>ticslab experiment {escape(result.scenario)}</h1>"
        f"<p>{title}</p><p>{escape(parameters(result, t))} &middot; {result.seconds:.1f} s</p>"
        f"{_claims(result, t)}{body(result, t)}{notes}"
        f"<details><summary>JSON</summary><pre>{raw}</pre></details></body></html>\n"
    )


def _claims(result: Result, t: Translator) -> str:
    parts = []
    for source, title in ((HANDOUT, "handout_says"), (LAB, "lab_shows")):
        items = "".join(
            f"<li class='{'held' if c.held else 'failed'}'>"
            f"{escape(t('held') if c.held else t('not_held'))}: {escape(c.text(t))}"
            f"<br><small>{escape(c.detail(t))}</small></li>"
            for c in result.claims
            if c.source == source
        )
        if items:
            parts.append(f"<h2>{escape(t(title))}</h2><ul>{items}</ul>")
    return "".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def bars(rows: Sequence[tuple[str, Sequence[tuple[float, str]]]], top: float, unit: str) -> str:
    """Horizontal bars, one per row, each stacked from ``(value, colour)`` parts, scaled so
    ``top`` fills the width; the total is written at the end of the bar."""
    top = top or 1.0
    height = ROW * len(rows) + 10
    parts = [f"<svg width='{WIDTH + LABEL + 80}' height='{height}' role='img'>"]
    for i, (label, pieces) in enumerate(rows):
        y, x = 5 + i * ROW, float(LABEL)
        parts.append(f"<text x='0' y='{y + 14}'>{escape(label)}</text>")
        for value, colour in pieces:
            width = WIDTH * value / top
            parts.append(
                f"<rect x='{x:.1f}' y='{y}' width='{width:.1f}' height='{ROW - 6}' "
                f"fill='{colour}'/>"
            )
            x += width
        total = sum(value for value, _ in pieces)
        parts.append(f"<text x='{x + 4:.1f}' y='{y + 14}'>{total:g} {escape(unit)}</text>")
    return "".join(parts) + "</svg>"


def columns(
    ok: Sequence[int], bad: Sequence[int], bucket: float, marker: float, marker_label: str
) -> str:
    """One column per ``bucket`` seconds, the good part green and the failed part red above
    it, a dashed line at ``marker`` seconds, the seconds below and the tallest count."""
    top = max((g + b for g, b in zip(ok, bad, strict=True)), default=0) or 1
    step, height = WIDTH / max(len(ok), 1), 120
    parts = [
        f"<svg width='{WIDTH + 60}' height='{height + 36}' role='img'>"
        f"<text x='{WIDTH + 14}' y='12'>{top}</text>"
    ]
    for second in range(int(len(ok) * bucket) + 1):
        x = 10 + second / bucket * step
        parts.append(f"<text x='{x:.1f}' y='{height + 32}'>{second} s</text>")
    for i, (good, failed) in enumerate(zip(ok, bad, strict=True)):
        x = 10 + i * step
        good_h, bad_h = height * good / top, height * failed / top
        parts.append(
            f"<rect x='{x:.1f}' y='{height - good_h:.1f}' width='{step - 1:.1f}' "
            f"height='{good_h:.1f}' fill='{OK}'/>"
            f"<rect x='{x:.1f}' y='{height - good_h - bad_h:.1f}' width='{step - 1:.1f}' "
            f"height='{bad_h:.1f}' fill='{BAD}'/>"
        )
    x = 10 + marker / bucket * step
    parts.append(
        f"<line x1='{x:.1f}' y1='0' x2='{x:.1f}' y2='{height}' stroke='#222' "
        f"stroke-dasharray='4 3'/><text x='{x + 4:.1f}' y='{height + 15}'>"
        f"{escape(marker_label)}</text>"
    )
    return "".join(parts) + "</svg>"


def _algorithms(result: Result, t: Translator) -> str:
    rows = result.results
    servers = list(rows[0]["share"]) if rows else []
    names = [algorithm_name(r["algorithm"], t) for r in rows]
    table = _table(
        [t("h_algorithm"), *servers, "p50 ms", "p95 ms", "p99 ms", t("h_errors"),
         t("h_affinity")],
        [[name, *(span([100 * v for v in r["spread"]["share"][s]], suffix="%")
                  for s in servers),
          *(span(r["spread"][f], 1) for f in ("p50_ms", "p95_ms", "p99_ms")), r["errors"],
          f"{r['affinity']:.2f}"] for name, r in zip(names, rows, strict=True)],
    )  # fmt: skip
    shares = bars(
        [
            (name, [(round(100 * r["share"][s]), _colour(i)) for i, s in enumerate(servers)])
            for name, r in zip(names, rows, strict=True)
        ],
        100,
        "%",
    )
    legend = " ".join(
        f"<span style='color:{_colour(i)}'>&#9632; {escape(s)}</span>"
        for i, s in enumerate(servers)
    )
    p95 = bars(
        [(name, [(r["p95_ms"], BAD)]) for name, r in zip(names, rows, strict=True)],
        max((r["p95_ms"] for r in rows), default=1.0),
        "ms",
    )
    failing = "".join(
        "<p class='failed'>✘ "
        f"{escape(t('pick_failures', name=name, count=r['algorithm_errors']))}</p>"
        for name, r in zip(names, rows, strict=True)
        if r.get("algorithm_errors")
    )
    return (
        f"<h2>{escape(t('results'))}</h2>{table}<p>{escape(t('affinity_legend'))}</p>{failing}"
        f"<h3>{escape(t('chart_share'))}</h3><p>{legend}</p>{shares}"
        f"<h3>{escape(t('chart_p95'))}</h3>{p95}"
    )


def _race(result: Result, t: Translator) -> str:
    rows = result.results
    figures = ("sent", "expected", "stored", "lost", "unanswered", "duplicate_ids")
    table = _table(
        [t("h_storage"), t("h_sent"), "201", t("h_stored"), t("h_lost"), t("h_no_201"),
         t("h_ids_twice")],
        [[t(f"storage_{r['storage']}"), *(span(r["spread"][f]) for f in figures)]
         for r in rows],
    )  # fmt: skip
    chart = bars(
        [(t(f"storage_{r['storage']}"), [(r["stored"], OK), (r["lost"], BAD)]) for r in rows],
        max((r["expected"] for r in rows), default=1),
        t("tasks_201"),
    )
    return (
        f"<h2>{escape(t('results'))}</h2>{table}<p>{escape(t('race_legend'))}</p>"
        f"<h3>{escape(t('race_chart'))}</h3>{chart}"
    )


def _failover(result: Result, t: Translator) -> str:
    rows = result.results
    names = [t(f"run_{r['run'].replace(' ', '_')}") for r in rows]
    table = _table(
        [t("h_run"), t("h_retries"), t("h_sent"), "201", t("h_failed"), t("h_lost")],
        [[name, r["retries"], *(span(r["spread"][f]) for f in ("sent", "created", "failed",
                                                                  "lost"))]
         for name, r in zip(names, rows, strict=True)],
    )  # fmt: skip
    bucket = result.series["bucket_seconds"]
    kill_at = result.settings["kill_at"]
    title = t("timeline_title", bucket=f"{bucket:g}")
    charts = "".join(
        f"<h3>{escape(name)}: {escape(title)}</h3>"
        + columns(
            result.series[r["run"]]["ok"],
            result.series[r["run"]]["failed"],
            bucket,
            kill_at,
            t("kill_marker", kill_at=f"{kill_at:g}"),
        )
        for name, r in zip(names, rows, strict=True)
    )
    return f"<h2>{escape(t('results'))}</h2>{table}{charts}"


def _rollout(result: Result, t: Translator) -> str:
    headers = [t("h_strategy"), t("h_requests"), t("h_failed"), t("h_lost"), t("h_seconds")]
    rows = [
        [t(f"strategy_{r['strategy']}"), *(span(r["spread"][f], d) for f, d in ROLLOUT_FIGURES)]
        for r in result.results
    ]
    failures = "".join(
        f"<p>{escape(t('h_failures'))} ({escape(t('strategy_' + r['strategy']))}): "
        f"{escape(failure_counts(r, t))}</p>"
        for r in result.results
        if r["failures"]
    )
    chart = bars(
        [(t(f"strategy_{r['strategy']}"), answered_and_failed(r)) for r in result.results],
        max((r["requests"] for r in result.results), default=1),
        "",
    )
    chart_title = f"<h3>{escape(t('rollout_chart'))}</h3>"
    return f"<h2>{escape(t('results'))}</h2>{_table(headers, rows)}{failures}{chart_title}{chart}"


def answered_and_failed(row: dict[str, Any]) -> list[tuple[float, str]]:
    """A rollout row's bar: its requests that did not fail, in green, then those that did."""
    return [(row["requests"] - row["failed"], OK), (row["failed"], BAD)]


def _colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]

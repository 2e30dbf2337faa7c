"""An experiment's result as one self-contained HTML file: inline CSS and SVG charts, no
script and no link, so it opens anywhere without a network (and can be mailed or projected).

Every text from the run goes through ``html.escape``: a plugin's class name is a student's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from services.experiment.result import Result, pick_failures

COLOURS = ("#1f9bb4", "#b4399f", "#d9a21b", "#3a9b3a", "#3b5fc4", "#d43f3a")
OK, BAD = "#3a9b3a", "#d43f3a"
WIDTH, ROW, LABEL = 640, 22, 150
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #ccc; padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.held { color: #2a7a2a; } .failed { color: #b52b27; font-weight: bold; }
svg text { font-size: 12px; font-family: system-ui, sans-serif; }
pre { background: #f5f5f5; padding: 1rem; overflow-x: auto; }
"""


def page(result: Result) -> str:
    """The report for ``result``: settings, claims, a table and charts, and the raw JSON."""
    body = {"algorithms": _algorithms, "race": _race, "failover": _failover}[result.scenario]
    settings = ", ".join(
        f"{escape(k)}={escape(str(v))}" for k, v in result.settings.items() if v is not None
    )
    raw = escape(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    return (
        f"<!doctype html>\n<html lang='es'><head><meta charset='utf-8'>"
        f"<title>ticslab experiment {escape(result.scenario)}</title><style>{STYLE}</style>"
        f"</head><body><h1>ticslab experiment {escape(result.scenario)}</h1>"
        f"<p>{settings} &middot; {result.seconds:.1f} s</p>"
        f"{_claims(result)}{body(result)}"
        f"<details><summary>JSON</summary><pre>{raw}</pre></details></body></html>\n"
    )


def _claims(result: Result) -> str:
    items = "".join(
        f"<li class='{'held' if c.held else 'failed'}'>"
        f"{'✔ held / se cumple' if c.held else '✘ did not hold / no se cumple'}: "
        f"{escape(c.en)} / <i>{escape(c.es)}</i></li>"
        for c in result.claims
    )
    return f"<h2>The handout says / El apunte dice</h2><ul>{items}</ul>"


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


def _algorithms(result: Result) -> str:
    rows = result.results
    servers = list(rows[0]["share"]) if rows else []
    table = _table(
        ["algorithm", *(f"{s} share" for s in servers), "p50 ms", "p95 ms", "p99 ms", "errors",
         "affinity"],
        [[r["algorithm"], *(f"{r['share'][s]:.0%}" for s in servers), r["p50_ms"], r["p95_ms"],
          r["p99_ms"], r["errors"], r["affinity"]] for r in rows],
    )  # fmt: skip
    shares = bars(
        [
            (
                r["algorithm"],
                [(round(100 * r["share"][s]), _colour(i)) for i, s in enumerate(servers)],
            )
            for r in rows
        ],
        100,
        "%",
    )
    legend = " ".join(
        f"<span style='color:{_colour(i)}'>&#9632; {escape(s)}</span>"
        for i, s in enumerate(servers)
    )
    p95 = bars(
        [(r["algorithm"], [(r["p95_ms"], BAD)]) for r in rows],
        max((r["p95_ms"] for r in rows), default=1.0),
        "ms",
    )
    failing = "".join(
        f"<p class='failed'>✘ {escape(r['algorithm'])}: {escape(pick_failures(r))}</p>"
        for r in rows
        if r.get("algorithm_errors")
    )
    return (
        f"<h2>Results / Resultados</h2>{table}{failing}"
        f"<h3>Share / Reparto</h3><p>{legend}</p>{shares}"
        f"<h3>p95 latency / latencia p95</h3>{p95}"
    )


def _race(result: Result) -> str:
    rows = result.results
    table = _table(
        ["storage", "sent", "201", "stored", "lost", "no 201", "ids given twice"],
        [[r["storage"], r["sent"], r["expected"], r["stored"], r["lost"], r["unanswered"],
          r["duplicate_ids"]] for r in rows],
    )  # fmt: skip
    chart = bars(
        [(r["storage"], [(r["stored"], OK), (r["lost"], BAD)]) for r in rows],
        max((r["expected"] for r in rows), default=1),
        "tasks answered 201",
    )
    return (
        f"<h2>Results / Resultados</h2>{table}"
        f"<h3>Stored (green) and lost (red) / Guardadas (verde) y perdidas (rojo)</h3>{chart}"
    )


def _failover(result: Result) -> str:
    rows = result.results
    table = _table(
        ["run", "--retries", "sent", "201", "failed", "lost"],
        [[r["run"], r["retries"], r["sent"], r["created"], r["failed"], r["lost"]] for r in rows],
    )
    bucket = result.series["bucket_seconds"]
    kill_at = result.settings["kill_at"]
    charts = "".join(
        f"<h3>{escape(r['run'])}: answers every {bucket:g} s, failed in red / respuestas cada "
        f"{bucket:g} s, fallidas en rojo</h3>"
        + columns(
            result.series[r["run"]]["ok"],
            result.series[r["run"]]["failed"],
            bucket,
            kill_at,
            f"{kill_at:g} s: kill server1",
        )
        for r in rows
    )
    return f"<h2>Results / Resultados</h2>{table}{charts}"


def _colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]

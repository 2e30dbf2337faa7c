"""The server table: one row per server, updated cell by cell as values change."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from dashboard import format as fmt
from dashboard.i18n import Translator

# Column key -> fixed width (the server column is sized to its names).
WIDTHS: dict[str, int] = {
    "server": 9,
    "state": 5,
    "since": 6,
    "share": 9,
    "rps": 9,
    "busy": 4,
    "latency": 9,
    "responses": 11,
    "errors": 11,
    "check": 5,
}
STATE_STYLES = {
    "UP": "bold black on green3",
    "DOWN": "bold white on red3",
    "DRAIN": "bold black on yellow3",
    "MAINT": "bold black on cyan3",
}
HISTORY = 4  # sparkline points


def state_text(state: str) -> Text:
    """The state as a word on its colour, so it reads without colour too."""
    return Text(state.ljust(5), style=STATE_STYLES.get(state, "bold reverse"))


def triple(values: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    values = values or {}
    return "/".join(fmt.number(values.get(key, 0)) for key in keys)


def check_text(check: dict[str, Any] | None) -> Text:
    if not check:
        return Text("-")
    if check.get("ok"):
        return Text(f"✓ {check.get('status') or ''}".rstrip(), style="green")
    detail = check.get("status") or "✗"
    return Text(f"✗ {detail}" if detail != "✗" else "✗", style="bold red")


class ServerTable(DataTable):
    """Rows keyed by server name; a poll touches only the cells whose text changed."""

    def __init__(self, t: Translator) -> None:
        super().__init__(id="servers", cursor_type="row", zebra_stripes=True)
        self.t = t
        self._cells: dict[str, dict[str, Text | str]] = {}
        self._history: dict[str, deque[float]] = {}

    @property
    def selected_server(self) -> str | None:
        """The name of the server under the cursor, if any."""
        names = list(self._cells)
        if not names or not 0 <= self.cursor_row < len(names):
            return None
        return names[self.cursor_row]

    def show(self, servers: list[dict[str, Any]]) -> None:
        names = [str(server.get("name")) for server in servers]
        for name, server in zip(names, servers, strict=True):
            history = self._history.setdefault(name, deque(maxlen=HISTORY))
            history.append(float(server.get("rps") or 0.0))
        rows = {
            name: self.cells(index, server)
            for index, (name, server) in enumerate(zip(names, servers, strict=True), 1)
        }
        if names != list(self._cells):
            self._rebuild(rows)
            return
        for name, cells in rows.items():
            old = self._cells[name]
            for column, value in cells.items():
                if value != old[column]:
                    self.update_cell(name, column, value)
            self._cells[name] = cells

    def _rebuild(self, rows: dict[str, dict[str, Text | str]]) -> None:
        """Only when servers appear or disappear: columns are sized once here."""
        cursor = self.cursor_row
        self.clear(columns=True)
        widths = dict(WIDTHS)
        widths["server"] = max([len(row["server"]) for row in rows.values()] + [widths["server"]])
        for column, width in widths.items():
            self.add_column(self.t(f"col_{column}"), width=width, key=column)
        for name, cells in rows.items():
            self.add_row(*cells.values(), key=name)
        self._cells = rows
        self._history = {name: self._history[name] for name in rows}
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1))

    def cells(self, index: int, server: dict[str, Any]) -> dict[str, Text | str]:
        name = str(server.get("name"))
        latency = server.get("latency_ms") or {}
        rps = server.get("rps")
        return {
            "server": f"{index} {name}" if index <= 9 else f"  {name}",
            "state": state_text(str(server.get("state", "?"))),
            "since": fmt.duration(server.get("since_seconds")),
            "share": fmt.share_bar(server.get("share_10s"), width=4),
            "rps": f"{fmt.number(rps):>4} {fmt.sparkline(self._history[name], HISTORY)}",
            "busy": fmt.number(server.get("in_flight")),
            "latency": f"{fmt.number(latency.get('p50'))}/{fmt.number(latency.get('p95'))}",
            "responses": triple(server.get("responses"), ("2xx", "4xx", "5xx")),
            "errors": triple(
                server.get("errors"), ("400_BAD_REQUEST", "404_NOT_FOUND", "500_INTERNAL_ERROR")
            ),
            "check": check_text(server.get("last_check")),
        }

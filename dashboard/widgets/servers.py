"""The server table: one row per server, updated cell by cell as values change.

A ``str`` cell would be read as markup, so a cell holding a server's name is ``Text``.

Every column fits 100 columns (16 servers, Spanish titles). On a narrower screen (the
``-narrow`` class, see ``DashboardApp.HORIZONTAL_BREAKPOINTS``) the table shows either the
columns that matter first or the details (``w``), so it never scrolls sideways at 80 columns.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from dashboard import format as fmt
from dashboard.history import Trail, fit
from dashboard.i18n import Translator
from dashboard.poll import PollResult
from dashboard.polling import PollWatcher
from dashboard.screens.fault import DESTRUCTIVE
from dashboard.states import STATE_STYLES, UNKNOWN_STYLE
from services.common import COURSE_ERROR_TYPES, UP

# Column key -> width of its content; the header's width wins when it is longer. The share
# column's width comes from the bar (see ``bar_width``), the server column's from the names.
WIDTHS: dict[str, int] = {
    "server": 11,  # "▶ 1 server1"
    "state": 7,  # "EJECTED"
    "fault": 0,  # the longest fault shown; the column is there only while a fault is on
    "since": 6,
    "weight": 4,  # "256↗"
    "share": 0,
    "rps": 9,
    "busy": 4,
    "latency": 9,
    "responses": 11,
    "errors": 11,
    "check": 5,
}
WIDE_COLUMNS = tuple(key for key in WIDTHS if key != "fault")  # the fault's: while one is on
# Under 100 columns: what the lesson is watching (where the traffic goes, how fast, how well
# answered), or, after ``w``, what is left (about 60 cells).
TRAFFIC_COLUMNS = ("server", "state", "share", "rps", "busy", "latency", "responses")
DETAIL_COLUMNS = ("server", "state", "since", "weight", "responses", "errors", "check")
# While a fault column is shown, the columns given up, in this order, when the table would
# otherwise not fit its width (the bar under MIN_BAR): what a fault lesson needs least.
MAKE_ROOM = ("since", "errors", "weight", "check", "latency")
GAP = 1  # cells between columns (the table's own padding is 0: two cells each is too wide)
SCROLLBAR = 1
# The traffic share is the lesson: its bar gets every spare cell, up to 30. With 16 servers at
# 100 columns that is 6 in English and 5 in Spanish, whose column titles are words, not
# abbreviations ("Carga" for "Busy").
MIN_BAR, MAX_BAR = 5, 30
PERCENT = 5  # " 100%"
MARK = "▶"  # the selected row, visible without colour too
RAMP = "↗"  # a slow start: the server takes less than its weight for now
# The rate's sparkline: 4 points of 5 s, the last 20 s whatever the refresh rate.
SPARK_POINTS = 4
SPARK_STEP = 5.0
FAULT_WIDTH = 12  # "no saludable"; a longer mode (a newer server's, as sent) is cut


def takes_new_traffic(server: dict[str, Any]) -> bool:
    """UP with a weight above 0 (or no weight: an older balancer). Any other server gets no
    new request from now on, so its rate shows 0 at once: the 10 s window would show the old
    traffic for 10 s more and make a drain or a stop look as if it failed. (Its share is 0
    already: the balancer counts shares among these servers only, docs/api.md.)"""
    return server.get("state") == UP and fmt.real(server.get("weight")) != 0


def state_text(state: str) -> Text:
    """The state as a word on its colour, so it reads without colour too."""
    return Text(state.ljust(WIDTHS["state"]), style=STATE_STYLES.get(state, UNKNOWN_STYLE))


def weight_text(server: dict[str, Any]) -> str:
    """The configured weight (``3``), marked ``3↗`` while a slow start ramps the weight the
    algorithms use (``effective_weight``) up to it; ``-`` from a balancer without weights."""
    weight, effective = fmt.real(server.get("weight")), fmt.real(server.get("effective_weight"))
    if weight is None:
        return "-"
    ramping = effective is not None and effective < weight
    return fmt.number(weight) + (RAMP if ramping else "")


def share_text(percent: float | None, width: int) -> Text:
    """The share bar, its percent in bold so it reads from the back of the room."""
    bar, _, number = fmt.share_bar(percent, width).rpartition(" ")
    return Text.assemble((bar, "bold"), " ", (number, "bold"))


def triple(values: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    """``12/3/0``: three counters in one narrow column (a missing one counts 0)."""
    values = values or {}
    return "/".join(fmt.number(values.get(key, 0)) for key in keys)


def fault_text(server: dict[str, Any], t: Translator) -> Text:
    """The fault mode set on the server in the chosen language (``latencia``); nolock, which
    loses tasks, in red; empty when none is on (or the balancer sent no mode as text)."""
    fault = server.get("fault")
    mode = fault.get("mode") if isinstance(fault, dict) else None
    if not isinstance(mode, str) or mode in ("", "none"):
        return Text("")
    style = "bold white on red3" if mode in DESTRUCTIVE else "bold yellow"
    return Text(fit(t.term("mode", mode), FAULT_WIDTH), style=style)


def check_text(check: dict[str, Any] | None) -> Text:
    """The last health check as a mark and its status code (``✓ 200``, ``✗ 503``, ``✗``)."""
    if not check:
        return Text("-")
    mark, style = ("✓", "green") if check.get("ok") else ("✗", "bold red")
    status = check.get("status")
    return Text(f"{mark} {status}" if status else mark, style=style)


class ServerTable(DataTable[Text | str], PollWatcher):
    """Rows keyed by server name; a poll touches only the cells whose text changed."""

    def __init__(self, t: Translator, *, selectable: bool = True) -> None:
        super().__init__(
            id="servers",
            cursor_type="row",
            zebra_stripes=True,
            cell_padding=0,
            show_cursor=selectable,
        )
        self.t = t
        self.selectable = selectable
        self._servers: list[dict[str, Any]] = []
        self._cells: dict[str, dict[str, Text | str]] = {}
        self._history: dict[str, Trail] = {}
        self._now = 0.0  # monotonic time of the last poll shown
        self._latest: list[dict[str, Any]] | None = None  # the last poll's, shown or not
        self._bar = MIN_BAR
        self._columns: tuple[str, ...] = ()
        self.details = False  # under 100 columns: the detail columns instead of the traffic ones

    @property
    def selected_server(self) -> str | None:
        """The name of the server under the cursor, if any."""
        names = list(self._cells)
        if not names or not 0 <= self.cursor_row < len(names):
            return None
        return names[self.cursor_row]

    def show(self, servers: list[dict[str, Any]]) -> None:
        """A new poll: extend the sparklines, then redraw what changed."""
        now = time.monotonic()
        for server in servers:
            trail = self._history.setdefault(
                str(server.get("name")), Trail(SPARK_POINTS, SPARK_STEP)
            )
            rate = fmt.real(server.get("tries_per_second")) if takes_new_traffic(server) else 0
            trail.add(now, rate or 0.0)
        self._now = now
        self._servers = servers
        self._draw()

    def on_mount(self) -> None:
        self.watch(self.app, "charts_open", self._charts_toggled, init=False)

    def show_poll(self, result: PollResult) -> None:
        """Under the charts the table is hidden: it catches up when shown again."""
        self._latest = list(result.status.get("servers") or [])
        if not result.charts_open:
            self.show(self._latest)

    def _charts_toggled(self, shown: bool) -> None:
        if not shown and self._latest is not None:
            self.show(self._latest)  # at once, then a poll

    def on_resize(self, event: events.Resize) -> None:
        if self._servers and self.column_layout() != (self._columns, self._bar):
            self._draw()

    def toggle_details(self) -> None:
        """Under 100 columns: the detail columns instead of the traffic ones, or back."""
        self.details = not self.details
        self._draw()

    def column_layout(self) -> tuple[tuple[str, ...], int]:
        """The columns shown and the share bar's width, as the screen's size allows."""
        return self.visible_columns(), self.bar_width()

    def visible_columns(self) -> tuple[str, ...]:
        """Every column from 100 columns up; under that, the traffic or the detail ones.
        The fault column, after the state, only while a server has a fault, and room made
        for it (``MAKE_ROOM``) when the table would not fit otherwise."""
        if not self.screen.has_class("-narrow"):
            keys = list(WIDE_COLUMNS)
        else:
            keys = list(DETAIL_COLUMNS if self.details else TRAFFIC_COLUMNS)
        if not any(fault_text(server, self.t) for server in self._servers):
            return tuple(keys)
        keys.insert(keys.index("state") + 1, "fault")
        for key in MAKE_ROOM:
            if self.fits(tuple(keys)) or not self.size.width:
                break
            if key in keys:
                keys.remove(key)
        return tuple(keys)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Move the ``▶`` to the selected row (two cells change, nothing else)."""
        for index, name in enumerate(self._cells, 1):
            self._set_cell(name, "server", self.server_cell(index, name))

    def bar_width(self) -> int:
        """The widest share bar the table's width allows, within MIN_BAR..MAX_BAR."""
        return min(max(self.bar_room(self.visible_columns()), MIN_BAR), MAX_BAR)

    def bar_room(self, keys: tuple[str, ...]) -> int:
        """The cells the table's width leaves the share bar with the columns ``keys``."""
        columns = self.column_widths(MIN_BAR, keys)
        used = sum(width for key, (_, width) in columns.items() if key != "share")
        return self.size.width - SCROLLBAR - used - PERCENT - GAP

    def fits(self, keys: tuple[str, ...]) -> bool:
        """The columns ``keys`` fit the table's width (with a bar of MIN_BAR, if shown)."""
        if "share" in keys:
            return self.bar_room(keys) >= MIN_BAR
        return self.bar_room(keys) + PERCENT + GAP >= 0

    def column_widths(self, bar: int, keys: tuple[str, ...]) -> dict[str, tuple[str, int]]:
        """Column key -> (header, width including the gap after it) for the columns ``keys``
        with a bar of ``bar``."""
        names = [str(server.get("name")) for server in self._servers]
        content = dict(WIDTHS, share=bar + PERCENT)
        content["server"] = max([len(f"{MARK} 1 {name}") for name in names] + [WIDTHS["server"]])
        content["fault"] = max(len(fault_text(server, self.t)) for server in self._servers or [{}])
        content = {key: content[key] for key in keys}
        last = keys[-1]
        columns = {}
        for key, width in content.items():
            label = self.t(f"col_{key}")
            if key == "server":
                label = "  " + label  # over the number key, past the selection mark
            columns[key] = (label, max(width, len(label)) + (0 if key == last else GAP))
        return columns

    def _draw(self) -> None:
        columns, bar = self.column_layout()
        names = [str(server.get("name")) for server in self._servers]
        rows = {}
        for index, (name, server) in enumerate(zip(names, self._servers, strict=True), 1):
            cells = self.cells(index, server, bar)
            rows[name] = {key: cells[key] for key in columns}
        if names != list(self._cells) or (columns, bar) != (self._columns, self._bar):
            self._columns, self._bar = columns, bar
            self._rebuild(rows)
            return
        for name, cells in rows.items():
            for column, value in cells.items():
                self._set_cell(name, column, value)

    def _set_cell(self, name: str, column: str, value: Text | str) -> None:
        if value != self._cells[name][column]:
            self._cells[name][column] = value
            self.update_cell(name, column, value)

    def _rebuild(self, rows: dict[str, dict[str, Text | str]]) -> None:
        """Only when servers appear or disappear, or the columns or the bar's width change."""
        cursor = self.cursor_row
        self.clear(columns=True)
        for key, (label, width) in self.column_widths(self._bar, self._columns).items():
            self.add_column(label, width=width, key=key)
        for name, cells in rows.items():
            self.add_row(*cells.values(), key=name)
        self._cells = rows
        self._history = {name: self._history[name] for name in rows}
        if rows:
            self.move_cursor(row=min(cursor, len(rows) - 1))

    def server_cell(self, index: int, name: str) -> Text:
        """``▶ 1 server1``: the mark on the selected row, the number key for servers 1-9."""
        selected = self.selectable and index - 1 == self.cursor_row
        key = str(index) if index <= 9 else " "
        return Text(f"{MARK if selected else ' '} {key} {name}")

    def cells(self, index: int, server: dict[str, Any], bar: int) -> dict[str, Text | str]:
        name = str(server.get("name"))
        latency = server.get("latency_ms") or {}
        receives = takes_new_traffic(server)
        rps = server.get("tries_per_second") if receives else 0
        trail = self._history[name].values(self._now)
        return {
            "server": self.server_cell(index, name),
            "state": state_text(str(server.get("state", "?"))),
            "fault": fault_text(server, self.t),
            "since": fmt.duration(server.get("since_seconds")),
            "weight": weight_text(server),
            "share": share_text(server.get("share_10s"), bar),
            "rps": f"{fmt.number(rps):>4} {fmt.sparkline(trail, SPARK_POINTS)}",
            "busy": fmt.number(server.get("in_flight")),
            "latency": f"{fmt.number(latency.get('p50'))}/{fmt.number(latency.get('p95'))}",
            "responses": triple(server.get("responses"), ("2xx", "4xx", "5xx")),
            "errors": triple(server.get("errors"), COURSE_ERROR_TYPES),
            "check": check_text(server.get("last_check")),
        }

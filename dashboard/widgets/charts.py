"""The chart view: the balancer's last five minutes (requests per server, errors by type,
p95 latency), with a line at each event that explains a change: a server DOWN or UP, a kill,
a fault, the algorithm switched.

Drawn by plotext inside Textual (textual-plotext). A chart is rebuilt only when a new second
of history arrives, so it costs the same at any refresh rate. Labels come from the network
already printable (dashboard/api.py), and plotext's output is read as ANSI, never as markup.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.app import ComposeResult
from textual.containers import Vertical
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from dashboard.history import WINDOW_SECONDS, Marker, SampleWindow, fit, thin
from dashboard.i18n import Translator
from dashboard.poll import PollResult
from dashboard.polling import PollWatcher

RGB = tuple[int, int, int]
# A server keeps its colour (by its place in the balancer's list) in every chart.
SERVER_COLOURS: tuple[RGB, ...] = (
    (0, 200, 215), (215, 80, 215), (230, 190, 40), (80, 200, 80), (90, 130, 255), (255, 140, 60),
)  # fmt: skip
ERROR_COLOURS: tuple[RGB, ...] = ((255, 90, 90), (255, 170, 60), (230, 230, 80), (200, 120, 255))
OTHER_COLOUR: RGB = (160, 160, 160)
MARKER_COLOURS: dict[str, RGB] = {
    "down": (255, 70, 70),
    "up": (70, 210, 100),
    "action": (255, 170, 40),
    "fault": (200, 120, 255),
    "algorithm": (120, 180, 255),
}
MINUTE_TICKS = range(-WINDOW_SECONDS, 1, 60)
# Which markers get a label on the time axis when they are too close for two: a server going
# DOWN or UP first, then what was done to one, then the algorithm; the newest first among
# equals. The others keep their line.
LABEL_PRIORITY = {"down": 0, "up": 0, "action": 1, "fault": 1, "algorithm": 2}
# plotext's "hd" (2x2 blocks a cell) stays legible on a projector; braille dots do not.
MARKER = "hd"
# Cells of a chart's width that are not its plot (the y-axis numbers and the frame).
AXIS_CELLS = 12


def server_colour(index: int) -> RGB:
    return SERVER_COLOURS[index % len(SERVER_COLOURS)]


class HistoryChart(PlotextPlot):
    """One chart of the view; ``plot`` draws its lines, the rest (axis, markers) is shared."""

    def __init__(self, t: Translator, title_key: str, chart_id: str) -> None:
        super().__init__(id=chart_id, classes="chart")
        self.t = t
        self.title_key = title_key

    def draw(self, history: SampleWindow, markers: list[Marker], note: str | None = None) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(self.t(self.title_key) if note is None else f"{self.t(self.title_key)}: {note}")
        if note is None and history.since is not None:
            self.plot(plt, history, self.step())
        plt.xlim(-WINDOW_SECONDS, 0)
        for marker in markers:
            plt.vline(marker.x, MARKER_COLOURS[marker.kind])
        ticks, labels = self.ticks(markers)
        plt.xticks(ticks, labels)
        self.refresh()

    def plot(self, plt: Plot, history: SampleWindow, step: int) -> None:
        raise NotImplementedError

    def step(self) -> int:
        """Seconds per point: about one point per cell of plot (a 100-column terminal draws
        one every 3 s, a 160-column one every 2 s), which is all the cells can show."""
        return max(1, round(WINDOW_SECONDS / self.plot_cells()))

    def ticks(self, markers: list[Marker]) -> tuple[list[float], list[str]]:
        """Labels for the markers that have room (by ``LABEL_PRIORITY``), then the minute
        ticks that have room beside them; room is counted in cells, as the labels are."""
        seconds_per_cell = WINDOW_SECONDS / self.plot_cells()

        def apart(x: float, label: str, others: list[tuple[float, str]]) -> bool:
            return all(
                abs(x - at) >= ((len(label) + len(text)) / 2 + 1) * seconds_per_cell
                for at, text in others
            )

        chosen: list[tuple[float, str]] = []
        for marker in sorted(markers, key=lambda m: (LABEL_PRIORITY[m.kind], -m.x)):
            if apart(marker.x, label := self.label(marker), chosen):
                chosen.append((marker.x, label))
        labelled = list(chosen)
        for tick in MINUTE_TICKS:
            text = self.t("chart_now") if tick == 0 else f"{tick // 60}m"
            if apart(tick, text, labelled):
                chosen.append((tick, text))
        return [x for x, _ in chosen], [text for _, text in chosen]

    def plot_cells(self) -> int:
        """Cells of the plot's width (the whole width before layout: 100 columns)."""
        return max((self.size.width or 100) - AXIS_CELLS, 20)

    def label(self, marker: Marker) -> str:
        if marker.kind == "down":
            return f"↓{marker.server}"
        if marker.kind == "up":
            return f"↑{marker.server}"
        if marker.kind == "algorithm":
            return fit(self.t.term("alg", marker.detail))
        if marker.kind == "fault":
            return f"{marker.server} {fit(self.t.term('mode', marker.detail))}"
        return f"{self.t.term('action', marker.detail)} {marker.server}"


class TrafficChart(HistoryChart):
    """Requests per second each server received (its tries: a retry counts where it went),
    averaged over the seconds a point stands for."""

    def plot(self, plt: Plot, history: SampleWindow, step: int) -> None:
        for server in history.servers:
            xs, ys = thin(history.xs(), history.tries(server), step, history.since or 0)
            colour = server_colour(history.colour(server))
            plt.plot(xs, ys, label=server, color=colour, marker=MARKER)


class ErrorsChart(HistoryChart):
    """Error answers per second by the course's type, named as the errors panel names them
    (``404 not found``, ``404 no encontrado``), averaged over the seconds a point stands for."""

    def plot(self, plt: Plot, history: SampleWindow, step: int) -> None:
        for index, (kind, counts) in enumerate(history.errors().items()):
            colour = OTHER_COLOUR if kind == "other" else ERROR_COLOURS[index % len(ERROR_COLOURS)]
            label = self.t("chart_other") if kind == "other" else self.t.error_type(kind)
            xs, ys = thin(history.xs(), [float(n) for n in counts], step, history.since or 0)
            plt.plot(xs, ys, label=label, color=colour, marker=MARKER)


class LatencyChart(HistoryChart):
    """Each server's p95 latency per second, in ms (only the seconds it answered in)."""

    def plot(self, plt: Plot, history: SampleWindow, step: int) -> None:
        """A point is the slowest second's p95 among those it stands for."""
        for server in history.servers:
            xs, ys = thin(*history.p95(server), step, history.since or 0, combine=max)
            if xs:
                colour = server_colour(history.colour(server))
                plt.plot(xs, ys, label=server, color=colour, marker=MARKER)


class ChartsView(Vertical, PollWatcher):
    """The three charts, one above the other, sharing the time axis and the markers of the
    events the polls bring; drawn only while the view is open (the app's ``charts_open``)."""

    def __init__(self, t: Translator, history: SampleWindow, events_kept: int) -> None:
        super().__init__(id="charts")
        self.t = t
        self.history = history  # the poller's: it reads /history into it
        # The events the charts mark (the events panel keeps its own rendered lines).
        self.timeline: deque[dict[str, Any]] = deque(maxlen=events_kept)
        self._drawn: tuple[object, ...] = ()
        self.charts = (
            TrafficChart(t, "chart_requests", "chart-requests"),
            ErrorsChart(t, "chart_errors", "chart-errors"),
            LatencyChart(t, "chart_latency", "chart-latency"),
        )

    def compose(self) -> ComposeResult:
        yield from self.charts

    def on_mount(self) -> None:
        self.watch(self.app, "charts_open", self._charts_toggled, init=False)

    def show_poll(self, result: PollResult) -> None:
        if result.events_restarted:
            self.timeline.clear()
        self.timeline.extend(result.new_events)
        changed = result.history_changed or result.history_missing or result.new_events
        if result.charts_open and changed:
            self.draw_history(missing=result.history_missing)

    def _charts_toggled(self, shown: bool) -> None:
        if shown:
            self.draw_history()

    def draw_history(self, missing: bool = False) -> None:
        """The history with the timeline's markers, or a note saying why there is none."""
        note = None
        if missing:
            note = self.t("chart_no_history")
        elif self.history.since is None:
            note = self.t("chart_waiting")
        self.draw(self.history, self.history.markers(self.timeline), note)

    def draw(self, history: SampleWindow, markers: list[Marker], note: str | None = None) -> None:
        """Draw again when a point begins (every ``step`` seconds: the points' values only
        change then), or the markers or the note change, so a marker shows at once."""
        step = self.charts[0].step()
        newest = history.since
        point = None if newest is None else newest // step
        when = [(m.x + (newest or 0), m.kind, m.server, m.detail) for m in markers]  # not x
        drawn = (point, step, when, note)
        if drawn == self._drawn:
            return
        self._drawn = drawn
        for chart in self.charts:
            chart.draw(history, markers, note)

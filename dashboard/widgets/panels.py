"""The three panels under the server table: errors, tasks and the events timeline.

Side by side from 100 columns up; under that (the ``-narrow`` class) one at a time, full
width, the next one a key away (``v``): side by side at 80 columns the errors and tasks
panels would be 20 cells wide, mostly ellipses.

Their text comes from the network already ``printable`` (dashboard/api.py) and is only ever
appended to ``Text``, never parsed as markup: a title ``[/oops]`` is shown as written.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.events import Resize
from textual.widget import Widget
from textual.widgets import RichLog, Static

from dashboard import format as fmt
from dashboard.api import TaskList
from dashboard.i18n import Translator
from dashboard.poll import PollResult
from dashboard.polling import PollWatcher
from dashboard.states import EVENT_STYLES

# The panels take every line left under the table: render more than fits, newest first,
# and let the panel cut the oldest at its bottom edge (the poll reads the newest 40 tasks).
RECENT_ERRORS_SHOWN = 10  # all that /errors/stats keeps
EVENTS_KEPT = 300


class ErrorsPanel(Static, PollWatcher):
    """Counts by type, then the most recent errors with their server."""

    def __init__(self, t: Translator) -> None:
        super().__init__(t("errors_none"), id="errors", classes="panel")
        self.t = t
        self.border_title = t("errors_title")
        self._shown: Any = None

    def show_poll(self, result: PollResult) -> None:
        """Under the charts the panel is hidden: it catches up when shown again."""
        if not result.charts_open and result.errors is not None:
            self.show(result.errors)

    def show(self, stats: dict[str, Any]) -> None:
        key = (stats.get("error_types"), stats.get("recent_errors"))
        if key == self._shown:
            return
        self._shown = key
        self.update(self.render_stats(stats))

    def render_stats(self, stats: dict[str, Any]) -> Text:
        text = Text()
        types = {k: v for k, v in (stats.get("error_types") or {}).items() if v}
        if not types:
            return Text(self.t("errors_none"))
        count_width = max(len(str(count)) for count in types.values())
        for kind, count in sorted(types.items()):
            code, _, name = self.t.error_type(kind).partition(" ")
            text.append(f"{code}", style="bold")
            style = "bold red" if code.startswith("5") else "bold yellow"
            text.append(f" {count:>{count_width}}", style=style)
            text.append(f" {name}\n")
        text.append(self.t("errors_recent") + "\n", style="underline")
        for error in (stats.get("recent_errors") or [])[:RECENT_ERRORS_SHOWN]:
            server = error.get("server") or self.t("no_backend")
            text.append(f"{fmt.local_time(error.get('timestamp'))} ")
            text.append(f"{error.get('status', '?')} ", style="bold")
            text.append(f"{server} {error.get('endpoint', '')}\n")
        text.rstrip()
        return text


class TasksPanel(Static, PollWatcher):
    """How many tasks there are and the newest ones."""

    def __init__(self, t: Translator) -> None:
        super().__init__(t("tasks_none"), id="tasks", classes="panel")
        self.t = t
        self.border_title = t("tasks_title", count="-")
        self._shown: Any = None

    def show_poll(self, result: PollResult) -> None:
        if not result.charts_open:
            self.show(result.tasks)

    def show(self, tasks: TaskList | None) -> None:
        if tasks is None:
            # Not read this poll: keep the list, and say why only if none was ever shown.
            if self._shown is None:
                self._shown = "unavailable"
                self.update(self.t("tasks_unavailable"))
            return
        newest = tasks.newest
        key = (tasks.total, [(t.get("id"), t.get("completed"), t.get("title")) for t in newest])
        if key == self._shown:
            return
        self._shown = key
        self.border_title = self.t("tasks_title", count=tasks.total)
        if not newest:
            self.update(self.t("tasks_none"))
            return
        text = Text()
        for task in newest:
            done = task.get("completed")
            text.append("✓ " if done else "· ", style="bold green" if done else "dim")
            # The server before the title: which server created it is the point; a long
            # title is what gets cut.
            text.append(f"#{task.get('id')} ", style="bold")
            text.append(f"{task.get('server') or '-'} ", style="italic")
            text.append(f"{task.get('title', '')}\n")
        text.rstrip()
        self.update(text)


class EventsPanel(RichLog, PollWatcher):
    """The timeline: only new events are appended, the log is never redrawn whole."""

    def __init__(self, t: Translator) -> None:
        super().__init__(
            id="events", classes="panel", max_lines=EVENTS_KEPT, wrap=True, min_width=20
        )
        self.t = t
        self.border_title = t("events_title")
        # Lines that came while the panel was hidden (under 100 columns, another panel shown).
        self._pending: deque[Text] = deque(maxlen=EVENTS_KEPT)
        # Lines written, and the width they were wrapped at: a new width wraps them again.
        self._written: deque[Text] = deque(maxlen=EVENTS_KEPT)
        self._wrapped_at = 0

    def on_mount(self) -> None:
        # Stay on the newest event when the panel shrinks (the disconnected banner, a
        # smaller terminal), until the user scrolls up to read older ones.
        self.anchor()

    def on_resize(self, event: Resize) -> None:
        """A log keeps its lines as wrapped when written: at a new width, write them again
        (at most ``EVENTS_KEPT``), so they fill the wider panel or stay whole in a narrower one."""
        width = self.scrollable_content_region.width
        if width and self._wrapped_at and width != self._wrapped_at:
            self.clear()
            self._pending = deque([*self._written, *self._pending], maxlen=EVENTS_KEPT)
            self._written.clear()
        self._write_pending()

    def show_poll(self, result: PollResult) -> None:
        self.add(result.new_events, result.events_restarted)

    def add(self, events: list[dict[str, Any]], restarted: bool = False) -> None:
        if restarted:
            self.clear()
            self._pending.clear()
            self._written.clear()
        self._pending.extend(self.render_event(event) for event in events)
        self._write_pending()

    def _write_pending(self) -> None:
        """A line is wrapped at the width the log has when it is written, and a hidden
        panel has none (it would be cut every 20 cells): hidden, the lines wait."""
        if width := self.scrollable_content_region.width:
            self._wrapped_at = width
            while self._pending:
                line = self._pending.popleft()
                self._written.append(line)
                self.write(line)

    def render_event(self, event: dict[str, Any]) -> Text:
        """The event's time, then its sentence (the one the balancer's log says)."""
        text = Text(f"{fmt.local_time(event.get('time'))} ", style="dim")
        text.append(self.t.events.sentence(event), style=self.style(event))
        return text

    @staticmethod
    def style(event: dict[str, Any]) -> str:
        kind = event.get("kind")
        if kind == "state":
            return EVENT_STYLES.get(str(event.get("to")), "bold")
        styles = {
            "control": "cyan",
            "algorithm": "magenta",
            "algorithm_error": "bold magenta",
            "algorithm_slow": "bold magenta",
            "start": "bold",
            "failure": "bold red",
        }
        return styles.get(str(kind), "")


class Panels(Horizontal):
    """Holds the three panels and which one is shown when only one fits (``-current``)."""

    def __init__(self, *panels: Widget, current: int) -> None:
        super().__init__(id="panels")
        self.panels = panels
        self.current = current

    def compose(self) -> ComposeResult:
        yield from self.panels

    def on_mount(self) -> None:
        self.panels[self.current].add_class("-current")

    def on_resize(self, event: Resize) -> None:
        # The panel and column keys are in the Footer only under 100 columns: the screen's
        # size class has just been set, so let the Footer ask again.
        self.refresh_bindings()

    def show_next(self) -> None:
        """Show the next panel (under 100 columns, where only one is shown)."""
        self.panels[self.current].remove_class("-current")
        self.current = (self.current + 1) % len(self.panels)
        self.panels[self.current].add_class("-current")

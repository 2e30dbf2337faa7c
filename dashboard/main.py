"""The dashboard app: what is on screen and how the parts are wired.

The poll controller (dashboard/polling.py) sets the app's reactives, the widgets watch them,
and the keys' actions (dashboard/actions.py) read them; the app only composes, binds the key
table and guards every key and button in one place (``check_action``).
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict
from collections.abc import Callable

import httpx
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from dashboard.actions import ControlActions, ViewActions
from dashboard.api import BalancerClient
from dashboard.format import safe_url
from dashboard.i18n import Translator
from dashboard.keys import (
    KEYS,
    NARROW_ACTIONS,
    ON_SELECTED,
    ON_SELECTED_KEYS,
    WRITE_ACTIONS,
    key_label,
)
from dashboard.options import CONTRAST_THEME, Options, parse_options
from dashboard.poll import Poller
from dashboard.polling import PollController, PollFailure, Refresh
from dashboard.terminal import CHECK_SECONDS, reads_the_terminal, terminal_size
from dashboard.themes import HIGH_CONTRAST
from dashboard.widgets.charts import ChartsView
from dashboard.widgets.controls import ControlBar
from dashboard.widgets.panels import EVENTS_KEPT, ErrorsPanel, EventsPanel, Panels, TasksPanel
from dashboard.widgets.servers import ServerTable
from dashboard.widgets.statusbar import Banner, StatusBar
from dashboard.widgets.totals import Totals
from services.common import printable

DEFAULT_THEME = "textual-dark"
# The size classes dashboard.tcss and the widgets read. Everything fits 100x30; under 100
# columns (a student's 80x24 laptop) the table shows the columns that matter first and the
# panels come one at a time; under 30 rows the header goes and the totals take one line.
NARROW_BELOW = 100
SHORT_BELOW = 30


class DashboardApp(ControlActions, ViewActions):
    """Shows the balancer's ``/status``, ``/errors/stats``, ``/events`` and ``/tareas``."""

    CSS_PATH = "dashboard.tcss"
    # Textual declares these as instance attributes (its ClassVar sits inside an Optional), so
    # mypy refuses a ClassVar here.
    HORIZONTAL_BREAKPOINTS: list[tuple[int, str]] | None = [  # noqa: RUF012
        (0, "-narrow"),
        (NARROW_BELOW, "-wide"),
    ]
    VERTICAL_BREAKPOINTS: list[tuple[int, str]] | None = [  # noqa: RUF012
        (0, "-short"),
        (SHORT_BELOW, "-tall"),
    ]

    def __init__(
        self,
        options: Options | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # ``textual run dashboard --url ...`` builds the app with no arguments: parse here,
        # when the app starts, never at import.
        options = options or parse_options(sys.argv[1:])
        super().__init__()
        self.options = options
        self.display_url = safe_url(options.url)  # never any credentials on screen
        self.t = Translator(options.lang)
        self.client = BalancerClient(
            options.url,
            options.token,
            read_only=options.read_only,
            transport=transport,
            ca=options.ca,
        )
        self.read_only = self.client.read_only
        poller = Poller(self.client)
        self.polling = PollController(self, poller, self.t, self.display_url)
        self.set_reactive(DashboardApp.refresh_rate, Refresh(options.refresh))
        self._server_locks = defaultdict(asyncio.Lock)
        self.register_theme(HIGH_CONTRAST)
        for key in KEYS:
            self.bind(
                key.keys,
                key.action,
                description=self.t(key.short or key.text),
                show=key.show,
                key_display=key_label(key, self.t),
            )
        # Replaced in tests; ``follow_terminal`` compares it with the app's size.
        self.read_terminal_size: Callable[[], Size | None] = terminal_size
        self.status_bar = StatusBar(self.t, self.display_url, self.read_only)
        self.banner = Banner(self.t("banner_connecting", url=self.display_url))
        self.totals = Totals(self.t)
        self.servers = ServerTable(self.t, selectable=not self.read_only)
        self.errors_panel = ErrorsPanel(self.t)
        self.tasks_panel = TasksPanel(self.t)
        self.events_panel = EventsPanel(self.t)
        self.charts = ChartsView(self.t, poller.history, EVENTS_KEPT)
        # One at a time under 100 columns, the events first: they say what just happened.
        self.panels = Panels(self.errors_panel, self.tasks_panel, self.events_panel, current=2)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="⇄")
        yield self.status_bar
        yield self.banner
        yield self.totals
        with Vertical(id="body"):
            yield self.servers
            yield self.panels
        yield self.charts
        if not self.read_only:
            yield ControlBar(self.t)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.title = self.t("title")
        self.sub_title = self.display_url
        self.theme = self._pick_theme()
        self.screen.set_class(self.read_only, "-read-only")
        self.servers.focus()
        self.polling.start(self)
        if reads_the_terminal(self):
            self.set_interval(CHECK_SECONDS, self.follow_terminal)

    def follow_terminal(self) -> None:
        """A Resize when the terminal's size is not the app's (dashboard/terminal.py): a
        resize Textual missed at start, or any since, is followed within ``CHECK_SECONDS``."""
        size = self.read_terminal_size()
        if size is not None and size != self.size:
            self.post_message(events.Resize(size, size))

    def _pick_theme(self) -> str:
        wanted = self.options.theme or (CONTRAST_THEME if self.read_only else DEFAULT_THEME)
        if wanted in self.available_themes:
            return wanted
        names = ", ".join(sorted(self.available_themes))
        self.notify(f"--theme {wanted!r}: {names}", severity="error", timeout=10)
        return DEFAULT_THEME

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # ---- what the reactives change on the screen itself (the widgets watch their own) ----
    def watch_polled(self) -> None:
        self.screen_main.set_class(False, "-disconnected")

    def watch_poll_failed(self, failure: PollFailure | None) -> None:
        self.screen_main.set_class(failure is not None, "-disconnected")

    def watch_charts_open(self, shown: bool) -> None:
        self.polling.poller.charts_open = shown
        self.screen_main.set_class(shown, "-charts")
        self.refresh_bindings()  # the keys on the selected row go, or come back
        if not shown:
            self.servers.focus()  # hidden, it lost the focus: the arrow keys select again

    @property
    def screen_main(self) -> Screen[object]:
        """The main screen, even while a modal screen is on top of it."""
        return self.servers.screen

    # ---- the one guard for every key and button: read-only, and the small-screen keys ----
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in NARROW_ACTIONS:
            return self.screen_main.has_class("-narrow")
        if action in ON_SELECTED and self.charts_open:
            return False  # the table (and its selection) is hidden under the charts
        return not (self.read_only and action in WRITE_ACTIONS)

    def on_key(self, event: events.Key) -> None:
        """A key ``check_action`` refused because the charts hide the selected row says so,
        in words, instead of doing nothing (read-only refuses it anyway, and says it in ``?``)."""
        key = ON_SELECTED_KEYS.get(event.key)
        if key is None or not self.charts_open or self.read_only:
            return
        if self.screen is not self.screen_main:
            return  # a modal screen (help, fault picker) has the keys
        shown = event.character or key_label(key, self.t)
        action = self.t(key.short or key.text)
        self.notify(self.t("n_charts_refused", pressed=shown, action=action), severity="warning")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A control worker that raised (an answer of an unexpected shape, a bug) says so and
        is logged: with ``exit_on_error=False`` it would otherwise end in silence. A poll loop
        that ended so is started again (``poll_once`` already catches a poll's own errors)."""
        worker = event.worker
        if event.state != WorkerState.ERROR or worker.group not in ("control", "poll"):
            return
        reason = printable(f"{type(worker.error).__name__}: {worker.error}")
        self.log.error(f"worker {worker.name} failed", reason, worker.error)
        self.notify(self.t("n_worker_error", what=worker.name, message=reason), severity="error")
        if worker.group == "poll":
            self.polling.start(self)

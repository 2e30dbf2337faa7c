"""The dashboard app: one polling worker, widgets updated in place, guarded controls."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import httpx
from textual import events, work
from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from dashboard.api import ApiError, BalancerClient, ReadOnlyError, Unreachable
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
from dashboard.poll import Poller, PollResult, backoff_delay
from dashboard.screens.fault import FaultScreen
from dashboard.screens.help import HelpScreen
from dashboard.states import DOWN, SET_ASIDE
from dashboard.terminal import CHECK_SECONDS, reads_the_terminal, terminal_size
from dashboard.themes import HIGH_CONTRAST
from dashboard.widgets.charts import ChartsView
from dashboard.widgets.controls import ControlBar
from dashboard.widgets.panels import EVENTS_KEPT, ErrorsPanel, EventsPanel, Panels, TasksPanel
from dashboard.widgets.servers import ServerTable
from dashboard.widgets.statusbar import Banner, StatusBar
from dashboard.widgets.totals import Totals
from services.common import MAX_WEIGHT, printable

REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
DEFAULT_THEME = "textual-dark"
# The size classes dashboard.tcss and the widgets read. Everything fits 100x30; under 100
# columns (a student's 80x24 laptop) the table shows the columns that matter first and the
# panels come one at a time; under 30 rows the header goes and the totals take one line.
NARROW_BELOW = 100
SHORT_BELOW = 30


class DashboardApp(App[int]):
    """Shows the balancer's ``/status``, ``/errors/stats``, ``/events`` and ``/tareas``."""

    CSS_PATH = "dashboard.tcss"
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (NARROW_BELOW, "-wide"),
    ]
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
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
            options.url, options.token, read_only=options.read_only, transport=transport
        )
        self.read_only = self.client.read_only
        self.poller = Poller(self.client)
        self.refresh_seconds = options.refresh
        self.refresh_paused = False
        self.status: dict[str, Any] | None = None
        self.failures = 0
        self._wake = asyncio.Event()
        self._poll_once_more = False  # one poll even while paused (opening the charts)
        # One control action at a time per server (two quick presses act in turn).
        self._server_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
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
        self.banner = Banner()
        self.totals = Totals(self.t)
        self.servers = ServerTable(self.t, selectable=not self.read_only)
        self.errors_panel = ErrorsPanel(self.t)
        self.tasks_panel = TasksPanel(self.t)
        self.events_panel = EventsPanel(self.t)
        self.charts = ChartsView(self.t)
        # The events the charts mark (the panel keeps its own rendered lines).
        self.timeline: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        # One at a time under 100 columns, the events first: they say what just happened.
        self.panels = Panels(self.errors_panel, self.tasks_panel, self.events_panel, current=2)

    # ---- layout ----
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
        self.banner.show(self.t("banner_connecting", url=self.display_url))
        self.status_bar.show_refresh(self.refresh_seconds, self.refresh_paused)
        self.servers.focus()
        self.poll_loop()
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

    # ---- polling ----
    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll_loop(self) -> None:
        """The only poller: the next poll starts after the previous one has finished."""
        while True:
            self._wake.clear()
            if self.refresh_paused and self.status is not None and not self._poll_once_more:
                await self._wake.wait()
                continue
            self._poll_once_more = False
            delay = await self.poll_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def poll_now(self) -> None:
        """Poll at once (after a control action, a rate change or resuming)."""
        self._wake.set()

    async def poll_once(self) -> float:
        """One poll; returns how long to wait before the next one. Whatever it raises, the
        loop goes on: a poll that failed is said, and the next one backs off."""
        try:
            snapshot = await self.poller.fetch()
            self.apply(snapshot)
        except Exception as error:
            self.failures += 1
            delay = backoff_delay(self.failures, self.refresh_seconds)
            self.show_failure(error, delay)
            return delay
        self.failures = 0
        return self.refresh_seconds

    def show_failure(self, error: Exception, delay: float) -> None:
        """The last data stays on screen, dimmed, under a banner saying why and when the next
        poll comes: DISCONNECTED for the balancer's own refusals and silences (``ApiError``),
        POLL ERROR for anything else (an answer of the wrong shape, a bug), also logged."""
        if isinstance(error, ApiError):
            state, reason = "disconnected", error.message
        else:
            state, reason = "poll_error", printable(f"{type(error).__name__}: {error}")
            self.log.error("poll failed", reason, error)
        self.screen_main.set_class(True, "-disconnected")
        self.status_bar.show_connection(state)
        self.banner.show(
            self.t(
                f"banner_{state}",
                url=self.display_url,
                reason=reason,
                delay=f"{delay:g}",
                attempt=self.failures,
            )
        )

    def apply(self, snapshot: PollResult) -> None:
        """Hand each widget its part; each one redraws only what changed."""
        status = snapshot.status
        self.status = status
        self.screen_main.set_class(False, "-disconnected")
        self.banner.show(None)
        self.status_bar.show_connection("connected")
        self.status_bar.show_algorithm(str(status.get("algorithm", "?")))
        servers = status.get("servers") or []
        errors = snapshot.errors.get("total_errors") if snapshot.errors else None
        self.totals.show(
            int(status.get("requests_total") or 0),
            errors,
            int(status.get("servers_up") or 0),
            int(status.get("servers_total") or len(servers)),
        )
        # Under the charts the table and panels are hidden: they catch up when shown again.
        if not self.poller.charts_open:
            self.servers.show(servers)
            if snapshot.errors is not None:
                self.errors_panel.show(snapshot.errors)
            self.tasks_panel.show(snapshot.tasks)
        self.events_panel.add(snapshot.new_events, snapshot.events_restarted)
        if snapshot.events_restarted:
            self.timeline.clear()
        self.timeline.extend(snapshot.new_events)
        if self.poller.charts_open and (
            snapshot.history_changed or snapshot.history_missing or snapshot.new_events
        ):
            self.draw_charts(missing=snapshot.history_missing)

    def draw_charts(self, missing: bool = False) -> None:
        history = self.poller.history
        note = None
        if missing:
            note = self.t("chart_no_history")
        elif history.since is None:
            note = self.t("chart_waiting")
        self.charts.draw(history, history.markers(self.timeline), note)

    @property
    def screen_main(self) -> Screen[Any]:
        """The main screen, even while a modal screen is on top of it."""
        return self.servers.screen

    # ---- the one guard for every key and button: read-only, and the small-screen keys ----
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in NARROW_ACTIONS:
            return self.screen_main.has_class("-narrow")
        if action in ON_SELECTED and self.poller.charts_open:
            return False  # the table (and its selection) is hidden under the charts
        return not (self.read_only and action in WRITE_ACTIONS)

    def on_key(self, event: events.Key) -> None:
        """A key ``check_action`` refused because the charts hide the selected row says so,
        in words, instead of doing nothing (read-only refuses it anyway, and says it in ``?``)."""
        key = ON_SELECTED_KEYS.get(event.key)
        if key is None or not self.poller.charts_open or self.read_only:
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
            self.poll_loop()

    # ---- control actions (each runs in a worker, so the UI never waits) ----
    def _server_list(self) -> list[dict[str, Any]]:
        return list((self.status or {}).get("servers") or [])

    def _state_of(self, name: str) -> str:
        return next((s.get("state", "") for s in self._server_list() if s.get("name") == name), "")

    def _selected(self) -> str | None:
        name = self.servers.selected_server
        if name is None:
            self.notify(self.t("n_no_selection"), severity="warning")
        return name

    def action_toggle_server(self, number: int) -> None:
        servers = self._server_list()
        if not servers:
            self.notify(self.t("n_no_data"), severity="warning")
        elif number > len(servers):
            self.notify(self.t("n_no_server", number=number), severity="warning")
        else:
            self._toggle(str(servers[number - 1].get("name")))

    def action_toggle_selected(self) -> None:
        if name := self._selected():
            self._toggle(name)

    @work(group="control", exit_on_error=False)
    async def _toggle(self, name: str) -> None:
        """Start a stopped server, stop a running one.

        The driver's process state (``GET /control``) decides when it is known; otherwise
        the balancer's state does: DOWN is started, anything else stopped. Two quick presses
        act in turn, the second on what the first left.
        """
        async with self._server_locks[name]:
            await self._toggle_now(name)

    async def _toggle_now(self, name: str) -> None:
        try:
            process = (await self.client.control_info())["servers"][name].get("process")
        except (ApiError, KeyError, TypeError):
            process = None
        if process is None:
            stopped = self._state_of(name) == DOWN
        else:
            stopped = process not in ("running", "paused")
        await self._send_action(name, "start" if stopped else "stop")

    def action_server_action(self, action: str) -> None:
        if name := self._selected():
            self.control_server(name, action)

    def action_drain_toggle(self) -> None:
        if name := self._selected():
            out = self._state_of(name) in SET_ASIDE
            self.control_server(name, "ready" if out else "drain")

    def action_fault_menu(self) -> None:
        name = self._selected()
        if name is None:
            return

        def chosen(fault: dict[str, Any] | None) -> None:
            if fault is not None:
                self.send_fault(name, fault)

        self.push_screen(FaultScreen(self.t, name), chosen)

    def action_weight(self, step: int) -> None:
        if name := self._selected():
            self.change_weight(name, step)

    @work(group="control", exit_on_error=False)
    async def change_weight(self, name: str, step: int) -> None:
        """One step from the weight the balancer has now, not the one on screen (a poll old):
        two quick presses act in turn, the second on what the first left."""
        async with self._server_locks[name]:
            try:
                current = await self.client.weight(name)
            except ApiError as error:
                self.notify_error(f"{name} weight", error)
                return
            weight = min(max(current + step, 0), MAX_WEIGHT)
            if weight == current:
                self.notify(self.t("n_weight_limit", server=name, weight=weight))
                return
            request = self.client.set_weight(name, weight)
            answer = await self._send(f"{name} weight {weight}", request)
        if answer is not None:
            self.notify(self.t("n_weight", server=name, previous=current, weight=weight))

    def action_cycle_algorithm(self) -> None:
        if self.status is None:
            self.notify(self.t("n_no_data"), severity="warning")
            return
        names = list(self.status.get("algorithms") or [])
        current = self.status.get("algorithm")
        if not names:
            return
        following = names[(names.index(current) + 1) % len(names)] if current in names else names[0]
        self.send_algorithm(following)

    def action_reset_stats(self) -> None:
        self.send_reset()

    @work(group="control", exit_on_error=False)
    async def control_server(self, name: str, action: str) -> None:
        async with self._server_locks[name]:
            await self._send_action(name, action)

    async def _send_action(self, name: str, action: str) -> None:
        result = await self._send(f"{name} {action}", self.client.server_action(name, action))
        if result is not None:
            said = self.t.term("action", action)
            shown = self.t.result(action, result.get("result", "ok"))
            self.notify(self.t("n_action_ok", server=name, action=said, result=shown))

    @work(group="control", exit_on_error=False)
    async def send_fault(self, name: str, fault: dict[str, Any]) -> None:
        what = f"{name} fault {fault.get('mode')}"
        async with self._server_locks[name]:
            answer = await self._send(what, self.client.set_fault(name, fault))
        if answer is not None:
            self.notify(self.t("n_fault", server=name, mode=self.t.term("mode", fault.get("mode"))))

    @work(group="control", exit_on_error=False)
    async def send_algorithm(self, algorithm: str) -> None:
        what = f"{self.t('algorithm')} {self.t.term('alg', algorithm)}"
        result = await self._send(what, self.client.set_algorithm(algorithm))
        if result is not None:
            previous = self.t.term("alg", result.get("previous", "?"))
            following = self.t.term("alg", result.get("algorithm", algorithm))
            self.notify(self.t("n_algorithm", previous=previous, algorithm=following))

    @work(group="control", exit_on_error=False)
    async def send_reset(self) -> None:
        if await self._send(self.t("key_reset"), self.client.reset_stats()) is not None:
            self.notify(self.t("n_reset"))

    async def _send(self, what: str, request: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
        """Every control request ends here: its refusal in words, or a poll at once so the
        screen shows its effect. The answer, or None when it failed."""
        try:
            result = await request
        except ApiError as error:
            self.notify_error(what, error)
            return None
        self.poll_now()
        return result

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Notifications name servers and quote the balancer: plain text unless asked."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def notify_error(self, what: str, error: ApiError) -> None:
        """The control API's error in words, with a hint for the common causes."""
        if isinstance(error, ReadOnlyError):
            key = "n_read_only"
        elif isinstance(error, Unreachable):
            key = "n_unreachable"
        elif error.status in (401, 403):
            key = "n_bad_token"
        elif error.status == 409:
            key = "n_conflict"
        elif error.status == 502:
            key = "n_driver"
        else:
            key = "n_failed"
        self.notify(self.t(key, what=what, message=error.message), severity="error", timeout=8)

    # ---- view actions (allowed in read-only mode) ----
    def action_toggle_refresh(self) -> None:
        self.refresh_paused = not self.refresh_paused
        self.status_bar.show_refresh(self.refresh_seconds, self.refresh_paused)
        self.notify(self.t("n_refresh_paused" if self.refresh_paused else "n_refresh_resumed"))
        self.poll_now()

    def action_refresh_rate(self, step: int) -> None:
        steps = REFRESH_STEPS
        nearest = min(range(len(steps)), key=lambda i: abs(steps[i] - self.refresh_seconds))
        self.refresh_seconds = steps[min(max(nearest + step, 0), len(steps) - 1)]
        self.status_bar.show_refresh(self.refresh_seconds, self.refresh_paused)
        self.notify(self.t("n_refresh_rate", seconds=f"{self.refresh_seconds:g}"))
        self.poll_now()

    def action_toggle_charts(self) -> None:
        """Charts in place of the tables (or back); every key still works under them, so a
        server stopped with ``1`` shows on the chart as it happens."""
        shown = not self.poller.charts_open
        self.poller.charts_open = shown
        self.screen_main.set_class(shown, "-charts")
        self.refresh_bindings()  # the keys on the selected row go, or come back
        if shown:
            self.draw_charts()
        else:
            self.servers.focus()  # hidden, it lost the focus: the arrow keys select again
            if self.status is not None:
                self.servers.show(list(self.status.get("servers") or []))  # at once, then a poll
        self._poll_once_more = True  # the history, or the tables, even while paused
        self.poll_now()

    def action_next_panel(self) -> None:
        self.panels.show_next()

    def action_switch_columns(self) -> None:
        self.servers.toggle_details()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.t, self.read_only))

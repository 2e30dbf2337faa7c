"""What the keys and buttons do: the control actions (each in a worker, so the screen never
waits, one at a time per server) and the view actions (allowed in read-only mode).

Split from the app so that the app only composes and wires: ``DashboardApp`` inherits these
two, which read the last poll (``status``) and the selection, and never draw a widget: a
control action's effect shows through the poll it asks for at once.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

from textual import work
from textual.app import App
from textual.notifications import SeverityLevel
from textual.reactive import var

from dashboard.api import ApiError, BalancerClient, ReadOnlyError, Unreachable
from dashboard.i18n import Translator
from dashboard.poll import PollResult
from dashboard.polling import PollController, PollFailure, Refresh
from dashboard.screens.fault import FaultScreen
from dashboard.screens.help import HelpScreen
from dashboard.states import SET_ASIDE
from dashboard.widgets.panels import Panels
from dashboard.widgets.servers import ServerTable
from services.common import DOWN, DRAIN, MAX_WEIGHT, READY, printable


class DashboardState(App[int]):
    """What the actions read and set: the parts the app builds (``DashboardApp.__init__``),
    and the reactives the poll controller and the view keys set and the widgets watch."""

    t: Translator
    client: BalancerClient
    read_only: bool
    polling: PollController
    servers: ServerTable
    panels: Panels
    # The last poll that worked, and the last that failed: always_update, so that each poll
    # reaches the watchers even when it brought what the one before did.
    polled: var[PollResult | None] = var(None, always_update=True)
    poll_failed: var[PollFailure | None] = var(None, always_update=True)
    refresh_rate: var[Refresh] = var(Refresh(1.0))
    charts_open: var[bool] = var(False)  # the chart view in place of the tables

    @property
    def status(self) -> dict[str, Any] | None:
        """The balancer's ``/status`` as the last poll that worked read it."""
        return None if self.polled is None else self.polled.status

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


class ControlActions(DashboardState):
    """The keys and buttons that write (refused in read-only mode by ``check_action``)."""

    # One control action at a time per server (two quick presses act in turn).
    _server_locks: defaultdict[str, asyncio.Lock]

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
            self.control_server(name, (READY if out else DRAIN).lower())

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

    def action_add_server(self) -> None:
        self.send_add_server()

    def action_remove_server(self) -> None:
        if name := self._selected():
            self.send_remove_server(name)

    @work(group="control", exit_on_error=False)
    async def send_add_server(self) -> None:
        answer = await self._send(self.t("key_add_server"), self.client.add_server())
        if answer is not None:
            self.notify(self.t("n_added", server=str(answer.get("server", "?"))))

    @work(group="control", exit_on_error=False)
    async def send_remove_server(self, name: str) -> None:
        async with self._server_locks[name]:
            answer = await self._send(f"{name} remove", self.client.remove_server(name))
        if answer is not None:
            self.notify(self.t("n_removed", server=name))

    def action_rolling_restart(self) -> None:
        self.send_rollout("rolling")

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

    @work(group="control", exit_on_error=False)
    async def send_rollout(self, strategy: str) -> None:
        """Start a rollout; the status bar then follows it from its events."""
        what = self.t.events.term("strategy", strategy)
        answer = await self._send(what, self.client.start_rollout(strategy))
        rollout = answer.get("rollout") if answer is not None else None
        if isinstance(rollout, dict):
            servers = ", ".join(map(str, rollout.get("servers") or {})) or "-"
            self.notify(self.t("n_rollout", strategy=what, servers=printable(servers)))

    async def _send(self, what: str, request: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
        """Every control request ends here: its refusal in words, or a poll at once so the
        screen shows its effect. The answer, or None when it failed."""
        try:
            result = await request
        except ApiError as error:
            self.notify_error(what, error)
            return None
        self.polling.poll_now()
        return result

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


class ViewActions(DashboardState):
    """The keys that only change what is shown (allowed in read-only mode)."""

    def action_toggle_refresh(self) -> None:
        self.refresh_rate = Refresh(self.refresh_rate.seconds, not self.refresh_rate.paused)
        paused = self.refresh_rate.paused
        self.notify(self.t("n_refresh_paused" if paused else "n_refresh_resumed"))
        self.polling.poll_now()

    def action_refresh_rate(self, step: int) -> None:
        self.refresh_rate = self.refresh_rate.step(step)
        self.notify(self.t("n_refresh_rate", seconds=f"{self.refresh_rate.seconds:g}"))
        self.polling.poll_now()

    def action_toggle_charts(self) -> None:
        """Charts in place of the tables (or back); every key still works under them, so a
        server stopped with ``1`` shows on the chart as it happens."""
        self.charts_open = not self.charts_open
        self.polling.poll_now(even_paused=True)  # the history, or the tables

    def action_next_panel(self) -> None:
        self.panels.show_next()

    def action_switch_columns(self) -> None:
        self.servers.toggle_details()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.t, self.read_only))

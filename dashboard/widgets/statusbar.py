"""The line under the header: connection, algorithm, compression (with ``--compress``),
refresh rate and the READ-ONLY badge.

Labels are given ``Content``, not ``str``: the algorithm's name and the reason the balancer
is unreachable come from the network and must never be read as markup.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Label, Static

from dashboard.compression import compression_text
from dashboard.i18n import Translator
from dashboard.poll import PollResult
from dashboard.polling import PollFailure, PollWatcher, Refresh


class StatusBar(Horizontal, PollWatcher):
    """One line of labels; each is rewritten only when its text changes."""

    def __init__(self, t: Translator, url: str, read_only: bool) -> None:
        super().__init__(id="statusbar")
        self.t = t
        self._url = url
        self._read_only = read_only

    def compose(self) -> ComposeResult:
        yield Label(self.t("connecting"), id="connection", classes="-connecting")
        yield Label(self._url, id="url")
        yield Label("", id="algorithm")
        compression = Label("", id="compression")  # shown only with --compress
        compression.display = False
        yield compression
        yield Label("", id="refresh")
        yield Label("", id="rollout")
        if self._read_only:
            yield Label(self.t("read_only_badge"), id="badge")

    def on_mount(self) -> None:
        self.watch(self.app, "refresh_rate", self.show_refresh)

    def show_poll(self, result: PollResult) -> None:
        self.show_connection("connected")
        self.show_algorithm(str(result.status.get("algorithm", "?")))
        compression = compression_text(result.status, self.t)
        self._set("compression", compression or "").display = compression is not None
        rollouts = [e for e in result.new_events if e.get("kind") == "rollout"]
        if rollouts:
            self.show_rollout(rollouts[-1])

    def show_failure(self, failure: PollFailure) -> None:
        self.show_connection(failure.state)

    def _set(self, id: str, text: str) -> Label:
        label = self.query_one(f"#{id}", Label)
        if str(label.content) != text:
            label.update(Content(text))
        return label

    def show_connection(self, state: str) -> None:
        """``state`` is ``connected``, ``connecting``, ``disconnected`` or ``poll_error``."""
        label = self._set("connection", self.t(state))
        for name in ("connected", "connecting", "disconnected", "poll_error"):
            label.set_class(name == state, f"-{name}")

    def show_algorithm(self, algorithm: str) -> None:
        self._set("algorithm", f"{self.t('algorithm')}: {self.t.term('alg', algorithm)}")

    def show_rollout(self, event: dict[str, Any]) -> None:
        """A running rollout's progress (``rolling restart 1/2: server1 waiting for health``),
        its failure until the next one; nothing once it is done (the timeline tells it)."""
        phase = event.get("phase")
        label = self._set("rollout", "" if phase == "done" else self.t.events.sentence(event))
        label.display = phase != "done"
        label.set_class(phase == "failed", "-failed")

    def show_refresh(self, refresh: Refresh) -> None:
        every = self.t("every", seconds=f"{refresh.seconds:g}")
        self._set("refresh", self.t("paused") if refresh.paused else every)


class Banner(Static, PollWatcher):
    """A full-width warning shown until the first poll, and while the balancer cannot be
    reached."""

    def __init__(self, connecting: str) -> None:
        super().__init__(Content(connecting), id="banner")

    def show_poll(self, result: PollResult) -> None:
        self.show(None)

    def show_failure(self, failure: PollFailure) -> None:
        self.show(failure.banner)

    def show(self, text: str | None) -> None:
        self.display = text is not None
        if text is not None and str(self.content) != text:
            self.update(Content(text))

"""The line under the header: connection, algorithm, refresh rate and the READ-ONLY badge.

Labels are given ``Content``, not ``str``: the algorithm's name and the reason the balancer
is unreachable come from the network and must never be read as markup.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.widgets import Label, Static

from dashboard.i18n import Translator


class StatusBar(Horizontal):
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
        yield Label("", id="refresh")
        if self._read_only:
            yield Label(self.t("read_only_badge"), id="badge")

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

    def show_refresh(self, seconds: float, paused: bool) -> None:
        text = self.t("paused") if paused else self.t("every", seconds=f"{seconds:g}")
        self._set("refresh", text)


class Banner(Static):
    """A full-width warning shown while the balancer cannot be reached."""

    def __init__(self) -> None:
        super().__init__("", id="banner")
        self.display = False

    def show(self, text: str | None) -> None:
        self.display = text is not None
        if text is not None and str(self.content) != text:
            self.update(Content(text))

"""One button per control key that has one; not composed at all in read-only mode."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import HorizontalGroup
from textual.widgets import Button

from dashboard.i18n import Translator
from dashboard.keys import KEYS


class ControlBar(HorizontalGroup):
    """The mouse's way to the control keys: each button runs its key's action, so the one
    read-only guard (``DashboardApp.check_action``) covers buttons and keys alike."""

    def __init__(self, t: Translator) -> None:
        super().__init__(id="controls")
        self.t = t

    def compose(self) -> ComposeResult:
        for key in KEYS:
            if key.button:
                label = self.t(key.button)
                yield Button(
                    label, action=f"app.{key.action}", compact=True, id=key.button.replace("_", "-")
                )

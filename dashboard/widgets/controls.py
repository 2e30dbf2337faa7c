"""One button per control action; not composed at all in read-only mode."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import HorizontalGroup
from textual.widgets import Button

from dashboard.i18n import Translator

# (i18n key, app action) — the same actions the keys run, so check_action guards both.
BUTTONS: tuple[tuple[str, str], ...] = (
    ("btn_toggle", "app.toggle_selected"),
    ("btn_kill", "app.server_action('kill')"),
    ("btn_pause", "app.server_action('pause')"),
    ("btn_unpause", "app.server_action('unpause')"),
    ("btn_drain", "app.drain_toggle"),
    ("btn_maint", "app.server_action('maint')"),
    ("btn_fault", "app.fault_menu"),
    ("btn_algorithm", "app.cycle_algorithm"),
    ("btn_reset", "app.reset_stats"),
)


class ControlBar(HorizontalGroup):
    def __init__(self, t: Translator) -> None:
        super().__init__(id="controls")
        self.t = t

    def compose(self) -> ComposeResult:
        for text, action in BUTTONS:
            yield Button(self.t(text), action=action, compact=True, id=text.replace("_", "-"))

"""Pick a fault mode for one server; dismisses with the body for ``PUT .../fault``."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Label
from textual.widgets.button import ButtonVariant

from dashboard.i18n import Translator
from services.common import FAULT_DEFAULTS, FAULT_MODES

# The parameters sent for the modes that take any: the task server's own defaults, which each
# mode's text in dashboard/i18n.py (``fault_<mode>``) is given to say (``fault_texts``).
CLASS_PARAMETERS: dict[str, dict[str, float]] = {
    "error": {"rate": FAULT_DEFAULTS["rate"]},
    "latency": {"ms": FAULT_DEFAULTS["ms"]},
    "hang": {"max_seconds": FAULT_DEFAULTS["max_seconds"]},
}
# Modes that lose data on purpose: their button is drawn as a warning (red).
DESTRUCTIVE = frozenset({"nolock"})
# Every mode a task server has, in its order: the body of each choice's ``PUT .../fault``.
FAULTS: tuple[tuple[str, dict[str, Any]], ...] = tuple(
    (mode, {"mode": mode, **CLASS_PARAMETERS.get(mode, {})}) for mode in FAULT_MODES
)


def fault_text(t: Translator, mode: str) -> str:
    """The choice's words with the numbers it sends (``latency: +500 ms per request``)."""
    numbers = {name: f"{value:g}" for name, value in CLASS_PARAMETERS.get(mode, {}).items()}
    return t(f"fault_{mode}", **numbers)


class FaultScreen(ModalScreen[dict[str, Any] | None]):
    """One numbered choice per fault mode, so the keyboard picks as fast as the mouse."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", show=False),
        *(Binding(str(n), f"pick({n})", show=False) for n in range(len(FAULTS))),
    ]

    def __init__(self, t: Translator, server: str) -> None:
        super().__init__(id="fault")
        self.t = t
        self.server = server

    def compose(self) -> ComposeResult:
        with Vertical(id="fault-body", classes="dialog") as body:
            # The server's name is the balancer's: a title, never markup.
            body.border_title = Content(self.t("fault_title", server=self.server))
            for number, (mode, _) in enumerate(FAULTS):
                label = f"{number}  {fault_text(self.t, mode)}"
                variant: ButtonVariant = "error" if mode in DESTRUCTIVE else "default"
                yield Button(
                    label, variant=variant, action=f"screen.pick({number})", id=f"fault-{mode}"
                )
            yield Label(self.t("cancel") + ": Escape")

    def action_pick(self, number: int) -> None:
        """Key N and button N both end here."""
        self.dismiss(FAULTS[number][1])

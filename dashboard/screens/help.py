"""The ``?`` screen: every key with its description, in the chosen language."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from dashboard.i18n import Translator
from dashboard.keys import KEYS, key_label
from dashboard.widgets.servers import WIDTHS


class HelpScreen(ModalScreen[None]):
    """Built from the key table, so it can never list a key the app does not have; in
    read-only mode the control keys stay listed, struck through, so students see why."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close", show=False),
    ]

    def __init__(self, t: Translator, read_only: bool) -> None:
        super().__init__(id="help")
        self.t = t
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        seen: set[str] = set()
        for key in KEYS:
            if key.text in seen:
                continue
            seen.add(key.text)
            style = "dim strike" if key.write and self.read_only else ""
            table.add_row(key_label(key, self.t), Text(self.t(key.text), style=style))
        with VerticalScroll(id="help-body", classes="dialog") as body:
            body.border_title = self.t("help_title")
            body.border_subtitle = self.t("help_close")
            yield Static(self.t("help_intro"), classes="help-text")
            if self.read_only:
                yield Static(self.t("help_read_only"), classes="help-text", id="help-read-only")
            yield Static(table)
            yield Static(self.t("help_states"), classes="help-text")
            yield Static(self.t("help_columns"), classes="help-text help-heading")
            yield Static(self.column_legend(), id="help-columns")

    def column_legend(self) -> Table:
        """Every column of the server table (``WIDTHS`` lists them) by its title, so a new
        column cannot go unexplained."""
        legend = Table.grid(padding=(0, 2))
        legend.add_column(style="bold", no_wrap=True)
        legend.add_column()
        for column in WIDTHS:
            legend.add_row(self.t(f"col_{column}"), self.t(f"legend_{column}"))
        return legend

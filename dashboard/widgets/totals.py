"""Totals in large numerals (``Digits``), readable from the back of a classroom."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Digits, Label

from dashboard.i18n import Translator
from dashboard.poll import PollResult
from dashboard.polling import PollWatcher


class Total(Horizontal):
    """A label beside a ``Digits``; the digits are redrawn only when the value changes.

    Under 30 rows (the ``-short`` class) the value is plain text on one line instead."""

    def __init__(self, label: str, id: str) -> None:
        super().__init__(id=id, classes="total")
        self._label = label

    def compose(self) -> ComposeResult:
        yield Label(self._label, classes="total-label")
        yield Digits("-")
        yield Label("-", classes="total-value")

    def show(self, value: str) -> None:
        digits = self.query_one(Digits)
        if digits.value != value:
            digits.update(value)
            self.query_one(".total-value", Label).update(value)


class Totals(Horizontal, PollWatcher):
    """Requests, errors, and servers up out of the total."""

    def __init__(self, t: Translator) -> None:
        super().__init__(id="totals")
        self.t = t

    def compose(self) -> ComposeResult:
        yield Total(self.t("total_requests"), id="total-requests")
        yield Total(self.t("total_errors"), id="total-errors")
        yield Total(self.t("total_up"), id="total-up")

    def show_poll(self, result: PollResult) -> None:
        status = result.status
        errors = result.errors.get("total_errors") if result.errors else None
        up = int(status.get("servers_up") or 0)
        total = int(status.get("servers_total") or len(status.get("servers") or []))
        self.query_one("#total-requests", Total).show(str(int(status.get("requests_total") or 0)))
        if errors is not None:
            self.query_one("#total-errors", Total).show(str(errors))
        self.query_one("#total-up", Total).show(f"{up}/{total}")

"""The status bar's compression figure (``--compress``): what share of the servers' bytes
reached the clients, and how much that saved, from ``/status``'s ``compression``."""

from __future__ import annotations

from typing import Any

from dashboard.format import real
from dashboard.i18n import Translator

UNITS = ("B", "KB", "MB", "GB", "TB")


def size(count: float) -> str:
    """``950 B``, ``12.1 KB``, ``3.4 MB`` (powers of 1000, as the class reads them)."""
    for unit in UNITS:
        if abs(count) < 1000 or unit == UNITS[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def compression_text(status: dict[str, Any], t: Translator) -> str | None:
    """``compressed: 7% of 550 KB (510 KB saved)``; None while compression is off (nothing
    is shown then). Numbers from the network that are not numbers read as none yet."""
    given = status.get("compression")
    if not isinstance(given, dict) or not given.get("encodings"):
        return None
    before, after = real(given.get("bytes_in")), real(given.get("bytes_out"))
    if not before or after is None:
        return t("compression_none")
    percent = f"{100 * after / before:.0f}%"
    return t("compression", percent=percent, before=size(before), saved=size(before - after))

"""The ticslab Textual dashboard.

``textual run dashboard [--url ...]`` imports this package and runs ``app``; the class is
built when the app starts, which is when the command-line options are parsed. ``app`` and
``DashboardApp`` are looked up only when asked for, so the modules that need no Textual
(``dashboard.history``, ``format``, ``options``, ``api``, ``poll``) load without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DashboardApp", "app"]


def __getattr__(name: str) -> Any:
    """``dashboard.app`` / ``dashboard.DashboardApp``: the app class, imported on first use."""
    if name in __all__:
        from dashboard.main import DashboardApp

        return DashboardApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

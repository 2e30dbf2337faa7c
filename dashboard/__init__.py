"""The ticslab Textual dashboard.

``textual run dashboard [--url ...]`` imports this package and runs ``app``; the class is
built when the app starts, which is when the command-line options are parsed.
"""

from dashboard.main import DashboardApp

app = DashboardApp

__all__ = ["DashboardApp", "app"]

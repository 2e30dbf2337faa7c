"""Small pure functions that turn numbers from the API into short, fixed-width text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def real(value: object) -> float | None:
    """``value`` if it is a finite number, else None: the API's numbers are shown as "-" when
    a misbehaving balancer sends text, null or NaN in their place, never a crash."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def duration(given: object) -> str:
    """``42s``, ``12m03s``, ``3h05m``, ``2d04h``: at most six characters."""
    if (seconds := real(given)) is None:
        return "-"
    total = int(max(seconds, 0))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def share_bar(given: object, width: int = 5) -> str:
    """A bar of ``width`` cells plus the percentage, e.g. ``███░░  62%``."""
    if (percent := real(given)) is None:
        return " " * width + "    -"
    percent = min(max(percent, 0.0), 100.0)
    filled = round(percent / 100 * width)
    return "█" * filled + "░" * (width - filled) + f" {percent:3.0f}%"


def sparkline(values: Sequence[float], width: int = 6) -> str:
    """The last ``width`` values as block characters scaled to the largest one."""
    recent = [real(v) or 0.0 for v in list(values)[-width:]]
    top = max(recent, default=0.0)
    if top <= 0:
        return (SPARK_BLOCKS[0] * len(recent)).rjust(width)
    last = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round(v / top * last)] for v in recent).rjust(width)


def number(given: object) -> str:
    """Compact: ``7``, ``41.5``, ``950``, ``12.3k``."""
    if (value := real(given)) is None:
        return "-"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def local_time(stamp: object) -> str:
    """``HH:MM:SS`` in local time from an ISO 8601 UTC stamp; the raw text if unparsable."""
    if not stamp or not isinstance(stamp, str):
        return "--:--:--"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp[:8]
    return moment.astimezone().strftime("%H:%M:%S")


def safe_url(url: str) -> str:
    """The URL without any ``user:password@`` part, so nothing secret reaches the screen."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url.rpartition("@")[2]
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"

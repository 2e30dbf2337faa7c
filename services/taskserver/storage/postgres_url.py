"""A PostgreSQL URL as it may be shown: without psycopg, so the launcher and the file path
can redact one too."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# libpq also takes the password as a parameter: ?password=... (or &password=...)
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def redacted(url: str) -> str:
    """``url`` with its password (in the user part or as a ``password=`` parameter) replaced
    by ``***``: what logs, banners, errors and ``/health`` show."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "postgresql://(unreadable URL)"
    if password is not None:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    parts = parts._replace(query=_QUERY_PASSWORD.sub(r"\1***", parts.query))
    return urlunsplit(parts)

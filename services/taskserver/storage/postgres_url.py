"""A PostgreSQL URL as it may be shown, read the way libpq reads it: without psycopg, so the
launcher and the file path can redact one too (with psycopg, its own reading is used besides).

libpq ends a URL's user part at the first ``@`` before any ``/``, so ``#`` and ``?`` may stand
in a password (``postgresql://u:pa#ss@host/db``), where ``urllib.parse`` would cut the URL:
reading it as urllib does would show that password whole. :func:`ambiguity` names such a URL,
refused before anything starts, and :func:`redacted` follows libpq's reading in any case.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import unquote, urlsplit

# libpq also takes the password as a parameter: ?password=... (or &password=...)
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|[?&])password=)([^&]*)")
MASK = "***"
SCHEME_ONLY = "://…"


def scheme_only(value: str) -> str:
    """A value that may hold a URL, as it may be shown when it is no storage: its scheme."""
    return value.split("://", 1)[0] + SCHEME_ONLY if "://" in value else value


def _parts(url: str) -> tuple[str, str | None, str | None, str] | None:
    """(scheme://, user, raw password, the rest) as libpq splits a URL; None if no URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    ends = [i for i in (rest.find("@"), rest.find("/")) if i >= 0]
    if not ends or rest[min(ends)] != "@":
        return scheme + sep, None, None, rest
    userinfo, rest = rest[: min(ends)], rest[min(ends) + 1 :]
    user, colon, password = userinfo.partition(":")
    return scheme + sep, user, password if colon else None, rest


def _query_passwords(rest: str) -> list[str]:
    return [match.group(2) for match in _QUERY_PASSWORD.finditer(rest.partition("?")[2])]


def _libpq_password(url: str) -> str | None:
    """The password as psycopg (libpq) reads ``url``; None without psycopg, or for a URL it
    refuses (never used then) or that has none."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        password = conninfo_to_dict(url).get("password")
    except Exception:
        return None
    return password if isinstance(password, str) and password else None


def secrets(url: str) -> set[str]:
    """Every form of every password in ``url`` (user part, ``password=`` parameters; as
    written and percent-decoded; as urllib and psycopg read it): what no text may show."""
    found: set[str] = set()
    if (parts := _parts(url)) is not None:
        found.update([parts[2] or "", *_query_passwords(parts[3])])
    with contextlib.suppress(ValueError):
        found.add(urlsplit(url).password or "")
    found.add(_libpq_password(url) or "")
    found.update({unquote(secret) for secret in found})
    return {secret for secret in found if secret}


def masked(text: str, hidden: set[str]) -> str:
    """``text`` with every one of ``hidden`` (longest first) and any ``password=`` value
    replaced by ``***``."""
    for secret in sorted(hidden, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", text)


def redacted(url: str) -> str:
    """``url`` with its password (in the user part or as a ``password=`` parameter) replaced
    by ``***``: what logs, banners, errors and ``/health`` show."""
    parts = _parts(url)
    if parts is None:
        return "postgresql://(unreadable URL)"
    scheme, user, password, rest = parts
    if "@" in rest:  # an '@' libpq does not take for the user part's end: show nothing before
        rest = rest.rsplit("@", 1)[1]
        user, password = MASK, None
    head = "" if user is None else f"{user}:{MASK}@" if password is not None else f"{user}@"
    libpq = _libpq_password(url)
    known = {unquote(found) for found in [password or "", *_query_passwords(rest)]}
    if libpq is not None and libpq not in known:  # psycopg reads it another way: show less
        return scheme + MASK
    return _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", scheme + head + rest)


def ambiguity(url: str) -> str | None:
    """Why ``url`` may be read differently by libpq and by ``urllib.parse`` (a password
    with ``#``, ``?``, ``/`` or ``@`` not percent-encoded), or None when it may not."""
    parts = _parts(url)
    try:
        split = urlsplit(url)
        split_password = split.password
    except ValueError:
        return "it cannot be read as a URL"
    if parts is not None and (parts[2] != split_password or "@" in parts[3]):
        return (
            "its user part holds '#', '?', '/' or '@', which URL readers split differently; "
            "percent-encode them (%23, %3F, %2F, %40), or give the password in PGPASSWORD "
            "or ~/.pgpass"
        )
    return None

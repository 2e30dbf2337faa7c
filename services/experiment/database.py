"""A throwaway PostgreSQL database for one experiment, on the server a ``--storage`` URL names:
made when the experiment starts and dropped when it ends, so the class's own tasks are never
touched (as the file experiments use a temporary folder). psycopg is imported only here, when
a database is asked for.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from services.taskserver.storage.postgres_url import masked, redacted
from services.taskserver.storage.postgres_url import secrets as passwords_in

CONNECT_SECONDS = 5


class NoDatabase(Exception):
    """No throwaway database could be made: ``url`` (redacted) and the server's ``reason``."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


@contextlib.contextmanager
def throwaway_database(url: str) -> Iterator[str]:
    """A new empty database beside the one ``url`` names (its user needs CREATEDB); its URL.
    Dropped on leaving, once the stack that used it has stopped."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    name = f"ticslab_experiment_{secrets.token_hex(4)}"
    throwaway = beside(url, name)
    try:
        if conninfo_to_dict(throwaway).get("dbname") != name:  # a URL libpq reads otherwise
            raise NoDatabase(redacted(url), "cannot name another database in this URL")
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_SECONDS) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        raise NoDatabase(redacted(url), first_line(error, url)) from None
    try:
        yield throwaway
    finally:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_SECONDS) as conn,
        ):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def beside(url: str, name: str) -> str:
    """``url`` naming the database ``name`` on the same server, as the same user: the path
    replaced and any ``dbname=`` parameter (which libpq reads over the path) left out."""
    parts = urlsplit(url)
    query = "&".join(
        field for field in parts.query.split("&") if field and not field.startswith("dbname=")
    )
    # Written out rather than urlunsplit'd: that drops the "//" of a URL with no host
    # (postgresql:///db?host=/run/postgresql, a Unix socket), which libpq then refuses.
    return f"{parts.scheme}://{parts.netloc}/{name}" + (f"?{query}" if query else "")


def first_line(error: Exception, url: str) -> str:
    """The server's or libpq's first line about ``error``, with no form of the URL's password
    (the store's own masking, ``postgres_url.masked``)."""
    text = str(error).strip()
    return masked(text.splitlines()[0] if text else type(error).__name__, passwords_in(url))


def stored_tasks(url: str) -> set[tuple[Any, Any]]:
    """(id, title) of every task the database holds, read as a student would with psql."""
    import psycopg

    with psycopg.connect(url, connect_timeout=CONNECT_SECONDS) as conn:
        return {(row[0], row[1]) for row in conn.execute("SELECT id, title FROM tasks")}

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
from urllib.parse import urlsplit, urlunsplit

from services.taskserver.storage.postgres_url import redacted

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

    name = f"ticslab_experiment_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_SECONDS) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NoDatabase(redacted(url), reason) from None
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_SECONDS) as conn,
        ):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def stored_tasks(url: str) -> set[tuple[Any, Any]]:
    """(id, title) of every task the database holds, read as a student would with psql."""
    import psycopg

    with psycopg.connect(url, connect_timeout=CONNECT_SECONDS) as conn:
        return {(row[0], row[1]) for row in conn.execute("SELECT id, title FROM tasks")}

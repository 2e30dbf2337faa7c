"""A throwaway stack for one experiment: free ports, a temporary data folder, its own token.

It never touches a class stack: nothing is bound to the usual ports, nothing is written to
``data/`` or to the token files ``ticslab dashboard`` reads, and every process is gone when
the ``with`` block ends (the launcher's supervisor ties them to this process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.common import printable
from services.experiment.i18n import CATALOGUE
from services.lang import Translator
from services.launcher.logs import FileLogs
from services.launcher.ports import listening_socket, port_is_free
from services.launcher.stack import HOST, Stack, StackOptions, StartError
from services.waiting import wait_ready

READY_SECONDS = 20.0  # every server UP behind the balancer, or the experiment gives up
READY_POLL_SECONDS = 0.1


class LabError(Exception):
    """The throwaway stack could not be started or driven: ``key`` (a sentence of
    ``i18n.CATALOGUE``) and its fields say why, in the reader's language; ``str()`` is the
    English."""

    def __init__(self, key: str, **values: Any) -> None:
        self.key, self.values = key, values
        super().__init__(Translator(CATALOGUE, "en")(key, **values))

    def text(self, t: Translator) -> str:
        return t(self.key, **self.values)


@dataclass
class Lab:
    """A running throwaway stack: where it listens, its token and its tasks file."""

    balancer_url: str
    token: str
    tasks_file: Path
    servers: list[str]
    database: str | None = None  # the PostgreSQL URL its servers store in; None: tasks_file

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A ``/control`` call with the stack's token; LabError if it is refused."""
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            answer = httpx.request(
                method, self.balancer_url + path, json=body, headers=headers, timeout=10
            )
        except httpx.HTTPError as error:
            raise LabError("lab_no_answer", method=method, path=path, error=error) from error
        if answer.status_code >= 400:
            raise LabError(
                "lab_refused",
                method=method,
                path=path,
                status=answer.status_code,
                body=printable(answer.text[:200]),
            )
        return answer.json()

    def status(self) -> Any:
        """The balancer's ``/status``."""
        return self.control("GET", "/status")

    def set_algorithm(self, name: str) -> None:
        self.control("PUT", "/control/algorithm", {"algorithm": name})

    def set_fault(self, server: str, mode: str, **params: Any) -> None:
        self.control("PUT", f"/control/servers/{server}/fault", {"mode": mode, **params})

    def lost(self, created: list[dict[str, Any]]) -> int:
        """How many of the tasks answered 201 (``created``) the storage does not hold (same
        id and title), read as any student would: ``tasks.json`` with ``json.load``, the
        database with a SELECT."""
        stored = self.stored()
        return sum((task.get("id"), task.get("title")) not in stored for task in created)

    def stored(self) -> set[tuple[Any, Any]]:
        if self.database is not None:
            from services.experiment.database import stored_tasks

            return stored_tasks(self.database)
        with self.tasks_file.open("rb") as file:
            return {(task.get("id"), task.get("title")) for task in json.load(file)}

    def wait_until_all_up(self, timeout: float = READY_SECONDS) -> None:
        """Poll ``/status`` until every server is UP: health checks need a round or two."""
        states: dict[str, str] = {}

        async def probe(client: httpx.AsyncClient) -> str | None:
            nonlocal states
            with contextlib.suppress(httpx.HTTPError, ValueError):
                status = (await client.get(self.balancer_url + "/status")).json()
                states = {s["name"]: s["state"] for s in status["servers"]}
                if states and all(state == "UP" for state in states.values()):
                    return None
            return "not every server UP"

        async def wait() -> str | None:
            async with httpx.AsyncClient(timeout=2) as client:
                return await wait_ready(lambda: probe(client), timeout, READY_POLL_SECONDS)

        if asyncio.run(wait()) is not None:
            raise LabError("lab_not_up", seconds=f"{timeout:g}", states=states)


def free_ports(count: int) -> tuple[int, int]:
    """A free port for the balancer and the first of ``count`` consecutive free ones for the
    servers (``ticslab up`` numbers them in a row), picked by the kernel and checked."""
    for _ in range(50):
        with listening_socket(HOST) as balancer, listening_socket(HOST) as first:
            balancer_port, first_port = balancer.getsockname()[1], first.getsockname()[1]
        ports = range(first_port, first_port + count)
        if balancer_port not in ports and all(port_is_free(port) for port in ports):
            return balancer_port, first_port
    raise LabError("lab_ports", count=count, host=HOST)


def last_lines(folder: Path, count: int = 5) -> str:
    """The end of each process's log, for an error: the folder is deleted with the stack."""
    parts = []
    for log in sorted(folder.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-count:]
        parts += [f"  {log.stem}: {line}" for line in lines]
    return "\n".join(parts)


@contextlib.contextmanager
def throwaway_stack(
    algorithm: str = "round_robin",
    servers: int = 2,
    retries: int | None = None,
    database: str | None = None,
) -> Iterator[Lab]:
    """Start a stack with no clients; stop it and delete its folder when the block ends.
    ``database``: a PostgreSQL URL whose server gets a throwaway database for the tasks."""
    with contextlib.ExitStack() as cleanup:
        folder = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ticslab-experiment-"))
        if database is not None:
            from services.experiment.database import NoDatabase, throwaway_database

            try:
                database = cleanup.enter_context(throwaway_database(database))
            except NoDatabase as error:
                raise LabError("lab_database", url=error.url, error=error.reason) from None
        yield cleanup.enter_context(_started(algorithm, servers, retries, Path(folder), database))


@contextlib.contextmanager
def _started(
    algorithm: str, servers: int, retries: int | None, folder: Path, database: str | None
) -> Iterator[Lab]:
    """The stack itself, stopped on leaving (before its database is dropped)."""
    balancer_port, first_port = free_ports(servers)
    options = StackOptions(
        servers=servers,
        clients=0,
        balancer_port=balancer_port,
        first_server_port=first_port,
        data_dir=folder,
        algorithm=algorithm,
        retries=retries,
        storage=database or "",
    )
    token = secrets.token_urlsafe(24)
    logs = FileLogs(folder / "logs")
    stack = Stack(options, token, logs)
    try:
        try:
            stack.start()
        except StartError as error:
            logs.close()
            details = f"{error}\n{last_lines(logs.folder)}".rstrip()
            raise LabError("lab_start", error=details) from error
        names = [f"server{number}" for number in range(1, servers + 1)]
        lab = Lab(options.balancer_url, token, options.tasks_file, names, database)
        lab.wait_until_all_up()
        yield lab
    finally:
        stack.stop()
        logs.close()

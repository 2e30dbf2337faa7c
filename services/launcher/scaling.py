"""Scaling out and in live: one more task server started (or one stopped and forgotten) by
the supervisor of ``ticslab up``, as ``docker-compose up --scale`` does for containers.

A new server is the same command as the others (same tasks file, token, language), on the
next free port, with its log prefixed like theirs and stopped with the stack: the balancer's
local driver asks for it (``POST /processes`` of launcher/api.py), then the balancer puts it
in rotation after its first passing health check.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from services.common import MAX_SERVERS, SERVER_NAME_PATTERN
from services.launcher.ports import port_is_free
from services.launcher.supervisor import ActionError, Managed, ProcessSpec, Supervisor

TASKSERVER = "taskserver"
LAST_PORT = 65535
# Ports looked at past the highest in use before giving up: a run of taken ports this long
# means something else owns the range, and trying on would only take longer to say so.
PORT_TRIES = 100

SpecMaker = Callable[[str, int], ProcessSpec]


class Scaler:
    """Adds and removes the task servers of one supervisor, one change at a time."""

    def __init__(self, supervisor: Supervisor, make_spec: SpecMaker, host: str) -> None:
        self.supervisor = supervisor
        self.make_spec = make_spec  # a task server's spec for (name, port): the stack's own
        self.host = host
        # One change at a time: two adds at once would pick the same port and name.
        self._lock = asyncio.Lock()

    def task_servers(self) -> list[Managed]:
        return [m for m in self.supervisor.processes.values() if m.spec.role == TASKSERVER]

    async def add(self, name: str | None = None) -> dict[str, object]:
        """Start one more task server (``name`` or the next ``serverN``) and wait until it
        listens; ActionError 400/409 (refused) or 502 (it did not start, nothing left)."""
        t = self.supervisor.t
        async with self._lock:
            if self.supervisor.closing:
                raise ActionError(409, t("closing"))
            servers = self.task_servers()
            if len(servers) >= MAX_SERVERS:
                raise ActionError(409, t("scale_limit", maximum=MAX_SERVERS))
            if name is None:
                name = self._next_name()
            elif not re.fullmatch(SERVER_NAME_PATTERN, name):
                raise ActionError(400, t("scale_bad_name", name=name))
            if name in self.supervisor.processes:
                raise ActionError(409, t("scale_name_taken", name=name))
            port = self._next_port(servers)
            managed = await self.supervisor.spawn(self.make_spec(name, port))
            try:
                await self.supervisor.wait_listening(managed)
            except BaseException:
                await self.supervisor.retire(name)  # never a half-started server left behind
                raise
        count = len(self.task_servers())
        self.supervisor.logs.note(t("scale_added", name=name, port=port, count=count))
        return {
            "server": name,
            "url": f"http://{self.host}:{port}",
            "port": port,
            "process": managed.state,
        }

    async def remove(self, name: str) -> dict[str, object]:
        """Stop ``name`` and forget it; ActionError 404 (not a task server of ours) or 409
        (the last one: the stack would serve nothing)."""
        t = self.supervisor.t
        async with self._lock:
            managed = self.supervisor.processes.get(name)
            if managed is None or managed.spec.role != TASKSERVER:
                raise ActionError(404, t("not_ours", name=name))
            if len(self.task_servers()) <= 1:
                raise ActionError(409, t("scale_last", name=name))
            port = managed.spec.port
            await self.supervisor.retire(name)
        count = len(self.task_servers())
        self.supervisor.logs.note(t("scale_removed", name=name, count=count))
        return {"server": name, "result": "removed", "port": port, "process": "exited"}

    def _next_name(self) -> str:
        """``serverN`` with N one past the highest in use, as ``ticslab up --servers`` names."""
        numbers = [
            int(found.group(1))
            for name in self.supervisor.processes
            if (found := re.fullmatch(r"server(\d+)", name))
        ]
        return f"server{max(numbers, default=0) + 1}"

    def _next_port(self, servers: list[Managed]) -> int:
        """The first free port after the highest a task server of the stack uses."""
        ports = [m.spec.port for m in servers if m.spec.port is not None]
        first = max(ports, default=0) + 1
        for port in range(first, min(first + PORT_TRIES, LAST_PORT + 1)):
            if port not in ports and port_is_free(port, self.host):
                return port
        raise ActionError(409, self.supervisor.t("scale_no_port", first=first))

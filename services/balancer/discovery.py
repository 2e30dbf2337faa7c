"""``--discover docker``: the backend list follows the task-server containers of our project.

As Traefik's Docker provider does: list once, then follow the engine's ``/events`` stream and
list again whenever a container of ours is created, started, renamed or destroyed, so
``docker-compose up --scale taskserver=3`` adds servers without restarting the balancer.
Stopped containers stay in the list (they show DOWN and can be started from the control API);
removed ones leave it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from services.balancer.background import restarting
from services.balancer.balancer import Balancer
from services.balancer.drivers import DriverFailure, docker_socket_path
from services.balancer.drivers.docker import (
    DockerEngine,
    backend_url,
    by_backend_name,
    own_project,
    task_server_labels,
)

RETRY_SECONDS = 2.0
RELEVANT = {"create", "start", "rename", "destroy"}
logger = logging.getLogger("ticslab.balancer.discovery")


class DockerDiscovery:
    """Keeps ``balancer``'s servers equal to our project's task-server containers."""

    def __init__(
        self, balancer: Balancer, socket_path: Path | None = None, own_id: str | None = None
    ) -> None:
        self.balancer = balancer
        self.engine = DockerEngine(socket_path or docker_socket_path())
        self.own_id = own_id
        self.labels: list[str] = []  # our project's task servers, known once started
        self.managed: set[str] = set()  # servers discovery added (the only ones it removes)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Find our project, add its task servers, then follow the events."""
        try:
            project = await own_project(self.engine, self.own_id)
        except DriverFailure as error:
            await self.engine.aclose()
            raise DriverFailure(f"--discover docker: {error}") from error
        self.labels = task_server_labels(project)
        await self.sync()
        follow = restarting("docker discovery", self._follow, self.balancer.record_failure)
        self._task = asyncio.create_task(follow, name="docker discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.engine.aclose()

    async def sync(self) -> None:
        """Add the containers the balancer lacks, remove the servers whose container is gone."""
        listed = await self.engine.list_containers(self.labels)
        # A name two containers carry is routed to neither (the driver refuses it too).
        wanted = {
            name: backend_url(found[0])
            for name, found in by_backend_name(listed).items()
            if len(found) == 1
        }
        present = {server.name: server.url for server in self.balancer.servers}
        for name in sorted(self.managed - wanted.keys()):
            if name in present:
                self.balancer.remove_server(name, who="docker")
            self.managed.discard(name)
        for name, url in sorted(wanted.items()):
            if present.get(name) not in (None, url):
                self.balancer.remove_server(name, who="docker")  # same name, new address
                present.pop(name)
            if name not in present:
                self.balancer.add_server(name, url, who="docker")
                self.managed.add(name)

    async def _follow(self) -> None:
        """Sync on every relevant event; after a broken stream, wait, sync and follow again."""
        while True:
            try:
                async for event in self.engine.events(self.labels):
                    if event.get("Action") in RELEVANT:
                        await self.sync()
            except DriverFailure as error:
                logger.warning("docker discovery: %s; retrying in %ss", error, RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await self.sync()
            except DriverFailure as error:
                logger.warning("docker discovery: %s", error)

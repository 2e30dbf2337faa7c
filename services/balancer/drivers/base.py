"""What every driver shares: the Driver protocol, the two ways an action fails, the driver
of a balancer that has none, and the Docker socket's address. The drivers import this
module; ``drivers/__init__.py`` imports them, so nothing imports in a circle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

ENABLE = (
    "To get one: with Docker Compose, mount /var/run/docker.sock into the balancer "
    "(docker-compose.override.yml does; `docker compose up` reads it unless -f names the files); "
    "without Docker, start the whole stack with `ticslab up`. drain, maint, ready, faults and "
    "the algorithm work without a driver"
)


class DriverUnsupported(Exception):
    """The driver cannot do this here (no such target, refused target, Windows): HTTP 409."""


class DriverFailure(Exception):
    """The engine or the operating system failed while acting: HTTP 502."""


class Driver(Protocol):
    """What the control API needs from a driver."""

    name: str
    actions: tuple[str, ...]  # what this driver can do at all, on this machine

    async def processes(self) -> dict[str, str]:
        """Backend name -> process or container state, for every server it can act on."""
        ...

    async def perform(self, server: str, action: str) -> dict[str, Any]:
        """Do ``action`` on ``server``; answer ``{"result": ..., "process": ...}``."""
        ...

    async def scale_out(self, name: str | None) -> dict[str, Any]:
        """Start one more task server (``name``, or the driver's next); answer at least
        ``{"server": name, "url": url}`` once it listens (balancer/scaling.py)."""
        ...

    async def scale_in(self, server: str) -> dict[str, Any]:
        """Stop ``server`` and remove its process or container for good."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class NoneDriver:
    """No driver: only the balancer's own actions are available; ``reason`` says why."""

    name = "none"
    actions: tuple[str, ...] = ()

    def __init__(self, reason: str = "the driver was set to none (--driver / TICSLAB_DRIVER)"):
        self.reason = reason

    async def processes(self) -> dict[str, str]:
        return {}

    async def perform(self, server: str, action: str) -> dict[str, Any]:
        raise DriverUnsupported(
            f"'{action}' needs a driver and this balancer has none: {self.reason}. {ENABLE}"
        )

    async def scale_out(self, name: str | None) -> dict[str, Any]:
        return await self.perform(name or "-", "add")

    async def scale_in(self, server: str) -> dict[str, Any]:
        return await self.perform(server, "remove")

    async def aclose(self) -> None:
        return None


def docker_socket_path() -> Path:
    """The Docker socket: ``DOCKER_HOST=unix://...`` when set, else /var/run/docker.sock."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return Path(host.removeprefix("unix://"))
    return Path("/var/run/docker.sock")

"""Drivers carry out control actions on the real task servers (containers or processes).

A driver knows nothing about balancing: it stops, starts, kills, restarts, pauses and unpauses
the thing behind a backend name, and says what state that thing is in. The balancer's own
states (drain, maint, ready) and faults need no driver.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

DRIVER_ACTIONS = ("stop", "start", "kill", "restart", "pause", "unpause")


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

    async def aclose(self) -> None:
        """Release connections."""
        ...


class NoneDriver:
    """No driver: only the balancer's own actions are available."""

    name = "none"
    actions: tuple[str, ...] = ()

    async def processes(self) -> dict[str, str]:
        return {}

    async def perform(self, server: str, action: str) -> dict[str, Any]:
        raise DriverUnsupported(
            f"'{action}' needs a driver: start the stack with `ticslab up` or docker compose"
        )

    async def aclose(self) -> None:
        return None


def docker_socket_path() -> Path:
    """The Docker socket: ``DOCKER_HOST=unix://...`` when set, else /var/run/docker.sock."""
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return Path(host.removeprefix("unix://"))
    return Path("/var/run/docker.sock")


async def choose_driver(kind: str, token: str) -> Driver:
    """The driver for ``kind`` (auto, docker, local, none); auto picks local, docker, then none.

    Raises DriverFailure when an explicitly requested driver cannot work here.
    """
    if kind == "none":
        return NoneDriver()
    supervisor = os.environ.get("TICSLAB_SUPERVISOR_URL")
    if kind == "local" or (kind == "auto" and supervisor):
        if not supervisor:
            raise DriverFailure("--driver local needs TICSLAB_SUPERVISOR_URL (set by `ticslab up`)")
        from services.balancer.drivers.local import LocalDriver

        return LocalDriver(supervisor, token)
    if kind in ("docker", "auto"):
        from services.balancer.drivers.docker import DockerDriver

        if kind == "auto" and not docker_socket_path().exists():
            return NoneDriver()
        try:
            return await DockerDriver.connect(docker_socket_path())
        except DriverFailure:
            if kind == "docker":
                raise
            return NoneDriver()
    raise DriverFailure(f"unknown driver '{kind}': use auto, docker, local or none")

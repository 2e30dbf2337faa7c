"""Drivers carry out control actions on the real task servers (containers or processes).

A driver knows nothing about balancing: it stops, starts, kills, restarts, pauses and unpauses
the thing behind a backend name, and says what state that thing is in. The balancer's own
states (drain, maint, ready) and faults need no driver. ``choose_driver`` picks one.
"""

from __future__ import annotations

import os

from services.balancer.drivers.base import (
    Driver,
    DriverFailure,
    DriverUnsupported,
    NoneDriver,
    docker_socket_path,
)
from services.balancer.drivers.docker_scaling import ScalingDockerDriver
from services.balancer.drivers.local import LocalDriver
from services.balancer.drivers.swarm import ServerUrls, SwarmDriver, in_a_stack

NOT_UP = "it was not started by `ticslab up` (no TICSLAB_SUPERVISOR_URL)"

__all__ = [
    "Driver",
    "DriverFailure",
    "DriverUnsupported",
    "NoneDriver",
    "choose_driver",
    "docker_socket_path",
]


async def choose_driver(kind: str, token: str, servers: ServerUrls = dict) -> Driver:
    """The driver for ``kind`` (auto, docker, swarm, local, none); auto picks local, then
    swarm inside a Swarm stack, docker, then none. ``servers`` gives the balancer's backend
    URLs (the Swarm driver maps a discovered server to its task by address).

    Raises DriverFailure when an explicitly requested driver cannot work here.
    """
    if kind == "none":
        return NoneDriver()
    supervisor = os.environ.get("TICSLAB_SUPERVISOR_URL")
    if kind == "local" or (kind == "auto" and supervisor):
        if not supervisor:
            raise DriverFailure("--driver local needs TICSLAB_SUPERVISOR_URL (set by `ticslab up`)")
        return LocalDriver(supervisor, token)
    if kind in ("docker", "swarm", "auto"):
        path = docker_socket_path()
        if kind == "auto" and not path.exists():
            return NoneDriver(f"{NOT_UP}, and it sees no Docker socket at {path}")
        try:
            if kind == "swarm" or (kind == "auto" and await in_a_stack(path)):
                return await SwarmDriver.connect(path, servers)
            return await ScalingDockerDriver.connect(path)
        except DriverFailure as error:
            if kind != "auto":
                raise
            return NoneDriver(f"{NOT_UP}, and the Docker socket at {path} did not work: {error}")
    raise DriverFailure(f"unknown driver '{kind}': use auto, docker, swarm, local or none")

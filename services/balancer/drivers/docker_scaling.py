"""One more container of a Compose service, or one fewer, as ``docker compose up --scale``
does: ``ScalingDockerDriver``, the driver of drivers/docker.py with ``scale_out`` and
``scale_in``.

The new container is a copy of the service's lowest-numbered container: same image, command,
entrypoint, environment, working directory, user, health check, labels (the Compose
project, service and config hash, with the next ``container-number`` and ``oneoff=False``),
mounts and volumes, restart policy and networks (with the service's name as an alias, as
Compose gives it), named ``<project>-<service>-<n>`` like Compose v2's. Published host ports
are not copied: a second container cannot bind the same host port (Compose refuses that
scale too). Only containers of our project with the task-server role are ever copied or
removed: the copy carries the same two labels, and each is inspected before it is touched.
"""

from __future__ import annotations

from typing import Any

from services.balancer.drivers.base import DriverFailure, DriverUnsupported
from services.balancer.drivers.docker import (
    NUMBER_LABEL,
    ONEOFF_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    DockerDriver,
    backend_name,
    backend_url,
    labels_of,
)

# What of a container's Config a replica keeps (Hostname and Domainname are not: each
# container gets its own id as hostname, as Compose's replicas do).
KEPT_CONFIG = (
    "Image",
    "Cmd",
    "Entrypoint",
    "Env",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Healthcheck",
    "StopSignal",
    "StopTimeout",
    "Volumes",
    "Tty",
    "OpenStdin",
)
# ... and of its HostConfig: never PortBindings (a host port is taken once).
KEPT_HOST_CONFIG = (
    "Binds",
    "Mounts",
    "NetworkMode",
    "RestartPolicy",
    "Init",
    "LogConfig",
    "ExtraHosts",
    "Tmpfs",
    "ShmSize",
)
# Networks every engine has, where aliases are refused (only user-defined ones take them).
DOCKER_NETWORKS = frozenset({"bridge", "host", "none"})


def number_of(container: dict[str, Any]) -> int:
    """A container's Compose number (0 for one without a usable one: a one-off)."""
    text = labels_of(container).get(NUMBER_LABEL, "")
    return int(text) if text.isdigit() else 0


def service_to_scale(listed: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The task-server service with the most containers (ties: the first by name), and its
    numbered containers, lowest number first."""
    services: dict[str, list[dict[str, Any]]] = {}
    for container in listed:
        labels = labels_of(container)
        if labels.get(ONEOFF_LABEL) != "True" and number_of(container) > 0:
            services.setdefault(labels.get(SERVICE_LABEL, ""), []).append(container)
    if not services:
        raise DriverUnsupported("no task-server container to copy: start the stack first")
    service = min(services, key=lambda name: (-len(services[name]), name))
    return service, sorted(services[service], key=number_of)


def replica_request(template: dict[str, Any], number: int) -> dict[str, Any]:
    """The body of ``POST /containers/create`` for replica ``number`` of ``template``'s
    service (``template``: an inspect answer)."""
    config = template.get("Config") or {}
    body: dict[str, Any] = {key: config[key] for key in KEPT_CONFIG if key in config}
    labels = dict(labels_of(template))
    labels[NUMBER_LABEL] = str(number)
    labels[ONEOFF_LABEL] = "False"
    body["Labels"] = labels
    host = template.get("HostConfig") or {}
    body["HostConfig"] = {key: host[key] for key in KEPT_HOST_CONFIG if key in host}
    networks = networks_of(template)
    if networks:
        first = networks[0]
        body["NetworkingConfig"] = {"EndpointsConfig": {first: endpoint(template, first)}}
    return body


def networks_of(template: dict[str, Any]) -> list[str]:
    """The networks ``template`` is on: its ``NetworkMode`` first (given at creation, where
    it must match), the others by name (joined after: older engines take one per create)."""
    names = sorted((template.get("NetworkSettings") or {}).get("Networks") or {})
    mode = (template.get("HostConfig") or {}).get("NetworkMode")
    return sorted(names, key=lambda name: name != mode)


def endpoint(template: dict[str, Any], network: str) -> dict[str, Any]:
    """An endpoint on ``network``: the service's name as alias (the name the handout's URLs
    use), as Compose gives every replica; Docker's own networks take no alias."""
    if network in DOCKER_NETWORKS:
        return {}
    return {"Aliases": [labels_of(template).get(SERVICE_LABEL, "")]}


def replica_name(template: dict[str, Any], number: int) -> str:
    labels = labels_of(template)
    return f"{labels.get(PROJECT_LABEL, '')}-{labels.get(SERVICE_LABEL, '')}-{number}"


class ScalingDockerDriver(DockerDriver):
    """The Docker driver ``choose_driver`` gives: its actions, and scaling out and in."""

    async def scale_out(self, name: str | None) -> dict[str, Any]:
        """One more container of the task-server service, as ``docker compose up --scale``
        makes it (``replica_request``), started; its backend name and URL as discovery
        gives them, so discovery seeing it too finds the same server."""
        if name is not None:
            raise DriverUnsupported(
                "under Compose a new server is named as Compose names replicas "
                "(<service>-<number>): send no name"
            )
        listed = [c for c in await self.engine.list_containers(self.labels) if self.allowed(c)]
        service, replicas = service_to_scale(listed)
        template = await self.engine.inspect(replicas[0]["Id"])
        if template is None or not self.allowed(template):
            raise DriverUnsupported(f"the {service} container to copy is gone or not ours")
        same = [c for c in listed if labels_of(c).get(SERVICE_LABEL) == service]
        number = max(map(number_of, same)) + 1
        container = replica_name(template, number)
        body = replica_request(template, number)
        new_id = await self.engine.create(container, body)
        try:
            for network in networks_of(template)[1:]:
                await self.engine.connect(network, new_id, endpoint(template, network))
            await self.engine.act(new_id, "start")
        except (DriverFailure, DriverUnsupported):
            await self.engine.remove(new_id)  # never a half-made replica left behind
            raise
        entry = [c for c in await self.engine.list_containers(self.labels) if c["Id"] == new_id]
        if not entry:
            raise DriverFailure(f"{container} was started and is gone already")
        server = backend_name(labels_of(entry[0]))
        state = entry[0].get("State", "unknown")
        url = backend_url(entry[0])
        return {"server": server, "url": url, "container": container, "process": state}

    async def scale_in(self, server: str) -> dict[str, Any]:
        """Stop ``server``'s container (checked as every action is) and remove it."""
        stopped = await self.act_on(await self.container_of(server), "stop")
        await self.engine.remove(await self.container_of(server))
        return {"result": "removed", "process": "removed", "container": stopped["container"]}

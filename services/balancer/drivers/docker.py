"""The Docker driver: the Engine API over the unix socket, behind a strict allow-list.

Whoever reaches the socket is root on the host, so this module sends only list, inspect,
stop, start, kill, restart, pause, unpause (and reads the events stream), plus, to scale a
service (docker_scaling.py), create (a copy of one of these containers, with its labels),
network connect and remove, and only on containers of the balancer's own Compose project
that carry ``ticslab.role=taskserver``, checked again by inspecting the container right
before every action. A rollout's ``recreate`` uses remove and create too: the allowed
container is removed and one of the same name is created from its own configuration (labels
included, so it is allowed again) and its service's image as tagged now, so a rebuilt image
is picked up, as ``docker compose up`` does for a changed service. For Swarm
(drivers/swarm.py) it reads the node, services and tasks and updates a service's spec,
only for a service of the balancer's own stack with the role.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from services.balancer.drivers.base import DriverFailure, DriverUnsupported
from services.common import DRIVER_ACTIONS, answer_text

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
ROLE_LABEL = "ticslab.role"
ROLE = "taskserver"
PORT_LABEL = "ticslab.port"
STOP_SECONDS = "5"
DEFAULT_PORT = 5001

# action -> (path suffix, query): the only writes this module can send.
ACTION_REQUESTS: dict[str, tuple[str, dict[str, str]]] = {
    "stop": ("stop", {"t": STOP_SECONDS}),
    "start": ("start", {}),
    "kill": ("kill", {"signal": "SIGKILL"}),
    "restart": ("restart", {"t": STOP_SECONDS}),
    "pause": ("pause", {}),
    "unpause": ("unpause", {}),
}
RESULTS = {
    "stop": "stopped",
    "start": "started",
    "kill": "killed",
    "restart": "restarted",
    "pause": "paused",
    "unpause": "unpaused",
}


def backend_name(labels: dict[str, str]) -> str:
    """``server1`` for the first container of service server1, ``server1-2`` for the second."""
    service = labels.get(SERVICE_LABEL, "")
    number = labels.get(NUMBER_LABEL, "1")
    return service if number == "1" else f"{service}-{number}"


def backend_url(container: dict[str, Any]) -> str:
    """``http://<container name>:<port>`` of a list entry: the name resolves on the Compose
    network (discovery and the driver's ``scale_out`` name a backend's URL alike)."""
    labels = labels_of(container)
    name = (container.get("Names") or ["/unknown"])[0].lstrip("/")
    port = labels.get(PORT_LABEL)
    if port is None:
        exposed = [p["PrivatePort"] for p in container.get("Ports", []) if p.get("Type") == "tcp"]
        port = str(exposed[0]) if len(set(exposed)) == 1 else str(DEFAULT_PORT)
    return f"http://{name}:{port}"


def by_backend_name(listed: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Backend name -> the service containers that carry it. A one-off container
    (``docker-compose run server1``) has no container number and is no backend."""
    found: dict[str, list[dict[str, Any]]] = {}
    for container in listed:
        labels = labels_of(container)
        if labels.get(ONEOFF_LABEL) == "True" or NUMBER_LABEL not in labels:
            continue
        found.setdefault(backend_name(labels), []).append(container)
    return found


def container_names(containers: list[dict[str, Any]]) -> str:
    return ", ".join(sorted(c.get("Names", ["?"])[0].lstrip("/") for c in containers))


def task_server_labels(project: str) -> list[str]:
    """The labels every container we may touch carries: ``project``'s, with the role."""
    return [f"{PROJECT_LABEL}={project}", f"{ROLE_LABEL}={ROLE}"]


def labels_of(container: dict[str, Any]) -> dict[str, str]:
    """Labels of a list entry (``Labels``) or of an inspect answer (``Config.Labels``)."""
    labels = container.get("Labels") or container.get("Config", {}).get("Labels")
    return labels or {}


class DockerEngine:
    """A tiny client of the Docker Engine API: only the calls the allow-list names."""

    def __init__(self, socket_path: Path, timeout: float = 15.0) -> None:
        self.socket_path = socket_path
        transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
        self._client = httpx.AsyncClient(
            transport=transport, base_url="http://docker", timeout=timeout
        )

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            reason = str(error) or type(error).__name__
            raise DriverFailure(
                f"Docker engine at {self.socket_path} did not answer: {reason}"
            ) from error

    async def list_containers(self, labels: list[str]) -> list[dict[str, Any]]:
        """Every container (running or not) carrying all ``labels`` (``key=value``)."""
        filters = json.dumps({"label": labels})
        response = await self._request(
            "GET", "/containers/json", params={"all": "1", "filters": filters}
        )
        if response.status_code != 200:
            raise DriverFailure(
                f"Docker could not list containers: {answer_text(response, 'message')}"
            )
        containers: list[dict[str, Any]] = response.json()
        return containers

    async def inspect(self, container_id: str) -> dict[str, Any] | None:
        """The container's details, or None when there is no such container."""
        response = await self._request("GET", f"/containers/{container_id}/json")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DriverFailure(
                f"Docker could not inspect {container_id}: {answer_text(response, 'message')}"
            )
        details: dict[str, Any] = response.json()
        return details

    async def act(self, container_id: str, action: str) -> bool:
        """Send ``action``; True when it changed something, False when Docker says 304."""
        suffix, params = ACTION_REQUESTS[action]
        response = await self._request(
            "POST", f"/containers/{container_id}/{suffix}", params=params
        )
        if response.status_code in (200, 204):
            return True
        if response.status_code == 304:
            return False
        if response.status_code == 409:
            raise DriverUnsupported(
                f"Docker refused to {action}: {answer_text(response, 'message')}"
            )
        raise DriverFailure(f"Docker failed to {action}: {answer_text(response, 'message')}")

    async def create(self, name: str, body: dict[str, Any]) -> str:
        """Create container ``name`` from ``body`` (docker_scaling.py builds it); its id."""
        response = await self._request(
            "POST", "/containers/create", params={"name": name}, json=body
        )
        if response.status_code != 201:
            self._refused(response, f"create {name}")
        created: str = response.json()["Id"]
        return created

    async def connect(self, network: str, container_id: str, endpoint: dict[str, Any]) -> None:
        """Join ``container_id`` to ``network`` (a replica's networks after the first)."""
        body = {"Container": container_id, "EndpointConfig": endpoint}
        response = await self._request("POST", f"/networks/{network}/connect", json=body)
        if response.status_code != 200:
            self._refused(response, f"connect it to {network}")

    async def remove(self, container_id: str) -> None:
        """Remove a stopped container (its named volumes stay, as with ``docker rm``)."""
        response = await self._request("DELETE", f"/containers/{container_id}")
        if response.status_code not in (204, 404):
            self._refused(response, f"remove {container_id[:12]}")

    @staticmethod
    def _refused(response: httpx.Response, what: str) -> None:
        """409 DriverUnsupported (Docker refused), any other status DriverFailure."""
        message = f"Docker could not {what}: {answer_text(response, 'message')}"
        if response.status_code == 409:
            raise DriverUnsupported(message)
        raise DriverFailure(message)

    # Swarm (drivers/swarm.py): reads of the node, services and tasks, and one write, a
    # service's new spec (replicas, ForceUpdate), only for a service its driver allowed.

    async def read(self, path: str, what: str, **params: str) -> Any:
        """A GET's JSON answer, or None on 404; DriverFailure with Docker's words otherwise."""
        response = await self._request("GET", path, params=params)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DriverFailure(f"Docker could not {what}: {answer_text(response, 'message')}")
        return response.json()

    async def list_services(self, labels: list[str]) -> list[dict[str, Any]]:
        """Every Swarm service carrying all ``labels`` (``GET /services``)."""
        filters = json.dumps({"label": labels})
        found: list[dict[str, Any]] = await self.read("/services", "list services", filters=filters)
        return found or []

    async def list_tasks(self, service_id: str, desired: bool) -> list[dict[str, Any]]:
        """The tasks of one service, cluster-wide (``GET /tasks``): only those Swarm wants
        running when ``desired``, else also those it is stopping and its task history."""
        wanted = {"desired-state": ["running"]} if desired else {}
        filters = json.dumps({"service": [service_id], **wanted})
        found: list[dict[str, Any]] = await self.read("/tasks", "list tasks", filters=filters)
        return found or []

    async def update_service(self, service_id: str, version: int, spec: dict[str, Any]) -> None:
        """``POST /services/{id}/update`` with the version read with ``spec``: Swarm refuses
        it (409 here) if the service changed in between, rather than undo that change."""
        response = await self._request(
            "POST", f"/services/{service_id}/update", params={"version": str(version)}, json=spec
        )
        if response.status_code != 200:
            self._refused(response, f"update service {spec.get('Name', service_id)}")

    async def events(self, labels: list[str]) -> AsyncIterator[dict[str, Any]]:
        """Container events carrying ``labels``, as they happen (the stream never ends)."""
        filters = json.dumps({"type": ["container"], "label": labels})
        try:
            async with self._client.stream(
                "GET", "/events", params={"filters": filters}, timeout=httpx.Timeout(5, read=None)
            ) as response:
                if response.status_code != 200:
                    raise DriverFailure(f"Docker refused the events stream: {response.status_code}")
                async for line in response.aiter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as error:
            raise DriverFailure(f"Docker events stream broke: {error}") from error

    async def aclose(self) -> None:
        await self._client.aclose()


async def own_project(engine: DockerEngine, own_id: str | None = None) -> str:
    """COMPOSE_PROJECT_NAME when set (the explicit choice wins), else the Compose project of
    the container ``own_id`` (default: our hostname, i.e. our own container id: a container
    of another project could carry the same name); DriverFailure when there is neither."""
    project = os.environ.get("COMPOSE_PROJECT_NAME")
    if not project:
        details = await engine.inspect(own_id or socket.gethostname())
        project = labels_of(details).get(PROJECT_LABEL) if details else None
    if not project:
        raise DriverFailure(
            "not running in a Compose container and COMPOSE_PROJECT_NAME is not set"
        )
    return project


class DockerDriver:
    """Acts on the task-server containers of one Compose project, and on nothing else."""

    name = "docker"
    actions: tuple[str, ...] = DRIVER_ACTIONS

    def __init__(self, engine: DockerEngine, project: str) -> None:
        self.engine = engine
        self.project = project
        self.labels = task_server_labels(project)

    @classmethod
    async def connect(cls, socket_path: Path, own_id: str | None = None) -> Self:
        """A driver for our own Compose project (see ``own_project``)."""
        engine = DockerEngine(socket_path)
        try:
            project = await own_project(engine, own_id)
        except DriverFailure:
            await engine.aclose()
            raise
        return cls(engine, project)

    def allowed(self, details: dict[str, Any]) -> bool:
        """Our project and the task-server role: the only containers we act on."""
        labels = labels_of(details)
        return labels.get(PROJECT_LABEL) == self.project and labels.get(ROLE_LABEL) == ROLE

    async def containers(self) -> dict[str, list[dict[str, Any]]]:
        """Backend name -> list entries, for the task-server containers of our project."""
        listed = await self.engine.list_containers(self.labels)
        return by_backend_name([c for c in listed if self.allowed(c)])

    async def processes(self) -> dict[str, str]:
        """Backend name -> container state (running, paused, exited, ...); a name that more
        than one container carries is ``ambiguous``."""
        return {
            name: found[0].get("State", "unknown") if len(found) == 1 else "ambiguous"
            for name, found in (await self.containers()).items()
        }

    async def perform(self, server: str, action: str) -> dict[str, Any]:
        return await self.act_on(await self.container_of(server), action)

    async def recreate(self, server: str, options: Sequence[str] | None) -> dict[str, Any]:
        """``server``'s container replaced by a new one of the same name and configuration,
        from its service's image as tagged now (``docker-compose build server1`` first)."""
        if options is not None:
            raise DriverUnsupported(
                "the Docker driver recreates a container from its service's image; options are "
                "for ticslab up (rebuild the image instead)"
            )
        old = await self._allowed_details(await self.container_of(server))
        name = old.get("Name", "").lstrip("/")
        body, more_networks = recreation(old)
        await self.engine.act(old["Id"], "stop")
        await self.engine.remove(old["Id"])
        new = await self.engine.create(name, body)
        for network, endpoint in more_networks.items():
            await self.engine.connect(network, new, endpoint)
        await self.engine.act(new, "start")
        after = await self.engine.inspect(new)
        state = after["State"]["Status"] if after else "removed"
        return {"result": "recreated", "process": state, "container": name, "id": new[:12]}

    async def container_of(self, server: str) -> str:
        """The id of the one container behind backend ``server``; DriverUnsupported if none
        or more than one."""
        found = (await self.containers()).get(server, [])
        if not found:
            raise DriverUnsupported(
                f"no task-server container for '{server}' in Compose project '{self.project}'"
            )
        if len(found) > 1:
            raise DriverUnsupported(
                f"refused: '{server}' names more than one container ({container_names(found)}); "
                "remove the extra ones"
            )
        container_id: str = found[0]["Id"]
        return container_id

    async def act_on(self, container_id: str, action: str) -> dict[str, Any]:
        """Inspect ``container_id``, refuse it unless allowed, then act and report its state."""
        if action not in ACTION_REQUESTS:
            raise DriverUnsupported(f"the Docker driver cannot '{action}'")
        details = await self._allowed_details(container_id)
        name = details.get("Name", "").lstrip("/")
        changed = await self.engine.act(container_id, action)
        after = await self.engine.inspect(container_id)
        state = after["State"]["Status"] if after else "removed"
        result = RESULTS[action] if changed else f"already {state}"
        return {"result": result, "process": state, "container": name}

    async def _allowed_details(self, container_id: str) -> dict[str, Any]:
        """The container's details, checked right now: DriverUnsupported unless allowed."""
        details = await self.engine.inspect(container_id)
        if details is None:
            raise DriverFailure(f"container {container_id[:12]} no longer exists")
        name = details.get("Name", "").lstrip("/")
        if not self.allowed(details):
            raise DriverUnsupported(
                f"refused: container {name} is not a task server of Compose project "
                f"'{self.project}' (needs labels {', '.join(self.labels)})"
            )
        return details

    async def aclose(self) -> None:
        await self.engine.aclose()


def recreation(details: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The create body that gives a container like ``details`` (an inspect answer): its
    configuration and labels, its host configuration, its first network (the Engine takes
    one at create), and its other networks to connect after. Its hostname and its network
    aliases that were its old id are left out: the new container gets its own."""
    config = {key: value for key, value in details["Config"].items() if key != "Hostname"}
    old_id = details.get("Id", "")
    endpoints = {
        network: {
            "Aliases": [a for a in endpoint.get("Aliases") or [] if not old_id.startswith(a)],
            "IPAMConfig": endpoint.get("IPAMConfig"),
            "Links": endpoint.get("Links"),
        }
        for network, endpoint in (details.get("NetworkSettings", {}).get("Networks") or {}).items()
    }
    first = dict(list(endpoints.items())[:1])
    body = {
        **config,
        "HostConfig": details.get("HostConfig") or {},
        "NetworkingConfig": {"EndpointsConfig": first},
    }
    return body, {network: e for network, e in endpoints.items() if network not in first}

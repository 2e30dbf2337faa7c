"""The Swarm driver: acts on the task-server services and tasks of the balancer's own stack.

Under ``docker stack deploy`` a stopped container is replaced by Swarm within seconds, so
the driver speaks Swarm's language: a kill is a SIGKILL to a task's container (Swarm heals
it: the demo), stop and start scale a one-replica service to 0 and back to 1, restart and a
rollout's recreate are ``docker service update --force`` (ForceUpdate + 1), pause freezes a
task's container when it runs on this node, and scaling adds or removes a replica of the
replicated service. It talks to the Engine through drivers/docker.py's allow-listed client,
and touches a service only when it carries our stack's ``com.docker.stack.namespace`` and
the role ``ticslab.role=taskserver`` (on the service or on its containers), checked again
by inspecting it right before every write; a container only when its Swarm labels name such
a service and the task.

A balancer server is mapped to a service by name (``server1`` is the service
``<stack>_server1``, a static backend) or, for a server that DNS discovery found, to the
task whose address is its URL's host (``GET /tasks`` gives every task's addresses).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from services.balancer.drivers.base import DriverFailure, DriverUnsupported
from services.balancer.drivers.docker import (
    DEFAULT_PORT,
    PORT_LABEL,
    RESULTS,
    ROLE,
    ROLE_LABEL,
    DockerEngine,
    labels_of,
)
from services.common import DRIVER_ACTIONS, DRIVER_WAIT, FREEZE_ACTIONS
from services.waiting import wait_ready

STACK_LABEL = "com.docker.stack.namespace"
SERVICE_ID_LABEL = "com.docker.swarm.service.id"
TASK_ID_LABEL = "com.docker.swarm.task.id"
# Swarm answers a write at once and acts after: how long to wait for the tasks to follow
# (within the balancer's bound for one driver action, DRIVER_WAIT), and how often to look.
SETTLE_SECONDS = DRIVER_WAIT[1] - 5.0
POLL_SECONDS = 0.25
# How long a new task is given to be found by DNS discovery (which polls each second), so
# the server the driver answers is the one discovery added, not a second one.
DISCOVERY_SECONDS = 2.0
# Backend name -> URL of every server the balancer has now (control.py gives it).
ServerUrls = Callable[[], dict[str, str]]


def short_name(service_name: str, stack: str) -> str:
    """``server1`` for the service ``lab_server1`` of stack ``lab``: the balancer's name."""
    return service_name.removeprefix(f"{stack}_")


def service_name(service: dict[str, Any]) -> str:
    name: str = service.get("Spec", {}).get("Name", "?")
    return name


def allowed_service(service: dict[str, Any], stack: str) -> bool:
    """Our stack, and the task-server role on the service or on its containers."""
    spec = service.get("Spec") or {}
    labels = spec.get("Labels") or {}
    container = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    role = ROLE in (labels.get(ROLE_LABEL), container.get(ROLE_LABEL))
    return labels.get(STACK_LABEL) == stack and role


def replicas_of(service: dict[str, Any]) -> int | None:
    """A replicated service's replicas; None for a global one (one task per node)."""
    replicated = ((service.get("Spec") or {}).get("Mode") or {}).get("Replicated")
    return None if replicated is None else int(replicated.get("Replicas", 0))


def task_addresses(task: dict[str, Any]) -> set[str]:
    """The task's IP addresses on its networks (``10.0.1.5/24`` -> ``10.0.1.5``)."""
    return {
        address.split("/")[0]
        for attachment in task.get("NetworksAttachments") or []
        for address in attachment.get("Addresses") or []
    }


def task_state(task: dict[str, Any]) -> str:
    state: str = (task.get("Status") or {}).get("State", "unknown")
    return state


def container_of_task(task: dict[str, Any]) -> str | None:
    found: str | None = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
    return found or None


def url_host(url: str) -> str:
    """The host of a backend URL, an IP address normalised (``[::1]`` -> ``::1``)."""
    host = urlsplit(url).hostname or ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


@dataclass(frozen=True)
class Target:
    """What a balancer server is in the Swarm: a service, and the task when it is one task
    of a replicated service (found by address) rather than the whole service (by name)."""

    service: dict[str, Any]
    task: dict[str, Any] | None = None


def match_servers(
    servers: dict[str, str],
    stack: str,
    services: list[dict[str, Any]],
    tasks: dict[str, list[dict[str, Any]]],
) -> dict[str, Target]:
    """Backend name -> its target, for the allowed ``services`` (and their running
    ``tasks`` by service id). By name first: the server's name, or its URL's host, is a
    service's name with or without the ``<stack>_`` prefix. Else by address: its URL's host
    is one task's address, or the PTR name Swarm gives a task (``<service>.<slot>.<task id>``)."""
    by_name: dict[str, dict[str, Any]] = {}
    for service in services:
        by_name[service_name(service)] = service
        by_name.setdefault(short_name(service_name(service), stack), service)
    by_address: dict[str, Target] = {}
    for service in services:
        for task in tasks.get(service.get("ID", ""), []):
            target = Target(service, task)
            by_address[task.get("ID", "")] = target
            for address in task_addresses(task):
                by_address[address] = target
    found: dict[str, Target] = {}
    for name, url in servers.items():
        host = url_host(url)
        named = by_name.get(name) or by_name.get(host)
        addressed = by_address.get(host) or by_address.get(ptr_task_id(host))
        if named is not None:
            found[name] = Target(named)
        elif addressed is not None:
            found[name] = addressed
    return found


def ptr_task_id(host: str) -> str:
    """The task id in Swarm's name of a task (``lab_server.2.k3j...`` -> ``k3j...``), or ''."""
    parts = host.split(".")
    swarm_like = len(parts) >= 3 and parts[1].isdigit() and not parts[0].isdigit()
    return parts[2] if swarm_like else ""


def scale_refusal(service: dict[str, Any], action: str) -> str | None:
    """Why ``stop``/``start`` cannot be a scale to 0 or 1 of ``service`` (HTTP 409), or None."""
    replicas = replicas_of(service)
    name = service_name(service)
    if replicas is None:
        return f"refused: {name} is a global service (a task per node); Swarm refills it"
    if action == "stop" and replicas > 1:
        return (
            f"refused: {name} has {replicas} replicas and Swarm would refill a stopped one's "
            "slot within seconds; kill a task to watch Swarm heal it, or remove a server "
            "(scale in) to have one fewer"
        )
    return None


class SwarmDriver:
    """Acts on the task-server services and tasks of one stack, and on nothing else."""

    name = "swarm"
    actions: tuple[str, ...] = DRIVER_ACTIONS

    def __init__(self, engine: DockerEngine, stack: str, node_id: str, servers: ServerUrls) -> None:
        self.engine = engine
        self.stack = stack
        self.node_id = node_id
        self.servers = servers

    @classmethod
    async def connect(
        cls, socket_path: Path, servers: ServerUrls, own_id: str | None = None
    ) -> Self:
        """A driver for our own stack (``own_stack``), on a Swarm manager."""
        engine = DockerEngine(socket_path)
        try:
            stack = await own_stack(engine, own_id)
            if stack is None:
                raise DriverFailure(
                    "not running in a Swarm stack (no com.docker.stack.namespace label on our "
                    "container) and TICSLAB_STACK is not set"
                )
            node_id = await manager_node(engine)
        except DriverFailure:
            await engine.aclose()
            raise
        return cls(engine, stack, node_id, servers)

    # Reading the stack ------------------------------------------------------------------

    async def services(self) -> list[dict[str, Any]]:
        """Our stack's services with the task-server role."""
        listed = await self.engine.list_services([f"{STACK_LABEL}={self.stack}"])
        return [s for s in listed if allowed_service(s, self.stack)]

    async def targets(self) -> dict[str, Target]:
        services = await self.services()
        tasks = {s["ID"]: await self.engine.list_tasks(s["ID"], desired=True) for s in services}
        return match_servers(self.servers(), self.stack, services, tasks)

    async def target_of(self, server: str) -> Target:
        target = (await self.targets()).get(server)
        if target is None:
            raise DriverUnsupported(
                f"no task-server service or task of stack '{self.stack}' is '{server}' (by its "
                f"name, <stack>_{server}, or by its address)"
            )
        return target

    async def allowed(self, service_id: str) -> dict[str, Any]:
        """The service as it is now (with its current Version): DriverUnsupported unless ours."""
        service: dict[str, Any] | None = await self.engine.read(
            f"/services/{service_id}", f"inspect service {service_id[:12]}"
        )
        if service is None:
            raise DriverFailure(f"service {service_id[:12]} no longer exists")
        if not allowed_service(service, self.stack):
            raise DriverUnsupported(
                f"refused: service {service_name(service)} is not a task server of stack "
                f"'{self.stack}' (needs labels {STACK_LABEL}={self.stack} and {ROLE_LABEL}={ROLE})"
            )
        return service

    async def running_tasks(self, service_id: str) -> list[dict[str, Any]]:
        """Its tasks that run now, those Swarm is stopping included."""
        tasks = await self.engine.list_tasks(service_id, desired=False)
        return [t for t in tasks if task_state(t) == "running"]

    async def processes(self) -> dict[str, str]:
        """Backend name -> the state of its task (``exited`` for a service scaled to 0)."""
        states = {}
        for name, target in (await self.targets()).items():
            tasks = [target.task] if target.task else await self.running_tasks(target.service["ID"])
            states[name] = await self.state_of(tasks[0]) if tasks else "exited"
        return states

    async def state_of(self, task: dict[str, Any]) -> str:
        """Its container's state when on this node (``paused`` shows; Swarm says
        ``running`` still), else Swarm's state of the task."""
        container = container_of_task(task)
        if task.get("NodeID") == self.node_id and container:
            details = await self.engine.inspect(container)
            if details is not None:
                state: str = details["State"]["Status"]
                return state
        return task_state(task)

    # Acting -----------------------------------------------------------------------------

    async def perform(self, server: str, action: str) -> dict[str, Any]:
        target = await self.target_of(server)
        service = await self.allowed(target.service["ID"])
        if action in ("stop", "start"):
            return await self.scale_one(service, action)
        if action == "restart":
            return await self.force_update(service, target)
        if action in ("kill", "pause", "unpause"):
            return await self.act_on_task(service, target, action)
        raise DriverUnsupported(f"the Swarm driver cannot '{action}'")

    async def recreate(self, server: str, options: Sequence[str] | None) -> dict[str, Any]:
        """A rollout's new task: ``service update --force`` of ``server``'s own service."""
        if options is not None:
            raise DriverUnsupported(
                "the Swarm driver starts new tasks from the service's spec; options are for "
                "ticslab up (update the service's image or command instead)"
            )
        target = await self.target_of(server)
        return await self.force_update(await self.allowed(target.service["ID"]), target)

    async def scale_one(self, service: dict[str, Any], action: str) -> dict[str, Any]:
        """stop: replicas 1 -> 0; start: 0 -> 1; then wait until the tasks follow."""
        if (refusal := scale_refusal(service, action)) is not None:
            raise DriverUnsupported(refusal)
        replicas = replicas_of(service) or 0
        wanted = 0 if action == "stop" else 1
        if (action == "start" and replicas >= 1) or (action == "stop" and replicas == 0):
            state = "running" if replicas else "exited"
            return {
                "result": f"already {state}",
                "process": state,
                "service": service_name(service),
            }
        await self.update(service, lambda spec: set_replicas(spec, wanted))
        await self.settle(service["ID"], lambda tasks: len(tasks) == wanted, f"{wanted} running")
        return {
            "result": RESULTS[action],
            "process": "running" if wanted else "exited",
            "service": service_name(service),
        }

    async def force_update(self, service: dict[str, Any], target: Target) -> dict[str, Any]:
        """``docker service update --force``: every task replaced (by the service's update
        order), so only for a one-replica service, where that is this one server."""
        name = service_name(service)
        if target.task is not None or replicas_of(service) != 1:
            raise DriverUnsupported(
                f"refused: a forced update of {name} replaces every one of its tasks, not only "
                f"this server's; roll them all with `docker service update --force {name}`, "
                "or kill this task to have Swarm replace it"
            )
        force = int(service["Spec"]["TaskTemplate"].get("ForceUpdate", 0)) + 1

        def forced(spec: dict[str, Any]) -> None:
            spec["TaskTemplate"]["ForceUpdate"] = force

        await self.update(service, forced)

        def replaced(tasks: list[dict[str, Any]]) -> bool:
            forces = [int((t.get("Spec") or {}).get("ForceUpdate", 0)) for t in tasks]
            return forces == [force]

        await self.settle(service["ID"], replaced, f"one running task with ForceUpdate {force}")
        tasks = await self.running_tasks(service["ID"])
        return {
            "result": "restarted",
            "process": "running",
            "service": name,
            "task": tasks[0]["ID"][:12] if tasks else None,
            "force_update": force,
        }

    async def act_on_task(
        self, service: dict[str, Any], target: Target, action: str
    ) -> dict[str, Any]:
        """kill, pause or unpause the container of ``target``'s task, on this node only."""
        task = target.task or await self.only_task(service)
        if task.get("NodeID") != self.node_id:
            freeze = action in FREEZE_ACTIONS
            instead = "the hang fault (PUT /control/servers/{name}/fault)" if freeze else "restart"
            raise DriverUnsupported(
                f"refused: task {task.get('ID', '?')[:12]} of {service_name(service)} runs on "
                f"another node, and this driver reaches containers on its own node only; "
                f"use {instead} instead"
            )
        container = container_of_task(task)
        details = await self.engine.inspect(container) if container else None
        labels = labels_of(details) if details else {}
        if labels.get(SERVICE_ID_LABEL) != service["ID"] or labels.get(TASK_ID_LABEL) != task["ID"]:
            raise DriverUnsupported(
                f"refused: task {task.get('ID', '?')[:12]} has no container of "
                f"{service_name(service)} here (it is {task_state(task)})"
            )
        changed = await self.engine.act(container or "", action)
        after = await self.engine.inspect(container or "")
        state = after["State"]["Status"] if after else "removed"
        return {
            "result": RESULTS[action] if changed else f"already {state}",
            "process": state,
            "service": service_name(service),
            "task": task["ID"][:12],
        }

    async def only_task(self, service: dict[str, Any]) -> dict[str, Any]:
        """The one running task of a service named as one server."""
        tasks = await self.running_tasks(service["ID"])
        if len(tasks) != 1:
            raise DriverUnsupported(
                f"refused: {service_name(service)} has {len(tasks)} running tasks, not one"
            )
        return tasks[0]

    # Scaling ----------------------------------------------------------------------------

    async def replicated(self) -> dict[str, Any]:
        """The service whose tasks are servers found by address (DNS discovery), with the
        most replicas (ties: the first by name); one a server is named after is not one."""
        targets = (await self.targets()).values()
        named = {t.service["ID"] for t in targets if t.task is None}
        candidates = [
            s for s in await self.services() if s["ID"] not in named and replicas_of(s) is not None
        ]
        if not candidates:
            raise DriverUnsupported(
                f"refused: every task-server service of stack '{self.stack}' is one server by "
                "its name (server1, server2), and a second task would answer for the same "
                "name; scale the stack whose servers DNS discovery finds (docker-stack.scale.yml)"
            )
        return min(candidates, key=lambda s: (-(replicas_of(s) or 0), service_name(s)))

    async def scale_out(self, name: str | None) -> dict[str, Any]:
        """One more replica; its server as discovery names it once it sees it, else
        ``<service>-<slot>``, at its task's address."""
        if name is not None:
            raise DriverUnsupported("under Swarm a new server is a new task: send no name")
        service = await self.allowed((await self.replicated())["ID"])
        before = {t["ID"] for t in await self.engine.list_tasks(service["ID"], desired=False)}
        replicas = (replicas_of(service) or 0) + 1
        await self.update(service, lambda spec: set_replicas(spec, replicas))

        def grown(tasks: list[dict[str, Any]]) -> bool:
            return any(t["ID"] not in before and task_addresses(t) for t in tasks)

        await self.settle(service["ID"], grown, "a new running task with an address")
        new = next(t for t in await self.running_tasks(service["ID"]) if t["ID"] not in before)
        address = min(task_addresses(new))

        def known() -> list[str]:
            return [n for n, url in self.servers().items() if url_host(url) == address]

        async def discovered() -> str | None:
            return None if known() else "not yet"

        # DNS discovery (polling each second) may add it first: then it is that server.
        await wait_ready(discovered, DISCOVERY_SECONDS, POLL_SECONDS)
        short = short_name(service_name(service), self.stack)
        names = known()
        server = names[0] if names else f"{short}-{new.get('Slot', len(before) + 1)}"
        host = f"[{address}]" if ":" in address else address
        url = f"http://{host}:{port_of(service)}"
        return {"server": server, "url": url, "process": "running", "task": new["ID"][:12]}

    async def scale_in(self, server: str) -> dict[str, Any]:
        """One replica fewer of ``server``'s replicated service. Swarm chooses which task
        goes (the API names none): the answer says which one it was."""
        target = await self.target_of(server)
        service = await self.allowed(target.service["ID"])
        replicas = replicas_of(service)
        if target.task is None or replicas is None or replicas <= 1:
            raise DriverUnsupported(
                f"refused: '{server}' is not one task of a replicated service with more than "
                "one replica; stop it instead"
            )
        await self.update(service, lambda spec: set_replicas(spec, replicas - 1))
        await self.settle(
            service["ID"], lambda t: len(t) == replicas - 1, f"{replicas - 1} running"
        )
        left = {t["ID"] for t in await self.running_tasks(service["ID"])}
        ours = target.task["ID"] not in left
        return {
            "result": "removed",
            "process": "removed" if ours else "running",
            "service": service_name(service),
            "task_removed_by_swarm": "this one" if ours else "another",
        }

    # Writes and waits -------------------------------------------------------------------

    async def update(
        self, service: dict[str, Any], change: Callable[[dict[str, Any]], None]
    ) -> None:
        """Send ``service``'s spec after ``change``, at the version it was read at."""
        spec = service["Spec"]
        change(spec)
        await self.engine.update_service(service["ID"], int(service["Version"]["Index"]), spec)

    async def settle(
        self, service_id: str, done: Callable[[list[dict[str, Any]]], bool], wanted: str
    ) -> None:
        """Wait (bounded) until the service's running tasks satisfy ``done``."""

        async def probe() -> str | None:
            tasks = await self.running_tasks(service_id)
            return None if done(tasks) else f"{len(tasks)} running"

        began = time.monotonic()
        missing = await wait_ready(probe, SETTLE_SECONDS, POLL_SECONDS)
        if missing is not None:
            raise DriverFailure(
                f"Swarm did not reach {wanted} within {time.monotonic() - began:.0f} s "
                f"(now {missing}); see `docker service ps`"
            )

    async def aclose(self) -> None:
        await self.engine.aclose()


def set_replicas(spec: dict[str, Any], replicas: int) -> None:
    spec["Mode"]["Replicated"]["Replicas"] = replicas


def port_of(service: dict[str, Any]) -> int:
    """The port its task servers listen on: the ``ticslab.port`` label, else 5001."""
    spec = service.get("Spec") or {}
    container = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    text = (spec.get("Labels") or {}).get(PORT_LABEL) or container.get(PORT_LABEL) or ""
    return int(text) if text.isdigit() else DEFAULT_PORT


async def own_stack(engine: DockerEngine, own_id: str | None = None) -> str | None:
    """TICSLAB_STACK when set, else the stack label of our own container (hostname = its
    id), else None: not in a stack."""
    stack = os.environ.get("TICSLAB_STACK")
    if stack:
        return stack
    details = await engine.inspect(own_id or socket.gethostname())
    return labels_of(details).get(STACK_LABEL) if details else None


async def manager_node(engine: DockerEngine) -> str:
    """This node's Swarm id; DriverFailure unless it is a manager (only a manager's API
    lists and updates services)."""
    info = await engine.read("/info", "read the engine's state") or {}
    swarm = info.get("Swarm") or {}
    if not swarm.get("ControlAvailable"):
        raise DriverFailure(
            "this Docker engine is not a Swarm manager (the Swarm driver needs a manager's "
            "API: place the balancer with `deploy.placement.constraints: [node.role == manager]`)"
        )
    node: str = swarm.get("NodeID", "")
    return node


async def in_a_stack(socket_path: Path) -> bool:
    """Whether ``--driver auto`` should pick this driver: we run in a Swarm stack."""
    engine = DockerEngine(socket_path)
    try:
        return await own_stack(engine) is not None
    finally:
        await engine.aclose()

"""The Swarm driver's map from balancer servers to services and tasks, and its refusals
that need no engine (they are decided before any request is sent).

The service and task bodies have the shape ``GET /services`` and ``GET /tasks`` answer.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.balancer.drivers import DriverFailure, DriverUnsupported, choose_driver
from services.balancer.drivers.docker import DockerEngine
from services.balancer.drivers.swarm import (
    SwarmDriver,
    Target,
    allowed_service,
    match_servers,
    port_of,
    ptr_task_id,
    scale_refusal,
)

STACK = "lab"


def service(
    name: str,
    replicas: int | None = 1,
    *,
    stack: str = STACK,
    role_on: str = "service",
    port: str | None = None,
) -> dict[str, Any]:
    labels = {"com.docker.stack.namespace": stack}
    container_labels: dict[str, str] = {}
    role = {"ticslab.role": "taskserver"}
    (labels if role_on == "service" else container_labels).update(role if role_on else {})
    if port:
        container_labels["ticslab.port"] = port
    mode: dict[str, Any] = (
        {"Global": {}} if replicas is None else {"Replicated": {"Replicas": replicas}}
    )
    return {
        "ID": f"id-{name}",
        "Version": {"Index": 7},
        "Spec": {
            "Name": name,
            "Labels": labels,
            "Mode": mode,
            "TaskTemplate": {"ContainerSpec": {"Labels": container_labels}, "ForceUpdate": 0},
        },
    }


def task(service_id: str, task_id: str, address: str, node: str = "node-a") -> dict[str, Any]:
    return {
        "ID": task_id,
        "ServiceID": service_id,
        "NodeID": node,
        "Slot": 2,
        "Status": {"State": "running", "ContainerStatus": {"ContainerID": f"c-{task_id}"}},
        "NetworksAttachments": [{"Addresses": [f"{address}/24"]}],
    }


def test_only_our_stack_with_the_role_on_the_service_or_its_containers_is_allowed() -> None:
    assert allowed_service(service("lab_server1"), STACK)
    assert allowed_service(service("lab_server1", role_on="container"), STACK)
    assert not allowed_service(service("lab_server1", role_on=""), STACK)
    assert not allowed_service(service("other_server1", stack="other"), STACK)
    assert not allowed_service({"ID": "x"}, STACK)


def test_static_names_map_to_services_and_discovered_ones_to_tasks_by_address() -> None:
    server1, server2 = service("lab_server1"), service("lab_server2")
    scaled = service("lab_server", 3)
    tasks = {
        "id-lab_server": [
            task("id-lab_server", "t1", "10.0.1.5"),
            task("id-lab_server", "t2abc", "10.0.1.6"),
        ]
    }
    servers = {
        "server1": "http://server1:5001",  # the stack's static backends
        "server2": "http://anything:5002",  # by the name alone
        "by-url": "http://lab_server1:5001",  # by the URL's host, full service name
        "server-2": "http://10.0.1.5:5001",  # DNS discovery: by the task's address
        "ptr": "http://lab_server.2.t2abc:5001",  # Swarm's PTR name of a task
        "stranger": "http://10.9.9.9:5001",
    }
    found = match_servers(servers, STACK, [server1, server2, scaled], tasks)
    assert found["server1"] == Target(server1)
    assert found["server2"] == Target(server2)
    assert found["by-url"] == Target(server1)
    assert found["server-2"] == Target(scaled, tasks["id-lab_server"][0])
    assert found["ptr"] == Target(scaled, tasks["id-lab_server"][1])
    assert "stranger" not in found


def test_a_swarm_task_name_gives_its_id_and_an_address_gives_none() -> None:
    assert ptr_task_id("lab_server.2.k3jq8") == "k3jq8"
    assert ptr_task_id("lab_server.2.k3jq8.lab_default") == "k3jq8"
    assert ptr_task_id("10.0.1.5") == ""
    assert ptr_task_id("server1") == ""


def test_stop_is_refused_on_a_replicated_or_global_service_saying_why() -> None:
    assert scale_refusal(service("lab_server1"), "stop") is None
    assert scale_refusal(service("lab_server", 3), "start") is None
    refusal = scale_refusal(service("lab_server", 3), "stop")
    assert refusal and "3 replicas" in refusal and "refill" in refusal
    assert "global" in (scale_refusal(service("lab_server", None), "stop") or "")


def test_the_port_comes_from_the_label_else_the_default() -> None:
    assert port_of(service("lab_server", 2, port="5005")) == 5005
    assert port_of(service("lab_server", 2)) == 5001


def offline_driver(tmp_path: Path) -> SwarmDriver:
    """A driver whose engine socket does not exist: any request it sent would fail with
    DriverFailure, so a DriverUnsupported proves it refused before sending anything."""
    return SwarmDriver(DockerEngine(tmp_path / "no.sock"), STACK, "node-a", dict)


def test_a_forced_update_of_a_replicated_service_is_refused(tmp_path: Path) -> None:
    driver = offline_driver(tmp_path)
    scaled = service("lab_server", 3)
    one = task("id-lab_server", "t1", "10.0.1.5")
    with pytest.raises(DriverUnsupported, match="every one of its tasks"):
        asyncio.run(driver.force_update(scaled, Target(scaled, one)))


@pytest.mark.parametrize(("action", "instead"), [("pause", "hang fault"), ("kill", "restart")])
def test_a_task_on_another_node_is_refused_naming_what_works(
    tmp_path: Path, action: str, instead: str
) -> None:
    driver = offline_driver(tmp_path)
    scaled = service("lab_server", 3)
    elsewhere = task("id-lab_server", "t1", "10.0.1.5", node="node-b")
    with pytest.raises(DriverUnsupported, match=instead):
        asyncio.run(driver.act_on_task(scaled, Target(scaled, elsewhere), action))


def test_a_new_server_is_named_by_swarm_not_by_the_caller(tmp_path: Path) -> None:
    with pytest.raises(DriverUnsupported, match="send no name"):
        asyncio.run(offline_driver(tmp_path).scale_out("server9"))


def test_swarm_asked_for_without_an_engine_fails_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no.sock'}")
    monkeypatch.setenv("TICSLAB_STACK", STACK)
    monkeypatch.delenv("TICSLAB_SUPERVISOR_URL", raising=False)
    with pytest.raises(DriverFailure, match="did not answer"):
        asyncio.run(choose_driver("swarm", "token"))

"""Scaling under Compose (issue 25): the Docker driver copies a task-server container as
``docker compose up --scale`` would, and removes one; discovery never adds either twice.
Against a real engine, with busybox containers labelled as Compose labels them; everything
made here is removed at the end. Also the replica's create body, checked without an engine."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import docker
from test_docker_driver import COMMAND, IMAGE, build_image, engine_answers

from services.balancer.balancer import Balancer
from services.balancer.config import BalancerConfig
from services.balancer.discovery import DockerDiscovery
from services.balancer.drivers import docker_socket_path
from services.balancer.drivers.docker_scaling import ScalingDockerDriver, replica_request

PROJECT = f"tlscale{uuid.uuid4().hex[:8]}"
NETWORK = f"{PROJECT}_ticsnet"


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container))[0]


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Container 1 of service ``server`` of PROJECT, on a network of its own, as Compose
    makes it; the driver finds PROJECT through COMPOSE_PROJECT_NAME."""
    if reason := engine_answers():
        pytest.skip(reason)
    build_image(tmp_path)
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", PROJECT)
    docker("network", "create", NETWORK)
    labels = {
        "com.docker.compose.project": PROJECT,
        "com.docker.compose.service": "server",
        "com.docker.compose.container-number": "1",
        "com.docker.compose.oneoff": "False",
        "com.docker.compose.config-hash": "abc123",
        "ticslab.role": "taskserver",
        "ticslab.port": "5001",
    }
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    first = docker(
        "run", "-d", "--name", f"{PROJECT}-server-1", "--network", NETWORK,
        "--network-alias", "server", "-e", "TICSLAB_PORT=5001", *flags, IMAGE, *COMMAND,
    )  # fmt: skip
    try:
        yield first.strip()
    finally:
        made = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}")
        if made.split():
            subprocess.run(["docker", "rm", "-f", *made.split()], capture_output=True)
        subprocess.run(["docker", "network", "rm", NETWORK], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)


@pytest.mark.docker
def test_scale_out_copies_the_service_and_scale_in_removes_it(service: str) -> None:
    async def main() -> tuple[dict, list[str], list[str]]:
        balancer = Balancer(BalancerConfig(backends=[]))
        discovery = DockerDiscovery(balancer, docker_socket_path())
        driver = await ScalingDockerDriver.connect(docker_socket_path())
        await discovery.start()
        try:
            added = await driver.scale_out(None)
            try:  # as balancer/scaling.py joins it: discovery may have seen it first
                balancer.add_server(added["server"], added["url"])
            except ValueError:
                assert balancer.get(added["server"]).url == added["url"]
            await discovery.sync()  # the same name and URL: never a second server
            with_two = list(balancer.states())
            await driver.scale_in(added["server"])
            balancer.remove_server(added["server"])
            await discovery.sync()  # the container is gone: never added back
            return added, with_two, list(balancer.states())
        finally:
            await discovery.stop()
            await driver.aclose()

    added, with_two, after = asyncio.run(main())
    assert added["server"] == "server-2" and added["container"] == f"{PROJECT}-server-2"
    assert added["url"] == f"http://{PROJECT}-server-2:5001" and added["process"] == "running"
    assert sorted(with_two) == ["server", "server-2"] and after == ["server"]
    gone = subprocess.run(["docker", "inspect", f"{PROJECT}-server-2"], capture_output=True)
    assert gone.returncode != 0  # removed, not only stopped


@pytest.mark.docker
def test_the_replica_has_the_services_config_labels_and_network(service: str) -> None:
    async def main() -> dict:
        driver = await ScalingDockerDriver.connect(docker_socket_path())
        try:
            return await driver.scale_out(None)
        finally:
            await driver.aclose()

    asyncio.run(main())
    first, copy = inspect(service), inspect(f"{PROJECT}-server-2")
    labels = copy["Config"]["Labels"]
    assert labels["com.docker.compose.container-number"] == "2"
    assert labels["com.docker.compose.oneoff"] == "False"
    for key in ("project", "service", "config-hash"):
        label = f"com.docker.compose.{key}"
        assert labels[label] == first["Config"]["Labels"][label]
    assert labels["ticslab.role"] == "taskserver"
    for key in ("Image", "Cmd", "Env"):
        assert copy["Config"][key] == first["Config"][key]
    assert "server" in copy["NetworkSettings"]["Networks"][NETWORK]["Aliases"]
    assert copy["State"]["Status"] == "running"


def test_a_replica_request_keeps_the_config_and_never_a_host_port() -> None:
    template = {
        "Config": {
            "Image": "ticslab:latest",
            "Cmd": ["taskserver"],
            "Env": ["TICSLAB_PORT=5001"],
            "Hostname": "0123456789ab",
            "Labels": {
                "com.docker.compose.project": "lab",
                "com.docker.compose.service": "server",
                "com.docker.compose.container-number": "1",
                "com.docker.compose.oneoff": "False",
                "ticslab.role": "taskserver",
            },
            "Healthcheck": {"Test": ["CMD", "true"]},
        },
        "HostConfig": {
            "Binds": ["lab_tasks:/app/data"],
            "PortBindings": {"5001/tcp": [{"HostPort": "5001"}]},
            "NetworkMode": "lab_ticsnet",
        },
        "NetworkSettings": {"Networks": {"lab_ticsnet": {}, "lab_other": {}}},
    }
    body = replica_request(template, 3)
    assert body["Labels"]["com.docker.compose.container-number"] == "3"
    assert body["Labels"]["ticslab.role"] == "taskserver"
    assert body["Healthcheck"] == {"Test": ["CMD", "true"]} and body["Cmd"] == ["taskserver"]
    assert "Hostname" not in body  # each replica has its own
    assert body["HostConfig"] == {"Binds": ["lab_tasks:/app/data"], "NetworkMode": "lab_ticsnet"}
    endpoints = body["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints == {"lab_ticsnet": {"Aliases": ["server"]}}  # its NetworkMode; then the other
    assert template["Config"]["Labels"]["com.docker.compose.container-number"] == "1"

"""The Docker driver against a real engine, with busybox containers labelled as Compose would.

Each test acts through the driver and checks the container with ``docker inspect`` itself.
Everything created here (containers, the image) is removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import docker, docker_engine_problem, wait_until_async

from services.balancer.drivers import DriverUnsupported, docker_socket_path
from services.balancer.drivers.docker import DockerDriver, DockerEngine

pytestmark = pytest.mark.docker

BUSYBOX = Path("/usr/bin/busybox")
RUN_ID = uuid.uuid4().hex[:8]
IMAGE = f"ticslab-test-busybox:{RUN_ID}"
OWN = f"tlown{RUN_ID}"
OTHER = f"tlother{RUN_ID}"
# PID 1 ignores SIGTERM unless it traps it; this one stops at once, like a task server.
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]


def engine_answers() -> str | None:
    """None when a Docker engine answers here, else why the tests are skipped."""
    if problem := docker_engine_problem():
        return problem
    if not docker_socket_path().exists():
        return f"no Docker socket at {docker_socket_path()}"
    if not BUSYBOX.exists():
        return "no /usr/bin/busybox (Debian package busybox-static) to build a test image"
    return None


def build_image(tmp: Path) -> None:
    archive = tmp / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in ("sh", "sleep"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    subprocess.run(
        ["docker", "import", str(archive), IMAGE], check=True, capture_output=True, timeout=60
    )


def run_container(
    project: str,
    service: str,
    *,
    role: bool = True,
    number: int = 1,
    oneoff: bool = False,
    name: str = "",
) -> str:
    labels = {
        "com.docker.compose.project": project,
        "com.docker.compose.service": service,
        "com.docker.compose.oneoff": str(oneoff),
    }
    if not oneoff:  # docker-compose run gives its one-off containers no number
        labels["com.docker.compose.container-number"] = str(number)
    if role:
        labels["ticslab.role"] = "taskserver"
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    name = name or f"{project}-{service}-{number}"
    return docker("run", "-d", "--name", name, *flags, IMAGE, *COMMAND)


def status(container_id: str) -> str:
    return json.loads(docker("inspect", container_id))[0]["State"]["Status"]


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    reason = engine_answers()
    if reason:
        pytest.skip(reason)
    build_image(tmp_path_factory.mktemp("image"))
    made: dict[str, str] = {}
    try:
        made["balancer"] = run_container(OWN, "balancer", role=False)
        made["server1"] = run_container(OWN, "server1")
        made["server2"] = run_container(OWN, "server2")
        made["scaled2"] = run_container(OWN, "server2", number=2)
        made["norole"] = run_container(OWN, "server3", role=False)
        made["foreign"] = run_container(OTHER, "server1")
        made["oneoff"] = run_container(OWN, "server1", oneoff=True, name=f"{OWN}-server1-run")
        made["twin_a"] = run_container(OWN, "server5", name=f"{OWN}-server5-a")
        made["twin_b"] = run_container(OWN, "server5", name=f"{OWN}-server5-b")
        yield made
    finally:
        if made:
            subprocess.run(["docker", "rm", "-f", *made.values()], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)


def with_driver(containers: dict[str, str], body):  # type: ignore[no-untyped-def]
    """Run ``body(driver)`` with a driver that believes it runs in the balancer container."""

    async def main():  # type: ignore[no-untyped-def]
        driver = await DockerDriver.connect(docker_socket_path(), own_id=containers["balancer"])
        try:
            return await body(driver)
        finally:
            await driver.aclose()

    return asyncio.run(main())


def test_self_discovery_finds_own_project_and_task_servers(containers: dict[str, str]) -> None:
    async def body(driver: DockerDriver) -> tuple[str, dict[str, str]]:
        return driver.project, await driver.processes()

    project, processes = with_driver(containers, body)
    assert project == OWN
    # Only our project's containers with the role label; the replica gets its number; the
    # one-off container of server1 is none of them; two containers named server5 are shown so.
    assert processes == {
        "server1": "running",
        "server2": "running",
        "server2-2": "running",
        "server5": "ambiguous",
    }


@pytest.mark.parametrize("own_id", ["not-a-container", "foreign"])
def test_compose_project_name_wins(monkeypatch: pytest.MonkeyPatch, containers, own_id) -> None:  # type: ignore[no-untyped-def]
    """Set, it is used even when our hostname names a container of another project."""
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", OWN)

    async def main() -> str:
        driver = await DockerDriver.connect(
            docker_socket_path(), own_id=containers.get(own_id, own_id)
        )
        await driver.aclose()
        return driver.project

    assert asyncio.run(main()) == OWN


def test_a_one_off_container_is_never_acted_on(containers: dict[str, str]) -> None:
    async def body(driver: DockerDriver) -> dict[str, str]:
        return await driver.perform("server1", "pause")

    try:
        assert with_driver(containers, body)["container"] == f"{OWN}-server1-1"
        assert status(containers["server1"]) == "paused"
        assert status(containers["oneoff"]) == "running"
    finally:
        docker("unpause", containers["server1"])


def test_a_name_two_containers_carry_is_refused_naming_both(containers: dict[str, str]) -> None:
    async def body(driver: DockerDriver) -> str:
        try:
            await driver.perform("server5", "pause")
        except DriverUnsupported as error:
            return str(error)
        return "acted"

    message = with_driver(containers, body)
    assert f"{OWN}-server5-a, {OWN}-server5-b" in message
    assert status(containers["twin_a"]) == status(containers["twin_b"]) == "running"


def test_actions_change_the_right_container(containers: dict[str, str]) -> None:
    seen: list[tuple[str, str, str, str]] = []

    async def body(driver: DockerDriver) -> None:
        for action in ("pause", "unpause", "stop", "start", "kill", "restart"):
            answer = await driver.perform("server1", action)
            states = status(containers["server1"]), status(containers["foreign"])
            seen.append((action, answer["result"], *states))

    with_driver(containers, body)
    assert seen == [
        ("pause", "paused", "paused", "running"),
        ("unpause", "unpaused", "running", "running"),
        ("stop", "stopped", "exited", "running"),
        ("start", "started", "running", "running"),
        ("kill", "killed", "exited", "running"),
        ("restart", "restarted", "running", "running"),
    ]
    assert status(containers["server2"]) == "running"


def test_other_project_and_unlabelled_containers_are_refused(containers: dict[str, str]) -> None:
    async def body(driver: DockerDriver) -> list[str]:
        errors = []
        for target in ("foreign", "norole", "balancer"):
            with pytest.raises(DriverUnsupported) as caught:
                await driver.act_on(containers[target], "kill")
            errors.append(str(caught.value))
        with pytest.raises(DriverUnsupported):
            await driver.perform("server3", "kill")  # exists, but has no role label
        return errors

    errors = with_driver(containers, body)
    assert all(error.startswith("refused") for error in errors)
    for target in ("foreign", "norole", "balancer"):
        assert status(containers[target]) == "running"


def test_engine_conflict_is_a_409_not_a_crash(containers: dict[str, str]) -> None:
    async def body(driver: DockerDriver) -> str:
        await driver.perform("server2-2", "stop")
        with pytest.raises(DriverUnsupported) as caught:
            await driver.perform("server2-2", "kill")  # Docker: container is not running
        again = await driver.perform("server2-2", "stop")
        await driver.perform("server2-2", "start")
        return f"{caught.value} | {again['result']}"

    text = with_driver(containers, body)
    assert "not running" in text and "already exited" in text


def test_engine_client_sends_only_allow_listed_actions() -> None:
    engine = DockerEngine(docker_socket_path())
    with pytest.raises(KeyError):
        asyncio.run(engine.act("whatever", "exec"))
    asyncio.run(engine.aclose())


def test_discovery_follows_containers_of_the_project(containers: dict[str, str]) -> None:
    from services.balancer.balancer import Balancer
    from services.balancer.config import BalancerConfig
    from services.balancer.discovery import DockerDiscovery

    async def main() -> tuple[dict[str, str], list[str], list[str]]:
        balancer = Balancer(BalancerConfig(backends=[]))
        discovery = DockerDiscovery(balancer, docker_socket_path(), own_id=containers["balancer"])
        await discovery.start()
        try:
            first = {s.name: s.url for s in balancer.servers}
            extra = await asyncio.to_thread(run_container, OWN, "server4")
            containers["server4"] = extra  # removed by the fixture if this test fails
            await wait_until_async(lambda: "server4" in balancer.states(), what="server4 added")
            added = list(balancer.states())
            await asyncio.to_thread(docker, "rm", "-f", extra)
            await wait_until_async(lambda: "server4" not in balancer.states(), what="server4 gone")
            return first, added, list(balancer.states())
        finally:
            await discovery.stop()

    first, added, after = asyncio.run(main())
    assert first == {
        "server1": f"http://{OWN}-server1-1:5001",
        "server2": f"http://{OWN}-server2-1:5001",
        "server2-2": f"http://{OWN}-server2-2:5001",
    }
    assert sorted(added) == ["server1", "server2", "server2-2", "server4"]
    assert sorted(after) == ["server1", "server2", "server2-2"]


def test_recreate_gives_server1_a_new_container_of_the_same_name_labels_and_image(
    containers: dict[str, str],
) -> None:
    """A rollout's step under Compose: stop, remove, create from the same configuration and
    the image as tagged now, start. Options are refused; only our task servers are touched."""
    old = json.loads(docker("inspect", containers["server1"]))[0]

    async def body(driver: DockerDriver) -> dict[str, str]:
        with pytest.raises(DriverUnsupported, match="rebuild the image"):
            await driver.recreate("server1", ["--lang=es"])
        with pytest.raises(DriverUnsupported, match="no task-server container"):
            await driver.recreate("server3", None)
        return await driver.recreate("server1", None)

    done = with_driver(containers, body)
    new = json.loads(docker("inspect", done["id"]))[0]
    containers["server1"] = new["Id"]  # so the fixture removes the new one
    assert done["result"] == "recreated" and done["process"] == "running"
    assert new["Id"] != old["Id"] and new["Name"] == old["Name"]
    assert new["Config"]["Labels"] == old["Config"]["Labels"]
    assert new["Config"]["Image"] == old["Config"]["Image"] == IMAGE
    assert new["Config"]["Cmd"] == old["Config"]["Cmd"]
    assert status(containers["norole"]) == "running" and status(containers["foreign"]) == "running"

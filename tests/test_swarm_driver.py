"""The Swarm driver against a real single-node Swarm, with busybox services labelled as
``docker stack deploy`` labels them (``com.docker.stack.namespace``, ``ticslab.role``).

The driver is driven in-process; each test checks the services and tasks with the docker
CLI itself, polling with a deadline where Swarm acts after it answers. A decoy service of
another "stack" and one of ours without the role are refused every action and left as they
were. Everything created here (services, network, image) is removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from support import docker, wait_until
from test_balancer_helpers import TOKEN, balancer_process
from test_docker_driver import COMMAND, IMAGE, build_image, engine_answers

from services.balancer.drivers import DriverUnsupported, choose_driver, docker_socket_path
from services.balancer.drivers.swarm import SwarmDriver
from services.common import DRIVER_ACTIONS

pytestmark = pytest.mark.docker

RUN_ID = uuid.uuid4().hex[:8]
STACK = f"tlsw{RUN_ID}"
DECOY = f"tlswdecoy{RUN_ID}"
NETWORK = f"{STACK}_net"
SWARM_SECONDS = 45.0  # Swarm's own steps (a task scheduled, started, replaced) on a busy machine
T = TypeVar("T")


def swarm_problem() -> str | None:
    """None when a Swarm manager answers here, else why the tests are skipped."""
    if problem := engine_answers():
        return problem
    manager = docker("info", "--format", "{{.Swarm.ControlAvailable}}")
    if manager != "true":
        return (
            "this Docker engine is no Swarm manager (docker swarm init --advertise-addr 127.0.0.1)"
        )
    return None


def create_service(name: str, stack: str, replicas: int, *, role: str = "service") -> str:
    """A busybox service as a stack would have it, on our overlay network, per-task DNS."""
    flags = ["--label", f"com.docker.stack.namespace={stack}"]
    if role == "service":
        flags += ["--label", "ticslab.role=taskserver"]
    elif role == "container":
        flags += ["--container-label", "ticslab.role=taskserver"]
    return docker(
        "service", "create", "--detach", "--no-resolve-image", "--name", name,
        "--replicas", str(replicas), "--network", NETWORK, "--endpoint-mode", "dnsrr",
        "--restart-delay", "1s", "--stop-grace-period", "2s", *flags, IMAGE, *COMMAND,
    )  # fmt: skip


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(docker("service", "inspect", name))[0]
    return found


def running(name: str) -> list[dict[str, Any]]:
    """The service's tasks that run now, as ``docker inspect`` shows them. A task Swarm
    removes between the listing and its inspection (its history pruned) is not running: a
    CI run failed on 'task ... not found' there, and left the service scaled to 0."""
    tasks = []
    for task_id in docker("service", "ps", "-q", "--no-trunc", name).split():
        try:
            tasks += json.loads(docker("inspect", "--type", "task", task_id))
        except RuntimeError as error:
            if "not found" not in str(error):
                raise
    return [t for t in tasks if t["Status"]["State"] == "running"]


def address(task: dict[str, Any]) -> str:
    text: str = task["NetworksAttachments"][0]["Addresses"][0]
    return text.split("/")[0]


def wait_running(name: str, count: int) -> list[dict[str, Any]]:
    wait_until(
        lambda: len(running(name)) == count, SWARM_SECONDS, 0.5, what=f"{name}: {count} running"
    )
    return running(name)


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Our stack's ``one`` (1 replica) and ``many`` (2, role on its containers), ``norole``
    (ours, no role) and the decoy stack's ``one``: name -> service id."""
    if reason := swarm_problem():
        pytest.skip(reason)
    build_image(tmp_path_factory.mktemp("image"))
    made: dict[str, str] = {}
    try:
        docker("network", "create", "--driver", "overlay", "--attachable", NETWORK)
        made[f"{STACK}_one"] = create_service(f"{STACK}_one", STACK, 1)
        made[f"{STACK}_many"] = create_service(f"{STACK}_many", STACK, 2, role="container")
        made[f"{STACK}_norole"] = create_service(f"{STACK}_norole", STACK, 1, role="")
        made[f"{DECOY}_one"] = create_service(f"{DECOY}_one", DECOY, 1)
        for name, replicas in zip(made, (1, 2, 1, 1), strict=True):
            wait_running(name, replicas)
        yield made
    finally:
        if made:
            subprocess.run(["docker", "service", "rm", *made], capture_output=True)

        def containers_gone() -> bool:  # Swarm removes a service's containers after it
            names = [f"--filter=name={prefix}" for prefix in (STACK, DECOY)]
            return not docker("ps", "-aq", *names)

        wait_until(containers_gone, SWARM_SECONDS, 0.5, what="the services' containers gone")
        subprocess.run(["docker", "network", "rm", NETWORK], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)


def servers() -> dict[str, str]:
    """The balancer's view: ``one`` and ``norole`` as static backends, each task of
    ``many`` and the decoy's task by address (as DNS discovery finds them), and the decoy
    by its service name."""
    found = {
        "one": "http://one:5001",
        "norole": "http://norole:5001",
        "decoyname": f"http://{DECOY}_one:5001",
    }
    for task in running(f"{STACK}_many"):
        found[f"many-{task['Slot']}"] = f"http://{address(task)}:5001"
    found["decoy"] = f"http://{address(running(f'{DECOY}_one')[0])}:5001"
    return found


def with_driver(monkeypatch: pytest.MonkeyPatch, body: Callable[[SwarmDriver], Awaitable[T]]) -> T:
    """Run ``body(driver)`` with a driver that believes it runs in STACK (TICSLAB_STACK)."""
    monkeypatch.setenv("TICSLAB_STACK", STACK)
    view = servers()

    async def main() -> T:
        driver = await SwarmDriver.connect(docker_socket_path(), lambda: view)
        try:
            return await body(driver)
        finally:
            await driver.aclose()

    return asyncio.run(main())


def test_it_sees_the_task_servers_of_its_stack_only(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    processes = with_driver(monkeypatch, lambda driver: driver.processes())
    assert processes == {"one": "running", "many-1": "running", "many-2": "running"}


def test_auto_picks_swarm_inside_a_stack(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICSLAB_STACK", STACK)
    monkeypatch.delenv("TICSLAB_SUPERVISOR_URL", raising=False)

    async def main() -> tuple[str, str]:
        driver = await choose_driver("auto", "token")
        await driver.aclose()
        return driver.name, getattr(driver, "stack", "")

    assert asyncio.run(main()) == ("swarm", STACK)


def test_kill_is_healed_by_swarm(swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"{STACK}_one"
    before = running(name)[0]["ID"]
    done = with_driver(monkeypatch, lambda driver: driver.perform("one", "kill"))
    assert done["result"] == "killed" and done["task"] == before[:12]
    healed = lambda: [t for t in running(name) if t["ID"] != before]  # noqa: E731
    wait_until(lambda: bool(healed()), SWARM_SECONDS, 0.5, what="Swarm started a new task")
    assert service(name)["Spec"]["Mode"]["Replicated"]["Replicas"] == 1


def test_stop_and_start_scale_a_one_replica_service(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{STACK}_one"
    stopped = with_driver(monkeypatch, lambda driver: driver.perform("one", "stop"))
    assert stopped["result"] == "stopped" and stopped["process"] == "exited"
    assert service(name)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
    assert running(name) == []  # the driver answered once the task had stopped
    started = with_driver(monkeypatch, lambda driver: driver.perform("one", "start"))
    assert started["result"] == "started"
    assert service(name)["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    assert len(running(name)) == 1


def test_stop_is_refused_on_a_replicated_service(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    version = service(f"{STACK}_many")["Version"]["Index"]
    with pytest.raises(DriverUnsupported, match="refill"):
        with_driver(monkeypatch, lambda driver: driver.perform("many-1", "stop"))
    assert service(f"{STACK}_many")["Version"]["Index"] == version  # no write was sent


def test_restart_is_a_forced_update_with_a_new_task(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{STACK}_one"
    force = service(name)["Spec"]["TaskTemplate"].get("ForceUpdate", 0)
    before = wait_running(name, 1)[0]["ID"]
    done = with_driver(monkeypatch, lambda driver: driver.perform("one", "restart"))
    assert done["result"] == "restarted" and done["force_update"] == force + 1
    assert service(name)["Spec"]["TaskTemplate"]["ForceUpdate"] == force + 1
    [task] = running(name)
    assert task["ID"] != before and task["Spec"]["ForceUpdate"] == force + 1


def test_pause_and_unpause_a_task_on_this_node(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    [task] = wait_running(f"{STACK}_one", 1)
    container = task["Status"]["ContainerStatus"]["ContainerID"]
    paused = with_driver(monkeypatch, lambda driver: driver.perform("one", "pause"))
    assert paused["result"] == "paused"
    assert docker("inspect", "--format", "{{.State.Status}}", container) == "paused"
    thawed = with_driver(monkeypatch, lambda driver: driver.perform("one", "unpause"))
    assert thawed["result"] == "unpaused"
    assert docker("inspect", "--format", "{{.State.Status}}", container) == "running"


def test_scale_out_and_in_change_the_replicated_service(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"{STACK}_many"
    added = with_driver(monkeypatch, lambda driver: driver.scale_out(None))
    assert service(name)["Spec"]["Mode"]["Replicated"]["Replicas"] == 3
    addresses = {address(t) for t in running(name)}
    assert added["url"].removeprefix("http://").removesuffix(":5001") in addresses
    removed = with_driver(monkeypatch, lambda driver: driver.scale_in("many-1"))
    assert removed["result"] == "removed"
    assert service(name)["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    wait_running(name, 2)
    with pytest.raises(DriverUnsupported, match="stop it instead"):
        with_driver(monkeypatch, lambda driver: driver.scale_in("one"))


def test_the_decoy_and_a_service_without_the_role_are_refused_and_untouched(
    swarm: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    others = (f"{DECOY}_one", f"{STACK}_norole")

    def state(name: str) -> tuple[int, list[str]]:
        return service(name)["Version"]["Index"], [t["ID"] for t in running(name)]

    before = {name: state(name) for name in others}

    async def attempts(driver: SwarmDriver) -> list[str]:
        refusals = []
        calls: list[Callable[[], Awaitable[Any]]] = []
        for server in ("decoy", "decoyname", "norole"):
            calls += [lambda s=server, a=action: driver.perform(s, a) for action in DRIVER_ACTIONS]
            calls += [
                lambda s=server: driver.recreate(s, None),
                lambda s=server: driver.scale_in(s),
            ]
        calls += [lambda i=swarm[name]: driver.allowed(i) for name in others]
        for call in calls:
            try:
                await call()
            except DriverUnsupported as error:
                refusals.append(str(error))
        return refusals

    refusals = with_driver(monkeypatch, attempts)
    assert len(refusals) == 3 * (len(DRIVER_ACTIONS) + 2) + 2
    assert all("refused" in text or "no task-server service" in text for text in refusals)
    assert {name: state(name) for name in others} == before


def test_the_control_api_drives_it_in_a_real_balancer(swarm: dict[str, str]) -> None:
    """``ticslab balancer --driver auto`` in a stack (TICSLAB_STACK) picks it, maps its
    backends, refuses a stop on the replicated service (409) and kills a task (200)."""
    view = servers()
    backends = [(name, view[name]) for name in ("one", "many-1")]
    balancer = balancer_process(backends, "round_robin", "--driver", "auto")
    balancer.env["TICSLAB_STACK"] = STACK
    balancer.env.pop("TICSLAB_SUPERVISOR_URL", None)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with contextlib.closing(balancer.start()):
        overview = httpx.get(f"{balancer.url}/control", timeout=10).json()
        assert overview["driver"] == "swarm", overview
        assert overview["servers"]["one"]["process"] == "running"
        assert overview["servers"]["many-1"]["process"] == "running"
        url = f"{balancer.url}/control/servers"
        refused = httpx.post(f"{url}/many-1/stop", headers=auth, timeout=40)
        assert refused.status_code == 409 and "refill" in refused.json()["detail"]
        killed = httpx.post(f"{url}/one/kill", headers=auth, timeout=40)
        assert killed.status_code == 200 and killed.json()["result"] == "killed"
    wait_running(f"{STACK}_one", 1)  # healed, for whichever test comes next

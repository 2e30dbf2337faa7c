"""``--discover dns`` on a real single-node Docker Swarm: a balancer container on an attachable
overlay network follows ``tasks.SERVICE`` (``endpoint_mode: dnsrr``) as the service scales
out and in, and through Swarm's own start-first rolling update under steady traffic, naming
each server after its task's slot from Docker's own PTR answers.

The balancer runs this checkout's code in the ``ticslab:latest`` image (the code and the
dnspython of the test's environment mounted read-only on ``PYTHONPATH``), so no image is built
here. Everything created carries this run's ``dns-`` prefix and is removed at the end.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import dns
import pytest
from support import docker, docker_engine_problem, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "ticslab:latest"
RUN_ID = uuid.uuid4().hex[:6]
PREFIX = f"dns-{RUN_ID}"
# The service is named as `docker stack deploy -c FILE dns-xxxxxx` names a stack's `server`.
NETWORK, SERVICE, BALANCER = f"{PREFIX}-net", f"{PREFIX}_server", f"{PREFIX}-balancer"
CODE = Path(__file__).resolve().parent.parent / "services"
DNSPYTHON = Path(dns.__file__).resolve().parent
MOUNTED = "/opt/ticslab-dns"
# Swarm starts a task, waits for its health check (the image's, every 3 s), then puts it in DNS.
SCALE_SECONDS = 90


def swarm_problem() -> str | None:
    """Why these tests cannot run here, or None."""
    if problem := docker_engine_problem():
        return problem
    if docker("info", "--format", "{{.Swarm.LocalNodeState}}") != "active":
        return "the engine is in no Swarm (docker swarm init --advertise-addr 127.0.0.1)"
    try:
        docker("image", "inspect", IMAGE)
    except RuntimeError:
        return f"no {IMAGE} image (docker-compose build, as .ci/docker-setup.sh does)"
    return None


def balancer_get(path: str) -> dict:
    """The balancer's answer to ``path``, asked from inside its container (its network is the
    overlay, which the host cannot reach)."""
    script = (
        "import urllib.request; print(urllib.request.urlopen("
        f"'http://127.0.0.1:8080{path}', timeout=3).read().decode())"
    )
    return json.loads(docker("exec", BALANCER, "python", "-c", script))


def states() -> dict[str, str]:
    return {server["name"]: server["state"] for server in balancer_get("/status")["servers"]}


def remove(*args: str) -> None:
    subprocess.run(["docker", *args], capture_output=True, timeout=60)


@pytest.fixture
def swarm() -> Iterator[None]:
    if reason := swarm_problem():
        pytest.skip(reason)
    try:
        docker("network", "create", "--driver", "overlay", "--attachable", NETWORK)
        env = ["--env", "TICSLAB_PORT=5001", "--env", "TICSLAB_TOKEN=dns-test"]
        docker(
            "service", "create", "--detach", "--name", SERVICE, "--replicas", "2",
            "--endpoint-mode", "dnsrr", "--network", NETWORK, *env, IMAGE, "taskserver",
        )  # fmt: skip
        mounts = [
            "--volume", f"{CODE}:{MOUNTED}/services:ro",
            "--volume", f"{DNSPYTHON}:{MOUNTED}/dns:ro",
            "--env", f"PYTHONPATH={MOUNTED}",
        ]  # fmt: skip
        discover = [
            "--env", "TICSLAB_DISCOVER=dns",
            "--env", f"TICSLAB_DISCOVER_NAME=tasks.{SERVICE}",
            "--env", "TICSLAB_DRIVER=none",
            "--env", "TICSLAB_TOKEN=dns-test",
            "--env", "TICSLAB_CHECK_INTERVAL=0.5",
        ]  # fmt: skip
        docker(
            "run", "--detach", "--name", BALANCER, "--network", NETWORK, *mounts, *discover,
            "--entrypoint", "python", IMAGE, "-m", "services.cli", "balancer",
        )  # fmt: skip
        yield
    finally:
        remove("rm", "--force", BALANCER)
        remove("service", "rm", SERVICE)
        wait_until(lambda: not docker("ps", "-aq", "--filter", f"name={SERVICE}"), timeout=60)
        remove("network", "rm", NETWORK)


def test_the_servers_follow_the_service_as_it_scales(swarm: None) -> None:
    slots = {"server-1", "server-2"}  # the service less its stack, and the task's slot
    wait_until(
        lambda: states() == dict.fromkeys(slots, "UP"),
        timeout=SCALE_SECONDS,
        what=f"{sorted(slots)} UP, named after Swarm's slots",
    )
    docker("service", "scale", "--detach", f"{SERVICE}=3")
    slots.add("server-3")
    wait_until(lambda: states() == dict.fromkeys(slots, "UP"), timeout=SCALE_SECONDS)
    docker("service", "scale", "--detach", f"{SERVICE}=1")
    wait_until(lambda: len(states()) == 1, timeout=SCALE_SECONDS, what="two servers removed")
    events = balancer_get("/events")["events"]
    removed = [e for e in events if e["kind"] == "discovery" and e.get("action") == "removed"]
    assert len(removed) == 2 and {e["who"] for e in removed} == {"dns"}
    # Before its tasks are healthy the name has no record (NXDOMAIN): told once, and then
    # never again while the service scales.
    first = next(i for i, e in enumerate(events) if e.get("action") == "added")
    assert not [e for e in events[first:] if e.get("action") == "lookup_failed"]


# Steady POSTs and GETs from inside the balancer's container until /tmp/stop appears there
# (bounded: at most 3,000 requests, 120 s); then how many failed, and the first few why.
TRAFFIC = """
import json, os, time, urllib.request
url, ok, failed, why = "http://127.0.0.1:8080/tareas", 0, 0, []
deadline = time.monotonic() + 120
for n in range(3000):
    if os.path.exists("/tmp/stop") or time.monotonic() > deadline:
        break
    body = json.dumps({"title": f"t{n}"}).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, body, headers) if n % 2 else url + "?limit=1"
    try:
        urllib.request.urlopen(request, timeout=10).read()
        ok += 1
    except Exception as error:
        failed += 1
        why.append(repr(error)[:200])
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": failed, "why": why[:5]}))
"""


def test_a_start_first_rolling_update_fails_no_request(swarm: None) -> None:
    """Swarm's own rolling update (``order: start-first``, one task at a time): each new task
    joins from DNS once healthy, each old one leaves DNS 2 s before it is stopped and is
    drained meanwhile. Clients see no failure."""
    wait_until(lambda: len(states()) == 2, timeout=SCALE_SECONDS, what="two servers")
    wait_until(lambda: set(states().values()) == {"UP"}, timeout=SCALE_SECONDS)
    before = set(states())
    traffic = subprocess.Popen(
        ["docker", "exec", BALANCER, "python", "-c", TRAFFIC], stdout=subprocess.PIPE, text=True
    )
    try:
        docker(
            "service", "update", "--force", "--update-order", "start-first",
            "--update-parallelism", "1", SERVICE,
        )  # fmt: skip
        wait_until(
            lambda: len(states()) == 2 and not set(states()) & before,
            timeout=SCALE_SECONDS,
            what="both servers replaced",
        )
    finally:
        docker("exec", BALANCER, "touch", "/tmp/stop")
        out, _ = traffic.communicate(timeout=60)
    result = json.loads(out)
    assert result["failed"] == 0, result
    assert result["ok"] > 100

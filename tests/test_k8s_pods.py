"""The pods of k8s/, run by a real Docker engine as closely as a kubelet would run them.

Each container gets what its manifest says: image (never pulled), args, environment (the pod's
name for a ``fieldRef``, a fresh token for the Secret), user and group, read-only root
filesystem, every capability dropped, no new privileges, its CPU and memory limits. The claim
is a named volume; each Service's names (``NAME``, ``NAME.NAMESPACE.svc.cluster.local``) are
network aliases, which Docker's DNS answers with one address per container, as cluster DNS
answers a headless Service with one per ready pod.

No cluster runs on this machine (docs/kubernetes.md): this shows that each role runs under its
securityContext and that the settings fit together. It does not show admission, probes,
preStop or rollouts. Everything created is named after the run and removed at the end.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from support import docker, docker_engine_problem, wait_until

pytest.importorskip("yaml", reason="PyYAML (dev extra) reads the manifests")

from manifests import Obj, env, named, of_kind, pod_labels, pod_spec

pytestmark = pytest.mark.docker

RUN = f"k8s-{uuid.uuid4().hex[:8]}"
IMAGE = "ticslab:latest"
CLUSTER_DOMAIN = "svc.cluster.local"
READY_SECONDS = 60
MEMORY_UNITS = {"Ki": "k", "Mi": "m", "Gi": "g"}  # Kubernetes' binary units, docker's letters


def skip_reason() -> str | None:
    if problem := docker_engine_problem():
        return problem
    try:
        docker("image", "inspect", IMAGE)
    except RuntimeError:
        return f"no {IMAGE} image here: build it with `docker-compose build server1`"
    return None


def cpus(quantity: str) -> str:
    """Kubernetes' CPU quantity (``500m``, ``1``) as docker's ``--cpus``."""
    return str(int(quantity[:-1]) / 1000) if quantity.endswith("m") else quantity


def memory(quantity: str) -> str:
    """Kubernetes' binary memory quantity (``256Mi``) as docker's ``--memory``."""
    return quantity[:-2] + MEMORY_UNITS[quantity[-2:]]


def service_names(workload: Obj) -> list[str]:
    """The DNS names of every Service that selects this workload's pods."""
    names = []
    for service in of_kind("Service"):
        if service["spec"]["selector"].items() <= pod_labels(workload).items():
            name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
            names += [name, f"{name}.{namespace}.{CLUSTER_DOMAIN}"]
    return names


@dataclass
class Cluster:
    """One network, one volume per claim, and the pods started so far."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    pods: list[str] = field(default_factory=list)

    @property
    def network(self) -> str:
        return RUN

    def volume(self, claim: str) -> str:
        return f"{RUN}-{claim}"

    def value(self, item: Obj, pod: str) -> str:
        if "value" in item:
            return str(item["value"])
        source = item["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            return pod
        assert "secretKeyRef" in source
        return self.token

    def flags(self, workload: Obj, pod: str, overrides: dict[str, str]) -> list[str]:
        """``docker run``'s flags for one pod of ``workload``, from its manifest alone."""
        spec = pod_spec(workload)
        (container,) = spec["containers"]
        context = {**spec["securityContext"], **container["securityContext"]}
        flags = ["--name", pod, "--label", f"ticslab.test={RUN}", "--pull", "never"]
        flags += ["--network", self.network]
        flags += [f"--network-alias={alias}" for alias in service_names(workload)]
        flags += ["--user", f"{context['runAsUser']}:{context['runAsGroup']}"]
        if "fsGroup" in context:
            flags += ["--group-add", str(context["fsGroup"])]
        if context["readOnlyRootFilesystem"]:
            flags.append("--read-only")
        flags += [f"--cap-drop={capability}" for capability in context["capabilities"]["drop"]]
        if context["allowPrivilegeEscalation"] is False:
            flags += ["--security-opt", "no-new-privileges"]
        limits = container["resources"]["limits"]
        flags += ["--cpus", cpus(limits["cpu"]), "--memory", memory(limits["memory"])]
        for name, item in env(container).items():
            flags += ["-e", f"{name}={overrides.get(name, self.value(item, pod))}"]
        claims = {
            volume["name"]: volume["persistentVolumeClaim"]["claimName"]
            for volume in spec.get("volumes", [])
        }
        for mount in container.get("volumeMounts", []):
            flags += ["-v", f"{self.volume(claims[mount['name']])}:{mount['mountPath']}"]
        for port in container.get("ports", []):
            flags += ["-p", f"127.0.0.1::{port['containerPort']}"]
        return [*flags, container["image"], *container["args"]]

    def start(self, kind: str, name: str, replica: int, **overrides: str) -> str:
        pod = f"{RUN}-{name}-{replica}"
        self.pods.append(pod)
        docker("run", "-d", *self.flags(named(kind, name), pod, overrides))
        return pod

    def run_to_end(self, kind: str, name: str, timeout: float, **overrides: str) -> tuple[int, str]:
        """A Job's pod, in the foreground: its exit code and its output."""
        pod = f"{RUN}-{name}"
        self.pods.append(pod)
        done = subprocess.run(
            ["docker", "run", *self.flags(named(kind, name), pod, overrides)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return done.returncode, done.stdout + done.stderr


def pre_stop(pod: str, workload: Obj) -> subprocess.CompletedProcess[str]:
    """The pod's preStop hook, run in it as the kubelet would: a command the image lacks
    would fail there (FailedPreStopHook) and the pod would get SIGTERM at once."""
    (container,) = pod_spec(workload)["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    return subprocess.run(
        ["docker", "exec", pod, *command], capture_output=True, text=True, timeout=60
    )


def url(pod: str, port: int) -> str:
    published = docker("port", pod, f"{port}/tcp").splitlines()[0]
    return f"http://{published}"


def answers(address: str) -> bool:
    try:
        return httpx.get(address + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def logs(pod: str) -> str:
    done = subprocess.run(["docker", "logs", pod], capture_output=True, text=True, timeout=30)
    return (done.stdout + done.stderr)[-3000:]


def image_discovers_by_dns() -> bool:
    """Whether the image's balancer has ``--discover dns`` (issue 26, built beside this)."""
    done = subprocess.run(
        ["docker", "run", "--rm", "--pull", "never", IMAGE, "balancer", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return "dns" in done.stdout.split("--discover", 1)[-1].split("--", 1)[0]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if reason := skip_reason():
        pytest.skip(reason)
    lab = Cluster()
    docker("network", "create", "--label", f"ticslab.test={RUN}", lab.network)
    try:
        yield lab
    finally:
        for pod in lab.pods:
            subprocess.run(["docker", "rm", "-f", pod], capture_output=True, timeout=60)
        docker("network", "rm", lab.network)
        for claim in of_kind("PersistentVolumeClaim"):
            name = lab.volume(claim["metadata"]["name"])
            subprocess.run(["docker", "volume", "rm", name], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def servers(cluster: Cluster) -> list[str]:
    replicas = named("Deployment", "taskserver")["spec"]["replicas"]
    pods = [cluster.start("Deployment", "taskserver", n) for n in range(1, replicas + 1)]
    addresses = {pod: url(pod, 5001) for pod in pods}
    for pod, address in addresses.items():
        wait_until(lambda a=address: answers(a), READY_SECONDS, 0.5, f"{pod} ready\n{logs(pod)}")
    return pods


def test_the_task_servers_run_restricted_and_share_the_claim(servers: list[str]) -> None:
    first, second = (url(pod, 5001) for pod in servers[:2])
    created = httpx.post(first + "/tareas", json={"title": f"{RUN}-shared"}, timeout=10)
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["server"] == servers[0]  # TICSLAB_NAME is the pod's name (fieldRef)
    seen = httpx.get(f"{second}/tareas/{task['id']}", timeout=10)
    assert seen.status_code == 200, seen.text
    for pod in servers:
        assert docker("exec", pod, "id", "-u") == "1000"
        refused = subprocess.run(
            ["docker", "exec", pod, "touch", "/app/written"], capture_output=True, text=True
        )
        assert "Read-only file system" in refused.stderr, refused
    hook = pre_stop(servers[0], named("Deployment", "taskserver"))
    assert hook.returncode == 0, hook


def test_the_balancer_finds_the_servers_by_dns_and_the_client_job_loses_nothing(
    cluster: Cluster, servers: list[str]
) -> None:
    if not image_discovers_by_dns():
        pytest.skip(f"the balancer in {IMAGE} has no --discover dns yet (rebuild the image)")
    balancer = cluster.start("Deployment", "balancer", 1)
    address = url(balancer, 8080)
    wait_until(lambda: answers(address), READY_SECONDS, 0.5, f"balancer ready\n{logs(balancer)}")

    def every_server_up() -> bool:
        status = httpx.get(address + "/status", timeout=5).json()
        return sum(server["state"] == "UP" for server in status["servers"]) == len(servers)

    wait_until(every_server_up, READY_SECONDS, 0.5, f"every server UP\n{logs(balancer)}")
    hook = pre_stop(balancer, named("Deployment", "balancer"))
    assert hook.returncode == 0, hook
    code, output = cluster.run_to_end("Job", "client-once", timeout=180, TICSLAB_TASKS="20")
    assert code == 0, output[-3000:]
    assert "lost 0" in output or "lost: 0" in output, output[-3000:]

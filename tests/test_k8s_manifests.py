"""The Kubernetes manifests in k8s/ (docs/kubernetes.md), checked without a cluster.

kubernetes-validate checks each object against Kubernetes 1.32's own schemas, offline; it cannot
see how the objects refer to each other, nor to the lab. Those references are checked here by
reading the YAML: selectors that match the pods they mean, Service ports and probes on ports the
containers open, the claim the servers mount, the balancer asking DNS for the headless Service,
rollouts that never drop a ready server, the Pod Security Standard "restricted", a Role with
no way to Secrets or exec, and settings named and valued as in docker-compose.yml.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) reads the manifests")

from manifests import (  # noqa: E402  (after the skip that PyYAML's absence calls for)
    K8S,
    KUSTOMIZATION,
    ROOT,
    Obj,
    containers,
    env,
    manifest_files,
    named,
    objects,
    of_kind,
    pod_labels,
    pod_spec,
    workloads,
)

KUBERNETES_VERSION = "1.32.0"
# In k8s/ but applied by hand, not by `kubectl apply -k k8s/` (docs/kubernetes.md).
BY_HAND = {"secret.yaml", "client-job.yaml"}
PLACEHOLDER = "REPLACE-ME-never-commit-a-real-token"
IMAGE = "ticslab:latest"
# Kubernetes objects that live in no namespace.
CLUSTER_WIDE = {"Namespace"}
# The Compose service whose settings each Kubernetes container takes.
COMPOSE_SERVICE = {"taskserver": "server1", "balancer": "balancer", "client": "client1"}
# Settings only the Kubernetes balancer has: DNS discovery replaces Compose's TICSLAB_BACKENDS,
# and no driver can act on pods yet.
KUBERNETES_ONLY = {
    "TICSLAB_DISCOVER",
    "TICSLAB_DISCOVER_NAME",
    "TICSLAB_DISCOVER_PORT",
    "TICSLAB_DRIVER",
}
# Compose's ${NAME:-default}: the value when the shell sets nothing.
COMPOSE_DEFAULT = re.compile(r"^\$\{\w+:-(.*)\}$")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def pods_selected(selector: dict[str, str]) -> list[Obj]:
    """The workloads whose pods a Service's or a budget's selector picks."""
    return [w for w in workloads() if selects(selector, pod_labels(w))]


def port_numbers(container: Obj) -> dict[str | int, int]:
    """A container's ports, by name and by number."""
    ports: dict[str | int, int] = {}
    for port in container.get("ports", []):
        ports[port["containerPort"]] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    return ports


def probes(container: Obj) -> dict[str, Obj]:
    return {
        kind: container[kind]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        if kind in container
    }


def compose_environment(service: str) -> dict[str, str]:
    """A Compose service's settings, each at its value when the shell sets nothing."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    environment: dict[str, str] = compose["services"][service]["environment"]
    return {
        name: (match.group(1) if (match := COMPOSE_DEFAULT.match(str(value))) else str(value))
        for name, value in environment.items()
    }


def test_the_manifests_are_found() -> None:
    """A loader that found nothing would make every other test pass by accident."""
    kinds = {item["kind"] for item in objects()}
    assert {"Deployment", "Service", "PersistentVolumeClaim", "Role", "Secret"} <= kinds
    assert len(workloads()) >= 3


@pytest.mark.smoke
def test_every_manifest_passes_kubernetes_validate_strict_offline() -> None:
    """Unknown fields (--strict), wrong types and missing required fields fail; an unknown
    kind or apiVersion only warns, so any warning but the Kustomization's fails here too."""
    if importlib.util.find_spec("kubernetes_validate") is None:
        pytest.skip("kubernetes-validate is not installed (it is in the dev extra)")
    files = sorted(K8S.glob("*.yaml"))
    run = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION]
        + [str(path) for path in files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("WARN")]
    assert all(KUSTOMIZATION in line for line in warnings), warnings
    assert output.count(" passed for resource ") == len(objects()), output


def test_kustomization_applies_every_manifest_but_those_applied_by_hand() -> None:
    kustomization = yaml.safe_load((K8S / KUSTOMIZATION).read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in manifest_files()} - BY_HAND
    assert all((K8S / name).is_file() for name in listed | BY_HAND)


def test_namespaced_objects_live_in_the_labs_namespace() -> None:
    (namespace,) = of_kind("Namespace")
    name = namespace["metadata"]["name"]
    for item in objects():
        if item["kind"] not in CLUSTER_WIDE:
            assert item["metadata"].get("namespace") == name, item["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_committed_token_is_the_placeholder_and_every_pod_reads_it_from_the_secret() -> None:
    (secret,) = of_kind("Secret")
    assert secret["stringData"] == {"token": PLACEHOLDER}
    assert PLACEHOLDER in (ROOT / "docs" / "kubernetes.md").read_text(encoding="utf-8")
    serving = [c for _, c in containers() if "TICSLAB_TOKEN" in env(c)]
    assert len(serving) == 2  # the task servers and the balancer; clients need no token
    for container in serving:
        ref = env(container)["TICSLAB_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["stringData"]


def test_each_workload_selects_its_own_pods_and_no_others() -> None:
    for workload in of_kind("Deployment"):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert pods_selected(selector) == [workload], workload["metadata"]["name"]


def test_services_and_the_budget_select_exactly_one_deployment() -> None:
    for item in of_kind("Service") + of_kind("PodDisruptionBudget"):
        selector = item["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        chosen = [w["metadata"]["name"] for w in pods_selected(selector)]
        assert chosen == [item["metadata"]["name"]], (item["kind"], chosen)


def test_service_ports_lead_to_ports_the_containers_open() -> None:
    for service in of_kind("Service"):
        (workload,) = pods_selected(service["spec"]["selector"])
        (container,) = pod_spec(workload)["containers"]
        opened = port_numbers(container)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in opened, (service["metadata"]["name"], port)
            # Clients and DNS discovery use the same number inside and out.
            assert port["port"] == opened[port["targetPort"]]


def test_each_server_listens_on_the_port_it_declares() -> None:
    for _, container in containers():
        if container.get("ports"):
            (port,) = container["ports"]
            assert env(container)["TICSLAB_PORT"]["value"] == str(port["containerPort"])


def test_every_probe_checks_a_port_the_container_opens() -> None:
    for _, container in containers():
        for kind, probe in probes(container).items():
            action = probe.get("httpGet") or probe["tcpSocket"]
            assert action["port"] in port_numbers(container), (container["name"], kind)


def test_the_task_servers_are_ready_and_alive_by_their_health_endpoint() -> None:
    server = named("Deployment", "taskserver")
    (container,) = pod_spec(server)["containers"]
    for kind in ("readinessProbe", "livenessProbe"):
        assert container[kind]["httpGet"]["path"] == "/health", kind
    # A short fault takes a server out of rotation long before it is restarted.
    ready, alive = container["readinessProbe"], container["livenessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] < (
        alive["periodSeconds"] * alive["failureThreshold"]
    )


def test_the_balancer_starts_on_health_then_stays_while_every_server_is_down() -> None:
    """Its /health answers 503 while no server is up: as readiness it would take the balancer
    out of its Service, as liveness restart it, exactly when the clients should see its 503."""
    (container,) = pod_spec(named("Deployment", "balancer"))["containers"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    for kind in ("readinessProbe", "livenessProbe"):
        assert "httpGet" not in container[kind], kind


def test_rollouts_add_a_server_before_removing_one() -> None:
    """maxUnavailable 0 and a preStop pause: Swarm's start-first, and a pod that keeps serving
    while DNS and the balancer forget it."""
    for workload in of_kind("Deployment"):
        (container,) = pod_spec(workload)["containers"]
        if not container.get("ports"):
            continue
        rolling = workload["spec"]["strategy"]["rollingUpdate"]
        assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and int(command[1]) > 0
        assert int(command[1]) < pod_spec(workload)["terminationGracePeriodSeconds"]


def test_the_servers_mount_the_shared_claim_where_the_image_keeps_tasks() -> None:
    (claim,) = of_kind("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    server = pod_spec(named("Deployment", "taskserver"))
    volumes = {v["name"]: v for v in server["volumes"]}
    (mount,) = server["containers"][0]["volumeMounts"]
    source = volumes[mount["name"]]["persistentVolumeClaim"]
    assert source["claimName"] == claim["metadata"]["name"]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    tasks_file = re.search(r"TICSLAB_TASKS_FILE=(\S+)", dockerfile)
    assert tasks_file and str(Path(tasks_file.group(1)).parent) == mount["mountPath"]
    assert "fsGroup" in server["securityContext"]  # the volume writable by the image's user


def test_the_balancer_asks_dns_for_the_headless_service_of_the_servers() -> None:
    (balancer,) = pod_spec(named("Deployment", "balancer"))["containers"]
    settings = {name: item.get("value") for name, item in env(balancer).items()}
    headless = named("Service", settings["TICSLAB_DISCOVER_NAME"].split(".")[0])
    assert headless["spec"]["clusterIP"] == "None"
    assert [w["metadata"]["name"] for w in pods_selected(headless["spec"]["selector"])] == [
        "taskserver"
    ]
    namespace = headless["metadata"]["namespace"]
    assert settings["TICSLAB_DISCOVER"] == "dns"
    name = headless["metadata"]["name"]
    # Absolute (a final dot): a pod's resolv.conf says ndots:5, so a shorter name would be
    # asked under every search domain first, on every poll.
    assert settings["TICSLAB_DISCOVER_NAME"] == f"{name}.{namespace}.svc.cluster.local."
    (port,) = headless["spec"]["ports"]
    assert settings["TICSLAB_DISCOVER_PORT"] == str(port["port"])


def test_the_role_grants_no_secrets_no_exec_and_only_the_servers_scale() -> None:
    (role,) = of_kind("Role")
    granted = [
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]
    resources = {resource for _, resource, _, _ in granted}
    assert "*" not in {part for grant in granted for part in grant[:3]}
    assert not resources & {"secrets", "pods/exec", "pods/attach", "pods/portforward"}
    assert {verb for _, _, verb, _ in granted} <= {"get", "list", "watch", "patch"}
    writes = [grant for grant in granted if grant[2] == "patch"]
    assert writes == [("apps", "deployments/scale", "patch", ("taskserver",))]
    (binding,) = of_kind("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (account,) = of_kind("ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "ticslab"}
    ]
    assert (
        pod_spec(named("Deployment", "balancer"))["serviceAccountName"]
        == (account["metadata"]["name"])
    )


def test_every_pod_passes_the_restricted_pod_security_standard() -> None:
    for workload in workloads():
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False  # no driver uses the API yet
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["readOnlyRootFilesystem"] is True


def test_every_container_runs_the_local_image_with_bounded_resources() -> None:
    for _, container in containers():
        assert (container["image"], container["imagePullPolicy"]) == (IMAGE, "IfNotPresent")
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, container["name"]


def test_settings_are_named_and_valued_as_in_compose() -> None:
    """A misspelt TICSLAB_ variable is ignored by the lab without a word: each one here must
    be one Compose gives the same role, at the value Compose gives it by default."""
    for workload, container in containers():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        compose = compose_environment(COMPOSE_SERVICE[component])
        for name, item in env(container).items():
            if name in KUBERNETES_ONLY and component == "balancer":
                continue
            assert name in compose, (workload["metadata"]["name"], name)
            if "value" in item and workload["kind"] == "Deployment":
                assert item["value"] == compose[name], (workload["metadata"]["name"], name)

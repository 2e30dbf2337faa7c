"""The Kubernetes manifests of k8s/, read as data, for the tests that check them
(test_k8s_manifests.py without a cluster, test_k8s_pods.py with Docker)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
KUSTOMIZATION = "kustomization.yaml"
Obj = dict[str, Any]


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != KUSTOMIZATION)


@cache
def objects() -> tuple[Obj, ...]:
    """Read once: the tests only look."""
    return tuple(
        document
        for path in manifest_files()
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document
    )


def of_kind(kind: str) -> list[Obj]:
    return [item for item in objects() if item["kind"] == kind]


def named(kind: str, name: str) -> Obj:
    (found,) = [item for item in of_kind(kind) if item["metadata"]["name"] == name]
    return found


def workloads() -> list[Obj]:
    """Everything that makes pods."""
    return of_kind("Deployment") + of_kind("Job")


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers() -> Iterator[tuple[Obj, Obj]]:
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            yield workload, container


def env(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}

"""The Kubernetes manifests in k8s/, read as YAML objects (no cluster, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support import REPO

K8S = REPO / "k8s"
CRDS = K8S / "crds"


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization_of(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def kustomized_objects(folder: Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists, in order."""
    out: list[dict[str, Any]] = []
    for res in kustomization_of(folder)["resources"]:
        out.extend(yaml_documents(folder / res))
    return out

"""The Kubernetes manifests in k8s/ built by `kubectl kustomize` (skipped without kubectl)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s import CRDS, K8S, kustomized_objects


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("folder", [K8S, CRDS], ids=["base", "crds"])
def test_kustomize_builds(folder: Path):
    try:
        proc = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:  # pragma: no cover - a broken kubectl
        pytest.skip(f"kubectl kustomize unusable: {e}")
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(built) == len(kustomized_objects(folder))
    for obj in built:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "modelyard", obj["metadata"]["name"]
        if folder == K8S and obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == "modelyard"

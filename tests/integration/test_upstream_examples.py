"""The Envoy AI Gateway's own examples, vendored unchanged: checked and served as published.

They hold kinds the gateway does not read (InferencePool, HTTPRoute, EnvoyProxy, Deployments,
RBAC), Helm values files and a Grafana dashboard: each is noted and skipped, never an error.
Hosts they name do not exist here, so a default backend points at a local mock.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import Gateway, Mock
from tests.integration.helpers import module_mock
from tests.support import REPO, http_request, modelyard

UPSTREAM = REPO / "tests" / "fixtures" / "envoy-ai-gateway" / "examples"
FOLDERS = ["token_ratelimit", "inference-pool", "monitoring"]


mock = module_mock("upstream-examples")


@pytest.mark.parametrize("folder", FOLDERS)
def test_check_accepts_upstream_example(folder: str) -> None:
    done = subprocess.run(modelyard("check", str(UPSTREAM / folder)), capture_output=True, text=True, timeout=60,
                          cwd=str(REPO))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out
    assert not [line for line in out.splitlines() if line.startswith("error")], out
    assert "is not one the gateway reads; skipped" in out  # their other kinds are noted


@pytest.mark.parametrize("folder", FOLDERS)
def test_gateway_serves_upstream_example(folder: str, mock: Mock) -> None:
    gw = Gateway("--config", str(UPSTREAM / folder), "--backend", f"http://{mock.address}/v1", workers=1)
    try:
        status, _, body = http_request(gw.admin_port, "GET", "/readyz")
        assert status == 200, body
        assert gw.config()["errors"] == []
    finally:
        code = gw.stop()
    assert code == 0, gw.proc.output()
    assert "Traceback" not in gw.proc.output()

"""Static checks of the Kubernetes manifests in k8s/ (no cluster, no network)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s import CRDS, K8S, kustomization_of, kustomized_objects, yaml_documents

YAML_FILES = sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomized_objects(K8S)


@pytest.fixture(scope="module")
def deployment(base) -> dict[str, Any]:
    return _one(base, "Deployment", "modelyard")


@pytest.fixture(scope="module")
def container(deployment) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _flag(args: list[str], flag: str) -> str:
    """The value of `--flag VALUE` or `--flag=VALUE` in an argument list."""
    for i, a in enumerate(args):
        if a == flag:
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


def _dockerfile_instruction(name: str) -> str:
    text = (K8S / "Dockerfile").read_text()
    # the last stage's instruction wins
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines()]
    found = [ln[len(name):].strip() for ln in lines if ln.upper().startswith(name + " ")]
    assert found, f"no {name} in k8s/Dockerfile"
    return found[-1]


# ---------------------------------------------------------------- parsing


def test_there_are_manifests():
    names = {p.relative_to(K8S).as_posix() for p in YAML_FILES}
    for expected in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "configmap.yaml",
                     "deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "kustomization.yaml",
                     "crds/kustomization.yaml"):
        assert expected in names
    assert (K8S / "Dockerfile").is_file()
    assert (K8S / "README.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(K8S).as_posix())
def test_yaml_parses_and_objects_are_complete(path: Path):
    docs = yaml_documents(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
        assert doc.get("apiVersion"), f"{path}: document without apiVersion"
        assert doc.get("kind"), f"{path}: document without kind"
        if doc["kind"] == "Kustomization":
            continue
        assert isinstance(doc.get("metadata"), dict) and doc["metadata"].get("name"), (
            f"{path}: {doc['kind']} without metadata.name"
        )


# ---------------------------------------------------------------- kustomizations


@pytest.mark.parametrize("folder", [K8S, CRDS], ids=["base", "crds"])
def test_kustomization_resources_exist(folder: Path):
    kust = kustomization_of(folder)
    assert kust["kind"] == "Kustomization"
    assert kust["resources"], "no resources"
    assert len(set(kust["resources"])) == len(kust["resources"]), "a resource is listed twice"
    for res in kust["resources"]:
        assert (folder / res).is_file(), f"{folder.name}/kustomization.yaml lists missing {res}"


def test_base_lists_every_manifest_and_no_crd():
    kust = kustomization_of(K8S)
    listed = set(kust["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert not any(r.startswith("crds") for r in listed)
    assert all(o["kind"] != "CustomResourceDefinition" for o in kustomized_objects(K8S))


def test_base_namespace_and_labels(base):
    kust = kustomization_of(K8S)
    assert kust["namespace"] == "modelyard"
    ns = _one(base, "Namespace")
    assert ns["metadata"]["name"] == "modelyard"
    common = {}
    for entry in kust.get("labels", []):
        common.update(entry["pairs"])
    common.update(kust.get("commonLabels", {}))
    assert common.get("app.kubernetes.io/name") == "modelyard"
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in base:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace", "modelyard") == "modelyard", obj["metadata"]["name"]


# ---------------------------------------------------------------- deployment


def test_deployment_basics(deployment, container):
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert container["image"] == "modelyard:latest"
    assert pod["serviceAccountName"] == "modelyard"
    # selector matches the pod template
    for k, v in spec["selector"]["matchLabels"].items():
        assert spec["template"]["metadata"]["labels"].get(k) == v
    res = container["resources"]
    assert res["requests"] == {"cpu": "500m", "memory": "256Mi"}
    assert str(res["limits"]["cpu"]) == "2" and res["limits"]["memory"] == "1Gi"
    spread = pod["topologySpreadConstraints"]
    assert any(c["topologyKey"] == "kubernetes.io/hostname" for c in spread)
    for c in spread:
        for k, v in c["labelSelector"]["matchLabels"].items():
            assert spec["template"]["metadata"]["labels"].get(k) == v


def test_ports_and_probes_match(container):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 1975, "admin": 1064}
    expected_paths = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        port = get["port"]
        assert port in ports or port in ports.values(), f"{probe} port {port!r} is not a container port"
        if isinstance(port, str):
            assert port == "admin", f"{probe} should probe the admin port"
        else:
            assert port == ports["admin"]
        if probe in expected_paths:
            assert get["path"] == expected_paths[probe]


def test_args_match_dockerfile_and_ports(container):
    args = [str(a) for a in container["args"]]
    assert args[0] == "run"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(_flag(args, "--port")) == ports["http"]
    assert int(_flag(args, "--admin-port")) == ports["admin"]
    assert _dockerfile_instruction("ENTRYPOINT") == '["modelyard"]'
    cmd = json.loads(_dockerfile_instruction("CMD"))
    assert cmd == ["run", "--config", "/etc/modelyard", "--port", "1975", "--admin-host", "0.0.0.0",
                   "--admin-port", "1064"]
    # the gateway binds admin to 127.0.0.1 by default; the kubelet probes the pod IP
    assert _flag(args, "--admin-host") == "0.0.0.0"
    # the Deployment's args are the image's, plus possibly --workers
    rest = list(args)
    if "--workers" in rest:
        i = rest.index("--workers")
        del rest[i:i + 2]
    rest = [a for a in rest if not a.startswith("--workers=")]
    assert rest == cmd
    exposed = {int(p.split("/")[0]) for p in _dockerfile_instruction("EXPOSE").split()}
    assert exposed == set(ports.values())
    assert re.search(r"^FROM python:3\.12-slim\b", (K8S / "Dockerfile").read_text(), re.M)
    assert "pip install --no-cache-dir ." in (K8S / "Dockerfile").read_text()
    user = _dockerfile_instruction("USER").split(":")[0]
    assert user not in ("root", "0")


def test_env_references_are_defined(container):
    defined = {e["name"] for e in container.get("env", [])}
    for a in container["args"]:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(a)):
            assert ref in defined, f"args use $({ref}) but env does not define it"


def test_config_mount_equals_config_arg(base, deployment, container):
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_dir = _flag([str(a) for a in container["args"]], "--config")
    assert config_dir in mounts, f"--config {config_dir} is not a mount path"
    mount = mounts[config_dir]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    vol = volumes[mount["name"]]
    cm_name = vol["configMap"]["name"]
    assert cm_name == "modelyard-config"
    _one(base, "ConfigMap", cm_name)


def test_security_and_writable_dirs(deployment, container):
    pod = deployment["spec"]["template"]["spec"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot")) is True
    assert sc.get("allowPrivilegeEscalation") is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"]
    assert mounts["/dev/shm"]["emptyDir"].get("medium") == "Memory"


def test_shutdown_timing(deployment, container):
    pod = deployment["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace == 45
    pre = container["lifecycle"]["preStop"]
    if "sleep" in pre:
        seconds = int(pre["sleep"]["seconds"])
    else:
        cmd = pre["exec"]["command"]
        assert cmd[0] == "sleep"
        seconds = int(cmd[1])
    assert seconds == 5
    drain = 30  # the gateway's own drain limit on SIGTERM
    assert seconds + drain < grace


def test_prometheus_annotations(deployment, container):
    ann = deployment["spec"]["template"]["metadata"]["annotations"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ann["prometheus.io/scrape"] == "true"
    assert int(ann["prometheus.io/port"]) == ports["admin"]
    assert ann["prometheus.io/path"] == "/metrics"


# ---------------------------------------------------------------- services, hpa, pdb, rbac


def test_services_target_existing_ports(base, deployment, container):
    names = {p["name"] for p in container["ports"]}
    numbers = {p["containerPort"] for p in container["ports"]}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [o for o in base if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {"modelyard", "modelyard-admin"}
    for svc in services:
        for k, v in svc["spec"]["selector"].items():
            assert pod_labels.get(k) == v, f"Service {svc['metadata']['name']} selects {k}={v}"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert target in names, f"targetPort {target} is not a container port name"
            else:
                assert target in numbers
    public = _one(base, "Service", "modelyard")
    assert public["spec"]["type"] == "LoadBalancer"
    by_port = {p["port"]: p["targetPort"] for p in public["spec"]["ports"]}
    assert by_port == {80: "http", 1975: "http"}
    admin = _one(base, "Service", "modelyard-admin")
    assert admin["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert {p["port"]: p["targetPort"] for p in admin["spec"]["ports"]} == {1064: "admin"}


def test_hpa_and_pdb(base, deployment):
    hpa = _one(base, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 10
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["averageUtilization"] == 70
    pdb = _one(base, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for k, v in pdb["spec"]["selector"]["matchLabels"].items():
        assert pod_labels.get(k) == v


def test_rbac_is_read_only_and_complete(base, deployment):
    role = _one(base, "ClusterRole", "modelyard")
    binding = _one(base, "ClusterRoleBinding", "modelyard")
    sa = _one(base, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "modelyard"} in binding["subjects"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    granted: set[tuple[str, str]] = set()
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                granted.add((group, res))
    wanted = {
        "aigateway.envoyproxy.io": ["aigatewayroutes", "aiservicebackends", "backendsecuritypolicies"],
        "gateway.envoyproxy.io": ["backends", "clienttrafficpolicies", "backendtrafficpolicies"],
        "gateway.networking.k8s.io": ["gateways", "gatewayclasses", "backendtlspolicies"],
        "": ["secrets", "configmaps"],
        "inference.networking.k8s.io": ["inferencepools"],
    }
    for group, resources in wanted.items():
        for res in resources:
            assert (group, res) in granted, f"no read access to {group or 'core'}/{res}"


# ---------------------------------------------------------------- embedded config


def test_configmap_config_is_a_valid_example(base):
    cm = _one(base, "ConfigMap", "modelyard-config")
    assert list(cm["data"]) == ["routes.yaml"]
    docs = [d for d in yaml.safe_load_all(cm["data"]["routes.yaml"]) if d]
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == ["AIGatewayRoute", "AIServiceBackend", "Backend"]
    for d in docs:
        assert d["metadata"]["name"]
        expected = "gateway.envoyproxy.io/v1alpha1" if d["kind"] == "Backend" else "aigateway.envoyproxy.io/v1alpha1"
        assert d["apiVersion"] == expected
    route = next(d for d in docs if d["kind"] == "AIGatewayRoute")
    asb = next(d for d in docs if d["kind"] == "AIServiceBackend")
    backend = next(d for d in docs if d["kind"] == "Backend")
    # a catch-all rule (no matches) to the AIServiceBackend
    catch_all = [r for r in route["spec"]["rules"] if not r.get("matches")]
    assert catch_all and [b["name"] for b in catch_all[0]["backendRefs"]] == [asb["metadata"]["name"]]
    assert asb["metadata"]["name"] == "vllm"
    assert asb["spec"]["schema"]["name"] == "OpenAI"
    ref = asb["spec"]["backendRef"]
    assert (ref["name"], ref["kind"], ref["group"]) == (backend["metadata"]["name"], "Backend", "gateway.envoyproxy.io")
    endpoints = backend["spec"]["endpoints"]
    assert endpoints == [{"fqdn": {"hostname": "vllm.modelyard.svc.cluster.local", "port": 8000}}]


# ---------------------------------------------------------------- CRDs


def test_crds():
    objs = kustomized_objects(CRDS)
    assert all(o["kind"] == "CustomResourceDefinition" for o in objs)
    kinds = {o["spec"]["names"]["kind"] for o in objs}
    assert kinds == {"AIGatewayRoute", "AIServiceBackend", "BackendSecurityPolicy"}
    for crd in objs:
        spec = crd["spec"]
        assert spec["group"] == "aigateway.envoyproxy.io"
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
        assert spec["scope"] == "Namespaced"
        versions = {v["name"]: v for v in spec["versions"]}
        assert set(versions) == {"v1alpha1", "v1beta1"}
        assert versions["v1alpha1"]["served"] and versions["v1alpha1"]["storage"]
        assert versions["v1beta1"]["served"] and not versions["v1beta1"]["storage"]
        for v in versions.values():
            schema = v["schema"]["openAPIV3Schema"]
            assert schema["type"] == "object"
            assert schema["properties"]["spec"]["type"] == "object"
            assert schema["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] is True

"""The `modelyard` command as a user runs it: --version from the installed distribution, and
`modelyard check` reporting every mistake with its file, object and field, and accepting the examples."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import write_config
from tests.resources import BACKEND, key_policy, route_with_rules
from tests.support import EXAMPLES, REPO, modelyard

BAD = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: r, namespace: ns}
spec:
  hostnames: ["*.example.com", "a(b"]
  rules:
    - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: '(a)\\1'}]}]
      backendRefs:
        - name: be
          modelNameOverride: "gpt\\nx"
          headerMutation:
            set:
              - {name: content-length, value: "5"}
              - {name: "x-a:b", value: v}
              - {name: x-ok, value: "v\\r\\nhost: evil"}
              - {name: x-price, value: "5 €"}
            remove: [Host, proxy-authorization, transfer-encoding]
          bodyMutation: {set: [{path: "a\\nb", value: "1"}]}
    - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: '(?<=a)b'}]}]
      backendRefs: [{name: be2}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: be, namespace: ns}
spec:
  schema: {name: OpenAI, prefix: "/v1\\r\\nx-injected: 1"}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
  headerMutation: {set: [{name: Connection, value: close}]}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: be2, namespace: ns}
spec:
  schema: {name: Anthropic, prefix: "/vé", version: "2023 06 01"}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be, namespace: ns}
spec:
  endpoints:
    - fqdn: {hostname: "bad host\\r\\n", port: 80}
    - ip: {address: 1.2.3, port: 70000}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: Bad_Name, namespace: ns}
---
apiVersion: v1
kind: Secret
metadata: {name: unused, namespace: ns}
data: {other: "%%%"}
---
"""

BAD += (key_policy("be", "s", 'data: {apiKey: "not base64!"}\n', "ns")
        + key_policy("be2", "s2", 'stringData: {apiKey: "sk-one\\nx-injected: 1"}\n', "ns", "AnthropicAPIKey"))

# (object, field, words of the message) for each value above that must not reach the wire.
EXPECTED = [
    ("AIGatewayRoute/ns/r", "spec.hostnames[1]", "not a valid host name"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].matches[0].headers[0].value", "backreference \\1 is not supported by RE2"),
    ("AIGatewayRoute/ns/r", "spec.rules[1].matches[0].headers[0].value", "lookbehind (?<=...) is not supported by RE2"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].modelNameOverride", "control character"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.set[0].name", "content-length is hop-by-hop"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.set[1].name", "not a valid HTTP header name"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.set[2].value", "line break"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.remove[0]", "host is hop-by-hop"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.remove[1]", "proxy-authorization"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.remove[2]", "transfer-encoding"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].bodyMutation.set[0].path", "control character"),
    ("AIServiceBackend/ns/be", "spec.schema.prefix", "a URL path cannot carry"),
    ("AIServiceBackend/ns/be", "spec.headerMutation.set[0].name", "connection is hop-by-hop"),
    ("AIServiceBackend/ns/be2", "spec.schema.prefix", "a URL path cannot carry"),
    ("AIServiceBackend/ns/be2", "spec.schema.version", "printable ASCII"),
    ("Backend/ns/be", "spec.endpoints[0].fqdn.hostname", "not a valid host name"),
    ("Backend/ns/be", "spec.endpoints[1].ip.address", "not an IP address"),
    ("Backend/ns/be", "spec.endpoints[1].ip.port", "port 70000"),
    ("ConfigMap/ns/Bad_Name", "metadata.name", "is not a DNS-1123 subdomain"),
    ("Secret/ns/s", "data.apiKey", "Secret ns/s key apiKey: data is not valid base64"),
    ("Secret/ns/unused", "data.other", "data is not valid base64"),  # the API server would refuse it too
    ("Secret/ns/s2", "stringData.apiKey", "Secret ns/s2 key apiKey: the value contains a line break"),
]


def test_version_from_the_installed_distribution():
    out = subprocess.run([sys.executable, "-m", "modelyard.gateway", "--version"], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"modelyard {importlib.metadata.version('modelyard')}"
    assert re.fullmatch(r"modelyard \d+\.\d+\.\d+\S*", out.stdout.strip())


def test_check_reports_three_mistakes_with_file_object_and_field(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(route_with_rules("""\
        - matches:
            - headers: [{name: x-ai-eg-model, value: m}]
          backendRefs: [{name: be, weigth: 2}]
          timeouts: {request: soon}
        """))
    (tmp_path / "policy.yaml").write_text(textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: BackendSecurityPolicy
        metadata: {name: key, namespace: ns}
        spec:
          type: APIKey
          apiKey: {secretRef: {name: s}}
          targetRefs: [{name: be, kind: AIServiceBackend, group: aigateway.envoyproxy.io}]
          extra: true
        """))
    out = subprocess.run(modelyard("check", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [l for l in out.stdout.splitlines() if l.startswith("error:")]
    assert len(lines) == 3, out.stdout
    assert any("routes.yaml: AIGatewayRoute/ns/r: spec.rules[0].backendRefs[0].weigth: unknown field" in l for l in lines)
    assert any("routes.yaml: AIGatewayRoute/ns/r: spec.rules[0].timeouts.request: invalid duration" in l for l in lines)
    assert any("policy.yaml: BackendSecurityPolicy/ns/key: spec.extra: unknown field" in l for l in lines)


def test_check_accepts_the_examples() -> None:
    out = subprocess.run(modelyard("check", str(EXAMPLES / "nrp-models-config")), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "AIGatewayRoute nrp-llm/envoy-ai-gateway-nrp-qwen: 3 rules -> qwen3, qwen3-nairr, qwen3-combined" in out.stdout


def test_check_reports_a_cel_that_does_not_compile(tmp_path: Path) -> None:
    (tmp_path / "route.yaml").write_text(textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: r, namespace: ns}
        spec:
          llmRequestCosts:
            - {metadataKey: in, type: InputToken}
            - {metadataKey: good, type: CEL, cel: "input_tokens + output_tokens * 4u"}
            - {metadataKey: bad, type: CEL, cel: "input_tokens * * 2u"}
          rules:
            - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]
              backendRefs: [{name: be}]
        ---
        """) + BACKEND)
    out = subprocess.run(modelyard("check", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stdout + out.stderr
    assert "route.yaml: AIGatewayRoute/ns/r: spec.llmRequestCosts[2].cel: invalid CEL expression " \
           "'input_tokens * * 2u': " in lines[0]
    assert "Syntax error" in lines[0]


def test_check_rejects_every_value_that_would_reach_the_wire_invalid(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", BAD)
    out = subprocess.run(modelyard("check", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("error: ")]
    for obj, field, words in EXPECTED:
        assert any(f"{path}: {obj}: {field}: " in e and words in e for e in errors), (obj, field, words, errors)
    assert sum("spec.endpoints[1].ip.port" in e for e in errors) == 1  # two AIServiceBackends share it
    assert sum("Secret/ns/s: data.apiKey" in e for e in errors) == 1
    assert "does not exist" not in out.stdout  # a broken Secret is reported as broken, not as missing
    assert "not base64!" not in out.stdout and "sk-one" not in out.stdout  # no secret material in errors

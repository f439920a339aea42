"""Loading, validating and compiling resources in-process: what each mistake is reported as, and
what each accepted resource compiles to."""

from __future__ import annotations

import textwrap
from pathlib import Path

from modelyard.config.compiler import compile_table
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import load_paths
from tests.resources import BACKEND, key_policy, route_with_rules
from tests.support import EXAMPLES

def _load(tmp_path: Path, text: str, name: str = "c.yaml") -> tuple[Diagnostics, object]:
    (tmp_path / name).write_text(textwrap.dedent(text))
    diags = Diagnostics()
    loaded = load_paths([str(tmp_path)], diags, set())
    return diags, compile_table(loaded.resources, diags)


def test_every_example_folder_loads_without_errors() -> None:
    for folder in sorted(EXAMPLES.iterdir()):
        if folder.is_dir():
            diags = Diagnostics()
            loaded = load_paths([str(folder)], diags, set())
            compile_table(loaded.resources, diags)
            assert not diags.errors, (folder, [str(e) for e in diags.errors])
            assert any(r.kind == "AIGatewayRoute" for r in loaded.resources)


def test_unknown_field_wrong_type_and_missing_field_are_all_reported(tmp_path: Path) -> None:
    diags, _ = _load(tmp_path, route_with_rules("""\
        - matches:
            - headers:
                - {name: x-ai-eg-model, value: m, type: Prefix}
          backendRefs:
            - {name: be, weigth: 3}
            - {name: be, weight: "high"}
            - {priority: 1}
        """))
    found = {(e.field, e.obj, e.file.endswith("c.yaml")) for e in diags.errors}
    assert ("spec.rules[0].matches[0].headers[0].type", "AIGatewayRoute/ns/r", True) in found
    assert ("spec.rules[0].backendRefs[0].weigth", "AIGatewayRoute/ns/r", True) in found
    assert ("spec.rules[0].backendRefs[1].weight", "AIGatewayRoute/ns/r", True) in found
    assert ("spec.rules[0].backendRefs[2].name", "AIGatewayRoute/ns/r", True) in found
    unknown = next(e for e in diags.errors if e.field.endswith("weigth"))
    assert "unknown field 'weigth'" in unknown.message and "weight" in unknown.message


def test_semantic_errors_name_the_field(tmp_path: Path) -> None:
    diags, _ = _load(tmp_path, route_with_rules("""\
        - matches:
            - headers:
                - {name: x-ai-eg-model, value: "gpt-(", type: RegularExpression}
          backendRefs:
            - name: be
              bodyMutation:
                set: [{path: service_tier, value: scale}]
          timeouts: {request: 5 minutes}
        """))
    fields = {e.field: e.message for e in diags.errors}
    assert "invalid regular expression" in fields["spec.rules[0].matches[0].headers[0].value"]
    assert "not valid JSON" in fields["spec.rules[0].backendRefs[0].bodyMutation.set[0].value"]
    assert "invalid duration" in fields["spec.rules[0].timeouts.request"]


def test_missing_references_are_warnings_and_the_rule_answers_503(tmp_path: Path) -> None:
    diags, compiled = _load(tmp_path, route_with_rules("""\
        - backendRefs: [{name: nowhere}]
        """))
    assert not diags.errors
    assert any("AIServiceBackend ns/nowhere does not exist" in w.message for w in diags.warnings)
    table = compiled.table  # type: ignore[attr-defined]
    missing = next(b for b in table.backends if b.name == "ns/nowhere")
    assert missing.error.status == 503 and "ns/nowhere" in missing.error.message


def test_unknown_kind_is_reported_once_and_deprecated_fields_warn(tmp_path: Path) -> None:
    (tmp_path / "extra.yaml").write_text(textwrap.dedent("""\
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w1}
        ---
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w2}
        """))
    diags, _ = _load(tmp_path, textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: old}
        spec:
          schema: {name: OpenAI}
          targetRefs: [{name: gw, kind: Gateway, group: gateway.networking.k8s.io}]
          rules:
            - backendRefs: [{name: be, namespace: ns}]
        ---
        """) + BACKEND)
    assert not diags.errors
    assert sum("Widget" in n.message for n in diags.notes) == 1
    deprecated = {w.field for w in diags.warnings if "deprecated" in w.message}
    assert {"spec.schema", "spec.targetRefs"} <= deprecated


def test_deprecated_backend_timeouts_and_policy_ref_warn_and_are_compiled_in(tmp_path: Path) -> None:
    diags, compiled = _load(tmp_path, textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: r, namespace: ns}
        spec:
          rules:
            - matches: [{headers: [{name: x-ai-eg-model, value: inherits}]}]
              backendRefs: [{name: old}]
            - matches: [{headers: [{name: x-ai-eg-model, value: own}]}]
              backendRefs: [{name: old}]
              timeouts: {request: 30s}
        ---
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIServiceBackend
        metadata: {name: old, namespace: ns}
        spec:
          schema: {name: OpenAI}
          backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
          timeouts: {request: 5s}
          backendSecurityPolicyRef: {name: key}
        ---
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: BackendSecurityPolicy
        metadata: {name: key, namespace: ns}
        spec:
          type: APIKey
          apiKey: {secretRef: {name: s}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: s, namespace: ns}
        stringData: {apiKey: k-old}
        ---
        """) + BACKEND)
    assert not diags.errors, [str(e) for e in diags.errors]
    deprecated = {(w.obj, w.field) for w in diags.warnings if "deprecated" in w.message}
    assert {("AIServiceBackend/ns/old", "spec.timeouts"),
            ("AIServiceBackend/ns/old", "spec.backendSecurityPolicyRef")} <= deprecated, deprecated
    table = compiled.table  # type: ignore[attr-defined]
    inherits, own = (rule.refs[0] for rule in table.rules)
    assert inherits.timeout == 5.0  # the rule sets none: the AIServiceBackend's applies
    assert own.timeout == 30.0  # the rule's own wins
    backend = table.backends[inherits.backend]
    assert backend.name == "ns/old" and backend.error is None
    assert backend.auth_headers == (("authorization", "Bearer k-old"),)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    diags, _ = _load(tmp_path, "kind: AIGatewayRoute\nmetadata: {name: [unclosed\n")
    (err,) = diags.errors
    assert err.file.endswith("c.yaml") and "line" in err.message


def test_gateway_listener_gives_the_port(tmp_path: Path) -> None:
    diags, compiled = _load(tmp_path, BACKEND + textwrap.dedent("""\
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw, namespace: ns}
        spec:
          gatewayClassName: any
          listeners: [{name: http, protocol: HTTP, port: 8088}]
        """))
    assert not diags.errors, [str(e) for e in diags.errors]
    assert compiled.table.listen_port == 8088  # type: ignore[attr-defined]


def test_secret_data_is_base64_and_azure_keys_go_in_api_key(tmp_path: Path) -> None:
    from modelyard.config.backends import BackendResolver, Objects

    _load(tmp_path, BACKEND + "---\n" + key_policy("be", "s", "data: {apiKey: c2VjcmV0LWZyb20tZGF0YQ==}\n", "ns",
                                                  "AzureAPIKey"))
    loaded = load_paths([str(tmp_path)], Diagnostics(), set())
    resolver = BackendResolver(Objects.index(loaded.resources), Diagnostics())
    backend = resolver.backends[resolver.resolve("ns", "be")]
    assert backend.auth_headers == (("api-key", "secret-from-data"),)


CLIENT_TRAFFIC = """\
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: {name}, namespace: ns}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  connection: {{connectionLimit: {{value: {limit}}}}}
  timeout: {{http: {{requestReceivedTimeout: {received}, idleTimeout: {idle}}}}}
---
"""


def test_client_traffic_policy_connection_limit_and_timeouts(tmp_path: Path) -> None:
    # Two policies: the strictest value of each field wins (the gateway has one listener).
    text = (CLIENT_TRAFFIC.format(name="a", limit=20000, received="10s", idle="1h")
            + CLIENT_TRAFFIC.format(name="b", limit=12000, received="1m", idle="5m") + BACKEND)
    diags, compiled = _load(tmp_path, text)
    assert not diags.errors, diags.errors
    limits = compiled.table.listener  # type: ignore[attr-defined]
    assert (limits.connection_limit, limits.request_received_timeout, limits.idle_timeout) == (12000, 10.0, 300.0)

    bad = CLIENT_TRAFFIC.format(name="c", limit=0, received="soon", idle="'many'") + BACKEND
    diags, _ = _load(tmp_path, bad)
    fields = {e.field: e.message for e in diags.errors}
    assert "at least 1" in fields["spec.connection.connectionLimit.value"]
    assert "invalid duration" in fields["spec.timeout.http.requestReceivedTimeout"]
    assert "invalid duration" in fields["spec.timeout.http.idleTimeout"]


def test_a_rule_for_a_model_name_over_the_limit_is_a_warning(tmp_path: Path) -> None:
    long_name = "m" * 257
    diags, _ = _load(tmp_path, route_with_rules(f"""\
        - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {long_name}}}]}}]
          backendRefs: [{{name: be}}]
        - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {'m' * 256}}}]}}]
          backendRefs: [{{name: be}}]
        """))
    assert not diags.errors
    (warning,) = [w for w in diags.warnings if "never matches" in w.message]
    assert "257 characters" in warning.message and warning.field.endswith(".value")

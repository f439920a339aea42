"""Gateway resources as YAML text, shared by unit and integration tests: backends of each schema,
the security policies and Secrets that carry their keys, and a route with given rules."""

from __future__ import annotations

import json
import textwrap

from tests.conftest import openai_backend

# An AIServiceBackend ns/be and its Backend at 127.0.0.1:8000 (never called).
BACKEND = """\
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: be, namespace: ns}
spec:
  schema: {name: OpenAI}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be, namespace: ns}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 8000}}]
"""


def route_with_rules(rules: str) -> str:
    """An AIGatewayRoute ns/r with `rules` (YAML, indented as list items), and BACKEND."""
    return textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: r, namespace: ns}
        spec:
          rules:
        """) + textwrap.indent(textwrap.dedent(rules), "    ") + "---\n" + BACKEND


def api_key_policy(backend: str, key: str) -> str:
    """A BackendSecurityPolicy of type APIKey on `backend`, and the Secret holding `key`."""
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: BackendSecurityPolicy
        metadata: {{name: {backend}-key, namespace: default}}
        spec:
          type: APIKey
          targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {backend}}}]
          apiKey:
            secretRef: {{name: {backend}-secret, namespace: default}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: {backend}-secret, namespace: default}}
        type: Opaque
        stringData:
          apiKey: {key}
        ---
        """)


def keyed_backend(name: str, port: int, override: str, key: str | None = "configured-key") -> str:
    """An OpenAI backend with an APIKey policy (and its Secret, when `key`) carrying `override`."""
    secret = "" if key is None else textwrap.dedent(f"""\
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: {name}-secret, namespace: default}}
        stringData: {{apiKey: {key}}}
        """)
    key_ref = f"\n  apiKey: {{secretRef: {{name: {name}-secret}}}}" if key is not None else ""
    return openai_backend(name, "127.0.0.1", port) + textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: BackendSecurityPolicy
        metadata: {{name: {name}-key, namespace: default}}
        spec:
          type: APIKey
          targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
          credentialOverride: {override}""") + key_ref + "\n" + secret + "---\n"


def schema_backend(name: str, port: int, schema: str, version: str = "", policy: str = "", key: str = "") -> str:
    """A backend at 127.0.0.1:`port` speaking `schema`, with a `policy` of that schema holding `key`."""
    text = openai_backend(name, "127.0.0.1", port).replace(
        "schema: {name: OpenAI}", f"schema: {{name: {schema}{', version: ' + repr(version) if version else ''}}}")
    if policy:
        field = {"AnthropicAPIKey": "anthropicAPIKey", "AzureAPIKey": "azureAPIKey"}[policy]
        text += textwrap.dedent(f"""\
            apiVersion: aigateway.envoyproxy.io/v1alpha1
            kind: BackendSecurityPolicy
            metadata: {{name: {name}-key, namespace: default}}
            spec:
              type: {policy}
              targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
              {field}: {{secretRef: {{name: {name}-secret}}}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: {name}-secret, namespace: default}}
            stringData: {{apiKey: {key}}}
            ---
            """)
    return text


def key_policy(backend: str, secret: str, secret_body: str, namespace: str = "default", kind: str = "APIKey") -> str:
    """A BackendSecurityPolicy of `kind` for `backend`, and its Secret with `secret_body`."""
    holder = {"APIKey": "apiKey", "AnthropicAPIKey": "anthropicAPIKey", "AzureAPIKey": "azureAPIKey"}[kind]
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: BackendSecurityPolicy
        metadata: {{name: {backend}, namespace: {namespace}}}
        spec:
          type: {kind}
          {holder}: {{secretRef: {{name: {secret}}}}}
          targetRefs: [{{name: {backend}, kind: AIServiceBackend, group: aigateway.envoyproxy.io}}]
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: {secret}, namespace: {namespace}}}
        """) + textwrap.dedent(secret_body) + "---\n"


def model_rules(route: str, *pairs: tuple[str, str], version: str = "v1beta1") -> str:
    """An AIGatewayRoute default/`route` with one rule per (model, backendRefs YAML) pair, matched on
    the model header."""
    body = "".join(f"    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {json.dumps(model)}}}]}}]\n"
                   f"      backendRefs: {refs}\n" for model, refs in pairs)
    return (f"apiVersion: aigateway.envoyproxy.io/{version}\nkind: AIGatewayRoute\n"
            f"metadata: {{name: {route}, namespace: default}}\nspec:\n  rules:\n" + body)


"""The provider registry (one Provider per backend schema) and the per-attempt auth hook."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import msgspec
import pytest

from modelyard.config.compiler import compile_table
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.kinds import SCHEMA_NAMES as CONFIG_SCHEMA_NAMES
from modelyard.core.schemas import DEFAULT_PREFIX, NOT_SERVED_SCHEMAS, SCHEMA_NAMES, SERVED_SCHEMAS
from modelyard.core.sniff import sniff
from modelyard.core.table import Backend, CredentialOverride, Endpoint, Table
from modelyard.gateway.accounting import Exchange
from modelyard.gateway.providers import COUNT_TOKENS, PROVIDERS, RERANK, TOKENIZE, UpstreamRequest, provider_for
from modelyard.gateway.providers.base import api_key_auth
from modelyard.gateway.proxy import Forwarding, Upstream, forward
from modelyard.gateway.state import GenerationState
from modelyard.gateway.translators.anthropic_openai import AnthropicToOpenAI
from modelyard.gateway.translators.openai_anthropic import OpenAIToAnthropic
from tests.unit.provider_support import Proto, StandIn, client_scope, http_response, one_backend, resource, table_of

METRIC_NAMES = {
    "OpenAI": "openai", "AzureOpenAI": "azure.ai.openai", "AWSBedrock": "aws.bedrock", "AWSAnthropic": "aws.bedrock",
    "GCPVertexAI": "gcp.vertex_ai", "GCPAnthropic": "gcp.vertex_ai", "Anthropic": "anthropic", "Cohere": "cohere",
}


def _backend(schema: str, prefix: str | None = None, version: str | None = None) -> Backend:
    return Backend("default/b", schema, version, DEFAULT_PREFIX.get(schema, "/v1") if prefix is None else prefix,
                   (Endpoint("127.0.0.1", 9),), None)


# ---------------------------------------------------------------- the registry


def test_every_schema_the_config_layer_accepts_has_a_provider() -> None:
    assert set(CONFIG_SCHEMA_NAMES) == set(SCHEMA_NAMES) == set(PROVIDERS)
    assert set(SERVED_SCHEMAS) | set(NOT_SERVED_SCHEMAS) == set(SCHEMA_NAMES)
    for name, provider in PROVIDERS.items():
        assert provider.schema == name


def test_metric_system_names() -> None:
    assert {name: p.metric_name for name, p in PROVIDERS.items()} == METRIC_NAMES
    assert provider_for("").metric_name == "" and provider_for("Mystery").metric_name == "mystery"


def test_paths_per_operation() -> None:
    def paths(schema: str, **kw: Any) -> dict[str, tuple[bytes, bytes | None] | None]:
        backend = _backend(schema, **kw)
        return {op: provider_for(schema).upstream_path(backend, op)
                for op in ("/chat/completions", "/completions", "/embeddings", "/messages")}

    assert paths("OpenAI") == {"/chat/completions": (b"/v1/chat/completions", None),
                               "/completions": (b"/v1/completions", None),
                               "/embeddings": (b"/v1/embeddings", None),
                               "/messages": (b"/v1/chat/completions", None)}
    assert paths("Cohere")["/embeddings"] == (b"/compatibility/v1/embeddings", None)
    assert paths("Anthropic") == {"/chat/completions": (b"/v1/messages", None), "/completions": None,
                                  "/embeddings": None, "/messages": (b"/v1/messages", None)}
    assert paths("AzureOpenAI", version="2024-10-21 x")["/messages"] == (
        b"/openai/deployments/", b"/chat/completions?api-version=2024-10-21%20x")
    # Not served yet: paths as an OpenAI server's, and no client API reaches it (the proxy's 501).
    for schema in NOT_SERVED_SCHEMAS:
        assert paths(schema)["/chat/completions"] == (b"/v1/chat/completions", None)
        assert PROVIDERS[schema].translators == {}


def test_translators_per_client_api() -> None:
    for schema in ("OpenAI", "AzureOpenAI", "Cohere"):
        translators = PROVIDERS[schema].translators
        assert translators["openai"] is None and isinstance(translators["anthropic"], AnthropicToOpenAI)
    anthropic = PROVIDERS["Anthropic"].translators
    assert anthropic["anthropic"] is None and isinstance(anthropic["openai"], OpenAIToAnthropic)


def test_static_headers_and_passthrough_endpoints() -> None:
    assert PROVIDERS["Anthropic"].static_headers(_backend("Anthropic")) == (("anthropic-version", "2023-06-01"),)
    assert PROVIDERS["Anthropic"].static_headers(_backend("Anthropic", version="2024-01-01")) == (
        ("anthropic-version", "2024-01-01"),)
    assert PROVIDERS["OpenAI"].static_headers(_backend("OpenAI")) == ()
    assert provider_for("OpenAI").passthrough_paths(_backend("OpenAI")) == {TOKENIZE: b"/tokenize"}
    assert provider_for("Cohere").passthrough_paths(_backend("Cohere")) == {RERANK: b"/v2/rerank"}
    assert provider_for("Anthropic").passthrough_paths(_backend("Anthropic", prefix="/a")) == {
        COUNT_TOKENS: b"/a/v1/messages/count_tokens"}
    assert provider_for("AzureOpenAI").passthrough_paths(_backend("AzureOpenAI")) == {}


# ---------------------------------------------------------------- the auth hook


def test_api_key_hook_returns_the_bytes_rendered_once() -> None:
    hook = api_key_auth(b"x-a: 1\r\n", b"authorization: Bearer k\r\n", None)
    first = hook([b"POST /v1/chat/completions"], b"{}", {})
    assert first == b"x-a: 1\r\nauthorization: Bearer k\r\n"
    assert hook([b"POST /other"], b"[]", {"x": "y"}) is first  # nothing rendered per attempt


def test_credential_override_hook() -> None:
    override = CredentialOverride("x-key", "api-key", "{}", True)
    hook = api_key_auth(b"", b"api-key: configured\r\n", override)
    assert hook([], b"", {"x-key": "mine"}) == b"api-key: mine\r\n"
    assert hook([], b"", {}) == b"api-key: configured\r\n"
    assert hook([], b"", {"x-key": "bad\r\nx: y"}) == b"api-key: configured\r\n"
    no_fallback = api_key_auth(b"", b"api-key: configured\r\n", msgspec.structs.replace(override, fallback=False))
    assert no_fallback([], b"", {}) is None
    assert api_key_auth(b"", b"", override)([], b"", {}) is None  # nothing configured to fall back to


def test_upstream_request_view() -> None:
    head = [b"POST /v1/chat/completions", b"?a=1", b" HTTP/1.1\r\nhost: h\r\n", b"x-b: 2\r\n"]
    req = UpstreamRequest(head, b"{}")
    assert (req.method, req.path, req.body) == (b"POST", b"/v1/chat/completions?a=1", b"{}")
    assert req.headers == [(b"host", b"h"), (b"x-b", b"2")]


def _upstream(status: int) -> StandIn:
    """A 127.0.0.1 server answering every request with one status, keeping what it received."""
    return StandIn(http_response(b'{"choices": [{"message": {"content": "ok"}}]}', f"{status} X"))


def _failover_table(ports: dict[str, int]) -> Table:
    resources = [resource("AIGatewayRoute", "r", {"rules": [{"backendRefs": [
        {"name": "primary", "priority": 0}, {"name": "fallback", "priority": 1}]}]}, 0)]
    for k, (name, port) in enumerate(ports.items()):
        resources += [
            resource("AIServiceBackend", name, {"schema": {"name": "OpenAI"},
                                                "backendRef": {"name": name, "kind": "Backend"}}, 10 * k + 1),
            resource("Backend", name, {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port}}]}, 10 * k + 2),
            resource("BackendSecurityPolicy", name, {"type": "APIKey", "targetRefs": [
                {"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": name}],
                "apiKey": {"secretRef": {"name": name}}}, 10 * k + 3),
            resource("Secret", name, {"data": {"apiKey": base64.b64encode(f"key-{name}".encode()).decode()}},
                     10 * k + 4),
        ]
    return table_of(resources)


def test_auth_hook_runs_per_attempt_with_the_final_bytes_and_again_on_failover() -> None:
    async def main() -> tuple[list[tuple[str, bytes, bytes]], dict[str, StandIn], Proto, Exchange]:
        upstreams = {"primary": _upstream(503), "fallback": _upstream(200)}
        ports = {name: await u.start() for name, u in upstreams.items()}
        upstream = Upstream()
        upstream.start(asyncio.get_running_loop())
        state = GenerationState(_failover_table(ports), upstream.pools)
        calls: list[tuple[str, bytes, bytes]] = []
        for ref in state.refs.values():
            def recording(head: list[bytes], body: bytes, client: Any, hook: Any = ref.auth,
                          name: str = ref.backend.name) -> bytes | None:
                calls.append((name, b"".join(head), body))
                return hook(head, body, client)
            ref.auth = recording
        body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        rule = state.router.match("m", {})
        assert rule is not None
        proto, o = Proto(), Exchange(time.perf_counter(), "chat")
        o.model, o.request_body = "m", body
        await forward(upstream, Forwarding(client_scope(headers={"x-trace": "t"}), proto, o, state,
                                           state.routes[rule.rule.route_index], rule, None, sniff(body),
                                           "/chat/completions"))
        await upstream.close()
        return calls, upstreams, proto, o

    calls, upstreams, proto, o = asyncio.run(main())
    assert proto.status == 200 and o.backend == "default/fallback" and o.retries == 1
    assert [name for name, _, _ in calls] == ["default/primary", "default/fallback"]
    for (name, head, body), upstream in zip(calls, (upstreams["primary"], upstreams["fallback"])):
        short = name.partition("/")[2]
        sent = upstream.received[0]
        # The hook saw the request line and headers as sent, then its own lines, then the length.
        assert sent.startswith(head) and head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert b"x-trace: t\r\n" in head and b"authorization" not in head
        rest = sent[len(head):]
        assert rest == b"authorization: Bearer key-%s\r\ncontent-length: %d\r\n\r\n%s" % (
            short.encode(), len(body), body)


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_no_schema_of_the_api_answers_501(schema: str) -> None:
    diags = Diagnostics()
    table = compile_table(one_backend("b", schema, 9), diags).table
    assert NOT_SERVED_SCHEMAS == ()
    error = table.backends[0].error
    assert error is None or error.status != 501, error  # AWS and GCP ones want their credentials policy (401)
    assert not [w for w in diags.warnings if "cannot translate" in str(w)]

"""The GCPVertexAI provider: its paths (project, location, model, method), the model's encoding and the
client query after the streaming tail's own, its bearer-token hook, and requests through the proxy to a
127.0.0.1 stand-in (pure asyncio, no processes)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from modelyard.core.errors import GatewayError
from modelyard.core.table import Backend, CloudAuth, Endpoint
from modelyard.gateway.accounting import Exchange
from modelyard.gateway.providers import PROVIDERS
from modelyard.gateway.providers.credentials import WorkerCredentials, bearer_auth
from modelyard.gateway.providers.gcp_vertex_ai import GCPVertexAI
from modelyard.gateway.proxy import _request_head
from modelyard.gateway.state import Target
from modelyard.gateway.translators.openai_gemini import OpenAIToGemini
from modelyard.gateway.translators.openai_gemini_embeddings import OpenAIToGeminiEmbeddings
from tests.unit.provider_support import (Proto, auth_ref, client_scope, forward_one, http_response, publishing,
                                         request_head, sent, served, worker_credentials)
from tests.unit.translators.gemini_samples import ERRORS, TEXT_ANSWER, TEXT_EVENTS, sse
from tests.unit.translators.samples import events as openai_events

HOST = "us-central1-aiplatform.googleapis.com"
CLOUD = CloudAuth("GCPCredentials", "default/gcp-policy", "us-central1", "my-project")
TOKEN = "ya29.a0AfB_byEXAMPLE-access-token"
MODELS = b"/v1/projects/my-project/locations/us-central1/publishers/google/models/"


def _backend(prefix: str = "", cloud: CloudAuth | None = CLOUD) -> Backend:
    return Backend("default/vertex", "GCPVertexAI", None, prefix, (Endpoint(HOST, 443),), None, cloud=cloud)


def _credentials(token: str | None = TOKEN, key: str = "default/gcp-policy") -> WorkerCredentials:
    return worker_credentials({} if token is None else {key: token})


def _head(path: bytes) -> list[bytes]:
    return request_head(path, HOST)


# ---------------------------------------------------------------- registry and paths


def test_registered_and_served() -> None:
    provider = served("GCPVertexAI", GCPVertexAI, "gcp.vertex_ai")
    table = provider.translator_table(("/chat/completions", "/completions", "/embeddings", "/messages"))
    assert isinstance(table[("openai", "/chat/completions")], OpenAIToGemini)
    assert isinstance(table[("openai", "/embeddings")], OpenAIToGeminiEmbeddings)
    assert not any(client == "anthropic" for client, _ in table)  # Anthropic clients get the proxy's 501
    assert provider.stream_content_types == ("text/event-stream",)


def test_paths_per_operation_and_stream() -> None:
    provider, backend = PROVIDERS["GCPVertexAI"], _backend()
    assert provider.upstream_path(backend, "/chat/completions") == (MODELS, b":generateContent")
    assert provider.stream_tail(backend, "/chat/completions") == b":streamGenerateContent?alt=sse"
    assert provider.upstream_path(backend, "/embeddings") == (MODELS, b":predict")
    assert provider.stream_tail(backend, "/embeddings") is None
    for op in ("/completions", "/messages"):
        assert provider.upstream_path(backend, op) is None
    assert provider.upstream_path(_backend("/proxy"), "/chat/completions") == (b"/proxy" + MODELS, b":generateContent")
    glob = CloudAuth("GCPCredentials", "k", "global", "p 1")
    assert provider.upstream_path(_backend(cloud=glob), "/embeddings") == (
        b"/v1/projects/p%201/locations/global/publishers/google/models/", b":predict")


@pytest.mark.parametrize("cloud", [None, CloudAuth("GCPCredentials", "k", "", "p"), CloudAuth("GCPCredentials", "k", "r", ""),
                                   CloudAuth("AWSCredentials", "k", "us-east-1", "")])
def test_no_project_and_location_no_path(cloud: CloudAuth | None) -> None:
    # Without a GCPCredentials policy there is nothing to address: no target, the proxy's 501.
    provider = PROVIDERS["GCPVertexAI"]
    for op in ("/chat/completions", "/embeddings"):
        assert provider.upstream_path(_backend(cloud=cloud), op) is None


def _target(operation: str = "/chat/completions") -> Target:
    provider, backend = PROVIDERS["GCPVertexAI"], _backend()
    path, tail = provider.upstream_path(backend, operation)  # type: ignore[misc]
    return Target(None, path, HOST, "w", -1, tail, provider.stream_tail(backend, operation))  # type: ignore[arg-type]


@pytest.mark.parametrize(("model", "encoded"), [
    ("gemini-2.0-flash-001", b"gemini-2.0-flash-001"),
    ("gemini-2.5-pro@default", b"gemini-2.5-pro%40default"),
    ("tuned/model:v1 x?y#z&w=v+u%t", b"tuned%2Fmodel%3Av1%20x%3Fy%23z%26w%3Dv%2Bu%25t"),
])
def test_model_goes_into_the_path_fully_escaped(model: str, encoded: bytes) -> None:
    hook = lambda head, body, client: b"x-auth: 1\r\n"  # noqa: E731
    target = _target()
    whole = _request_head(client_scope(), auth_ref(hook), target, b"{}", model, model)
    assert whole is not None and whole.startswith(b"POST " + MODELS + encoded + b":generateContent HTTP/1.1\r\n")
    streamed = _request_head(client_scope(), auth_ref(hook), target, b"{}", model, model, stream=True)
    assert streamed is not None and streamed.startswith(
        b"POST " + MODELS + encoded + b":streamGenerateContent?alt=sse HTTP/1.1\r\n")
    embedded = _request_head(client_scope(), auth_ref(hook), _target("/embeddings"), b"{}", model, model)
    assert embedded is not None and embedded.startswith(b"POST " + MODELS + encoded + b":predict HTTP/1.1\r\n")


def test_the_client_query_joins_each_tail_right() -> None:
    hook = lambda *a: b""  # noqa: E731
    target = _target()
    whole = _request_head(client_scope("a=1&b=2"), auth_ref(hook), target, b"{}", "m", "m")
    assert whole is not None and whole.startswith(b"POST " + MODELS + b"m:generateContent?a=1&b=2 HTTP/1.1\r\n")
    streamed = _request_head(client_scope("a=1"), auth_ref(hook), target, b"{}", "m", "m", stream=True)
    assert streamed is not None and streamed.startswith(
        b"POST " + MODELS + b"m:streamGenerateContent?alt=sse&a=1 HTTP/1.1\r\n")
    # Bedrock's streaming tail has no query: its client query still starts one.
    bedrock = Target(None, b"/model/", HOST, "w", -1, b"/converse", b"/converse-stream")  # type: ignore[arg-type]
    head = _request_head(client_scope("a=1"), auth_ref(hook), bedrock, b"{}", "m", "m", stream=True)
    assert head is not None and head.startswith(b"POST /model/m/converse-stream?a=1 HTTP/1.1\r\n")


# ---------------------------------------------------------------- the bearer hook


def test_the_hook_sends_the_published_token_after_the_header_edits() -> None:
    hook = bearer_auth(b"x-edit: 1\r\n", "default/gcp-policy", credentials=_credentials())
    assert hook(_head(MODELS + b"m:generateContent"), b"{}", {}) == b"x-edit: 1\r\nauthorization: Bearer " + TOKEN.encode() + b"\r\n"


def test_no_token_or_one_a_header_cannot_carry_is_none() -> None:
    assert bearer_auth(b"", "default/gcp-policy", credentials=_credentials(None))(_head(b"/"), b"", {}) is None
    assert bearer_auth(b"", "default/gcp-policy", credentials=_credentials(key="default/other"))(_head(b"/"), b"", {}) is None
    assert bearer_auth(b"", "default/gcp-policy", credentials=_credentials("tok\r\nx-injected: 1"))(_head(b"/"), b"", {}) is None


def test_a_new_credentials_generation_is_picked_up() -> None:
    worker = _credentials(None)
    hook = bearer_auth(b"", "default/gcp-policy", credentials=worker)
    assert hook(_head(b"/"), b"", {}) is None
    worker.generation, worker.values = 2, {"default/gcp-policy": "ya29.first"}
    assert hook(_head(b"/"), b"", {}) == b"authorization: Bearer ya29.first\r\n"
    worker.generation, worker.values = 3, {"default/gcp-policy": "ya29.refreshed"}
    assert hook(_head(b"/"), b"", {}) == b"authorization: Bearer ya29.refreshed\r\n"


def test_the_provider_hook_reads_the_policy_key() -> None:
    provider = PROVIDERS["GCPVertexAI"]
    with publishing({"default/gcp-policy": TOKEN, "default/vertex": "other"}):
        hook = provider.auth(_backend(), b"x-edit: 1\r\n", b"authorization: Bearer configured\r\n", None)
        assert hook(_head(b"/"), b"{}", {}) == b"x-edit: 1\r\nauthorization: Bearer " + TOKEN.encode() + b"\r\n"
        # No policy: the entry under the backend's own name.
        assert provider.auth(_backend(cloud=None), b"", b"", None)(_head(b"/"), b"{}", {}) == b"authorization: Bearer other\r\n"


def test_the_token_never_shows() -> None:
    worker = _credentials()
    hook = bearer_auth(b"", "default/gcp-policy", credentials=worker)
    hook(_head(b"/"), b"", {})
    shown = [repr(worker), str(worker), repr(hook), repr(PROVIDERS["GCPVertexAI"])]
    assert not any(TOKEN in text for text in shown)


# ---------------------------------------------------------------- through the proxy, to 127.0.0.1


def _forward(response: bytes, body: dict[str, Any], operation: str = "/chat/completions", query: str = "",
             published: dict[str, str] | None = None) -> tuple[Proto, list[bytes], Exchange]:
    # The backend's GCPCredentials policy compiles to CLOUD (without one it is a 401 at load).
    return forward_one("GCPVertexAI", json.dumps(body).encode(), operation, "openai", response,
                       {"default/gcp-policy": TOKEN} if published is None else published,
                       {"authorization": "Bearer client-key", "x-trace": "t"}, CLOUD, "gemini-2.0-flash-001",
                       name="vertex", query=query)


CHAT = {"model": "m", "messages": [{"role": "user", "content": "Why is the sky blue?"}]}


def test_a_chat_request_reaches_vertex_with_the_token() -> None:
    proto, received, exchange = _forward(http_response(json.dumps(TEXT_ANSWER).encode()), CHAT)
    assert proto.status == 200, proto.body
    out = json.loads(proto.body)
    assert out["choices"][0]["message"]["content"].startswith("The sky appears blue")
    assert out["model"] == "gemini-2.0-flash-001" and exchange.response_model == "gemini-2.0-flash-001"
    assert exchange.usage is not None and exchange.usage.total_tokens == 110
    request_line, headers, body = sent(received)
    assert request_line == "POST " + MODELS.decode() + "gemini-2.0-flash-001:generateContent HTTP/1.1"
    assert headers["authorization"] == f"Bearer {TOKEN}"  # the client's own key never goes upstream
    assert headers["x-trace"] == "t"
    assert json.loads(body) == {"contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}]}


def test_a_streaming_request_gets_sse_translated() -> None:
    proto, received, exchange = _forward(http_response(sse(TEXT_EVENTS), content_type="text/event-stream"),
                                         {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                                         query="trace=1")
    request_line, _, raw = sent(received)
    body = json.loads(raw)
    assert request_line == ("POST " + MODELS.decode()
                            + "gemini-2.0-flash-001:streamGenerateContent?alt=sse&trace=1 HTTP/1.1")
    assert "stream" not in body and "stream_options" not in body
    assert proto.status == 200 and proto.headers["content-type"] == "text/event-stream"
    data = b"".join(proto.sent)
    chunks = openai_events(data)
    assert chunks[-1] == "[DONE]" and chunks[-2]["usage"]["total_tokens"] == 5
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2]) == "Hello"
    assert exchange.usage is not None and exchange.usage.total_tokens == 5


def test_embeddings_go_to_predict_and_honour_base64() -> None:
    answer = {"predictions": [{"embeddings": {"statistics": {"truncated": False, "token_count": 4},
                                              "values": [0.5, -2.0]}}]}
    proto, received, exchange = _forward(http_response(json.dumps(answer).encode()),
                                         {"model": "m", "input": "hello", "encoding_format": "base64",
                                          "dimensions": 2}, operation="/embeddings")
    request_line, _, raw = sent(received)
    body = json.loads(raw)
    assert request_line == "POST " + MODELS.decode() + "gemini-2.0-flash-001:predict HTTP/1.1"
    assert body == {"instances": [{"content": "hello"}], "parameters": {"outputDimensionality": 2}}
    assert proto.status == 200, proto.body
    out = json.loads(proto.body)
    assert struct.unpack("<2f", base64.b64decode(out["data"][0]["embedding"])) == (0.5, -2.0)
    assert out["usage"] == {"prompt_tokens": 4, "total_tokens": 4} and exchange.usage.input_tokens == 4  # type: ignore[union-attr]


def test_a_vertex_error_is_an_openai_error() -> None:
    proto, _, _ = _forward(http_response(json.dumps([ERRORS[429]]).encode(), "429 Too Many Requests"), CHAT)
    assert proto.status == 429
    assert json.loads(proto.body)["error"]["code"] == "rate_limit_exceeded"


def test_no_published_token_is_a_401() -> None:
    with pytest.raises(GatewayError) as raised:
        _forward(http_response(b"{}"), CHAT, published={})
    assert (raised.value.status, raised.value.code) == (401, "missing_credentials")

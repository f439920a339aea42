"""The GCPAnthropic provider (Claude on Vertex AI's rawPredict): its paths from the GCPCredentials
policy's project and region, model encoding and stream tails, its bearer-token hook, and requests
from Anthropic and OpenAI clients through the proxy to a 127.0.0.1 stand-in, whole and streamed."""

from __future__ import annotations

import json

import pytest

from modelyard.core.errors import GatewayError
from modelyard.core.table import Backend, CloudAuth, Endpoint
from modelyard.gateway.providers import PROVIDERS
from modelyard.gateway.providers.gcp_anthropic import GCPAnthropic
from modelyard.gateway.proxy import _request_head
from modelyard.gateway.state import Target
from modelyard.gateway.translators.anthropic_gcpanthropic import AnthropicToGCPAnthropic
from modelyard.gateway.translators.openai_gcpanthropic import OpenAIToGCPAnthropic
from tests.unit.provider_support import (ANSWER, CHAT, MESSAGES, auth_ref, chunked_response, client_scope, forward_one,
                                         http_response, publishing, sent, served)
from tests.unit.translators.samples import ANTHROPIC_EVENTS, anthropic_sse

CLOUD = CloudAuth("GCPCredentials", "default/vertex", "us-east5", "my-project")
MODEL = "claude-sonnet-4@20250514"
MODELS = "/v1/projects/my-project/locations/us-east5/publishers/anthropic/models/"
TOKEN = "ya29.a0AfB_byEXAMPLE"


def _backend(cloud: CloudAuth | None = CLOUD, prefix: str = "") -> Backend:
    return Backend("default/vertex", "GCPAnthropic", None, prefix, (Endpoint("us-east5-aiplatform.googleapis.com", 443),),
                   None, cloud=cloud)


def test_registered_and_served() -> None:
    provider = served("GCPAnthropic", GCPAnthropic, "gcp.vertex_ai")
    assert isinstance(provider.translators["anthropic"], AnthropicToGCPAnthropic)
    assert isinstance(provider.translators["openai"], OpenAIToGCPAnthropic)
    assert provider.stream_content_types == ("text/event-stream",)  # streamRawPredict answers plain SSE


def test_paths_from_the_policy_and_stream_tails() -> None:
    provider = PROVIDERS["GCPAnthropic"]
    for op in ("/messages", "/chat/completions"):
        assert provider.upstream_path(_backend(), op) == (MODELS.encode(), b":rawPredict")
        assert provider.stream_tail(_backend(), op) == b":streamRawPredict"
    for op in ("/completions", "/embeddings"):
        assert provider.upstream_path(_backend(), op) is None
    assert provider.upstream_path(_backend(prefix="/p"), "/messages") == (b"/p" + MODELS.encode(), b":rawPredict")
    odd = CloudAuth("GCPCredentials", "k", "global", "a/b c")
    assert provider.upstream_path(_backend(odd), "/messages")[0] == (  # type: ignore[index]
        b"/v1/projects/a%2Fb%20c/locations/global/publishers/anthropic/models/")
    # Without a GCPCredentials policy there is no project to name: no operation is served.
    assert all(provider.upstream_path(_backend(None), op) is None for op in ("/messages", "/chat/completions"))
    for partial in (CloudAuth("GCPCredentials", "k", "", "p"), CloudAuth("GCPCredentials", "k", "us-east5", "")):
        assert provider.upstream_path(_backend(partial), "/messages") is None


@pytest.mark.parametrize("model, encoded", [(MODEL, "claude-sonnet-4%4020250514"), ("claude-3-5-haiku", "claude-3-5-haiku"),
                                            ("a/b:c", "a%2Fb%3Ac")])
def test_model_in_the_path(model: str, encoded: str) -> None:
    provider, backend = PROVIDERS["GCPAnthropic"], _backend()
    prefix, tail = provider.upstream_path(backend, "/messages")  # type: ignore[misc]
    target = Target(None, prefix, "h", "w", -1, tail, provider.stream_tail(backend, "/messages"))  # type: ignore[arg-type]
    scope, ref = client_scope(), auth_ref(lambda *a: b"")
    whole = _request_head(scope, ref, target, b"{}", model, model)
    streamed = _request_head(scope, ref, target, b"{}", model, model, stream=True)
    assert whole is not None and whole.startswith(f"POST {MODELS}{encoded}:rawPredict HTTP/1.1\r\n".encode())
    assert streamed is not None and streamed.startswith(f"POST {MODELS}{encoded}:streamRawPredict HTTP/1.1\r\n".encode())


def test_bearer_hook_with_the_published_token() -> None:
    hook = PROVIDERS["GCPAnthropic"].auth(_backend(), b"x-edit: 1\r\n", b"", None)
    with publishing({}) as publish:
        assert hook([], b"", {}) is None  # nothing published yet: a 401
        publish({"default/vertex": TOKEN})
        assert hook([], b"", {}) == f"x-edit: 1\r\nauthorization: Bearer {TOKEN}\r\n".encode()
        publish({"default/vertex": "bad\r\nx: y"})  # no header can carry it
        assert hook([], b"", {}) is None
        publish({"default/other": TOKEN})
        assert hook([], b"", {}) is None
    # Without a policy: the backendRef's edits only.
    assert PROVIDERS["GCPAnthropic"].auth(_backend(None), b"x-edit: 1\r\n", b"", None)([], b"", {}) == b"x-edit: 1\r\n"


# ---------------------------------------------------------------- through the proxy, to 127.0.0.1

PUBLISHED = {"default/vertex": TOKEN}


def test_an_anthropic_message_reaches_raw_predict() -> None:
    proto, received, o = forward_one("GCPAnthropic", MESSAGES, "/messages", "anthropic", http_response(ANSWER),
                                     PUBLISHED, {"anthropic-beta": "context-1m-2025-08-07"}, CLOUD, MODEL)
    line, headers, body = sent(received)
    assert line == f"POST {MODELS}claude-sonnet-4%4020250514:rawPredict HTTP/1.1"
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["anthropic-beta"] == "context-1m-2025-08-07"  # as Anthropic's Vertex SDK sends it, and in the body
    assert json.loads(body) == {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
                                "anthropic_version": "vertex-2023-10-16", "anthropic_beta": ["context-1m-2025-08-07"]}
    assert proto.status == 200 and proto.body == ANSWER
    assert o.usage is not None and o.usage.total_tokens == 4 and o.response_model == "claude-3-7-sonnet-20250219"


def test_streams_for_both_clients() -> None:
    data = anthropic_sse(ANTHROPIC_EVENTS)
    proto, received, o = forward_one("GCPAnthropic", MESSAGES[:-1] + b', "stream": true}', "/messages", "anthropic",
                                     chunked_response([data], "text/event-stream"), PUBLISHED, None, CLOUD, MODEL)
    line, _, body = sent(received)
    assert line.endswith(":streamRawPredict HTTP/1.1") and json.loads(body)["stream"] is True
    assert b"".join(proto.sent) == data and o.usage is not None and o.usage.output_tokens == 89
    proto, received, o = forward_one("GCPAnthropic", CHAT[:-1] + b', "stream": true}', "/chat/completions", "openai",
                                     chunked_response([data], "text/event-stream"), PUBLISHED, None, CLOUD, MODEL)
    assert json.loads(sent(received)[2])["anthropic_version"] == "vertex-2023-10-16"
    assert b"".join(proto.sent).endswith(b"data: [DONE]\n\n") and o.usage is not None and o.usage.input_tokens == 1492


def test_errors_and_missing_token() -> None:
    google = b'{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}'
    proto, _, _ = forward_one("GCPAnthropic", MESSAGES, "/messages", "anthropic",
                              http_response(google, "429 Too Many Requests"), PUBLISHED, None, CLOUD, MODEL)
    assert proto.status == 429 and json.loads(proto.body)["error"] == {"type": "rate_limit_error",
                                                                       "message": "Quota exceeded"}
    with pytest.raises(GatewayError) as raised:
        forward_one("GCPAnthropic", MESSAGES, "/messages", "anthropic", http_response(ANSWER), {}, None, CLOUD, MODEL)
    assert (raised.value.status, raised.value.code) == (401, "missing_credentials")
    with pytest.raises(GatewayError) as raised:  # no policy: no path, nothing served
        forward_one("GCPAnthropic", MESSAGES, "/messages", "anthropic", http_response(ANSWER), PUBLISHED, None, None,
                    MODEL)
    assert (raised.value.status, raised.value.code) == (501, "operation_not_supported")

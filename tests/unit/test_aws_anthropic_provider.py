"""The AWSAnthropic provider (Claude through Bedrock's InvokeModel): its paths, model-ID encoding and
stream tails, its hooks (SigV4, the anthropic-beta header kept from going upstream), and requests
from Anthropic and OpenAI clients through the proxy to a 127.0.0.1 stand-in, whole and streamed.
Also Anthropic clients and OpenAI embeddings reaching an AWSBedrock backend the same way."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelyard.core.table import Backend, Endpoint
from modelyard.gateway.providers import PROVIDERS
from modelyard.gateway.providers.aws_anthropic import AWSAnthropic
from modelyard.gateway.proxy import _request_head
from modelyard.gateway.state import Target
from modelyard.gateway.translators.anthropic_awsanthropic import AnthropicToAWSAnthropic
from modelyard.gateway.translators.openai_awsanthropic import OpenAIToAWSAnthropic
from tests.unit.provider_support import BEDROCK_HOST as HOST
from tests.unit.provider_support import CLAUDE_ON_BEDROCK as MODEL
from tests.unit.provider_support import (ANSWER, CHAT, CONVERSE_ANSWER, KEYS, MESSAGES, auth_ref, client_scope,
                                         converse_stream, forward_one, http_response, recompute_sigv4, sent, served)
from tests.unit.translators.eventstream import START, chunk, metadata, stop, text_delta
from tests.unit.translators.samples import ANTHROPIC_EVENTS

ENCODED = b"us.anthropic.claude-3-7-sonnet-20250219-v1%3A0"


def _backend(prefix: str = "") -> Backend:
    return Backend("default/claude", "AWSAnthropic", None, prefix, (Endpoint(HOST, 443),), None)


# ---------------------------------------------------------------- registry, paths, hooks


def test_registered_and_served() -> None:
    provider = served("AWSAnthropic", AWSAnthropic, "aws.bedrock")
    assert isinstance(provider.translators["anthropic"], AnthropicToAWSAnthropic)
    assert isinstance(provider.translators["openai"], OpenAIToAWSAnthropic)
    table = provider.translator_table(("/chat/completions", "/messages"))
    assert table[("anthropic", "/messages")] is provider.translators["anthropic"]
    assert provider.stream_content_types == ("application/vnd.amazon.eventstream",)


def test_paths_and_stream_tails() -> None:
    provider, backend = PROVIDERS["AWSAnthropic"], _backend()
    for op in ("/messages", "/chat/completions"):
        assert provider.upstream_path(backend, op) == (b"/model/", b"/invoke")
        assert provider.stream_tail(backend, op) == b"/invoke-with-response-stream"
    for op in ("/completions", "/embeddings"):
        assert provider.upstream_path(backend, op) is None
    assert provider.upstream_path(_backend("/x"), "/messages") == (b"/x/model/", b"/invoke")


@pytest.mark.parametrize("model", [MODEL, "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.c-v1:0"])
def test_the_path_is_the_one_botocore_serializes(model: str) -> None:
    """botocore's bedrock-runtime model (requestUri /model/{modelId}/invoke[-with-response-stream])
    serializes the same path for the same modelId."""
    import botocore.session
    from botocore.serialize import create_serializer
    service = botocore.session.get_session().get_service_model("bedrock-runtime")
    provider, backend = PROVIDERS["AWSAnthropic"], _backend()
    prefix, tail = provider.upstream_path(backend, "/messages")  # type: ignore[misc]
    target = Target(None, prefix, HOST, "w", -1, tail, provider.stream_tail(backend, "/messages"))  # type: ignore[arg-type]
    scope, ref = client_scope(), auth_ref(lambda *a: b"")
    for operation, stream in (("InvokeModel", False), ("InvokeModelWithResponseStream", True)):
        head = _request_head(scope, ref, target, b"{}", model, model, stream=stream)
        expected = create_serializer("rest-json").serialize_to_request(
            {"modelId": model, "body": b"{}"}, service.operation_model(operation))["url_path"]
        assert head is not None and head.startswith(b"POST " + expected.encode() + b" HTTP/1.1\r\n")


def test_hooks_sign_with_sigv4_and_own_the_beta_header() -> None:
    provider = PROVIDERS["AWSAnthropic"]
    assert {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256",
            "anthropic-beta"} <= provider.owned_headers
    assert provider.auth(_backend(), b"", b"", None)([b"POST /model/m/invoke", b" HTTP/1.1\r\nhost: h\r\n"],
                                                     b"{}", {}) is None  # nothing published here


# ---------------------------------------------------------------- through the proxy, to 127.0.0.1


PUBLISHED = {"default/claude": json.dumps(KEYS)}


def test_an_anthropic_message_reaches_invoke_model_signed() -> None:
    beta = "interleaved-thinking-2025-05-14,claude-code-20250219"
    proto, received, o = forward_one("AWSAnthropic", MESSAGES, "/messages", "anthropic", http_response(ANSWER),
                                     PUBLISHED, {"anthropic-beta": beta, "anthropic-version": "2023-06-01"})
    assert proto.status == 200 and proto.body == ANSWER  # Anthropic's answer, as it came
    assert o.usage is not None and (o.usage.input_tokens, o.usage.output_tokens) == (3, 1)
    assert o.response_model == "claude-3-7-sonnet-20250219"
    line, headers, body = sent(received)
    assert line == f"POST /model/{ENCODED.decode()}/invoke HTTP/1.1"
    assert json.loads(body) == {"max_tokens": 16, "messages": [{"role": "user", "content": "hi"}],
                                "anthropic_version": "bedrock-2023-05-31",
                                "anthropic_beta": ["interleaved-thinking-2025-05-14"]}
    assert "anthropic-beta" not in headers  # its flags went into the body
    assert headers["authorization"] == recompute_sigv4(line.split()[1], body, headers["x-amz-date"], host=headers["host"])


def test_an_anthropic_stream_comes_back_as_sse() -> None:
    events = [*ANTHROPIC_EVENTS[:-1], {"type": "message_stop", "amazon-bedrock-invocationMetrics": {}}]
    data = b"".join(chunk(e) for e in events)
    body = MESSAGES[:-1] + b', "stream": true}'
    proto, received, o = forward_one("AWSAnthropic", body, "/messages", "anthropic",
                                     converse_stream([data[:70], data[70:900], data[900:]], "chunked"), PUBLISHED)
    line, _, sent_body = sent(received)
    assert line.startswith(f"POST /model/{ENCODED.decode()}/invoke-with-response-stream ")
    assert "stream" not in json.loads(sent_body)
    assert proto.status == 200 and proto.headers["content-type"] == "text/event-stream"
    out = b"".join(proto.sent)
    assert out.startswith(b"event: message_start\ndata: ") and out.endswith(b"event: message_stop\ndata: " +
                                                                            json.dumps(events[-1]).encode() + b"\n\n")
    assert o.usage is not None and (o.usage.input_tokens, o.usage.output_tokens) == (1492, 89) and o.answer is None


def test_an_openai_chat_stream_comes_back_as_chunks() -> None:
    data = b"".join(chunk(e) for e in ANTHROPIC_EVENTS)
    body = CHAT[:-1] + b', "stream": true}'
    proto, received, o = forward_one("AWSAnthropic", body, "/chat/completions", "openai",
                                     converse_stream([data], "sized"), PUBLISHED)
    _, _, sent_body = sent(received)
    assert json.loads(sent_body)["anthropic_version"] == "bedrock-2023-05-31" and "model" not in json.loads(sent_body)
    out = b"".join(proto.sent)
    assert out.endswith(b"data: [DONE]\n\n") and b'"finish_reason":"tool_calls"' in out
    assert o.usage is not None and o.usage.output_tokens == 89


def test_a_bedrock_error_in_anthropics_shape() -> None:
    proto, _, o = forward_one("AWSAnthropic", MESSAGES, "/messages", "anthropic",
                              http_response(b'{"message": "Too many requests, please wait."}', "429 Too Many Requests"),
                              PUBLISHED)
    assert proto.status == 429 and json.loads(proto.body) == {"type": "error", "error": {
        "type": "rate_limit_error", "message": "Too many requests, please wait."}}


def test_untranslatable_and_unsigned_requests() -> None:
    from modelyard.core.errors import GatewayError

    with pytest.raises(GatewayError) as raised:
        forward_one("AWSAnthropic", MESSAGES, "/messages", "anthropic", http_response(ANSWER), {})
    assert (raised.value.status, raised.value.code) == (401, "missing_credentials")
    with pytest.raises(GatewayError) as raised:
        forward_one("AWSAnthropic", b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 3}',
                    "/chat/completions", "openai", http_response(ANSWER), PUBLISHED)
    assert (raised.value.status, raised.value.code) == (400, "untranslatable_request")


# ---------------------------------------------------------------- AWSBedrock: Anthropic clients, embeddings

def test_an_anthropic_message_reaches_converse() -> None:
    bedrock_keys = {"default/claude": json.dumps(KEYS)}
    proto, received, o = forward_one("AWSBedrock", MESSAGES, "/messages", "anthropic", http_response(CONVERSE_ANSWER),
                                     bedrock_keys, {"anthropic-beta": "context-1m-2025-08-07"})
    line, headers, body = sent(received)
    assert line == f"POST /model/{ENCODED.decode()}/converse HTTP/1.1" and "anthropic-beta" not in headers
    assert json.loads(body) == {"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                                "inferenceConfig": {"maxTokens": 16},
                                "additionalModelRequestFields": {"anthropic_beta": ["context-1m-2025-08-07"]}}
    answer = json.loads(proto.body)
    assert proto.status == 200 and answer["type"] == "message" and answer["content"] == [{"type": "text", "text": "ok"}]
    assert o.usage is not None and o.usage.total_tokens == 4


def test_an_anthropic_stream_from_converse_stream() -> None:
    data = b"".join([START, text_delta("Hel"), text_delta("lo"), stop(), metadata()])
    proto, received, o = forward_one("AWSBedrock", MESSAGES[:-1] + b', "stream": true}', "/messages", "anthropic",
                                     converse_stream([data[:40], data[40:]], "chunked"),
                                     {"default/claude": json.dumps(KEYS)})
    assert sent(received)[0].startswith(f"POST /model/{ENCODED.decode()}/converse-stream ")
    out = b"".join(proto.sent)
    assert proto.headers["content-type"] == "text/event-stream" and out.endswith(b"event: message_stop\ndata: "
                                                                                b'{"type":"message_stop"}\n\n')
    assert o.usage is not None and o.usage.total_tokens == 42


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_embeddings_reach_invoke_model_in_the_encoding_asked(encoding: str | None) -> None:
    titan = b'{"embedding": [0.5, -0.25], "inputTextTokenCount": 2}'
    request: dict[str, Any] = {"model": "m", "input": "Hello"}
    if encoding:
        request["encoding_format"] = encoding
    proto, received, o = forward_one("AWSBedrock", json.dumps(request).encode(), "/embeddings", "openai",
                                     http_response(titan), {"default/claude": json.dumps(KEYS)},
                                     model="amazon.titan-embed-text-v2:0")
    line, _, body = sent(received)
    assert line == "POST /model/amazon.titan-embed-text-v2%3A0/invoke HTTP/1.1"
    assert json.loads(body) == {"inputText": "Hello", "normalize": True}
    answer = json.loads(proto.body)
    vector = answer["data"][0]["embedding"]
    assert isinstance(vector, str) if encoding == "base64" else vector == [0.5, -0.25]
    assert answer["model"] == "m" and answer["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert o.usage is not None and o.usage.input_tokens == 2


"""The Anthropic -> Bedrock Converse translator (AnthropicToBedrock): an Anthropic Messages request sent
to the Converse API, its whole answer and its errors read back as Anthropic's (pure, no processes).
Samples follow the documented examples of the Converse API reference and of Anthropic's Messages API."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.anthropic_bedrock import AnthropicToBedrock, build_request, is_claude
from modelyard.gateway.translators.anthropic_bedrock_answer import STOP_REASONS, build_response
from modelyard.gateway.translators.openai_bedrock import model_base
from tests.unit.translators.samples import PNG
from tests.unit.translators.samples import sdk_clients

A2B = AnthropicToBedrock()
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CACHE = {"type": "ephemeral"}
POINT = {"cachePoint": {"type": "default"}}
TOP_SONG = {"name": "top_song", "description": "Get the most popular song played on a radio station.",
            "input_schema": {"type": "object", "properties": {"sign": {"type": "string"}}, "required": ["sign"]}}


def a2b(model: str = CLAUDE, **body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    body.setdefault("max_tokens", 512)
    return build_request(body, model)


def text_turn(role: str, *texts: str) -> dict[str, Any]:
    return {"role": role, "content": [{"text": t} for t in texts]}


# ---------------------------------------------------------------- model IDs


@pytest.mark.parametrize("model, base, claude", [
    (CLAUDE, CLAUDE, True),
    ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic.claude-3-5-sonnet-20241022-v2:0", True),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-sonnet-4-5-20250929-v1:0", True),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
     "anthropic.claude-3-7-sonnet-20250219-v1:0", True),
    ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5", "a1b2c3d4e5", True),
    ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0", False),
    ("us.meta.llama3-2-1b-instruct-v1:0", "meta.llama3-2-1b-instruct-v1:0", False),
    ("eu.amazon.titan-embed-text-v2:0", "amazon.titan-embed-text-v2:0", False),
])
def test_model_ids(model, base, claude):
    assert model_base(model) == base and is_claude(model) is claude


# ---------------------------------------------------------------- Anthropic request -> Converse


def test_request_docs_example_model_not_in_body():
    out = json.loads(A2B.request({
        "model": "alias", "max_tokens": 1024, "stream": True, "metadata": {"user_id": "u"},
        "system": "You are an app that creates playlists for a radio station that plays rock and pop music.",
        "messages": [{"role": "user", "content": "Create a list of 3 pop songs."}],
        "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["\n\nHuman:"],
    }, CLAUDE))
    assert out == {
        "messages": [text_turn("user", "Create a list of 3 pop songs.")],
        "system": [{"text": "You are an app that creates playlists for a radio station that plays rock and pop music."}],
        "inferenceConfig": {"maxTokens": 1024, "temperature": 0.5, "topP": 0.9, "stopSequences": ["\n\nHuman:"]},
        # Claude is asked which stop sequence ended the answer (Converse does not say).
        "additionalModelResponseFieldPaths": ["/stop_sequence"],
    }
    assert "additionalModelResponseFieldPaths" not in a2b("amazon.nova-pro-v1:0", stop_sequences=["x"])


def test_request_system_blocks_and_cache_points():
    out = a2b(system=[{"type": "text", "text": "Rules."}, {"type": "text", "text": "A long book.", "cache_control": CACHE}],
              messages=[{"role": "user", "content": [{"type": "text", "text": "Summarize", "cache_control": CACHE},
                                                     {"type": "text", "text": "briefly"}]}])
    assert out["system"] == [{"text": "Rules."}, {"text": "A long book."}, POINT]
    assert out["messages"] == [{"role": "user", "content": [{"text": "Summarize"}, POINT, {"text": "briefly"}]}]


def test_request_turns_merge_and_empty_text_is_left_out():
    out = a2b(messages=[
        {"role": "user", "content": "one"}, {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "a"}, {"role": "assistant", "content": [{"type": "text", "text": ""}]},
        {"role": "assistant", "content": ""}, {"role": "user", "content": "three"},
    ])
    assert out["messages"] == [text_turn("user", "one", "two"), text_turn("assistant", "a"), text_turn("user", "three")]


@pytest.mark.parametrize("media, fmt", [("image/png", "png"), ("image/jpeg", "jpeg"), ("image/gif", "gif"),
                                        ("image/webp", "webp")])
def test_request_base64_images(media, fmt):
    out = a2b(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": media, "data": PNG}},
        {"type": "text", "text": "What is this?"}]}])
    assert out["messages"][0]["content"] == [{"image": {"format": fmt, "source": {"bytes": PNG}}},
                                             {"text": "What is this?"}]


def test_request_documents():
    pdf = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}
    out = a2b(messages=[{"role": "user", "content": [
        {"type": "document", "source": pdf, "title": "Q3 report: final.pdf"},
        {"type": "document", "source": pdf, "title": "Q3 report: final.pdf"},
        {"type": "document", "source": pdf},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}}]}])
    assert out["messages"][0]["content"] == [
        {"document": {"format": "pdf", "name": "Q3 report final pdf", "source": {"bytes": "JVBERi0="}}},
        {"document": {"format": "pdf", "name": "Q3 report final pdf (2)", "source": {"bytes": "JVBERi0="}}},
        {"document": {"format": "pdf", "name": "document", "source": {"bytes": "JVBERi0="}}},
        {"text": "plain words"}]


@pytest.mark.parametrize("block, words", [
    ({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}, "never URLs"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "x"}}, "image/tiff"),
    ({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}, "base64 PDFs"),
    ({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}, "server_tool_use"),
    ({"type": "search_result", "source": "s", "title": "t", "content": []}, "search_result"),
])
def test_request_blocks_converse_cannot_take(block, words):
    with pytest.raises(TranslationError, match=words):
        a2b(messages=[{"role": "user", "content": [block]}])


def test_request_tool_round_trip():
    out = a2b(tools=[TOP_SONG], messages=[
        {"role": "user", "content": "What is the most popular song on WZPZ?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
             "content": "Elemental Hotel by 8 Storey Hike", "cache_control": CACHE},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True,
             "content": [{"type": "text", "text": "station unknown"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
            {"type": "tool_result", "tool_use_id": "t3"},
            {"type": "text", "text": "And?"}]},
    ])
    assert out["messages"][1:] == [
        {"role": "assistant", "content": [
            {"text": "Let me look."},
            {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}}]},
        {"role": "user", "content": [
            {"toolResult": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                            "content": [{"text": "Elemental Hotel by 8 Storey Hike"}]}},
            POINT,
            {"toolResult": {"toolUseId": "t2", "status": "error", "content": [
                {"text": "station unknown"}, {"image": {"format": "png", "source": {"bytes": PNG}}}]}},
            {"toolResult": {"toolUseId": "t3", "content": []}},
            {"text": "And?"}]},
    ]
    with pytest.raises(TranslationError, match="tool_result content type 'tool_use'"):
        a2b(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "tool_use", "id": "x", "name": "n", "input": {}}]}]}])


def test_request_thinking_blocks_go_back_as_reasoning():
    out = a2b(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCgIYAh"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "thinking", "thinking": "unsigned"},
        {"type": "text", "text": "Hello."}]}])
    assert out["messages"][1]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "Let me think.", "signature": "EqQBCgIYAh"}}},
        {"reasoningContent": {"redactedContent": "EmwKAhgBEgy3va3pzix"}},
        {"reasoningContent": {"reasoningText": {"text": "unsigned"}}},
        {"text": "Hello."}]


def test_request_tools_and_cache_point():
    out = a2b(tools=[TOP_SONG, {"name": "bare", "cache_control": CACHE}, {"type": "custom", "name": "c",
                                                                           "input_schema": {"type": "object"}}])
    assert out["toolConfig"] == {"tools": [
        {"toolSpec": {"name": "top_song", "description": "Get the most popular song played on a radio station.",
                      "inputSchema": {"json": TOP_SONG["input_schema"]}}},
        {"toolSpec": {"name": "bare", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
        POINT,
        {"toolSpec": {"name": "c", "inputSchema": {"json": {"type": "object"}}}}]}
    with pytest.raises(TranslationError, match="web_search_20250305"):
        a2b(tools=[{"type": "web_search_20250305", "name": "web_search"}])


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, {"auto": {}}), ({"type": "any"}, {"any": {}}),
    ({"type": "tool", "name": "top_song"}, {"tool": {"name": "top_song"}}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"auto": {}}),  # no Converse counterpart
    (None, None),
])
def test_request_tool_choice(choice, expected):
    out = a2b(tools=[TOP_SONG], **({} if choice is None else {"tool_choice": choice}))
    assert out["toolConfig"].get("toolChoice") == expected


def test_request_tool_choice_none():
    assert "toolConfig" not in a2b(tools=[TOP_SONG], tool_choice={"type": "none"})
    # With tool blocks in the history Converse needs the tools: sent without a choice.
    out = a2b(tools=[TOP_SONG], tool_choice={"type": "none"}, messages=[
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "top_song", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]}])
    assert out["toolConfig"] == {"tools": [{"toolSpec": {"name": "top_song", "description": TOP_SONG["description"],
                                                         "inputSchema": {"json": TOP_SONG["input_schema"]}}}]}
    with pytest.raises(TranslationError, match="tool_choice"):
        a2b(tools=[TOP_SONG], tool_choice={"type": "sometimes"})


def test_request_claude_fields():
    thinking = {"type": "enabled", "budget_tokens": 2048}
    out = a2b(top_k=40, thinking=thinking)
    assert out["additionalModelRequestFields"] == {"thinking": thinking, "top_k": 40}
    opaque = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5"
    assert a2b(opaque, thinking={"type": "adaptive"})["additionalModelRequestFields"] == {"thinking": {"type": "adaptive"}}
    # Another vendor's model: top_k and a disabled thinking left out, an enabled one refused.
    assert "additionalModelRequestFields" not in a2b("amazon.nova-pro-v1:0", top_k=40, thinking={"type": "disabled"})
    with pytest.raises(TranslationError, match="only Claude"):
        a2b("us.amazon.nova-pro-v1:0", thinking=thinking)


def test_request_beta_header_goes_to_the_body_for_claude():
    body = {"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    header = {"anthropic-beta": "interleaved-thinking-2025-05-14, claude-code-20250219,advanced-tool-use-2025-11-20"}
    out = json.loads(A2B.request_with_headers(dict(body), CLAUDE, header))
    assert out["additionalModelRequestFields"] == {
        "anthropic_beta": ["interleaved-thinking-2025-05-14", "tool-search-tool-2025-10-19"]}
    assert "additionalModelRequestFields" not in json.loads(A2B.request_with_headers(dict(body), "amazon.nova-pro-v1:0",
                                                                                     header))
    assert "additionalModelRequestFields" not in json.loads(A2B.request_with_headers(dict(body), CLAUDE, {}))


@pytest.mark.parametrize("body, words", [
    ({"messages": "hi"}, "must be a list"),
    ({"messages": [{"role": "system", "content": "x"}]}, "role 'system'"),
    ({"messages": [], "output_config": {"format": {"type": "json_schema", "schema": {}}}}, "structured outputs"),
    ({"messages": [], "output_format": {"type": "json_schema", "schema": {}}}, "structured outputs"),
    ({"messages": [{"role": "user", "content": [1]}]}, "malformed"),
    ({"messages": [], "max_tokens": "many"}, "malformed"),
    ({"messages": [], "tools": "abc"}, "malformed"),
])
def test_request_not_expressible(body, words):
    with pytest.raises(TranslationError, match=words):
        A2B.request(body, CLAUDE)


# ---------------------------------------------------------------- Converse answer -> Anthropic message

DOCS_ANSWER = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Here is a list of 3 pop songs."}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 125, "outputTokens": 60, "totalTokens": 185},
    "metrics": {"latencyMs": 1175},
}


def test_response_docs_example():
    out, usage, model = A2B.response(json.dumps(DOCS_ANSWER).encode())
    msg = json.loads(out)
    assert msg["id"].startswith("msg_bdrk_") and model is None
    assert {k: v for k, v in msg.items() if k != "id"} == {
        "type": "message", "role": "assistant", "model": None,
        "content": [{"type": "text", "text": "Here is a list of 3 pop songs."}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 125, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "output_tokens": 60}}
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (125, 60, 185)


def test_response_tool_use_reasoning_and_cache_usage():
    answer = {
        "output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "Need the tool.", "signature": "c2ln"}}},
            {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}},
            {"text": "Checking."},
            {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}},
            {"guardContent": {"text": {"text": "x"}}}]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 100, "outputTokens": 40, "totalTokens": 190, "cacheReadInputTokens": 30,
                  "cacheWriteInputTokens": 20}}
    msg, usage = build_response(answer, "msg_bdrk_t")
    assert msg["content"] == [
        {"type": "thinking", "thinking": "Need the tool.", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30,
                            "output_tokens": 40}
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_creation_input_tokens) == (150, 30, 20)


@pytest.mark.parametrize("reason, expected", [*STOP_REASONS.items(), ("something_new", "end_turn"), (None, "end_turn")])
def test_response_stop_reasons(reason, expected):
    msg, _ = build_response({**DOCS_ANSWER, "stopReason": reason})
    assert msg["stop_reason"] == expected and msg["stop_sequence"] is None


def test_response_stop_sequence_from_the_model_fields():
    msg, _ = build_response({**DOCS_ANSWER, "stopReason": "stop_sequence",
                             "additionalModelResponseFields": {"stop_sequence": "\n\nHuman:"}})
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "\n\nHuman:")
    msg, _ = build_response({**DOCS_ANSWER, "additionalModelResponseFields": {"stop_sequence": "x"}})
    assert msg["stop_sequence"] is None  # only when a stop sequence ended it


@pytest.mark.parametrize("body", [b"not json", b'{"message": "x"}', b'{"output": {"message": {"content": [1]}}}'])
def test_response_not_understood_is_relayed(body):
    assert A2B.response(body) == (body, None, None)


def test_anthropic_sdk_reads_the_answer():
    _, ant = sdk_clients(A2B.response(json.dumps(DOCS_ANSWER).encode())[0], ctype="application/json")
    msg = ant.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "Here is a list of 3 pop songs." and msg.usage.output_tokens == 60


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("status, body, expected_status, etype", [
    (400, b'{"message": "Malformed input request"}', 400, "invalid_request_error"),
    (403, b'{"message": "You don\'t have access to the model"}', 403, "permission_error"),
    (404, b'{"message": "The provided model identifier is invalid."}', 404, "not_found_error"),
    (408, b'{"message": "Model has timed out"}', 408, "timeout_error"),
    (424, b'{"message": "The model failed"}', 424, "api_error"),
    (429, b'{"message": "Too many requests, please wait before trying again."}', 429, "rate_limit_error"),
    (500, b'{"message": "Internal server error"}', 500, "api_error"),
    (503, b'{"message": "Service unavailable"}', 503, "overloaded_error"),
    (400, b'{"__type": "ThrottlingException", "message": "slow"}', 429, "rate_limit_error"),
])
def test_error_mapping(status, body, expected_status, etype):
    got_status, out = A2B.error(status, body)
    assert got_status == expected_status
    assert json.loads(out) == {"type": "error", "error": {"type": etype, "message": json.loads(body)["message"]}}


def test_error_not_json_and_the_sdk_raises():
    import anthropic

    assert json.loads(A2B.error(502, b"<html>bad gateway</html>")[1])["error"] == {
        "type": "api_error", "message": "<html>bad gateway</html>"}
    status, body = A2B.error(429, b'{"message": "Too many tokens, please wait."}')
    _, ant = sdk_clients(body, status, "application/json")
    with pytest.raises(anthropic.RateLimitError, match="Too many tokens"):
        ant.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])

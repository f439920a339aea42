"""The OpenAI -> Bedrock Converse translator (OpenAIToBedrock): an OpenAI chat completion request sent
to the Converse API, its whole answer and its errors read back as OpenAI's (pure, no processes).
Samples follow the documented examples of the Converse API reference."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelyard.core.usage import Usage
from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.openai_bedrock import JSON_OBJECT_INSTRUCTION, OpenAIToBedrock, build_request
from modelyard.gateway.translators.openai_bedrock_answer import build_response, error_from_bedrock
from tests.unit.translators.samples import PNG, TOOL_CONVERSATION, WEATHER_TOOL, user

O2B = OpenAIToBedrock()


def o2b(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return build_request(body, "anthropic.claude-3-5-sonnet-20240620-v1:0")


def text_turn(role: str, *texts: str) -> dict[str, Any]:
    return {"role": role, "content": [{"text": t} for t in texts]}


# ---------------------------------------------------------------- OpenAI request -> Converse


def test_request_text_and_system_model_not_in_body():
    out = json.loads(O2B.request({
        "model": "alias",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            user("Hello"),
        ]}, "anthropic.claude-3-5-sonnet-20240620-v1:0"))
    assert out == {"system": [{"text": "You are terse."}, {"text": "Answer in French."}],
                   "messages": [text_turn("user", "Hello")]}


def test_request_multi_turn_merges_same_roles():
    out = o2b(messages=[
        user("one"), user("two"),
        {"role": "assistant", "content": "a"}, {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
        {"role": "system", "content": "late system"},
        user("three"),
        {"role": "assistant", "content": ""},  # empty: dropped
    ])
    assert out["messages"] == [text_turn("user", "one", "two"), text_turn("assistant", "a", "b"),
                               text_turn("user", "three")]
    assert out["system"] == [{"text": "late system"}]


@pytest.mark.parametrize("media, fmt", [
    ("image/png", "png"), ("image/jpeg", "jpeg"), ("image/jpg", "jpeg"), ("image/gif", "gif"), ("image/webp", "webp"),
])
def test_request_data_url_images(media, fmt):
    out = o2b(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"data:{media};base64,{PNG}"}},
    ]}])
    assert out["messages"] == [{"role": "user", "content": [
        {"text": "What is this?"}, {"image": {"format": fmt, "source": {"bytes": PNG}}}]}]


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]},
     "messages"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/tiff;base64,{PNG}"}}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages"),
    ({"messages": [{"role": "function", "content": "x"}]}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [user("hi")], "n": 2}, "n"),
    ({"messages": [user("hi")], "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format"),
    ({"messages": [user("hi")], "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"),
    ({"messages": [user("hi")], "tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}, "messages"),
])
def test_request_not_expressible(body, param):
    with pytest.raises(TranslationError) as e:
        O2B.request(body, "m")
    assert e.value.param == param


def test_reasoning_effort_is_claude_thinking_and_a_400_for_other_models():
    body = {"messages": [user("hi")], "reasoning_effort": "medium", "max_completion_tokens": 20000}
    sent = json.loads(O2B.request(body, "us.anthropic.claude-sonnet-4-20250514-v1:0"))
    assert sent["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 8192}}
    assert sent["inferenceConfig"]["maxTokens"] == 20000
    unbounded = json.loads(O2B.request({"messages": [user("hi")], "reasoning_effort": "low"}, "anthropic.claude-x"))
    assert unbounded["inferenceConfig"]["maxTokens"] > unbounded["additionalModelRequestFields"]["thinking"][
        "budget_tokens"] == 2048  # room for the answer beside the budget
    with pytest.raises(TranslationError) as e:
        O2B.request({"messages": [user("hi")], "reasoning_effort": "high"}, "amazon.nova-micro-v1:0")
    assert e.value.param == "reasoning_effort"
    assert "additionalModelRequestFields" not in json.loads(
        O2B.request({"messages": [user("hi")], "reasoning_effort": "none"}, "amazon.nova-micro-v1:0"))


def test_request_malformed_field_is_a_translation_error():
    with pytest.raises(TranslationError):
        O2B.request({"messages": [{"role": "user", "content": [{"type": "text"}]}], "max_tokens": "lots"}, "m")


@pytest.mark.parametrize("body, expected", [
    ({}, None),
    ({"max_tokens": 100}, {"maxTokens": 100}),
    ({"max_completion_tokens": 200, "max_tokens": 100}, {"maxTokens": 200}),
    ({"temperature": 0.5, "top_p": 0.9}, {"temperature": 0.5, "topP": 0.9}),
    ({"temperature": 0}, {"temperature": 0.0}),
    ({"stop": "END"}, {"stopSequences": ["END"]}),
    ({"stop": ["a", "b"], "max_tokens": 5}, {"stopSequences": ["a", "b"], "maxTokens": 5}),
    ({"seed": 1, "presence_penalty": 0.5, "user": "u", "n": 1, "reasoning_effort": "none"}, None),
])
def test_request_inference_config(body, expected):
    assert o2b(**body).get("inferenceConfig") == expected


def test_request_json_object_asks_in_the_system_prompt():
    assert o2b(response_format={"type": "json_object"})["system"] == [{"text": JSON_OBJECT_INSTRUCTION}]


def test_request_tools():
    out = o2b(tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "noop"}}])
    assert out["toolConfig"] == {"tools": [
        {"toolSpec": {"name": "get_weather", "description": "Get the current weather", "inputSchema": {"json": {
            "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}},
        {"toolSpec": {"name": "noop", "inputSchema": {"json": {"type": "object", "properties": {}}}}},
    ]}


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"auto": {}}),
    ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
])
def test_request_tool_choice(choice, expected):
    assert o2b(tools=[WEATHER_TOOL], tool_choice=choice)["toolConfig"]["toolChoice"] == expected


def test_request_tool_choice_none_drops_the_tools():
    assert "toolConfig" not in o2b(tools=[WEATHER_TOOL], tool_choice="none")
    assert "toolConfig" not in o2b(tool_choice="auto")  # no tools: nothing to choose


def test_request_tool_choice_none_keeps_tools_when_history_uses_them():
    # Converse rejects toolUse/toolResult blocks without a toolConfig, so the tools stay, unforced.
    out = o2b(messages=TOOL_CONVERSATION, tools=[WEATHER_TOOL], tool_choice="none")
    assert [t["toolSpec"]["name"] for t in out["toolConfig"]["tools"]] == ["get_weather"]
    assert "toolChoice" not in out["toolConfig"]


def test_request_tool_round_trip():
    out = o2b(messages=TOOL_CONVERSATION, tools=[WEATHER_TOOL])
    assert out["messages"] == [
        text_turn("user", "Weather in Paris and Rome?"),
        {"role": "assistant", "content": [
            {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"location": "Paris"}}},
            {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"location": "Rome"}}},
        ]},
        {"role": "user", "content": [  # both results and the next user text in one turn
            {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}},
            {"toolResult": {"toolUseId": "call_2", "content": [{"text": "25C"}]}},
            {"text": "Thanks. Which is warmer?"},
        ]},
    ]


def test_request_assistant_text_with_tool_call_and_dict_arguments():
    out = o2b(messages=[user("hi"), {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}]}])
    assert out["messages"][1]["content"] == [
        {"text": "Checking."},
        {"toolUse": {"toolUseId": "c1", "name": "f", "input": {"a": 1}}},
        {"toolUse": {"toolUseId": "c2", "name": "g", "input": {}}},
    ]


# ---------------------------------------------------------------- Converse answer -> OpenAI

TEXT_ANSWER = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Bonjour"}, {"text": " !"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 30, "outputTokens": 10, "totalTokens": 40},
    "metrics": {"latencyMs": 500},
}

TOOL_ANSWER = {
    "output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "Need the tool.", "signature": "sig"}}},
        {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "get_weather",
                     "input": {"location": "Paris"}}},
    ]}},
    "stopReason": "tool_use",
    "usage": {"inputTokens": 100, "outputTokens": 20, "totalTokens": 1620,
              "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 500},
}


def test_response_text_and_usage():
    body, usage, model = O2B.response(json.dumps(TEXT_ANSWER).encode())
    out = json.loads(body)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-") and model is None
    assert out["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "Bonjour !"}}]
    assert out["usage"] == {"prompt_tokens": 30, "completion_tokens": 10, "total_tokens": 40,
                            "prompt_tokens_details": {"cached_tokens": 0}}
    assert usage == Usage(input_tokens=30, output_tokens=10, total_tokens=40)


def test_response_tool_use_reasoning_and_cache_usage():
    out, usage = build_response(TOOL_ANSWER, created=7, completion_id="chatcmpl-1")
    assert out["id"] == "chatcmpl-1" and out["created"] == 7
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant", "content": None, "reasoning_content": "Need the tool.",
        "tool_calls": [{"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}]}
    assert usage == Usage(input_tokens=1600, output_tokens=20, total_tokens=1620,
                          cached_input_tokens=1000, cache_creation_input_tokens=500)
    assert out["usage"] == {"prompt_tokens": 1600, "completion_tokens": 20, "total_tokens": 1620,
                            "prompt_tokens_details": {"cached_tokens": 1000}}


@pytest.mark.parametrize("stop_reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
    ("model_context_window_exceeded", "length"), ("something_new", "stop"), (None, "stop"),
])
def test_response_stop_reasons(stop_reason, finish):
    answer = {**TEXT_ANSWER, "stopReason": stop_reason}
    out, _ = build_response(answer)
    assert out["choices"][0]["finish_reason"] == finish


def test_response_without_usage_and_empty_content():
    out, usage = build_response({"output": {"message": {"role": "assistant", "content": []}},
                                 "stopReason": "end_turn"})
    assert usage is None and "usage" not in out
    assert out["choices"][0]["message"] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"message": "x"}', b'{"output": {"message": {"content": 5}}}'])
def test_response_not_understood_is_relayed(body):
    assert O2B.response(body) == (body, None, None)


def test_stream_request_is_the_converse_body():
    # ConverseStream takes the same body as Converse; stream and stream_options are not in it.
    streamed = o2b(stream=True, stream_options={"include_usage": True}, max_tokens=5)
    assert streamed == o2b(max_tokens=5) == {"messages": [text_turn("user", "hi")], "inferenceConfig": {"maxTokens": 5}}


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("status, body, header, expected_status, etype, code", [
    (400, {"message": "Malformed input request"}, "ValidationException:http://internal.amazon.com/coral/",
     400, "invalid_request_error", "ValidationException"),
    (400, {"__type": "com.amazon.coral.validate#ValidationException", "message": "bad"}, None,
     400, "invalid_request_error", "ValidationException"),
    (403, {"message": "You don't have access to the model"}, "AccessDeniedException",
     403, "permission_error", "AccessDeniedException"),
    (403, {"message": "The security token included in the request is invalid."}, "UnrecognizedClientException",
     403, "authentication_error", "UnrecognizedClientException"),
    (404, {"message": "Model not found"}, "ResourceNotFoundException",
     404, "invalid_request_error", "ResourceNotFoundException"),
    (429, {"message": "Too many requests, please wait before trying again."}, "ThrottlingException",
     429, "rate_limit_error", "ThrottlingException"),
    (400, {"message": "quota"}, "ServiceQuotaExceededException", 429, "rate_limit_error",
     "ServiceQuotaExceededException"),
    (408, {"message": "timeout"}, "ModelTimeoutException", 504, "server_error", "ModelTimeoutException"),
    (424, {"message": "model error"}, "ModelErrorException", 502, "server_error", "ModelErrorException"),
    (429, {"message": "not ready"}, "ModelNotReadyException", 503, "server_error", "ModelNotReadyException"),
    (500, {"message": "internal"}, "InternalServerException", 500, "server_error", "InternalServerException"),
    (503, {"message": "unavailable"}, "ServiceUnavailableException", 503, "server_error",
     "ServiceUnavailableException"),
    (502, {"Message": "bad gateway"}, None, 502, "server_error", None),
])
def test_error_mapping(status, body, header, expected_status, etype, code):
    got_status, got = error_from_bedrock(status, json.dumps(body).encode(), header)
    assert got_status == expected_status
    message = body.get("message") or body.get("Message")
    assert json.loads(got) == {"error": {"message": message, "type": etype, "param": None, "code": code}}


def test_error_through_the_translator_reads_the_body_type():
    status, body = O2B.error(429, b'{"__type": "ThrottlingException", "message": "slow down"}')
    assert status == 429
    assert json.loads(body)["error"] == {"message": "slow down", "type": "rate_limit_error", "param": None,
                                         "code": "ThrottlingException"}


@pytest.mark.parametrize("body, message", [(b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
                                           (b"", "upstream answered 503")])
def test_error_not_json(body, message):
    status, out = O2B.error(503, body)
    assert status == 503 and json.loads(out)["error"]["message"] == message

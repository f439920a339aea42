"""Translators between OpenAI chat completions and Anthropic Messages (pure, no processes).

Fixtures follow the documented example requests, answers and event streams of both APIs.
"""

from __future__ import annotations

import importlib
import itertools
import json
from typing import Any

import pytest

from modelyard.core.usage import Usage
from modelyard.gateway.providers import PROVIDERS
from modelyard.gateway.translators import TranslationError, client_error
from modelyard.gateway.translators.anthropic_openai import (
    AnthropicToOpenAI,
    OpenAIStreamToAnthropic,
)
from modelyard.gateway.translators.anthropic_openai import build_request as a2o_request
from modelyard.gateway.translators.common import SSEParser
from modelyard.gateway.translators.openai_anthropic import (
    DEFAULT_MAX_TOKENS,
    JSON_OBJECT_INSTRUCTION,
    AnthropicStreamToOpenAI,
    OpenAIToAnthropic,
)
from modelyard.gateway.translators.openai_anthropic import build_request as o2a_request

O2A = OpenAIToAnthropic()
A2O = AnthropicToOpenAI()
PNG = "iVBORw0KGgo="


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def o2a(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return o2a_request(body, "claude-x")


def a2o(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    body.setdefault("max_tokens", 100)
    return a2o_request(body, "gpt-x")


# ---------------------------------------------------------------- registry


def test_registry():
    # Which translator each (client API, backend schema) pair takes is its provider's to say.
    assert PROVIDERS["OpenAI"].translators["openai"] is None
    assert PROVIDERS["Anthropic"].translators["anthropic"] is None
    assert isinstance(PROVIDERS["Anthropic"].translators["openai"], OpenAIToAnthropic)
    assert isinstance(PROVIDERS["OpenAI"].translators["anthropic"], AnthropicToOpenAI)
    translated = {(client, schema) for schema, p in PROVIDERS.items()
                  for client, t in p.translators.items() if t is not None}
    # Azure OpenAI and Cohere take OpenAI's bodies: the same translator as OpenAI.
    assert translated == {("openai", "Anthropic"), ("anthropic", "OpenAI"), ("anthropic", "AzureOpenAI"),
                          ("anthropic", "Cohere")}
    with pytest.raises(KeyError):
        PROVIDERS["AWSBedrock"].translators["openai"]
    # Where a translated request goes is the provider's path, after the backend's prefix.
    assert PROVIDERS["Anthropic"].paths["/chat/completions"] == "/v1/messages"
    assert PROVIDERS["OpenAI"].paths["/messages"] == "/chat/completions"


def test_client_error_shapes():
    err = TranslationError("n > 1 is not supported", "n")
    status, body = client_error("openai", err)
    assert status == 400 and json.loads(body)["error"] == {
        "message": "n > 1 is not supported", "type": "invalid_request_error", "param": "n",
        "code": "unsupported_parameter"}
    status, body = client_error("anthropic", err)
    assert status == 400 and json.loads(body) == {
        "type": "error", "error": {"type": "invalid_request_error", "message": "n > 1 is not supported"}}


# ---------------------------------------------------------------- OpenAI request -> Anthropic


def test_request_basic_multi_turn():
    out = json.loads(O2A.request({
        "model": "alias", "stream": True,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            user("Hello"),
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ]}, "claude-sonnet-4-5"))
    assert out == {
        "model": "claude-sonnet-4-5", "max_tokens": DEFAULT_MAX_TOKENS, "stream": True,
        "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Bonjour"}]},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ]}


def test_request_single_system_is_a_string_and_same_roles_merge():
    out = o2a(messages=[{"role": "system", "content": "S"}, user("a"), user("b")])
    assert out["system"] == "S"
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                            {"type": "text", "text": "b"}]}]


def test_request_images_and_files():
    out = o2a(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]}])
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
         "title": "a.pdf"},
    ]


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}],
    [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}],
    [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}],
    [{"role": "function", "name": "f", "content": "x"}],
    [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                          "function": {"name": "f", "arguments": "[1]"}}]}],
])
def test_request_not_expressible(messages):
    with pytest.raises(TranslationError):
        o2a(messages=messages)


@pytest.mark.parametrize("body", [{"messages": "hi"}, {"messages": [{"role": "user", "content": [1]}]},
                                  {"messages": [{"role": "user", "content": "x"}], "tools": "abc"},
                                  {"messages": ["x"]}])
def test_request_malformed_is_a_translation_error(body):
    with pytest.raises(TranslationError):
        O2A.request(body, "m")
    with pytest.raises(TranslationError):
        A2O.request(body, "m")


def test_malformed_answers_are_relayed():
    for body in (b'{"type": "message", "content": [1]}', b'{"choices": [1]}'):
        for t in (O2A, A2O):
            out, usage, _ = t.response(body)
            assert usage is None and (out == body or json.loads(out))


def test_request_n_above_one():
    with pytest.raises(TranslationError) as e:
        o2a(n=2)
    assert e.value.param == "n"
    assert "n" not in o2a(n=1)


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def test_request_tools():
    out = o2a(tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}])
    assert out["tools"] == [
        {"name": "get_weather", "description": "Get the current weather",
         "input_schema": WEATHER_TOOL["function"]["parameters"]},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


@pytest.mark.parametrize("choice, parallel, expected", [
    ("auto", None, {"type": "auto"}),
    ("none", None, {"type": "none"}),
    ("required", None, {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ("none", False, {"type": "none"}),
    (None, True, None),
])
def test_request_tool_choice(choice, parallel, expected):
    body: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert o2a(**body).get("tool_choice") == expected


def test_request_tool_choice_without_tools_is_dropped():
    assert "tool_choice" not in o2a(tool_choice="required")


TOOL_CONVERSATION = [
    user("Weather in Paris and Rome?"),
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Rome"}'}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
    user("Thanks. Which is warmer?"),
]


def test_request_tool_round_trip():
    out = o2a(messages=TOOL_CONVERSATION, tools=[WEATHER_TOOL])
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "25C"},
            {"type": "text", "text": "Thanks. Which is warmer?"}]},
    ]


def test_request_assistant_text_with_tool_call_and_thinking_blocks():
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    out = o2a(messages=[user("q"), {"role": "assistant", "content": "Let me check.", "reasoning_content": "hmm",
                                    "thinking_blocks": [thinking],
                                    "tool_calls": [{"id": "c", "type": "function",
                                                    "function": {"name": "f", "arguments": ""}}]}])
    assert out["messages"][1]["content"] == [
        thinking, {"type": "text", "text": "Let me check."}, {"type": "tool_use", "id": "c", "name": "f", "input": {}}]


@pytest.mark.parametrize("body, expected", [
    ({"stop": "END"}, {"stop_sequences": ["END"]}),
    ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
    ({"stop": None}, {}),
    ({"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2, "top_p": 0.9}),
    ({"temperature": 1.7}, {"temperature": 1.0}),
    ({"max_tokens": 50}, {"max_tokens": 50}),
    ({"max_completion_tokens": 70, "max_tokens": 50}, {"max_tokens": 70}),
    ({"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
    ({"seed": 1, "presence_penalty": 0.5, "logprobs": True}, {}),
])
def test_request_sampling(body, expected):
    out = o2a(**body)
    base = {"model": "claude-x", "max_tokens": DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert out == {**base, **expected}


@pytest.mark.parametrize("effort, limit, thinking, max_tokens", [
    ("minimal", None, 1024, DEFAULT_MAX_TOKENS + 1024),
    ("low", None, 2048, DEFAULT_MAX_TOKENS + 2048),
    ("medium", None, 8192, DEFAULT_MAX_TOKENS + 8192),
    ("high", None, 16384, DEFAULT_MAX_TOKENS + 16384),
    ("high", 32000, 16384, 32000),
    ("high", 5000, 4999, 5000),
    ("none", None, None, DEFAULT_MAX_TOKENS),
])
def test_request_reasoning_effort(effort, limit, thinking, max_tokens):
    body: dict[str, Any] = {"reasoning_effort": effort, "temperature": 0.3, "top_p": 0.5}
    if limit:
        body["max_completion_tokens"] = limit
    out = o2a(**body)
    assert out["max_tokens"] == max_tokens
    if thinking is None:
        assert "thinking" not in out and out["temperature"] == 0.3 and out["top_p"] == 0.5
    else:
        assert out["thinking"] == {"type": "enabled", "budget_tokens": thinking}
        assert "temperature" not in out and out["top_p"] == 0.95  # what thinking allows


@pytest.mark.parametrize("body", [{"reasoning_effort": "low", "max_tokens": 1000}, {"reasoning_effort": "max"}])
def test_request_reasoning_effort_not_expressible(body):
    with pytest.raises(TranslationError):
        o2a(**body)


def test_request_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
              "additionalProperties": False}
    out = o2a(response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}})
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    out = o2a(response_format={"type": "json_object"}, messages=[{"role": "system", "content": "S"}, user("hi")])
    assert out["system"] == [{"type": "text", "text": "S"}, {"type": "text", "text": JSON_OBJECT_INSTRUCTION}]
    assert "output_config" not in o2a(response_format={"type": "text"})


# ---------------------------------------------------------------- Anthropic answer -> OpenAI


def anthropic_message(content, stop_reason="end_turn", **usage):
    return {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": content, "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 6, **usage}}


def test_response_text_and_usage_with_cache():
    body = json.dumps(anthropic_message([{"type": "text", "text": "Hi! My name is Claude."}],
                                        cache_read_input_tokens=100, cache_creation_input_tokens=30)).encode()
    out, usage, model = O2A.response(body)
    answer = json.loads(out)
    assert model == "claude-sonnet-4-5"
    assert usage == Usage(input_tokens=142, output_tokens=6, total_tokens=148, cached_input_tokens=100,
                          cache_creation_input_tokens=30)
    assert answer["object"] == "chat.completion" and answer["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert answer["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "Hi! My name is Claude."}}]
    assert answer["usage"] == {"prompt_tokens": 142, "completion_tokens": 6, "total_tokens": 148,
                               "prompt_tokens_details": {"cached_tokens": 100}}


def test_response_tool_use_and_thinking():
    thinking = {"type": "thinking", "thinking": "Paris first.", "signature": "EqQBCg"}
    body = json.dumps(anthropic_message([
        thinking,
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"location": "Rome"}},
    ], "tool_use")).encode()
    message = json.loads(O2A.response(body)[0])["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"] == {
        "role": "assistant", "content": "Checking.", "reasoning_content": "Paris first.",
        "thinking_blocks": [thinking],
        "tool_calls": [
            {"id": "toolu_01A", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}},
            {"id": "toolu_01B", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location":"Rome"}'}}]}
    only_tool = json.dumps(anthropic_message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                                             "tool_use")).encode()
    assert json.loads(O2A.response(only_tool)[0])["choices"][0]["message"]["content"] is None


STOP_TO_FINISH = [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                  ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("pause_turn", "stop"),
                  ("model_context_window_exceeded", "length"), ("something_new", "stop")]


@pytest.mark.parametrize("stop, finish", STOP_TO_FINISH)
def test_response_stop_reason(stop, finish):
    body = json.dumps(anthropic_message([{"type": "text", "text": "x"}], stop)).encode()
    assert json.loads(O2A.response(body)[0])["choices"][0]["finish_reason"] == finish


def test_response_not_a_message_is_relayed():
    assert O2A.response(b"<html>oops</html>") == (b"<html>oops</html>", None, None)


@pytest.mark.parametrize("status, atype, out_status, otype", [
    (400, "invalid_request_error", 400, "invalid_request_error"),
    (401, "authentication_error", 401, "authentication_error"),
    (403, "permission_error", 403, "permission_error"),
    (404, "not_found_error", 404, "invalid_request_error"),
    (413, "request_too_large", 413, "invalid_request_error"),
    (429, "rate_limit_error", 429, "rate_limit_error"),
    (500, "api_error", 500, "server_error"),
    (529, "overloaded_error", 503, "server_error"),
])
def test_error_anthropic_to_openai(status, atype, out_status, otype):
    body = json.dumps({"type": "error", "error": {"type": atype, "message": "details here"},
                       "request_id": "req_011"}).encode()
    got_status, got = O2A.error(status, body)
    assert got_status == out_status
    assert json.loads(got) == {"error": {"message": "details here", "type": otype, "param": None, "code": atype}}


def test_error_anthropic_not_json():
    status, body = O2A.error(502, b"Bad Gateway")
    assert status == 502 and json.loads(body)["error"]["message"] == "Bad Gateway"


# ---------------------------------------------------------------- Anthropic stream -> OpenAI


def anthropic_sse(events: list[dict[str, Any]], crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    return "".join(f"event: {e['type']}{nl}data: {json.dumps(e)}{nl}{nl}" for e in events).encode()


ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 472, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 1000,
                  "output_tokens": 2}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Weather? "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Use the tool."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "ping"},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Okay, let's check "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "the weather — é中 🌧."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"locat"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                          "partial_json": "ion\": \"San Francisco, CA\"}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
]


def run_o_stream(data: bytes, include_usage: bool = True, pieces: list[int] | None = None) -> tuple[bytes, Any]:
    st = AnthropicStreamToOpenAI(include_usage, created=1700000000)
    out = b""
    cuts = [0, *(pieces or []), len(data)]
    for a, b in itertools.pairwise(cuts):
        out += st.feed(data[a:b])
    return out + st.flush(), st


def openai_events(out: bytes) -> list[Any]:
    events = []
    for raw in out.decode().split("\n\n"):
        if raw:
            assert raw.startswith("data: ")
            events.append(raw[6:] if raw == "data: [DONE]" else json.loads(raw[6:]))
    return events


def test_stream_anthropic_to_openai():
    out, st = run_o_stream(anthropic_sse(ANTHROPIC_EVENTS))
    events = openai_events(out)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_014p7gG3wDgGV9EUtLvnow3U"
               and c["model"] == "claude-sonnet-4-5" and c["created"] == 1700000000 for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Weather? "},
        {"reasoning_content": "Use the tool."},
        {"content": "Okay, let's check "},
        {"content": "the weather — é中 🌧."},
        {"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{\"locat"}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "ion\": \"San Francisco, CA\"}"}}]},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None] * 8 + ["tool_calls"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 1492, "completion_tokens": 89, "total_tokens": 1581,
                                   "prompt_tokens_details": {"cached_tokens": 1000}}
    assert st.usage == Usage(1492, 89, 1581, 1000, 20) and st.model == "claude-sonnet-4-5"


def test_stream_anthropic_to_openai_split_at_every_byte():
    data = anthropic_sse(ANTHROPIC_EVENTS)
    whole, _ = run_o_stream(data)
    for i in range(1, len(data)):
        out, st = run_o_stream(data, pieces=[i])
        assert out == whole, i
        assert st.usage == Usage(1492, 89, 1581, 1000, 20)
    assert run_o_stream(data, pieces=list(range(1, len(data))))[0] == whole  # one byte at a time
    crlf = anthropic_sse(ANTHROPIC_EVENTS, crlf=True)
    for i in range(1, len(crlf), 7):
        assert run_o_stream(crlf, pieces=[i])[0] == whole, i


def test_stream_anthropic_without_usage_chunk():
    out, st = run_o_stream(anthropic_sse(ANTHROPIC_EVENTS), include_usage=False)
    assert not any(b'"usage"' in e for e in out.split(b"\n\n"))
    assert st.usage == Usage(1492, 89, 1581, 1000, 20)  # still read for accounting


def test_stream_anthropic_usage_counted_once():
    # Two message_deltas with cumulative counts, and one repeating the input counts: last wins.
    events = [ANTHROPIC_EVENTS[0], *ANTHROPIC_EVENTS[7:11],
              {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 10}},
              {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
               "usage": {"input_tokens": 472, "cache_read_input_tokens": 1000, "output_tokens": 15}},
              {"type": "message_stop"}]
    out, st = run_o_stream(anthropic_sse(events))
    assert st.usage == Usage(1492, 15, 1507, 1000, 20)
    chunks = openai_events(out)
    assert chunks[-3]["choices"][0]["finish_reason"] == "length"
    assert chunks[-2]["usage"]["prompt_tokens"] == 1492 and chunks[-2]["usage"]["completion_tokens"] == 15
    assert sum(1 for c in chunks if isinstance(c, dict) and c.get("usage")) == 1


def test_stream_anthropic_error_event():
    events = [*ANTHROPIC_EVENTS[:2],
              {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
              *ANTHROPIC_EVENTS[2:]]
    st = AnthropicStreamToOpenAI(True, created=1)
    out = st.feed(anthropic_sse(events))
    events_out = openai_events(out)
    assert events_out[-1] == {"error": {"message": "Overloaded", "type": "server_error", "param": None,
                                        "code": "overloaded_error"}}
    assert len(events_out) == 2  # the role chunk, then the error: nothing after it
    assert st.feed(b"event: ping\ndata: {\"type\": \"ping\"}\n\n") == b"" and st.flush() == b""
    assert st.usage is None


def test_stream_anthropic_cut_short():
    out, st = run_o_stream(anthropic_sse(ANTHROPIC_EVENTS[:9]))
    last = openai_events(out)[-1]
    assert last["error"]["code"] == "upstream_reset" and b"[DONE]" not in out
    assert st.usage is None  # output unknown: left to the token estimator


def test_stream_anthropic_ends_without_message_stop():
    out, _ = run_o_stream(anthropic_sse(ANTHROPIC_EVENTS[:-1]))
    whole, _ = run_o_stream(anthropic_sse(ANTHROPIC_EVENTS))
    assert out == whole


def test_stream_anthropic_last_event_without_blank_line():
    data = anthropic_sse(ANTHROPIC_EVENTS)[:-2]
    assert run_o_stream(data)[0] == run_o_stream(anthropic_sse(ANTHROPIC_EVENTS))[0]


# ---------------------------------------------------------------- Anthropic request -> OpenAI


def test_a2o_request_basic():
    out = json.loads(A2O.request({
        "model": "alias", "max_tokens": 1024, "stream": True, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
        "stop_sequences": ["\n\nHuman:"], "metadata": {"user_id": "u-1"},
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [user("Hello"), {"role": "assistant", "content": "Hi"},
                     {"role": "user", "content": [{"type": "text", "text": "Again"}]}]}, "gpt-4o"))
    assert out == {
        "model": "gpt-4o", "max_tokens": 1024, "temperature": 0.5, "top_p": 0.9, "stop": ["\n\nHuman:"],
        "user": "u-1", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "You are terse."}, user("Hello"),
                     {"role": "assistant", "content": "Hi"}, user("Again")]}


def test_a2o_request_images_documents():
    out = a2o(messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
        {"type": "text", "text": "Describe."}]}])
    assert out["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "text", "text": "plain doc"},
        {"type": "text", "text": "Describe."}]}]


ANTHROPIC_TOOL = {"name": "get_weather", "description": "Get the current weather",
                  "input_schema": WEATHER_TOOL["function"]["parameters"]}


def test_a2o_request_tools_and_results():
    out = a2o(tools=[ANTHROPIC_TOOL], messages=[
        user("Weather in Paris?"),
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "use tool", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "timeout"},
                         {"type": "image", "source": {"type": "url", "url": "https://x/radar.png"}}]},
            {"type": "text", "text": "And now?"}]},
    ])
    assert out["tools"] == [WEATHER_TOOL]
    assert out["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/radar.png"}},
                                     {"type": "text", "text": "And now?"}]},
    ]


@pytest.mark.parametrize("choice, expected, parallel", [
    ({"type": "auto"}, "auto", None),
    ({"type": "any"}, "required", None),
    ({"type": "none"}, "none", None),
    ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}, None),
    ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
])
def test_a2o_tool_choice(choice, expected, parallel):
    out = a2o(tools=[ANTHROPIC_TOOL], tool_choice=choice)
    assert out["tool_choice"] == expected and out.get("parallel_tool_calls") == parallel


@pytest.mark.parametrize("body", [
    {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "search_result", "source": "x"}]}]},
    {"messages": [{"role": "system", "content": "x"}]},
])
def test_a2o_not_expressible(body):
    with pytest.raises(TranslationError):
        a2o(**body)


@pytest.mark.parametrize("budget, effort", [(1024, "low"), (2048, "low"), (4000, "medium"), (8192, "medium"),
                                            (10000, "high"), (32000, "high")])
def test_a2o_thinking(budget, effort):
    assert a2o(thinking={"type": "enabled", "budget_tokens": budget})["reasoning_effort"] == effort
    assert "reasoning_effort" not in a2o(thinking={"type": "disabled"})


def test_a2o_output_format():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    for body in ({"output_config": {"format": {"type": "json_schema", "schema": schema}}},
                 {"output_format": {"type": "json_schema", "schema": schema}}):
        assert a2o(**body)["response_format"] == {
            "type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}


def test_round_trip_openai_anthropic_openai():
    """An OpenAI conversation through Anthropic's shape and back keeps its meaning."""
    anthropic = o2a(messages=[{"role": "system", "content": "S"}, *TOOL_CONVERSATION], tools=[WEATHER_TOOL],
                    tool_choice="required", stop=["x"], temperature=0.4)
    back = a2o_request(anthropic, "gpt-x")
    assert back["messages"] == [
        {"role": "system", "content": "S"}, user("Weather in Paris and Rome?"),
        TOOL_CONVERSATION[1], TOOL_CONVERSATION[2], {**TOOL_CONVERSATION[3], "content": "25C"}, TOOL_CONVERSATION[4]]
    assert back["tools"] == [WEATHER_TOOL] and back["tool_choice"] == "required"
    assert back["stop"] == ["x"] and back["temperature"] == 0.4


# ---------------------------------------------------------------- OpenAI answer -> Anthropic


def openai_answer(message, finish="stop", usage=None, **choice):
    return {"id": "chatcmpl-123", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish, **choice}],
            "usage": usage or {"prompt_tokens": 1200, "completion_tokens": 50, "total_tokens": 1250,
                               "prompt_tokens_details": {"cached_tokens": 1000},
                               "completion_tokens_details": {"reasoning_tokens": 20}}}


def test_a2o_response_text_and_usage():
    out, usage, model = A2O.response(json.dumps(openai_answer({"role": "assistant", "content": "Hello!"})).encode())
    assert model == "gpt-4o"
    assert usage == Usage(1200, 50, 1250, 1000, 0, 20)
    assert json.loads(out) == {
        "id": "chatcmpl-123", "type": "message", "role": "assistant", "model": "gpt-4o",
        "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 200, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1000,
                  "output_tokens": 50}}


def test_a2o_response_tool_calls_and_reasoning():
    out, _, _ = A2O.response(json.dumps(openai_answer({
        "role": "assistant", "content": None, "reasoning_content": "think",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
                       {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
        "tool_calls")).encode())
    answer = json.loads(out)
    assert answer["stop_reason"] == "tool_use"
    assert answer["content"] == [
        {"type": "thinking", "thinking": "think", "signature": ""},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "f", "input": {"arguments": "not json"}}]


FINISH_TO_STOP = [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
                  ("function_call", "tool_use"), ("content_filter", "refusal"), (None, "end_turn")]


@pytest.mark.parametrize("finish, stop", FINISH_TO_STOP)
def test_a2o_response_finish_reason(finish, stop):
    out = json.loads(A2O.response(json.dumps(openai_answer({"role": "assistant", "content": "x"}, finish)).encode())[0])
    assert out["stop_reason"] == stop


def test_a2o_response_stop_sequence_from_vllm():
    out = json.loads(A2O.response(json.dumps(openai_answer({"role": "assistant", "content": "x"}, "stop",
                                                           stop_reason="END")).encode())[0])
    assert out["stop_reason"] == "stop_sequence" and out["stop_sequence"] == "END"


@pytest.mark.parametrize("status, body, atype, message", [
    (400, {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}},
     "invalid_request_error", "bad"),
    (401, {"error": {"message": "no key", "type": "invalid_request_error"}}, "authentication_error", "no key"),
    (404, {"error": "model 'x' not found"}, "not_found_error", "model 'x' not found"),  # Ollama
    (400, {"object": "error", "message": "too long", "type": "BadRequestError", "code": 400},
     "invalid_request_error", "too long"),  # older vLLM
    (422, {"detail": "validation"}, "invalid_request_error", "validation"),
    (429, {"error": {"message": "slow down", "type": "rate_limit_error"}}, "rate_limit_error", "slow down"),
    (500, {"error": {"message": "boom"}}, "api_error", "boom"),
    (503, {"error": {"message": "busy"}}, "overloaded_error", "busy"),
    (504, "gateway timeout", "timeout_error", "gateway timeout"),
])
def test_error_openai_to_anthropic(status, body, atype, message):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    got_status, got = A2O.error(status, raw)
    assert got_status == status
    assert json.loads(got) == {"type": "error", "error": {"type": atype, "message": message}}


# ---------------------------------------------------------------- OpenAI stream -> Anthropic


def chunk(delta=None, finish=None, usage=None, choices=True, **choice):
    c: dict[str, Any] = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                         "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish,
                                      **choice}] if choices else []}
    if usage is not None:
        c["usage"] = usage
    return c


OPENAI_USAGE = {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340,
                "prompt_tokens_details": {"cached_tokens": 100}}
OPENAI_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Think "}),
    chunk({"reasoning_content": "hard."}),
    chunk({"content": "Sure — é中 🌧, "}),
    chunk({"content": "checking."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_A", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": \"Paris\"}"}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_B", "type": "function",
                           "function": {"name": "get_time", "arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
    chunk(usage=OPENAI_USAGE, choices=False),
]


def openai_sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + (b"data: [DONE]\n\n" if done else b"")


def run_a_stream(data: bytes, pieces: list[int] | None = None) -> tuple[bytes, OpenAIStreamToAnthropic]:
    st = A2O.stream(False)
    out = b""
    cuts = [0, *(pieces or []), len(data)]
    for a, b in itertools.pairwise(cuts):
        out += st.feed(data[a:b])
    return out + st.flush(), st


def anthropic_events(out: bytes) -> list[dict[str, Any]]:
    parser = SSEParser()
    events = parser.feed(out)
    assert parser.flush() == []
    for name, data in events:
        assert name == json.loads(data)["type"]
    return [json.loads(data) for _, data in events]


def test_stream_openai_to_anthropic():
    out, st = run_a_stream(openai_sse(OPENAI_CHUNKS))
    events = anthropic_events(out)
    assert events == [
        {"type": "message_start", "message": {
            "id": "chatcmpl-9", "type": "message", "role": "assistant", "model": "gpt-4o", "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "",
                                                                      "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Think "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hard."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Sure — é中 🌧, "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "checking."}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "call_A", "name": "get_weather", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                              "partial_json": "{\"location\""}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                              "partial_json": ": \"Paris\"}"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "content_block_start", "index": 3, "content_block": {
            "type": "tool_use", "id": "call_B", "name": "get_time", "input": {}}},
        {"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 3},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
         "usage": {"input_tokens": 200, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100,
                   "output_tokens": 40}},
        {"type": "message_stop"},
    ]
    assert st.usage == Usage(300, 40, 340, 100) and st.model == "gpt-4o"


def test_stream_openai_to_anthropic_split_at_every_byte():
    data = openai_sse(OPENAI_CHUNKS)
    whole, _ = run_a_stream(data)
    for i in range(1, len(data)):
        out, st = run_a_stream(data, pieces=[i])
        assert out == whole, i
        assert st.usage == Usage(300, 40, 340, 100)
    assert run_a_stream(data, pieces=list(range(1, len(data))))[0] == whole
    crlf = data.replace(b"\n", b"\r\n")
    for i in range(1, len(crlf), 7):
        assert run_a_stream(crlf, pieces=[i])[0] == whole, i


def test_stream_openai_usage_taken_once():
    # vLLM's continuous usage stats: cumulative usage on every chunk; the last one counts.
    chunks = [chunk({"role": "assistant", "content": "a"}, usage={"prompt_tokens": 300, "completion_tokens": 1}),
              chunk({"content": "b"}, usage={"prompt_tokens": 300, "completion_tokens": 2}),
              chunk({}, "length", usage={"prompt_tokens": 300, "completion_tokens": 3, "total_tokens": 303})]
    out, st = run_a_stream(openai_sse(chunks))
    delta = anthropic_events(out)[-2]
    assert delta == {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                     "usage": {"input_tokens": 300, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                               "output_tokens": 3}}
    assert st.usage == Usage(300, 3, 303)


def test_stream_openai_stop_sequence_and_no_done():
    chunks = [chunk({"role": "assistant", "content": "x"}), chunk({}, "stop", stop_reason="END"),
              chunk(usage=OPENAI_USAGE, choices=False)]
    out, _ = run_a_stream(openai_sse(chunks, done=False))  # some servers just close the stream
    events = anthropic_events(out)
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert events[-1] == {"type": "message_stop"}


def test_stream_openai_error_event():
    data = openai_sse(OPENAI_CHUNKS[:3], done=False) + b'data: {"error": {"message": "overloaded", "type": ' \
        b'"server_error", "code": 503}}\n\n' + openai_sse(OPENAI_CHUNKS[3:])
    st = A2O.stream(True)
    events = anthropic_events(st.feed(data))
    assert events[-1] == {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}
    assert not any(e["type"] in ("message_delta", "message_stop") for e in events)
    assert st.flush() == b"" and st.usage is None


@pytest.mark.parametrize("data", [openai_sse(OPENAI_CHUNKS[:4], done=False), b"", b"data: [DONE]\n\n"])
def test_stream_openai_cut_short(data):
    out, st = run_a_stream(data)
    last = anthropic_events(out)[-1]
    assert last["type"] == "error" and last["error"]["type"] == "api_error"
    assert st.usage is None


# ---------------------------------------------------------------- SSE framing


def test_sse_parser_framing():
    p = SSEParser()
    assert p.feed(b": keep-alive\n\nevent: a\ndata: 1\ndata: 2\n\nretry: 5\n\nda") == [("a", "1\n2")]
    assert p.feed(b"ta:x\r") == []
    assert p.feed(b"\n\r\ndata: y\r\r") == [(None, "x"), (None, "y")]
    assert p.flush() == []


# ---------------------------------------------------------------- the official SDKs read what we write


def sdk_clients(body: bytes, status: int = 200, ctype: str = "text/event-stream"):
    """An OpenAI and an Anthropic client whose every request gets this answer."""
    import anthropic
    import openai

    # Use the HTTP library the SDKs are built on (httpx, or a fork of it), found from their client class.
    base = next(c for c in type(openai.OpenAI(api_key="x")._client).__mro__ if not c.__module__.startswith("openai"))
    httpx = importlib.import_module(base.__module__.split(".")[0])

    def client():
        transport = httpx.MockTransport(lambda _: httpx.Response(status, content=body, headers={"content-type": ctype}))
        return httpx.Client(transport=transport)

    return (openai.OpenAI(api_key="x", base_url="http://t/v1", max_retries=0, http_client=client()),
            anthropic.Anthropic(api_key="x", base_url="http://t", max_retries=0, http_client=client()))


ASK = {"model": "m", "messages": [user("hi")]}


def test_openai_sdk_reads_translated_stream():
    st = O2A.stream(True)
    oai, _ = sdk_clients(st.feed(anthropic_sse(ANTHROPIC_EVENTS)) + st.flush())
    with oai.chat.completions.stream(**ASK) as s:
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Okay, let's check the weather — é中 🌧."
    assert choice.message.tool_calls[0].function.arguments == '{"location": "San Francisco, CA"}'
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (1492, 89)


def test_anthropic_sdk_reads_translated_stream():
    st = A2O.stream(False)
    _, ant = sdk_clients(st.feed(openai_sse(OPENAI_CHUNKS)) + st.flush())
    with ant.messages.stream(max_tokens=10, **ASK) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[2].input == {"location": "Paris"} and final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (200, 100, 40)


def test_sdks_raise_on_translated_errors():
    import anthropic
    import openai

    st = O2A.stream(True)
    oai, _ = sdk_clients(st.feed(anthropic_sse([ANTHROPIC_EVENTS[0], {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}])))
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(oai.chat.completions.create(stream=True, **ASK))
    status, body = A2O.error(429, b'{"error": {"message": "slow down", "type": "rate_limit_error"}}')
    _, ant = sdk_clients(body, status, "application/json")
    with pytest.raises(anthropic.RateLimitError, match="slow down"):
        ant.messages.create(max_tokens=10, **ASK)
    status, body = O2A.error(529, b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}')
    oai, _ = sdk_clients(body, status, "application/json")
    with pytest.raises(openai.InternalServerError, match="Overloaded"):
        oai.chat.completions.create(**ASK)

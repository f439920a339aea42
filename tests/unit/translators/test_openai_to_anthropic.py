"""The OpenAI -> Anthropic translator (OpenAIToAnthropic): an OpenAI chat completion request sent to
an Anthropic Messages backend, its answer, errors and event stream read back as OpenAI's (pure, no
processes)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from modelyard.core.usage import Usage
from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.openai_anthropic import (
    DEFAULT_MAX_TOKENS,
    JSON_OBJECT_INSTRUCTION,
    AnthropicStreamToOpenAI,
)
from tests.unit.translators.samples import (
    ANTHROPIC_EVENTS,
    O2A,
    PNG,
    TOOL_CONVERSATION,
    WEATHER_TOOL,
    anthropic_sse,
    o2a,
    user,
)

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

def test_request_n_above_one():
    with pytest.raises(TranslationError) as e:
        o2a(n=2)
    assert e.value.param == "n"
    assert "n" not in o2a(n=1)

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

"""The Anthropic -> OpenAI translator (AnthropicToOpenAI): an Anthropic Messages request sent to an
OpenAI-compatible backend, its answer, errors and event stream read back as Anthropic's (pure, no
processes)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from modelyard.core.usage import Usage
from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.anthropic_openai import OpenAIStreamToAnthropic
from modelyard.gateway.translators.common import SSEParser
from tests.unit.translators.samples import (
    A2O,
    OPENAI_CHUNKS,
    OPENAI_USAGE,
    PNG,
    WEATHER_TOOL,
    a2o,
    chunk,
    openai_sse,
    user,
)

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

"""The translators to Claude on Bedrock's InvokeModel (schema AWSAnthropic), for Anthropic clients
(AnthropicToAWSAnthropic) and OpenAI clients (OpenAIToAWSAnthropic): the request body, the answer,
errors, and InvokeModelWithResponseStream's event stream unwrapped into each client's SSE (pure, no
processes). Samples follow Bedrock's documented Claude Messages request and response, and
Anthropic's documented stream events (tests/unit/translators/samples.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.anthropic_awsanthropic import (BEDROCK_BETAS, AnthropicToAWSAnthropic,
                                                                  bedrock_betas)
from modelyard.gateway.translators.anthropic_awsanthropic_stream import InvokeModelStream
from modelyard.gateway.translators.anthropic_hosted import AnthropicEvents
from modelyard.gateway.translators.aws_eventstream import ANTHROPIC_STREAM_ERRORS, STREAM_EXCEPTIONS
from modelyard.gateway.translators.openai_anthropic import AnthropicStreamToOpenAI
from modelyard.gateway.translators.openai_awsanthropic import OpenAIToAWSAnthropic
from tests.unit.translators.eventstream import chunk, exception, message
from tests.unit.translators.samples import ANTHROPIC_EVENTS, WEATHER_TOOL, feed_all, sse_pairs, user
from tests.unit.translators.samples import sdk_clients

A2A = AnthropicToAWSAnthropic()
O2A = OpenAIToAWSAnthropic()
MODEL = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
# Bedrock adds its invocation metrics to the last event.
METRICS = {"inputTokenCount": 472, "outputTokenCount": 89, "invocationLatency": 2519, "firstByteLatency": 623}
EVENTS = [*ANTHROPIC_EVENTS[:-1], {"type": "message_stop", "amazon-bedrock-invocationMetrics": METRICS}]
STREAM = b"".join(chunk(e) for e in EVENTS)
ASK = {"model": "m", "max_tokens": 10, "messages": [user("hi")]}


# ---------------------------------------------------------------- requests


def test_anthropic_body_as_invoke_model_takes_it():
    body = {"model": "claude", "stream": True, "max_tokens": 1024, "anthropic_version": "2023-06-01",
            "system": "Be brief.", "messages": [{"role": "user", "content": "Hello, world"}],
            "temperature": 0.3, "top_k": 5, "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "thinking": {"type": "enabled", "budget_tokens": 1024}}
    out = json.loads(A2A.request(dict(body), MODEL))
    assert out == {k: v for k, v in body.items() if k not in ("model", "stream")} | {
        "anthropic_version": "bedrock-2023-05-31"}


def test_beta_header_to_the_body_with_the_flags_bedrock_takes():
    body = {"max_tokens": 10, "messages": [user("hi")]}
    header = ("claude-code-20250219, interleaved-thinking-2025-05-14,oauth-2025-04-20,"
              "advanced-tool-use-2025-11-20,tool-search-tool-2025-10-19,interleaved-thinking-2025-05-14")
    out = json.loads(A2A.request_with_headers(dict(body), MODEL, {"anthropic-beta": header}))
    assert out["anthropic_beta"] == ["interleaved-thinking-2025-05-14", "tool-search-tool-2025-10-19"]
    # The client's own body list (Anthropic's Bedrock SDK writes one) is kept as written, the header's joined.
    own = json.loads(A2A.request_with_headers({**body, "anthropic_beta": ["x-own"]}, MODEL,
                                              {"anthropic-beta": "context-1m-2025-08-07"}))
    assert own["anthropic_beta"] == ["x-own", "context-1m-2025-08-07"]
    assert "anthropic_beta" not in json.loads(A2A.request_with_headers(dict(body), MODEL, {}))
    assert "anthropic_beta" not in json.loads(A2A.request_with_headers(dict(body), MODEL, {"anthropic-beta": "nope"}))
    assert bedrock_betas(None) == [] and all(bedrock_betas(flag) == [flag] for flag in BEDROCK_BETAS)


def test_anthropic_body_needs_messages():
    with pytest.raises(TranslationError, match="messages"):
        A2A.request({"max_tokens": 1}, MODEL)


def test_openai_request_through_the_anthropic_translation():
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 50,
            "messages": [{"role": "system", "content": "S"}, user("Weather?")], "tools": [WEATHER_TOOL],
            "tool_choice": "required"}
    out = json.loads(O2A.request(body, MODEL))
    assert out == {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 50, "system": "S",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}],
        "tools": [{"name": "get_weather", "description": "Get the current weather",
                   "input_schema": WEATHER_TOOL["function"]["parameters"]}],
        "tool_choice": {"type": "any"}}
    with pytest.raises(TranslationError):
        O2A.request({"model": "m", "messages": [user("hi")], "n": 2}, MODEL)


# ---------------------------------------------------------------- whole answers

DOCS_ANSWER = {"id": "msg_bdrk_01E3nEhQmzMZhnPDVEgxbhEr", "type": "message", "role": "assistant",
               "model": "claude-3-7-sonnet-20250219", "content": [{"type": "text", "text": "Hello! How can I help?"}],
               "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4,
                         "output_tokens": 9}}


def test_anthropic_answer_goes_through_with_its_usage():
    raw = json.dumps(DOCS_ANSWER).encode()
    out, usage, model = A2A.response(raw)
    assert out is raw and model == "claude-3-7-sonnet-20250219"
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (16, 4, 9)
    for body in (b"not json", b'{"content": []}', b'{"usage": {"input_tokens": "x"}}'):
        assert A2A.response(body) == (body, None, None)


def test_openai_answer():
    out, usage, model = O2A.response(json.dumps(DOCS_ANSWER).encode())
    completion = json.loads(out)
    assert completion["choices"][0]["message"]["content"] == "Hello! How can I help?"
    assert completion["usage"]["prompt_tokens"] == 16 and model == "claude-3-7-sonnet-20250219"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("status, etype, otype", [
    (400, "invalid_request_error", "invalid_request_error"), (403, "permission_error", "permission_error"),
    (429, "rate_limit_error", "rate_limit_error"), (500, "api_error", "server_error"),
    (503, "overloaded_error", "server_error")])
def test_bedrock_errors_in_each_clients_shape(status, etype, otype):
    body = b'{"message": "It went wrong."}'
    got, out = A2A.error(status, body)
    assert got == status and json.loads(out) == {"type": "error", "error": {"type": etype, "message": "It went wrong."}}
    got, out = O2A.error(status, body)
    assert got == status and json.loads(out)["error"]["type"] == otype
    assert json.loads(out)["error"]["message"] == "It went wrong."


# ---------------------------------------------------------------- streams, Anthropic clients


def test_anthropic_client_gets_the_events_as_sse():
    st = A2A.stream(False)
    assert isinstance(st, InvokeModelStream) and isinstance(st.sink, AnthropicEvents)
    out = feed_all(st, STREAM)
    assert sse_pairs(out) == [(e["type"], e) for e in EVENTS]
    assert st.model == "claude-sonnet-4-5"
    assert (st.usage.input_tokens, st.usage.cached_input_tokens, st.usage.cache_creation_input_tokens,
            st.usage.output_tokens) == (1492, 1000, 20, 89)


def test_split_at_every_byte_same_output():
    whole = feed_all(A2A.stream(False), STREAM)
    assert feed_all(A2A.stream(False), STREAM, list(range(1, len(STREAM)))) == whole
    openai_whole = feed_all(O2A.stream(True), STREAM)
    openai_split = feed_all(O2A.stream(True), STREAM, list(range(1, len(STREAM))))
    assert _without_created(openai_split) == _without_created(openai_whole)


def _without_created(out: bytes) -> list[Any]:
    return [{k: v for k, v in e.items() if k != "created"} if isinstance(e, dict) else e for _, e in sse_pairs(out)]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_split_same_output(data):
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(STREAM) - 1), max_size=20))))
    assert feed_all(A2A.stream(False), STREAM, cuts) == feed_all(A2A.stream(False), STREAM)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, len(STREAM)))
def test_untrusted_bytes_never_raise_and_give_whole_events(noise, at):
    out = feed_all(A2A.stream(False), STREAM[:at] + noise + STREAM[at:])
    assert sse_pairs(out)[-1][0] in ("message_stop", "error")
    openai = sse_pairs(feed_all(O2A.stream(True), STREAM[:at] + noise + STREAM[at:]))
    assert openai[-1][1] == "[DONE]" or "error" in openai[-1][1]


@pytest.mark.parametrize("kind", sorted(STREAM_EXCEPTIONS))
def test_exception_ends_the_stream_with_anthropics_error_event(kind):
    st = A2A.stream(False)
    out = st.feed(chunk(EVENTS[0]) + exception(kind, "Too many tokens.") + chunk(EVENTS[1]))
    assert sse_pairs(out)[-1] == ("error", {"type": "error", "error": {
        "type": ANTHROPIC_STREAM_ERRORS.get(kind, "api_error"), "message": "Too many tokens."}})
    assert st.feed(chunk(EVENTS[2])) == b"" and st.flush() == b""


def test_error_message_invalid_bytes_and_undecodable_chunks():
    err = message({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b"")
    assert sse_pairs(feed_all(A2A.stream(False), chunk(EVENTS[0]) + err))[-1] == (
        "error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})
    good = chunk(EVENTS[1])
    out = feed_all(A2A.stream(False), chunk(EVENTS[0]) + good[:-1] + bytes([good[-1] ^ 1]))
    assert [name for name, _ in sse_pairs(out)] == ["message_start", "error"]
    skipped = [message({":message-type": "event", ":event-type": "chunk"}, json.dumps({"bytes": b}).encode())
               for b in ("%%%", "/w==")]  # not base64; base64 of bytes that are not UTF-8
    other = message({":message-type": "event", ":event-type": "somethingNew"}, b"{}")
    out = feed_all(A2A.stream(False), b"".join([chunk(EVENTS[0]), *skipped, other, *map(chunk, EVENTS[1:])]))
    assert sse_pairs(out) == [(e["type"], e) for e in EVENTS]


def test_cut_streams():
    # Cut before the answer ended: an error event says so.
    out = feed_all(A2A.stream(False), b"".join(map(chunk, EVENTS[:3])))
    assert sse_pairs(out)[-1][0] == "error" and "ended before" in out.decode()
    # Cut after message_delta (only message_stop missing): the stop is added.
    out = feed_all(A2A.stream(False), b"".join(map(chunk, EVENTS[:-1])))
    assert sse_pairs(out)[-1] == ("message_stop", {"type": "message_stop"})


def test_anthropic_sdk_reads_the_stream():
    st = A2A.stream(False)
    _, ant = sdk_clients(feed_all(st, STREAM))
    with ant.messages.stream(**ASK) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[2].input == {"location": "San Francisco, CA"} and final.stop_reason == "tool_use"


def test_anthropic_sdk_raises_on_a_stream_exception():
    import anthropic

    st = A2A.stream(False)
    _, ant = sdk_clients(feed_all(st, chunk(EVENTS[0]) + exception("throttlingException", "Too many tokens.")))
    with pytest.raises(anthropic.APIStatusError, match="Too many tokens"):
        with ant.messages.stream(**ASK) as s:
            s.get_final_message()


# ---------------------------------------------------------------- streams, OpenAI clients


def test_openai_client_gets_chunks():
    st = O2A.stream(True)
    assert isinstance(st, InvokeModelStream) and isinstance(st.sink, AnthropicStreamToOpenAI)
    oai, _ = sdk_clients(feed_all(st, STREAM))
    with oai.chat.completions.stream(model="m", messages=[user("hi")]) as s:
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Okay, let's check the weather — é中 🌧."
    assert choice.message.tool_calls[0].function.arguments == '{"location": "San Francisco, CA"}'
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (1492, 89)
    assert (st.usage.input_tokens, st.usage.output_tokens) == (1492, 89) and st.model == "claude-sonnet-4-5"


def test_openai_client_gets_an_error_chunk():
    import openai

    st = O2A.stream(False)
    oai, _ = sdk_clients(feed_all(st, chunk(EVENTS[0]) + exception("serviceUnavailableException", "Busy.")))
    with pytest.raises(openai.APIError, match="Busy"):
        list(oai.chat.completions.create(model="m", messages=[user("hi")], stream=True))

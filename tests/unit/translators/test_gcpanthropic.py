"""The translators to Claude on Vertex AI's rawPredict (schema GCPAnthropic), for Anthropic clients
(AnthropicToGCPAnthropic) and OpenAI clients (OpenAIToGCPAnthropic): the request body, the answer,
errors in Anthropic's and Google's shapes, and streamRawPredict's SSE (pure, no processes). Samples
follow Anthropic's documented Vertex request and stream, and Google's documented error bodies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.anthropic_gcpanthropic import AnthropicToGCPAnthropic
from modelyard.gateway.translators.anthropic_hosted import AnthropicEvents
from modelyard.gateway.translators.openai_anthropic import AnthropicStreamToOpenAI
from modelyard.gateway.translators.openai_gcpanthropic import OpenAIToGCPAnthropic
from tests.unit.translators.samples import ANTHROPIC_EVENTS, anthropic_sse, feed_all, sse_pairs, user
from tests.unit.translators.samples import sdk_clients

A2G = AnthropicToGCPAnthropic()
O2G = OpenAIToGCPAnthropic()
MODEL = "claude-sonnet-4@20250514"
STREAM = anthropic_sse(ANTHROPIC_EVENTS)
ASK = {"model": "m", "max_tokens": 10, "messages": [user("hi")]}


# ---------------------------------------------------------------- requests


def test_anthropic_body_as_raw_predict_takes_it():
    body = {"model": "claude", "stream": True, "max_tokens": 256, "anthropic_version": "2023-06-01",
            "messages": [{"role": "user", "content": "Hey Claude!"}]}
    out = json.loads(A2G.request(dict(body), MODEL))
    # As documented: no model (it is in the URL), anthropic_version vertex-2023-10-16 in the body, stream kept.
    assert out == {"stream": True, "max_tokens": 256, "messages": [{"role": "user", "content": "Hey Claude!"}],
                   "anthropic_version": "vertex-2023-10-16"}
    with pytest.raises(TranslationError, match="messages"):
        A2G.request({"max_tokens": 1}, MODEL)


def test_beta_header_flags_are_added_to_the_body():
    body = {"max_tokens": 10, "messages": [user("hi")], "anthropic_beta": "context-1m-2025-08-07"}
    out = json.loads(A2G.request_with_headers(dict(body), MODEL, {
        "anthropic-beta": "context-management-2025-06-27, context-1m-2025-08-07"}))
    assert out["anthropic_beta"] == ["context-1m-2025-08-07", "context-management-2025-06-27"]
    assert "anthropic_beta" not in json.loads(A2G.request_with_headers({"messages": []}, MODEL, {}))


def test_openai_request_through_the_anthropic_translation():
    out = json.loads(O2G.request({"model": "m", "stream": True, "messages": [user("Hello")],
                                  "max_completion_tokens": 100}, MODEL))
    assert out == {"anthropic_version": "vertex-2023-10-16", "max_tokens": 100, "stream": True,
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]}


# ---------------------------------------------------------------- answers

ANSWER = {"id": "msg_vrtx_0147P6ZYwtg8oEzY2y8AxMTn", "type": "message", "role": "assistant",
          "model": "claude-sonnet-4-20250514", "content": [{"type": "text", "text": "Hello!"}],
          "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 5}}


def test_answers():
    raw = json.dumps(ANSWER).encode()
    out, usage, model = A2G.response(raw)
    assert out is raw and (usage.input_tokens, usage.output_tokens, model) == (10, 5, "claude-sonnet-4-20250514")
    out, usage, _ = O2G.response(raw)
    assert json.loads(out)["choices"][0]["message"]["content"] == "Hello!" and usage.total_tokens == 15


# ---------------------------------------------------------------- errors

ANTHROPIC_ERROR = b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
GOOGLE_ERROR = {"error": {"code": 429, "message": "Quota exceeded for aiplatform.googleapis.com/online_prediction",
                          "status": "RESOURCE_EXHAUSTED"}}


def test_errors_in_anthropics_shape_go_through():
    assert A2G.error(529, ANTHROPIC_ERROR) == (529, ANTHROPIC_ERROR)
    status, out = O2G.error(529, ANTHROPIC_ERROR)
    assert status == 503 and json.loads(out)["error"]["message"] == "Overloaded"


@pytest.mark.parametrize("body", [json.dumps(GOOGLE_ERROR).encode(), json.dumps([GOOGLE_ERROR]).encode()])
def test_errors_in_googles_shape(body):
    status, out = A2G.error(429, body)
    assert status == 429 and json.loads(out) == {"type": "error", "error": {
        "type": "rate_limit_error", "message": GOOGLE_ERROR["error"]["message"]}}
    status, out = O2G.error(429, body)
    assert status == 429 and json.loads(out)["error"]["type"] == "rate_limit_error"
    assert json.loads(out)["error"]["message"] == GOOGLE_ERROR["error"]["message"]


def test_errors_not_json_and_the_sdks_raise():
    import anthropic
    import openai

    assert json.loads(A2G.error(404, b"Not Found")[1]) == {"type": "error", "error": {
        "type": "not_found_error", "message": "Not Found"}}
    assert json.loads(O2G.error(502, b"")[1])["error"]["message"] == "upstream answered 502"
    _, ant = sdk_clients(A2G.error(403, json.dumps({"error": {"code": 403, "message": "Permission denied",
                                                              "status": "PERMISSION_DENIED"}}).encode())[1],
                         403, "application/json")
    with pytest.raises(anthropic.PermissionDeniedError, match="Permission denied"):
        ant.messages.create(**ASK)
    oai, _ = sdk_clients(O2G.error(429, json.dumps([GOOGLE_ERROR]).encode())[1], 429, "application/json")
    with pytest.raises(openai.RateLimitError, match="Quota exceeded"):
        oai.chat.completions.create(model="m", messages=[user("hi")])


# ---------------------------------------------------------------- streams


def test_anthropic_client_gets_the_events_as_they_came():
    st = A2G.stream(False)
    assert isinstance(st, AnthropicEvents)
    out = feed_all(st, STREAM)
    assert sse_pairs(out) == [(e["type"], e) for e in ANTHROPIC_EVENTS]
    assert st.model == "claude-sonnet-4-5" and (st.usage.input_tokens, st.usage.output_tokens) == (1492, 89)


def test_crlf_comments_and_named_events_keep_their_names():
    data = (b": keep-alive\r\n\r\n" + anthropic_sse(ANTHROPIC_EVENTS[:1], crlf=True)
            + b"event: custom\ndata: not json\n\n" + anthropic_sse(ANTHROPIC_EVENTS[1:]))
    out = feed_all(A2G.stream(False), data)
    # Comments go, line ends become LF, an event keeps its name and its data even when it is not JSON.
    assert out == anthropic_sse(ANTHROPIC_EVENTS[:1]) + b"event: custom\ndata: not json\n\n" \
        + anthropic_sse(ANTHROPIC_EVENTS[1:])


def test_split_at_every_byte_same_output():
    whole = feed_all(A2G.stream(False), STREAM)
    assert feed_all(A2G.stream(False), STREAM, list(range(1, len(STREAM)))) == whole


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_split_same_output(data):
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(STREAM) - 1), max_size=20))))
    assert feed_all(A2G.stream(False), STREAM, cuts) == feed_all(A2G.stream(False), STREAM)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, len(STREAM)))
def test_untrusted_bytes_give_whole_events(noise, at):
    out = feed_all(A2G.stream(False), STREAM[:at] + noise + STREAM[at:])
    assert out.endswith(b"\n\n") and b"\n\n\n" not in out.replace(b"\r", b"")


def test_cut_stream_and_error_event():
    out = feed_all(A2G.stream(False), anthropic_sse(ANTHROPIC_EVENTS[:4]))
    assert sse_pairs(out)[-1][0] == "error"
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    st = A2G.stream(False)
    out = feed_all(st, anthropic_sse([ANTHROPIC_EVENTS[0], error, ANTHROPIC_EVENTS[1]]))
    assert [name for name, _ in sse_pairs(out)] == ["message_start", "error"] and st.feed(STREAM) == b""


def test_openai_client_gets_chunks():
    st = O2G.stream(True)
    assert isinstance(st, AnthropicStreamToOpenAI)
    oai, _ = sdk_clients(feed_all(st, STREAM))
    with oai.chat.completions.stream(model="m", messages=[user("hi")]) as s:
        final = s.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls" and final.usage.completion_tokens == 89


def test_anthropic_sdk_reads_the_stream():
    _, ant = sdk_clients(feed_all(A2G.stream(False), STREAM))
    with ant.messages.stream(**ASK) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"] and final.usage.output_tokens == 89

"""The OpenAI <- Vertex AI streamGenerateContent (alt=sse) stream translator: SSE bytes, split anywhere,
in; OpenAI chat.completion.chunk events out (pure, no processes)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.gateway.translators.openai_gemini import OpenAIToGemini
from modelyard.gateway.translators.openai_gemini_answer import call_id
from modelyard.gateway.translators.openai_gemini_stream import GeminiStreamToOpenAI
from tests.unit.translators.gemini_samples import ERRORS, STREAM_EVENTS, STREAM_USAGE, TEXT_EVENTS, sse
from tests.unit.translators.samples import DONE, deltas, events, sdk_clients, user

STREAM = sse(STREAM_EVENTS)
CREATED = 1748764800  # the events' createTime, 2025-06-01T08:00:00.5Z


def translate(data: bytes, include_usage: bool = False, cuts: list[int] | None = None) -> tuple[bytes, GeminiStreamToOpenAI]:
    st_ = GeminiStreamToOpenAI(include_usage)
    bounds = [0, *(cuts or []), len(data)]
    out = b"".join(st_.feed(data[a:b]) for a, b in zip(bounds, bounds[1:]))
    return out + st_.flush(), st_


def finishes(out: bytes) -> list[tuple[int, str]]:
    return [(c["index"], c["finish_reason"]) for e in events(out) if isinstance(e, dict)
            for c in e.get("choices") or [] if c["finish_reason"]]


# ---------------------------------------------------------------- streams


def test_stream_with_thoughts_text_and_a_call():
    out, st_ = translate(STREAM)
    evs = events(out)
    assert evs[-1] == "[DONE]"
    chunks = evs[:-1]
    assert all(c["id"] == "stream-1" and c["object"] == "chat.completion.chunk" and c["created"] == CREATED
               and c["model"] == "gemini-2.5-flash" for c in chunks)
    assert deltas(out) == [
        {"role": "assistant", "content": ""}, {"reasoning_content": "Think "}, {"reasoning_content": "hard."},
        {"content": "Hel"}, {"content": "lo — é中 🌧."},
        {"tool_calls": [{"index": 0, "id": call_id("stream-1", 0, 0), "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}]},
        {}]
    assert finishes(out) == [(0, "tool_calls")]
    assert st_.model == "gemini-2.5-flash"
    # The last usageMetadata is the answer's; completion counts the thoughts.
    assert (st_.usage.input_tokens, st_.usage.output_tokens, st_.usage.total_tokens, st_.usage.reasoning_tokens) == (
        10, 12, 22, 4)


def test_crlf_and_lf_framing_read_alike():
    assert translate(sse(STREAM_EVENTS, crlf=False))[0] == translate(STREAM)[0]


@pytest.mark.parametrize("include_usage", [True, False])
def test_usage_chunk_only_with_include_usage(include_usage):
    out, _ = translate(STREAM, include_usage)
    evs = events(out)
    usage_chunks = [e for e in evs if isinstance(e, dict) and "usage" in e]
    if include_usage:
        assert usage_chunks == [{"id": "stream-1", "object": "chat.completion.chunk", "created": CREATED,
                                 "model": "gemini-2.5-flash", "choices": [], "usage": {
                                     "prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22,
                                     "prompt_tokens_details": {"cached_tokens": 0},
                                     "completion_tokens_details": {"reasoning_tokens": 4}}}]
        assert evs[-2] is usage_chunks[0] and evs[-3]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        assert usage_chunks == []
    assert out.endswith(DONE)


def test_a_stream_without_usage_has_no_usage_chunk():
    data = sse([{"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}])
    out, st_ = translate(data, include_usage=True)
    assert st_.usage is None and not any("usage" in e for e in events(out) if isinstance(e, dict))
    assert events(out)[0]["id"].startswith("chatcmpl-") and st_.model is None
    assert deltas(out) == [{"role": "assistant", "content": ""}, {"content": "x"}, {}]


@pytest.mark.parametrize("reason, expected", [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                                              ("RECITATION", "content_filter"), ("SPII", "content_filter"),
                                              ("OTHER", "stop")])
def test_finish_reasons(reason, expected):
    out, _ = translate(sse([{"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}]))
    assert finishes(out) == [(0, expected)]


def test_finish_comes_once_and_later_text_is_dropped():
    data = sse([{"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"}]},
                {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"}]}])
    out, _ = translate(data)
    assert deltas(out) == [{"role": "assistant", "content": ""}, {"content": "a"}, {}]


def test_blocked_prompt_in_a_stream():
    data = sse([{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4,
                                                                               "totalTokenCount": 4},
                 "responseId": "b"}])
    out, st_ = translate(data, include_usage=True)
    assert deltas(out) == [{"role": "assistant", "content": ""}, {}]
    assert finishes(out) == [(0, "content_filter")] and out.endswith(DONE) and st_.usage.input_tokens == 4


def test_several_candidates_stream_as_several_choices():
    data = sse([{"candidates": [{"index": 0, "content": {"parts": [{"text": "A"}]}},
                                {"index": 1, "content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]}}]},
                {"candidates": [{"index": 1, "finishReason": "STOP"}, {"index": 0, "content": {"parts": [{"text": "!"}]},
                                                                       "finishReason": "STOP"}]}])
    out, _ = translate(data)
    got = [(c["index"], c["delta"]) for e in events(out) if isinstance(e, dict) for c in e["choices"]]
    assert got[:4] == [(0, {"role": "assistant", "content": ""}), (0, {"content": "A"}),
                       (1, {"role": "assistant", "content": ""}),
                       (1, {"tool_calls": [{"index": 0, "id": got[3][1]["tool_calls"][0]["id"], "type": "function",
                                            "function": {"name": "f", "arguments": "{}"}}]})]
    assert finishes(out) == [(1, "tool_calls"), (0, "stop")]


def test_logprobs_in_a_stream():
    data = sse([{"candidates": [{"content": {"parts": [{"text": "Hi"}]}, "finishReason": "STOP", "logprobsResult": {
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.5}], "topCandidates": []}}]}])
    [first, text, _] = [e for e in events(translate(data)[0]) if isinstance(e, dict)]
    assert first["choices"][0]["logprobs"] is None
    assert text["choices"][0]["logprobs"] == {"refusal": None, "content": [
        {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}]}


def test_the_translator_makes_fresh_streams():
    a, b = OpenAIToGemini().stream(True), OpenAIToGemini().stream(False)
    assert isinstance(a, GeminiStreamToOpenAI) and a is not b and a.include_usage and not b.include_usage
    assert a.usage is None and a.model is None


# ---------------------------------------------------------------- errors and broken streams


@pytest.mark.parametrize("status, etype, code", [(429, "rate_limit_error", "rate_limit_exceeded"),
                                                 (400, "invalid_request_error", "INVALID_ARGUMENT"),
                                                 (500, "server_error", "INTERNAL"), (503, "server_error", "UNAVAILABLE")])
@pytest.mark.parametrize("wrapped", [False, True])
def test_an_error_mid_stream_ends_it(status, etype, code, wrapped):
    err = [ERRORS[status]] if wrapped else ERRORS[status]
    st_ = GeminiStreamToOpenAI(True)
    out = st_.feed(sse(TEXT_EVENTS[:1]) + sse([err]))
    evs = events(out)
    assert deltas(out) == [{"role": "assistant", "content": ""}, {"content": "Hel"}]
    assert evs[-1] == {"error": {"message": ERRORS[status]["error"]["message"], "type": etype, "param": None,
                                 "code": code}}
    # Over: later bytes and the flush add nothing (no [DONE] after an error).
    assert st_.feed(sse(TEXT_EVENTS)) == b"" and st_.flush() == b""


def test_an_error_status_name_without_code():
    out, _ = translate(sse([{"error": {"message": "slow down", "status": "RESOURCE_EXHAUSTED"}}]))
    assert events(out) == [{"error": {"message": "slow down", "type": "rate_limit_error", "param": None,
                                      "code": "rate_limit_exceeded"}}]


@pytest.mark.parametrize("data", [b"data: {not json\n\n", b"data: [1, 2]\n\n", b'data: "text"\n\n',
                                  b'data: {"candidates": "many"}\n\n', b'data: {"candidates": [{"content": 1}, 7]}\n\n',
                                  b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", '
                                  b'"args": {}}}]}, "index": 0}], "usageMetadata": 5}\n\ndata: [DONE]\n\n'])
def test_a_malformed_event_ends_the_stream_with_an_error(data):
    out, st_ = translate(sse(TEXT_EVENTS[:1]) + data)
    evs = events(out)
    assert evs[-1]["error"]["code"] == "upstream_invalid_response" and "Traceback" not in out.decode()
    assert "[DONE]" not in evs and st_.feed(sse(TEXT_EVENTS)) == b""


def test_a_stream_cut_before_its_finish():
    out, _ = translate(sse(TEXT_EVENTS[:1]))
    assert events(out)[-1]["error"]["code"] == "upstream_reset"
    out, _ = translate(b"")
    assert events(out) == [{"error": {"message": "the backend's stream ended before the message did",
                                      "type": "server_error", "param": None, "code": "upstream_reset"}}]


def test_the_last_event_without_its_blank_line_still_counts():
    out, _ = translate(sse(TEXT_EVENTS).rstrip(b"\r\n"))
    assert out.endswith(DONE) and finishes(out) == [(0, "stop")]


# ---------------------------------------------------------------- framing: split anywhere


@pytest.mark.parametrize("include_usage", [True, False])
def test_split_at_every_byte_same_output(include_usage):
    whole, _ = translate(STREAM, include_usage)
    assert translate(STREAM, include_usage, cuts=list(range(1, len(STREAM))))[0] == whole
    for cut in range(1, len(STREAM)):
        assert translate(STREAM, include_usage, cuts=[cut])[0] == whole


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=40, unique=True),
       st.booleans())
def test_arbitrary_splits_same_output(cuts, crlf):
    data = sse(STREAM_EVENTS, crlf)
    whole, _ = translate(data, True)
    assert translate(data, True, cuts=sorted(c for c in cuts if c < len(data)))[0] == whole


_GARBAGE = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"data: ", b"\r\n", b"\n", b"\r", b"{", b"}", b'"candidates"', b":", b"[", b"]",
                              b'"text"', b'"STOP"', b'"finishReason"', b'"error"', b"null", b"1", b",", b'"parts"',
                              b'"content"', b'"functionCall"', b'{"name":"f","args":{}}', b": keep-alive"]),
             max_size=80).map(b"".join),
)


def _check_output(out: bytes) -> None:
    """Whole SSE events, each a JSON chunk or error, or the final [DONE]; nothing after an error or [DONE]."""
    if not out:
        return
    evs = events(out)
    for i, ev in enumerate(evs):
        if ev == "[DONE]" or "error" in ev:
            assert i == len(evs) - 1
        else:
            assert ev["object"] == "chat.completion.chunk"


@settings(max_examples=300, deadline=None)
@given(_GARBAGE, st.lists(st.integers(min_value=0, max_value=400), max_size=10), st.booleans())
def test_garbage_never_raises_and_yields_whole_events(data, cuts, prefix):
    stream = (sse(TEXT_EVENTS[:1]) if prefix else b"") + data
    bounds = sorted({c for c in cuts if c < len(stream)})
    out, _ = translate(stream, True, cuts=[c for c in bounds if c > 0])
    _check_output(out)
    last = events(out)[-1]  # the stream always ends, cleanly or with an error
    assert last == "[DONE]" or set(last) == {"error"}


# ---------------------------------------------------------------- the OpenAI SDK reads what we write


ASK = {"model": "m", "messages": [user("hi")]}


def test_openai_sdk_reads_translated_stream():
    st_ = OpenAIToGemini().stream(True)
    oai, _ = sdk_clients(st_.feed(STREAM) + st_.flush())
    with oai.chat.completions.stream(**ASK) as s:
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Hello — é中 🌧."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("get_weather", {"location": "Paris"})]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.total_tokens) == (10, 12, 22)
    assert STREAM_USAGE["totalTokenCount"] == 22


def test_openai_sdk_raises_on_stream_error():
    import openai

    st_ = OpenAIToGemini().stream(False)
    oai, _ = sdk_clients(st_.feed(sse(TEXT_EVENTS[:1]) + sse([ERRORS[429]])))
    with pytest.raises(openai.APIError, match="Resource exhausted"):
        list(oai.chat.completions.create(stream=True, **ASK))

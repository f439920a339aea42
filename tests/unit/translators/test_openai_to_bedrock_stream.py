"""The OpenAI <- Bedrock ConverseStream stream translator: AWS event-stream bytes, split anywhere, in;
OpenAI chat.completion.chunk events out (pure, no processes).

The event-stream bytes are built by the test-only encoder in tests/unit/translators/eventstream.py."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from modelyard.gateway.translators.openai_bedrock import OpenAIToBedrock
from modelyard.gateway.translators.openai_bedrock_answer import FINISH_REASONS
from modelyard.gateway.translators.openai_bedrock_stream import STREAM_EXCEPTIONS, BedrockStreamToOpenAI
from tests.unit.translators.eventstream import (START, TEXT_STREAM, TOOL_STREAM, block_stop, event, exception,
                                                message, metadata, stop, text_delta)
from tests.unit.translators.samples import DONE, deltas, events, sdk_clients, user

# ---------------------------------------------------------------- helpers


def translate(data: bytes, include_usage: bool = False, cuts: list[int] | None = None) -> tuple[bytes, BedrockStreamToOpenAI]:
    st = BedrockStreamToOpenAI(include_usage, created=1700000000, completion_id="chatcmpl-t")
    bounds = [0, *(cuts or []), len(data)]
    out = b"".join(st.feed(data[a:b]) for a, b in zip(bounds, bounds[1:]))
    return out + st.flush(), st


def finish_of(out: bytes) -> list[str]:
    return [e["choices"][0]["finish_reason"] for e in events(out)
            if isinstance(e, dict) and e.get("choices") and e["choices"][0]["finish_reason"]]


# ---------------------------------------------------------------- streams


def test_text_stream():
    out, st = translate(TEXT_STREAM)
    evs = events(out)
    assert evs[-1] == "[DONE]"
    chunks = evs[:-1]
    assert all(c["id"] == "chatcmpl-t" and c["object"] == "chat.completion.chunk" and c["created"] == 1700000000
               and c["model"] is None for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo — é中 🌧."}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert st.model is None
    assert (st.usage.input_tokens, st.usage.output_tokens, st.usage.total_tokens) == (30, 12, 42)


def test_tool_call_stream():
    out, st = translate(TOOL_STREAM)
    got = deltas(out)
    assert got[:2] == [{"role": "assistant", "content": ""}, {"content": "Checking."}]
    calls = [d["tool_calls"][0] for d in got if "tool_calls" in d]
    assert calls == [
        {"index": 0, "id": "tooluse_paris", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"location'}},
        {"index": 0, "function": {"arguments": '": "Paris"}'}},
        {"index": 1, "id": "tooluse_rome", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 1, "function": {"arguments": '{"location": "Rome"}'}},
    ]
    assert finish_of(out) == ["tool_calls"]
    assert json.loads("".join(c["function"]["arguments"] for c in calls if c["index"] == 0)) == {"location": "Paris"}


def test_reasoning_stream():
    data = b"".join([
        START,
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Let me "}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "think."}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"redactedContent": "eA=="}}}),
        block_stop(0), text_delta("Answer.", 1), block_stop(1), stop(), metadata(),
    ])
    out, _ = translate(data)
    assert deltas(out) == [{"role": "assistant", "content": ""}, {"reasoning_content": "Let me "},
                           {"reasoning_content": "think."}, {"content": "Answer."}, {}]


@pytest.mark.parametrize("include_usage", [True, False])
def test_usage_chunk_only_with_include_usage(include_usage):
    out, st = translate(TOOL_STREAM, include_usage)
    evs = events(out)
    # Converse's inputTokens leaves the cache out; OpenAI's prompt_tokens counts it.
    assert (st.usage.input_tokens, st.usage.output_tokens, st.usage.total_tokens) == (150, 40, 190)
    assert (st.usage.cached_input_tokens, st.usage.cache_creation_input_tokens) == (30, 20)
    usage_chunks = [e for e in evs if isinstance(e, dict) and "usage" in e]
    if include_usage:
        assert usage_chunks == [{"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1700000000,
                                 "model": None, "choices": [], "usage": {
                                     "prompt_tokens": 150, "completion_tokens": 40, "total_tokens": 190,
                                     "prompt_tokens_details": {"cached_tokens": 30}}}]
        assert evs[-2] is usage_chunks[0] and evs[-3]["choices"][0]["finish_reason"] == "tool_calls"
    else:
        assert usage_chunks == []
    assert out.endswith(DONE)


def test_no_metadata_no_usage_chunk():
    out, st = translate(START + text_delta("x") + stop(), include_usage=True)
    assert st.usage is None and not any("usage" in e for e in events(out) if isinstance(e, dict))
    assert out.endswith(DONE)


@pytest.mark.parametrize("reason, expected", [*FINISH_REASONS.items(), ("something_new", "stop")])
def test_every_stop_reason(reason, expected):
    out, _ = translate(START + text_delta("x") + stop(reason) + metadata())
    assert finish_of(out) == [expected]


def test_translator_from_openai_to_bedrock():
    st = OpenAIToBedrock().stream(True)
    assert isinstance(st, BedrockStreamToOpenAI) and st.include_usage and st.usage is None and st.model is None
    out = st.feed(TEXT_STREAM) + st.flush()
    assert out.endswith(DONE) and events(out)[0]["id"].startswith("chatcmpl-")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kind, etype, code", [
    ("throttlingException", "rate_limit_error", "ThrottlingException"),
    ("validationException", "invalid_request_error", "ValidationException"),
    ("modelStreamErrorException", "server_error", "ModelStreamErrorException"),
    ("internalServerException", "server_error", "InternalServerException"),
    ("serviceUnavailableException", "server_error", "ServiceUnavailableException"),
])
def test_exception_mid_stream_ends_it(kind, etype, code):
    assert kind in STREAM_EXCEPTIONS
    st = BedrockStreamToOpenAI(True)
    out = st.feed(START + text_delta("partial") + exception(kind, "it went wrong"))
    evs = events(out)
    assert deltas(out) == [{"role": "assistant", "content": ""}, {"content": "partial"}]
    assert evs[-1] == {"error": {"message": "it went wrong", "type": etype, "param": None, "code": code}}
    # The stream is over: later bytes and the flush add nothing (no [DONE] after an error).
    assert st.feed(text_delta("more") + stop()) == b"" and st.flush() == b""


def test_error_message_type():
    err = message({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b"")
    out, _ = translate(START + err)
    assert events(out)[-1] == {"error": {"message": "boom", "type": "server_error", "param": None,
                                         "code": "InternalFailure"}}


def corrupt(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


@pytest.mark.parametrize("where", ["payload", "message_crc", "prelude_crc", "length"])
def test_corrupted_crc_is_a_clean_error(where):
    second = text_delta("Hello")
    at = {"payload": len(second) - 10, "message_crc": len(second) - 1, "prelude_crc": 9, "length": 2}[where]
    data = START + corrupt(second, at) + stop() + metadata()
    out, st = translate(data)
    evs = events(out)
    assert evs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(evs) == 2 and evs[1]["error"]["code"] == "upstream_invalid_response"
    assert "not valid" in evs[1]["error"]["message"] and "Traceback" not in out.decode()
    assert st.feed(TEXT_STREAM) == b"" and st.flush() == b""


@pytest.mark.parametrize("body", [b'{"output": {"message": {"role": "assistant", "content": []}}}',
                                  b"\x00\x00\x00\x10\x00\x00\x00\x00" + b"\xff" * 12])
def test_not_an_event_stream(body):
    out, _ = translate(body)
    assert len(events(out)) == 1 and events(out)[0]["error"]["code"] == "upstream_invalid_response"


def test_bad_header_type_is_a_clean_error():
    good = text_delta("x")
    # Type 7 (string) of the first header -> 42 (no such type); the CRCs are made right again.
    n = good.index(b"\x07")
    headers_and_payload = good[12:n] + b"\x2a" + good[n + 1:-4]
    prelude = good[:8]
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers_and_payload
    out, _ = translate(START + body + struct.pack(">I", zlib.crc32(body)))
    assert events(out)[-1]["error"]["code"] == "upstream_invalid_response"


def test_stream_cut_before_message_stop():
    out, _ = translate(START + text_delta("partial"))
    assert events(out)[-1]["error"]["code"] == "upstream_reset"


def test_malformed_event_is_skipped():
    data = START + event("contentBlockDelta", {"contentBlockIndex": [1], "delta": {"text": "x"}}) \
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": "text"}) + text_delta("ok") + stop()
    out, _ = translate(data)
    assert deltas(out) == [{"role": "assistant", "content": ""}, {"content": "x"}, {"content": "ok"}, {}]


# ---------------------------------------------------------------- framing: split anywhere


@pytest.mark.parametrize("include_usage", [True, False])
def test_split_at_every_byte_same_output(include_usage):
    whole, _ = translate(TOOL_STREAM, include_usage)
    bytewise, _ = translate(TOOL_STREAM, include_usage, cuts=list(range(1, len(TOOL_STREAM))))
    assert bytewise == whole
    for cut in range(1, len(TEXT_STREAM)):
        assert translate(TEXT_STREAM, include_usage, cuts=[cut])[0] == translate(TEXT_STREAM, include_usage)[0]


def test_feed_yields_whole_events_as_messages_complete():
    st = BedrockStreamToOpenAI(False)
    assert st.feed(START[:-1]) == b""
    assert st.feed(START[-1:]).startswith(b"data: ") and st.feed(b"") == b""


# ---------------------------------------------------------------- the OpenAI SDK reads what we write


ASK = {"model": "m", "messages": [user("hi")]}


def test_openai_sdk_reads_translated_stream():
    st = OpenAIToBedrock().stream(True)
    oai, _ = sdk_clients(st.feed(TOOL_STREAM) + st.flush())
    with oai.chat.completions.stream(**ASK) as s:
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("tooluse_paris", "get_weather", {"location": "Paris"}), ("tooluse_rome", "get_weather", {"location": "Rome"})]
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (150, 40)


def test_openai_sdk_raises_on_stream_exception():
    import openai

    st = OpenAIToBedrock().stream(False)
    oai, _ = sdk_clients(st.feed(START + exception("throttlingException", "Too many tokens, please wait.")))
    with pytest.raises(openai.APIError, match="Too many tokens"):
        list(oai.chat.completions.create(stream=True, **ASK))

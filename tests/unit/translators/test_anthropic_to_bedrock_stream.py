"""The Anthropic <- Bedrock ConverseStream stream translator: AWS event-stream bytes, split anywhere, in;
Anthropic's SSE events out, read back by the Anthropic SDK (pure, no processes).

The event-stream bytes are built by the test-only encoder in tests/unit/translators/eventstream.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.gateway.translators.anthropic_bedrock import AnthropicToBedrock
from modelyard.gateway.translators.anthropic_bedrock_stream import BedrockStreamToAnthropic
from modelyard.gateway.translators.aws_eventstream import ANTHROPIC_STREAM_ERRORS, STREAM_EXCEPTIONS
from tests.unit.translators.eventstream import (START, TEXT_STREAM, TOOL_STREAM, block_stop, event, exception,
                                                message, metadata, stop, text_delta)
from tests.unit.translators.samples import sdk_clients


def translate(data: bytes, cuts: list[int] | None = None) -> tuple[bytes, BedrockStreamToAnthropic]:
    st = BedrockStreamToAnthropic("msg_bdrk_t")
    bounds = [0, *(cuts or []), len(data)]
    out = b"".join(st.feed(data[a:b]) for a, b in zip(bounds, bounds[1:]))
    return out + st.flush(), st


def events(out: bytes) -> list[dict[str, Any]]:
    """The events, each checked to be a whole `event: <type>` / `data: <json>` pair naming its type."""
    assert out.endswith(b"\n\n")
    parsed = []
    for part in out[:-2].split(b"\n\n"):
        name, data = part.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        ev = json.loads(data[6:])
        assert ev["type"] == name[7:].decode()
        parsed.append(ev)
    return parsed


def kinds(out: bytes) -> list[str]:
    return [e["type"] for e in events(out)]


REASONING = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Let me "}}})


# ---------------------------------------------------------------- streams


def test_text_stream():
    out, st = translate(TEXT_STREAM)
    evs = events(out)
    assert evs[0] == {"type": "message_start", "message": {
        "id": "msg_bdrk_t", "type": "message", "role": "assistant", "model": None, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}
    assert evs[1:] == [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo — é中 🌧."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                   "output_tokens": 12}},
        {"type": "message_stop"}]
    assert (st.usage.input_tokens, st.usage.output_tokens, st.usage.total_tokens) == (30, 12, 42)
    assert st.model is None


def test_tool_stream_and_cache_usage():
    out, st = translate(TOOL_STREAM)
    evs = events(out)
    starts = [e for e in evs if e["type"] == "content_block_start"]
    assert [(e["index"], e["content_block"]) for e in starts] == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "tooluse_paris", "name": "get_weather", "input": {}}),
        (2, {"type": "tool_use", "id": "tooluse_rome", "name": "get_weather", "input": {}})]
    pieces = [e["delta"]["partial_json"] for e in evs if e["type"] == "content_block_delta" and e["index"] == 1]
    assert json.loads("".join(pieces)) == {"location": "Paris"}
    assert evs[-2] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 30,
                                 "output_tokens": 40}}
    assert (st.usage.input_tokens, st.usage.cached_input_tokens, st.usage.cache_creation_input_tokens) == (150, 30, 20)


def test_reasoning_stream_and_renumbered_blocks():
    data = b"".join([
        START, REASONING,
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "think."}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}}),
        block_stop(0),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": "eA=="}}}),
        block_stop(1),
        text_delta("Answer.", 5), block_stop(5), stop(), metadata(),
    ])
    out, _ = translate(data)
    evs = events(out)
    assert [(e["type"], e.get("index"), e.get("content_block") or e.get("delta")) for e in evs[1:-2]] == [
        ("content_block_start", 0, {"type": "thinking", "thinking": "", "signature": ""}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": "Let me "}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": "think."}),
        ("content_block_delta", 0, {"type": "signature_delta", "signature": "c2ln"}),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, {"type": "redacted_thinking", "data": "eA=="}),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, {"type": "text", "text": ""}),  # Converse's index 5: Anthropic's next, 2
        ("content_block_delta", 2, {"type": "text_delta", "text": "Answer."}),
        ("content_block_stop", 2, None)]


@pytest.mark.parametrize("reason, expected", [("end_turn", "end_turn"), ("max_tokens", "max_tokens"),
                                              ("guardrail_intervened", "refusal"), ("new_reason", "end_turn")])
def test_stop_reasons(reason, expected):
    out, _ = translate(START + text_delta("x") + stop(reason) + metadata())
    assert events(out)[-2]["delta"]["stop_reason"] == expected


def test_stop_sequence_and_blocks_left_open_are_closed():
    data = START + text_delta("x") + event("messageStop", {
        "stopReason": "stop_sequence", "additionalModelResponseFields": {"stop_sequence": "END"}}) + metadata()
    evs = events(translate(data)[0])
    assert [e["type"] for e in evs] == ["message_start", "content_block_start", "content_block_delta",
                                        "content_block_stop", "message_delta", "message_stop"]
    assert evs[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_no_metadata_ends_with_zero_usage():
    out, st = translate(START + text_delta("x") + block_stop(0) + stop())
    assert kinds(out)[-2:] == ["message_delta", "message_stop"]
    assert events(out)[-2]["usage"] == {"input_tokens": 0, "output_tokens": 0} and st.usage is None


def test_translator_gives_a_fresh_stream():
    first, second = AnthropicToBedrock().stream(False), AnthropicToBedrock().stream(True)
    assert isinstance(first, BedrockStreamToAnthropic) and first is not second
    out = first.feed(TEXT_STREAM) + first.flush()
    assert kinds(out)[-1] == "message_stop" and events(out)[0]["message"]["id"].startswith("msg_bdrk_")


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kind", sorted(STREAM_EXCEPTIONS))
def test_exception_mid_stream_ends_it(kind):
    st = BedrockStreamToAnthropic()
    out = st.feed(START + text_delta("partial") + exception(kind, "it went wrong"))
    assert events(out)[-1] == {"type": "error", "error": {"type": ANTHROPIC_STREAM_ERRORS.get(kind, "api_error"),
                                                          "message": "it went wrong"}}
    assert st.feed(text_delta("more") + stop()) == b"" and st.flush() == b""


def test_error_message_and_invalid_bytes():
    err = message({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b"")
    assert events(translate(START + err)[0])[-1] == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
    second = text_delta("Hello")
    corrupt = second[:-1] + bytes([second[-1] ^ 1])  # the message CRC
    out, st = translate(START + corrupt + stop() + metadata())
    assert kinds(out) == ["message_start", "error"] and "not valid" in events(out)[-1]["error"]["message"]
    assert st.feed(TEXT_STREAM) == b"" and st.flush() == b""


def test_stream_cut_before_message_stop():
    out, _ = translate(START + text_delta("partial"))
    assert events(out)[-1]["type"] == "error" and "ended before" in events(out)[-1]["error"]["message"]


def test_malformed_event_is_skipped():
    data = START + event("contentBlockStart", {"contentBlockIndex": 0, "start": "x"}) \
        + event("contentBlockDelta", {"contentBlockIndex": 0, "delta": "text"}) + text_delta("ok") + stop()
    assert kinds(translate(data)[0]) == ["message_start", "content_block_start", "content_block_delta",
                                         "content_block_stop", "message_delta", "message_stop"]


# ---------------------------------------------------------------- framing: split anywhere


def test_split_at_every_byte_same_output():
    whole, _ = translate(TOOL_STREAM)
    assert translate(TOOL_STREAM, cuts=list(range(1, len(TOOL_STREAM))))[0] == whole
    for cut in range(1, len(TEXT_STREAM)):
        assert translate(TEXT_STREAM, cuts=[cut])[0] == translate(TEXT_STREAM)[0]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_split_same_output(data):
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(TOOL_STREAM) - 1), max_size=20))))
    assert translate(TOOL_STREAM, cuts=cuts)[0] == translate(TOOL_STREAM)[0]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.integers(0, len(TEXT_STREAM)))
def test_untrusted_bytes_never_raise_and_give_whole_events(noise, at):
    """Garbage anywhere in the stream: whole Anthropic events out, ending with message_stop or an error."""
    out, _ = translate(TEXT_STREAM[:at] + noise + TEXT_STREAM[at:])
    assert kinds(out)[-1] in ("message_stop", "error")


# ---------------------------------------------------------------- the Anthropic SDK reads what we write


ASK = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def test_anthropic_sdk_reads_translated_stream():
    st = AnthropicToBedrock().stream(False)
    _, ant = sdk_clients(st.feed(TOOL_STREAM) + st.flush())
    with ant.messages.stream(**ASK) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Checking." and final.content[2].input == {"location": "Rome"}
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (100, 30, 40)


def test_anthropic_sdk_raises_on_stream_exception():
    import anthropic

    st = AnthropicToBedrock().stream(False)
    _, ant = sdk_clients(st.feed(START + exception("throttlingException", "Too many tokens, please wait.")))
    with pytest.raises(anthropic.APIStatusError, match="Too many tokens"):
        with ant.messages.stream(**ASK) as s:
            s.get_final_message()

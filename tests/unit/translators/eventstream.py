"""ConverseStream events for the stream translators' tests and the proxy's
(tests/unit/test_aws_bedrock_provider.py, test_aws_anthropic_provider.py), framed by the mock's
event-stream encoder (loadtest/mock/bedrock/eventstream.py, the project's one encoder); `chunk` wraps
one of Anthropic's stream events as InvokeModelWithResponseStream does (a "chunk" event whose payload
carries the event's JSON, base64).

Event payloads follow the ConverseStream API reference, with the "p" padding field Bedrock adds to its events."""

from __future__ import annotations

import json
from typing import Any

from modelyard.loadtest.mock.bedrock import eventstream
from modelyard.loadtest.mock.bedrock.eventstream import message

__all__ = ["message", "event", "chunk", "exception"]


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return eventstream.event(kind, payload, pad=36)


def chunk(anthropic_event: dict[str, Any]) -> bytes:
    # json.dumps's spacing, not the encoder's: the proxy must relay the event's bytes as they came
    return eventstream.chunk(json.dumps(anthropic_event).encode(), pad=32)


def exception(kind: str, text: str) -> bytes:
    return eventstream.exception(kind, {"message": text})


def text_delta(text: str, index: int = 0) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}})


def tool_start(index: int, tool_id: str, name: str) -> bytes:
    return event("contentBlockStart", {"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_id,
                                                                                         "name": name}}})


def tool_delta(index: int, piece: str) -> bytes:
    return event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}})


def block_stop(index: int) -> bytes:
    return event("contentBlockStop", {"contentBlockIndex": index})


START = event("messageStart", {"role": "assistant"})
USAGE = {"inputTokens": 30, "outputTokens": 12, "totalTokens": 42}


def stop(reason: str = "end_turn") -> bytes:
    return event("messageStop", {"stopReason": reason})


def metadata(usage: dict[str, int] = USAGE) -> bytes:
    return event("metadata", {"usage": usage, "metrics": {"latencyMs": 321}})


TEXT_STREAM = b"".join([START, text_delta("Hel"), text_delta("lo — é中 🌧."), block_stop(0), stop(), metadata()])
TOOL_STREAM = b"".join([
    START, text_delta("Checking."), block_stop(0),
    tool_start(1, "tooluse_paris", "get_weather"), tool_delta(1, '{"location'), tool_delta(1, '": "Paris"}'),
    block_stop(1),
    tool_start(2, "tooluse_rome", "get_weather"), tool_delta(2, '{"location": "Rome"}'), block_stop(2),
    stop("tool_use"),
    metadata({"inputTokens": 100, "outputTokens": 40, "totalTokens": 190, "cacheReadInputTokens": 30,
              "cacheWriteInputTokens": 20}),
])

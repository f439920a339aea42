"""A test-only encoder of AWS event-stream framing, and ConverseStream events built with it, shared by
the stream translators' tests and the proxy's (tests/unit/test_aws_bedrock_provider.py,
test_aws_anthropic_provider.py); `chunk` wraps one of Anthropic's stream events as
InvokeModelWithResponseStream does (a "chunk" event whose payload carries the event's JSON, base64).

`message` encodes the documented framing (prelude: total length, headers length, prelude CRC32;
headers: name length, name, type 7 = string, value length, value; payload; message CRC32). Event
payloads follow the ConverseStream API reference, with the "p" padding field Bedrock adds to its events."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any



def message(headers: dict[str, str], payload: bytes) -> bytes:
    head = b"".join(struct.pack(">B", len(k.encode())) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode()))
                    + v.encode() for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return message({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                   json.dumps({**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"}).encode())


def chunk(anthropic_event: dict[str, Any]) -> bytes:
    data = base64.b64encode(json.dumps(anthropic_event).encode()).decode()
    return message({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                   json.dumps({"bytes": data, "p": "abcdefghijklmnopqrstuvwxyzABCDEF"}).encode())


def exception(kind: str, text: str) -> bytes:
    return message({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                   json.dumps({"message": text}).encode())


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

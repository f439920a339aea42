"""Anthropic Messages client -> OpenAI chat completions backend: a streamed answer, event by event."""

from __future__ import annotations

from typing import Any

from modelyard.core.errors import ANTHROPIC_ERROR_TYPES
from modelyard.core.usage import Usage

from .common import SSEParser, SSETranslator, loads_object, sse
from .anthropic_openai_answer import anthropic_error_event, anthropic_usage, stop_reason, stop_sequence, usage_of


class OpenAIStreamToAnthropic(SSETranslator):
    """OpenAI chat.completion.chunk events -> Anthropic message events.

    Order written: message_start, then per block content_block_start, its deltas and
    content_block_stop, then message_delta (stop_reason and usage), message_stop.
    OpenAI sends usage after the finish chunk, so message_delta waits for [DONE] (or
    the end of the stream); input counts therefore arrive in message_delta, and
    message_start carries zeros. The last usage seen wins: it is never summed.
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.model: str | None = None
        self._sse = SSEParser()
        self._started = False
        self._closed = False
        self._finish: str | None = None
        self._stop_seq: str | None = None
        self._index = -1  # index of the open Anthropic block, -1 when none is open
        self._open: str | None = None  # "thinking", "text", or "tool:<n>"
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_calls index -> Anthropic block index
        self._next = 0

    def _end(self) -> bytes:
        return self._done() if self._finish is not None else self._cut()

    def _cut(self) -> bytes:
        """No finish_reason ever came: the answer was cut short."""
        self._closed = True
        return anthropic_error_event("the backend's stream ended before the message did")

    def _events(self, events: list[tuple[str | None, str]]) -> bytes:
        out: list[bytes] = []
        for _, data in events:
            if data.strip() == "[DONE]":
                out.append(self._done() if self._started else self._cut())
                break
            chunk = loads_object(data)
            if chunk is not None:
                try:
                    out.append(self._chunk(chunk))
                except (AttributeError, TypeError):  # a malformed chunk is skipped, not fatal
                    pass
            if self._closed:
                break
        return b"".join(out)

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        if "error" in chunk and "choices" not in chunk:
            self._closed = True
            err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return anthropic_error_event(err.get("message") or "upstream error", _stream_error_type(err))
        out = [self._start(chunk)]
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_of(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            out.append(self._delta(choice.get("delta") or {}))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._stop_seq = stop_sequence(choice)
                out.append(self._close_block())
        return b"".join(out)

    def _start(self, chunk: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        self.model = chunk.get("model")
        return sse({"type": "message_start", "message": {
            "id": chunk.get("id"), "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}},
            "message_start")

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._index, self._open = self._next, kind
        self._next += 1
        return out + sse({"type": "content_block_start", "index": self._index, "content_block": block},
                         "content_block_start")

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        out = sse({"type": "content_block_stop", "index": self._index}, "content_block_stop")
        self._open = None
        return out

    def _block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")

    def _delta(self, delta: dict[str, Any]) -> bytes:
        out: list[bytes] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            if self._open != "thinking":
                out.append(self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""}))
            out.append(self._block_delta(self._index, {"type": "thinking_delta", "thinking": reasoning}))
        if delta.get("content"):
            if self._open != "text":
                out.append(self._open_block("text", {"type": "text", "text": ""}))
            out.append(self._block_delta(self._index, {"type": "text_delta", "text": delta["content"]}))
        for call in delta.get("tool_calls") or []:
            out.append(self._tool_delta(call))
        return b"".join(out)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        n = call.get("index", 0)
        fn = call.get("function") or {}
        out = b""
        if n not in self._tool_blocks:
            out = self._open_block(f"tool:{n}", {"type": "tool_use", "id": call.get("id"),
                                                 "name": fn.get("name"), "input": {}})
            self._tool_blocks[n] = self._index
        if fn.get("arguments"):
            out += self._block_delta(self._tool_blocks[n], {"type": "input_json_delta",
                                                            "partial_json": fn["arguments"]})
        return out

    def _done(self) -> bytes:
        self._closed = True
        stop = "stop_sequence" if self._stop_seq else stop_reason(self._finish)
        return (self._close_block()
                + sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": self._stop_seq},
                       "usage": anthropic_usage(self.usage)}, "message_delta")
                + sse({"type": "message_stop"}, "message_stop"))


def _stream_error_type(err: dict[str, Any]) -> str:
    code = err.get("code")
    if isinstance(code, int) and code in ANTHROPIC_ERROR_TYPES:
        return ANTHROPIC_ERROR_TYPES[code]
    etype = err.get("type")
    if etype in ("rate_limit_error", "invalid_request_error", "authentication_error", "permission_error"):
        return etype
    return "api_error"

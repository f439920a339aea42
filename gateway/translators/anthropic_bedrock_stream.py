"""Anthropic Messages client -> AWS Bedrock ConverseStream backend: a streamed answer.

ConverseStream's event-stream messages (aws_eventstream.py) -> Anthropic's SSE events:
- messageStart -> message_start (a made-up id, model null, zero usage: Converse counts tokens only
  at the end, so the counts come in message_delta).
- contentBlockStart with start.toolUse -> content_block_start of a tool_use block (input {}).
- contentBlockDelta: text -> text_delta, opening a text block first (Converse starts no text block);
  toolUse.input -> input_json_delta; reasoningContent.text -> thinking_delta (opening a thinking
  block), .signature -> signature_delta, .redactedContent -> a redacted_thinking block.
- contentBlockStop -> content_block_stop. Converse's block indexes are renumbered in the order the
  blocks open, as Anthropic clients expect them (0, 1, 2...).
- messageStop -> the stop reason (as for whole answers); the blocks still open are closed.
- metadata (after messageStop) -> message_delta (stop_reason, stop_sequence, usage: input, output
  and cache counts) and message_stop. A stream that ends after messageStop without metadata gets
  them at its end, with zero usage.
- an exception or error message -> Anthropic's error event (the type from the exception:
  aws_eventstream.ANTHROPIC_STREAM_ERRORS), and the stream ends there; bytes that are not a valid
  event stream -> an api_error event; an upstream EOF before messageStop -> an api_error event, as
  a cut stream.
"""

from __future__ import annotations

from typing import Any

from modelyard.core.usage import Usage

from .anthropic_bedrock_answer import message_id, stop_of
from .anthropic_openai_answer import anthropic_error_event, anthropic_usage
from .aws_eventstream import EventStreamTranslator, Failure, anthropic_error_type
from .common import sse
from .openai_bedrock_answer import usage_of

__all__ = ["BedrockStreamToAnthropic"]


class BedrockStreamToAnthropic(EventStreamTranslator):
    """ConverseStream event-stream bytes -> Anthropic message events."""

    def __init__(self, msg_id: str | None = None):
        super().__init__()
        self.usage: Usage | None = None
        self.model: str | None = None
        self._id = msg_id or message_id()
        self._started = False
        self._open: dict[Any, tuple[int, str]] = {}  # Converse block index -> (Anthropic index, block type)
        self._next = 0
        self._stop: tuple[str, str | None] | None = None  # (stop_reason, stop_sequence) once messageStop came

    # ------------------------------------------------------------ the StreamTranslator interface

    def flush(self) -> bytes:
        if self._closed:
            return b""
        if self._stop is None:  # no messageStop: the answer was cut short
            self._closed = True
            return anthropic_error_event("the backend's stream ended before the message did")
        return self._end()

    def _invalid(self, reason: str) -> bytes:
        return anthropic_error_event(reason)

    # ------------------------------------------------------------ messages

    def _failure(self, failure: Failure, payload: bytes) -> bytes:
        return anthropic_error_event(failure.message, anthropic_error_type(failure))

    def _event(self, kind: Any, ev: dict[str, Any]) -> bytes:
        if kind == "messageStart":
            return self._start()
        if kind == "contentBlockStart":
            use = (ev.get("start") or {}).get("toolUse")
            index = ev.get("contentBlockIndex", 0)
            if not isinstance(use, dict) or index in self._open:
                return b""
            return self._open_block(index, {"type": "tool_use", "id": use.get("toolUseId"), "name": use.get("name"),
                                            "input": {}})
        if kind == "contentBlockDelta":
            return self._delta(ev.get("contentBlockIndex", 0), ev.get("delta") or {})
        if kind == "contentBlockStop":
            return self._close(ev.get("contentBlockIndex", 0))
        if kind == "messageStop":
            if self._stop is not None:
                return b""
            self._stop = stop_of(ev.get("stopReason"), ev.get("additionalModelResponseFields"))
            return b"".join([self._close(index) for index in list(self._open)])
        if kind == "metadata":
            if isinstance(ev.get("usage"), dict):
                self.usage = usage_of(ev["usage"])
            return self._end() if self._stop is not None else b""
        return b""  # event types added later

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return sse({"type": "message_start", "message": {
            "id": self._id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}},
            "message_start")

    def _open_block(self, index: Any, block: dict[str, Any]) -> bytes:
        n = self._next
        self._next += 1
        self._open[index] = (n, block["type"])
        return self._start() + sse({"type": "content_block_start", "index": n, "content_block": block},
                                   "content_block_start")

    def _close(self, index: Any) -> bytes:
        opened = self._open.pop(index, None)
        if opened is None:
            return b""
        return sse({"type": "content_block_stop", "index": opened[0]}, "content_block_stop")

    def _block_delta(self, index: Any, delta: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": self._open[index][0], "delta": delta},
                   "content_block_delta")

    def _delta(self, index: Any, delta: dict[str, Any]) -> bytes:
        out = b""
        if isinstance(delta.get("text"), str):
            if index not in self._open:
                out = self._open_block(index, {"type": "text", "text": ""})
            return out + self._block_delta(index, {"type": "text_delta", "text": delta["text"]})
        use = delta.get("toolUse")
        if isinstance(use, dict) and isinstance(use.get("input"), str) and index in self._open:
            return self._block_delta(index, {"type": "input_json_delta", "partial_json": use["input"]})
        reasoning = delta.get("reasoningContent")
        if not isinstance(reasoning, dict):
            return b""  # citations and deltas added later
        if "redactedContent" in reasoning:
            if index in self._open:
                return b""
            return self._open_block(index, {"type": "redacted_thinking", "data": reasoning["redactedContent"]})
        if index not in self._open:
            out = self._open_block(index, {"type": "thinking", "thinking": "", "signature": ""})
        if isinstance(reasoning.get("text"), str):
            out += self._block_delta(index, {"type": "thinking_delta", "thinking": reasoning["text"]})
        if isinstance(reasoning.get("signature"), str):
            out += self._block_delta(index, {"type": "signature_delta", "signature": reasoning["signature"]})
        return out

    def _end(self) -> bytes:
        self._closed = True
        assert self._stop is not None
        stop, sequence = self._stop
        return (self._start() + b"".join([self._close(index) for index in list(self._open)])
                + sse({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": sequence},
                       "usage": anthropic_usage(self.usage)}, "message_delta")
                + sse({"type": "message_stop"}, "message_stop"))

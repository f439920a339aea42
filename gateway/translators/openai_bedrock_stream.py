"""OpenAI chat completions client -> AWS Bedrock ConverseStream backend: a streamed answer.

ConverseStream answers in AWS event-stream framing (application/vnd.amazon.eventstream), read as
aws_eventstream.py describes: event messages, and exception or error messages that end the stream.

Event -> OpenAI chat.completion.chunk:
- messageStart -> the first chunk, {role: assistant, content: ""}.
- contentBlockStart with start.toolUse -> a tool call's first chunk (id, type, function name,
  arguments ""); its index is the tool call's position among the answer's tool calls.
- contentBlockDelta: text -> content; toolUse.input (a piece of the JSON arguments) -> arguments;
  reasoningContent.text -> reasoning_content (signatures and redacted reasoning are dropped).
- messageStop -> the finish chunk (finish_reason as for whole answers).
- metadata (after messageStop) -> `usage`; with include_usage, flush() sends it as a last chunk
  with empty choices, as OpenAI does, before `data: [DONE]`.
- an exception or error message, or bytes that are not a valid event stream (a CRC that does not
  match, a malformed header) -> one OpenAI error event, and the stream ends there (no [DONE]).
- an upstream EOF before messageStop -> an error event (upstream_reset), as a cut stream.
Converse names no model and no completion id: `model` stays None and the id is made up here.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from modelyard.core.errors import sse_error_event
from modelyard.core.usage import Usage

from .aws_eventstream import STREAM_EXCEPTIONS, EventStreamTranslator, Failure
from .common import dumps
from .openai_bedrock_answer import error_from_bedrock, finish_reason, openai_usage, usage_of

__all__ = ["STREAM_EXCEPTIONS", "BedrockStreamToOpenAI"]


class BedrockStreamToOpenAI(EventStreamTranslator):
    """ConverseStream event-stream bytes -> OpenAI chat.completion.chunk SSE events."""

    def __init__(self, include_usage: bool, created: int | None = None, completion_id: str | None = None):
        super().__init__()
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.model: str | None = None
        self.created = int(time.time()) if created is None else created
        self._id = completion_id or f"chatcmpl-{uuid.uuid4().hex}"
        self._tools: dict[int, int] = {}  # Converse content block index -> OpenAI tool_calls index
        self._started = False  # role chunk sent
        self._stop: str | None = None  # messageStop's reason, once it came
        # _closed (EventStreamTranslator's): nothing more to send, [DONE] or an error went out

    # ------------------------------------------------------------ the StreamTranslator interface

    def flush(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        if self._stop is None:  # no messageStop: the answer was cut short
            return sse_error_event("the backend's stream ended before the message did", "upstream_reset")
        out = b""
        if self.include_usage and self.usage is not None:
            out = b"data: " + dumps({"id": self._id, "object": "chat.completion.chunk", "created": self.created,
                                     "model": self.model, "choices": [],
                                     "usage": openai_usage(self.usage)}) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    # ------------------------------------------------------------ messages

    def _invalid(self, reason: str) -> bytes:
        return sse_error_event(reason, "upstream_invalid_response")

    def _failure(self, failure: Failure, payload: bytes) -> bytes:
        if not failure.exception:
            return sse_error_event(failure.message, failure.name)
        # error_from_bedrock knows the exceptions by their class names: ThrottlingException...
        _, body = error_from_bedrock(failure.status, payload, failure.name[:1].upper() + failure.name[1:])
        return b"data: " + body + b"\n\n"

    def _event(self, kind: Any, ev: dict[str, Any]) -> bytes:
        if kind == "messageStart":
            return self._start()
        if kind == "contentBlockStart":
            return self._block_start(ev.get("contentBlockIndex", 0), ev.get("start") or {})
        if kind == "contentBlockDelta":
            return self._delta(ev.get("contentBlockIndex", 0), ev.get("delta") or {})
        if kind == "messageStop":
            if self._stop is not None:
                return b""
            self._stop = ev.get("stopReason") or "end_turn"
            return self._chunk({}, finish_reason(self._stop))
        if kind == "metadata":
            if isinstance(ev.get("usage"), dict):
                self.usage = usage_of(ev["usage"])
            return b""
        return b""  # contentBlockStop, and event types added later

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"data: " + dumps({
            "id": self._id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }) + b"\n\n"

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, index: Any, start: dict[str, Any]) -> bytes:
        use = start.get("toolUse")
        if not isinstance(use, dict) or index in self._tools:
            return b""
        n = self._tools[index] = len(self._tools)
        return self._start() + self._chunk({"tool_calls": [{
            "index": n, "id": use.get("toolUseId"), "type": "function",
            "function": {"name": use.get("name"), "arguments": ""}}]})

    def _delta(self, index: Any, delta: dict[str, Any]) -> bytes:
        if isinstance(delta.get("text"), str):
            return self._start() + self._chunk({"content": delta["text"]}) if delta["text"] else b""
        use = delta.get("toolUse")
        if isinstance(use, dict) and isinstance(use.get("input"), str) and use["input"] and index in self._tools:
            return self._chunk({"tool_calls": [{"index": self._tools[index], "function": {"arguments": use["input"]}}]})
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str) and reasoning["text"]:
            return self._start() + self._chunk({"reasoning_content": reasoning["text"]})
        return b""  # reasoning signatures, redacted reasoning, citations: nothing OpenAI clients read


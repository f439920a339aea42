"""OpenAI chat completions client -> Anthropic Messages backend: a streamed answer, event by event."""

from __future__ import annotations

import time
from typing import Any

from modelyard.core.errors import openai_error, sse_error_event
from modelyard.core.usage import Usage

from .common import SSEParser, SSETranslator, dumps, loads_object
from .openai_anthropic_answer import client_status, finish_reason, openai_usage, usage_of

# Anthropic error type -> HTTP status, for errors that arrive inside a stream.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

# ---------------------------------------------------------------- stream


class AnthropicStreamToOpenAI(SSETranslator):
    """Anthropic message events -> OpenAI chat.completion.chunk events.

    Usage is read, never added up: input and cache counts from message_start,
    output from the last message_delta (Anthropic's counts there are cumulative;
    a message_delta that repeats input counts replaces them).
    """

    def __init__(self, include_usage: bool, created: int | None = None):
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.model: str | None = None
        self.created = int(time.time()) if created is None else created
        self._sse = SSEParser()
        self._id: str | None = None
        self._raw_usage: dict[str, Any] = {}
        self._stop: str | None = None
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._started = False
        self._finished = False  # finish chunk (and usage chunk) sent
        self._closed = False  # nothing more to send: [DONE] or an error went out

    def _end(self) -> bytes:
        self._closed = True
        if self._stop is None:  # no message_delta: the answer was cut short
            return sse_error_event("the backend's stream ended before the message did", "upstream_reset")
        return self._finish() + b"data: [DONE]\n\n"

    def _events(self, events: list[tuple[str | None, str]]) -> bytes:
        out: list[bytes] = []
        for name, data in events:
            ev = loads_object(data)
            if ev is None:
                continue
            try:
                out.append(self._event(ev.get("type") or name, ev))
            except (AttributeError, TypeError):  # a malformed event is skipped, not fatal
                continue
            if self._closed:
                break
        return b"".join(out)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"data: " + dumps({
            "id": self._id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }) + b"\n\n"

    def _event(self, kind: str | None, ev: dict[str, Any]) -> bytes:
        if kind == "message_start":
            return self._start(ev.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(ev.get("index", 0), ev.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(ev.get("index", 0), ev.get("delta") or {})
        if kind == "message_delta":
            self._stop = (ev.get("delta") or {}).get("stop_reason") or self._stop or "end_turn"
            self._take_usage(ev.get("usage"), final=True)
            return b""
        if kind == "message_stop":
            self._closed = True
            return self._finish() + b"data: [DONE]\n\n"
        if kind == "error":
            self._closed = True
            err = ev.get("error") or {}
            etype = err.get("type") or "api_error"
            status = client_status(ERROR_STATUS.get(etype, 500))
            return b"data: " + openai_error(status, err.get("message") or etype, etype) + b"\n\n"
        return b""  # ping, content_block_stop, and event types added later

    def _start(self, msg: dict[str, Any]) -> bytes:
        self._id = msg.get("id")
        self.model = msg.get("model")
        self._take_usage(msg.get("usage"), final=False)
        if self._started:
            return b""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def _take_usage(self, u: Any, final: bool) -> None:
        # Later counts replace earlier ones key by key; usage is only published once the
        # output count is final, so a stream cut short leaves it to the token estimator.
        if isinstance(u, dict):
            self._raw_usage.update({k: v for k, v in u.items() if isinstance(v, int)})
        if final:
            self.usage = usage_of(self._raw_usage)

    def _block_start(self, index: int, block: dict[str, Any]) -> bytes:
        kind = block.get("type")
        if kind == "tool_use":
            n = self._tools[index] = len(self._tools)
            return self._chunk({"tool_calls": [{"index": n, "id": block.get("id"), "type": "function",
                                                "function": {"name": block.get("name"), "arguments": ""}}]})
        if kind == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        if kind == "thinking" and block.get("thinking"):
            return self._chunk({"reasoning_content": block["thinking"]})
        return b""

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return self._chunk({"content": delta["text"]})
        if kind == "input_json_delta" and delta.get("partial_json") and index in self._tools:
            return self._chunk({"tool_calls": [{"index": self._tools[index],
                                                "function": {"arguments": delta["partial_json"]}}]})
        if kind == "thinking_delta" and delta.get("thinking"):
            return self._chunk({"reasoning_content": delta["thinking"]})
        return b""  # signature_delta, citations_delta: nothing OpenAI clients read

    def _finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        out = self._chunk({}, finish_reason(self._stop) or "stop")
        if self.include_usage and self.usage is not None:
            out += b"data: " + dumps({"id": self._id, "object": "chat.completion.chunk", "created": self.created,
                                      "model": self.model, "choices": [], "usage": openai_usage(self.usage)}) + b"\n\n"
        return out

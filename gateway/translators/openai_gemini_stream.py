"""OpenAI chat completions client -> Gemini streamGenerateContent on Vertex AI: a streamed answer.

With `alt=sse` Vertex answers in server-sent events, one `data: {GenerateContentResponse}` per event
(CRLF line ends; the common SSEParser takes LF, CRLF or CR, split anywhere). Each response holds the
new piece of each candidate: text parts carry only the text added since the last event, a
functionCall part a whole call. usageMetadata comes with the events, its counts cumulative: the last
one seen is the answer's.

Event -> OpenAI chat.completion.chunk (choice index: the candidate's):
- a candidate's first appearance -> {role: assistant, content: ""} for that choice.
- text parts -> content deltas; thought parts -> reasoning_content deltas.
- a functionCall part -> one tool_calls chunk with index (the call's position in the choice), id
  (as for whole answers), type, name and the whole arguments.
- logprobsResult -> the chunk's choice logprobs.
- finishReason -> that choice's finish chunk, once (tool_calls when it called a function and
  stopped); promptFeedback.blockReason with no candidates -> an empty choice that finishes
  with content_filter.
- the stream's end -> with include_usage, one chunk with empty choices and the usage; then
  `data: [DONE]`. A stream that ends before any finishReason ends with an error event
  (upstream_reset), as a cut stream does.
- an error object (Google's {"error": {...}}, bare or list-wrapped) -> the OpenAI error event, its
  type from the error's code; data that is not a JSON object, or whose fields are not of the
  documented types -> an error event (upstream_invalid_response). Either ends the stream: nothing
  follows, not even [DONE].
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from modelyard.core.errors import sse_error_event
from modelyard.core.usage import Usage

from .common import SSEParser, SSETranslator, dumps, loads
from .openai_gemini_answer import (created_of, error_body, finish_reason, google_error, logprobs_of,
                                   openai_usage, parts_of, status_of, text_of_part, tool_call, usage_of)

__all__ = ["GeminiStreamToOpenAI"]


class GeminiStreamToOpenAI(SSETranslator):
    """Vertex AI streamGenerateContent SSE -> OpenAI chat.completion.chunk SSE events."""

    def __init__(self, include_usage: bool, created: int | None = None, completion_id: str | None = None):
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.model: str | None = None
        self.created = int(time.time()) if created is None else created
        self._id = completion_id  # the first event's responseId, unless given
        self._sse = SSEParser()
        self._started: set[int] = set()  # choices whose role chunk went out
        self._calls: dict[int, int] = {}  # choice -> function calls sent
        self._finished: set[int] = set()  # choices whose finish chunk went out
        self._closed = False  # nothing more to send: [DONE] or an error went out
        self._dated = created is not None  # created was given, or taken from the first event

    def _end(self) -> bytes:
        self._closed = True
        if not self._finished:  # no finishReason: the answer was cut short
            return sse_error_event("the backend's stream ended before the message did", "upstream_reset")
        out = b""
        if self.include_usage and self.usage is not None:
            out = self._emit({"choices": [], "usage": openai_usage(self.usage)})
        return out + b"data: [DONE]\n\n"

    def _events(self, events: list[tuple[str | None, str]]) -> bytes:
        out: list[bytes] = []
        for _, data in events:
            try:
                out.append(self._event(loads(data)))
            except (AttributeError, TypeError, ValueError, KeyError):  # fields of the wrong types
                out.append(self._fail("the backend sent an event the gateway cannot read", "upstream_invalid_response"))
            if self._closed:
                break
        return b"".join(out)

    def _fail(self, message: str, code: str) -> bytes:
        self._closed = True
        return sse_error_event(message, code)

    # ------------------------------------------------------------ events

    def _event(self, ev: Any) -> bytes:
        err = google_error(ev)
        if err is not None:
            self._closed = True
            status = status_of(err)
            return b"data: " + error_body(status, err, "the backend's stream failed") + b"\n\n"
        if not isinstance(ev, dict):
            return self._fail("the backend sent an event that is not a JSON object", "upstream_invalid_response")
        if self._id is None:
            rid = ev.get("responseId")
            self._id = rid if isinstance(rid, str) and rid else f"chatcmpl-{uuid.uuid4().hex}"
        if self.model is None and isinstance(ev.get("modelVersion"), str) and ev["modelVersion"]:
            self.model = ev["modelVersion"]
        if not self._dated:
            self._dated = True
            self.created = created_of(ev) or self.created
        if isinstance(ev.get("usageMetadata"), dict):
            self.usage = usage_of(ev["usageMetadata"])
        candidates = ev.get("candidates")
        if candidates is None or candidates == []:
            feedback = ev.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason") and 0 not in self._finished:
                self._finished.add(0)
                return self._start(0) + self._chunk(0, {}, "content_filter")
            return b""
        out: list[bytes] = []
        for pos, cand in enumerate(candidates):
            index = cand["index"] if isinstance(cand.get("index"), int) else pos
            out.append(self._candidate(index, cand))
        return b"".join(out)

    def _candidate(self, index: int, cand: dict[str, Any]) -> bytes:
        out = [self._start(index)]
        logprobs = logprobs_of(cand.get("logprobsResult"))
        for part in parts_of(cand):
            if isinstance(part.get("functionCall"), dict):
                n = self._calls.get(index, 0)
                self._calls[index] = n + 1
                call = tool_call(part, self._id or "", index, n)
                out.append(self._chunk(index, {"tool_calls": [{"index": n, **call}]}))
            elif (text := text_of_part(part)) and index not in self._finished:
                key = "reasoning_content" if part.get("thought") is True else "content"
                out.append(self._chunk(index, {key: text}, logprobs=logprobs))
                logprobs = None  # once per event
        reason = cand.get("finishReason")
        if isinstance(reason, str) and reason and index not in self._finished:
            self._finished.add(index)
            out.append(self._chunk(index, {}, finish_reason(reason, index in self._calls)))
        return b"".join(out)

    def _emit(self, fields: dict[str, Any]) -> bytes:
        return b"data: " + dumps({"id": self._id, "object": "chat.completion.chunk", "created": self.created,
                                  "model": self.model, **fields}) + b"\n\n"

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None,
               logprobs: dict[str, Any] | None = None) -> bytes:
        return self._emit({"choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                        "finish_reason": finish}]})

    def _start(self, index: int) -> bytes:
        if index in self._started:
            return b""
        self._started.add(index)
        return self._chunk(index, {"role": "assistant", "content": ""})

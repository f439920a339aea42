"""Anthropic Messages client -> OpenAI chat completions backend.

Request mapping decisions (Anthropic field -> OpenAI field):
- `system` (string or text blocks) -> one leading system message.
- user `tool_result` blocks -> `tool` messages, placed before the rest of that user turn
  (OpenAI wants them right after the assistant's tool_calls); `is_error` results are
  prefixed "Error: " since OpenAI has no flag for it; images inside a tool result go
  into a user message after the tool messages (tool messages carry text only).
- images (base64 or url) -> image_url parts (base64 as a data: URL); PDF documents ->
  `file` parts with a data: URL; plain-text documents -> text parts.
- assistant thinking blocks are dropped (OpenAI-compatible servers take no reasoning input).
- `max_tokens` -> `max_tokens` (not max_completion_tokens: the self-hosted servers this
  gateway fronts all take max_tokens).
- `thinking: {type: enabled, budget_tokens}` -> `reasoning_effort` (low <= 2048 <
  medium <= 8192 < high), the inverse of openai_anthropic.THINKING_BUDGETS.
- `output_config.format` (or beta `output_format`) json_schema -> `response_format` json_schema.
- `tool_choice` auto/any/tool/none -> "auto"/"required"/{function}/"none";
  `disable_parallel_tool_use` -> `parallel_tool_calls: false`.
- `metadata.user_id` -> `user`; `top_k` is dropped (not an OpenAI parameter).
- server tools (web search, code execution, ...) are a 400: nothing runs them.
- streaming always asks for `stream_options.include_usage`: Anthropic clients always get usage.

Response: reasoning (`reasoning_content`, or `reasoning` as newer vLLM names it) ->
a thinking block with an empty signature; text -> a text block; tool_calls -> tool_use
blocks. Usage: input_tokens excludes cached tokens on Anthropic, so
input_tokens = prompt_tokens - cached - cache_creation.
"""

from __future__ import annotations

from typing import Any

from modelyard.core.errors import ANTHROPIC_ERROR_TYPES, anthropic_error
from modelyard.core.usage import Usage

from .common import (
    SSEParser,
    TranslationError,
    dumps,
    dumps_str,
    guarded,
    loads,
    loads_object,
    sse,
    text_of,
)

# OpenAI finish_reason -> Anthropic stop_reason.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

__all__ = ["AnthropicToOpenAI", "anthropic_error", "anthropic_error_event", "anthropic_usage", "stop_reason"]


def anthropic_error_event(message: str, etype: str = "api_error") -> bytes:
    """The SSE event Anthropic clients raise on when a stream fails midway."""
    return sse({"type": "error", "error": {"type": etype, "message": message}}, "error")


# ---------------------------------------------------------------- request


def _data_url(source: dict[str, Any]) -> str:
    return f"data:{source.get('media_type')};base64,{source.get('data')}"


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return {"type": "image_url", "image_url": {"url": _data_url(source)}}
    if source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    raise TranslationError(f"image source type {source.get('type')!r} is not supported by this backend")


def _document_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "text":
        return {"type": "text", "text": source.get("data") or ""}
    if source.get("type") == "base64":
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                         "file_data": _data_url(source)}}
    raise TranslationError(f"document source type {source.get('type')!r} is not supported by this backend")


def _user_part(block: dict[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text") or ""}
    if kind == "image":
        return _image_part(block)
    if kind == "document":
        return _document_part(block)
    if kind in ("thinking", "redacted_thinking"):
        return None
    raise TranslationError(f"content block type {kind!r} is not supported by this backend")


def _tool_message(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the tool message, image parts that must travel in a user message)."""
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if isinstance(content, list):
        images = [_image_part(b) for b in content if isinstance(b, dict) and b.get("type") == "image"]
    text = text_of(content)
    if block.get("is_error"):
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}, images


def _parts_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Plain text as a string (every server takes that), anything richer as parts."""
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _user_messages(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content or []:
        if block.get("type") == "tool_result":
            tool, images = _tool_message(block)
            out.append(tool)
            parts.extend(images)
        elif (part := _user_part(block)) is not None:
            parts.append(part)
    if parts:
        out.append({"role": "user", "content": _parts_content(parts)})
    return out


def _assistant_message(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": dumps_str(block.get("input") or {})}})
        elif kind not in ("thinking", "redacted_thinking"):
            raise TranslationError(f"assistant content block type {kind!r} is not supported by this backend")
    # OpenAI takes null content only next to tool_calls.
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if tool.get("type") not in (None, "custom"):
            raise TranslationError(f"server tool {tool.get('type')!r} is not available on this backend")
        fn: dict[str, Any] = {"name": tool.get("name"),
                              "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise TranslationError(f"tool_choice type {kind!r} is not supported")


def reasoning_effort(budget: int) -> str:
    if budget <= 2048:
        return "low"
    return "medium" if budget <= 8192 else "high"


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    if not isinstance(body.get("messages"), list):
        raise TranslationError("messages: must be a list")
    messages: list[dict[str, Any]] = []
    if system := text_of(body.get("system")):
        messages.append({"role": "system", "content": system})
    for msg in body["messages"]:
        if msg.get("role") == "user":
            messages.extend(_user_messages(msg.get("content")))
        elif msg.get("role") == "assistant":
            messages.append(_assistant_message(msg.get("content")))
        else:
            raise TranslationError(f"messages: role {msg.get('role')!r} is not supported")

    out: dict[str, Any] = {"model": model, "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and body.get("tools"):
        out["tool_choice"] = _tool_choice(choice)
        if choice.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        out["reasoning_effort"] = reasoning_effort(int(thinking.get("budget_tokens") or 0))
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
    if fmt.get("type") == "json_schema":
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": fmt.get("schema") or {}, "strict": True}}
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# ---------------------------------------------------------------- response


def stop_reason(finish: str | None) -> str:
    return STOP_REASONS.get(finish or "stop", "end_turn")


def usage_of(u: dict[str, Any]) -> Usage:
    """The gateway's Usage from an OpenAI usage block."""
    inp = u.get("prompt_tokens") or 0
    out = u.get("completion_tokens") or 0
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or u.get("cache_read_input_tokens") or 0
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    total = u.get("total_tokens")
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=total if total is not None else inp + out,
                 cached_input_tokens=cached, cache_creation_input_tokens=u.get("cache_creation_input_tokens") or 0,
                 reasoning_tokens=reasoning)


def anthropic_usage(u: Usage | None) -> dict[str, int]:
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {"input_tokens": max(u.input_tokens - u.cached_input_tokens - u.cache_creation_input_tokens, 0),
            "cache_creation_input_tokens": u.cache_creation_input_tokens,
            "cache_read_input_tokens": u.cached_input_tokens,
            "output_tokens": u.output_tokens}


def _tool_input(arguments: Any) -> dict[str, Any]:
    parsed = loads(arguments or "{}") if isinstance(arguments, str) else arguments
    # Anthropic's input must be an object; a model's malformed arguments are kept, not lost.
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def _stop_sequence(choice: dict[str, Any]) -> str | None:
    # vLLM names the stop string that ended the answer; plain OpenAI does not.
    reason = choice.get("stop_reason")
    return reason if isinstance(reason, str) and choice.get("finish_reason") == "stop" else None


def build_response(answer: dict[str, Any]) -> tuple[dict[str, Any], Usage | None]:
    choice = (answer.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = text_of(msg.get("content")) or msg.get("refusal")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": _tool_input(fn.get("arguments"))})
    usage = usage_of(answer["usage"]) if isinstance(answer.get("usage"), dict) else None
    stop_seq = _stop_sequence(choice)
    out = {
        "id": answer.get("id"), "type": "message", "role": "assistant", "model": answer.get("model"),
        "content": content,
        "stop_reason": "stop_sequence" if stop_seq else stop_reason(choice.get("finish_reason")),
        "stop_sequence": stop_seq, "usage": anthropic_usage(usage),
    }
    return out, usage


# ---------------------------------------------------------------- errors


def error_message(body: bytes) -> str | None:
    """The message of an OpenAI-style error, or of the shapes other servers use."""
    parsed = loads_object(body)
    if parsed is None:
        return None
    err = parsed.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]  # OpenAI, vLLM, SGLang
    if isinstance(err, str):
        return err  # Ollama: {"error": "..."}
    for key in ("message", "detail"):  # vLLM's older {"object": "error", "message"}, FastAPI's detail
        if isinstance(parsed.get(key), str):
            return parsed[key]
    return None


def error_from_openai(status: int, body: bytes) -> tuple[int, bytes]:
    message = error_message(body) or body.decode("utf-8", "replace").strip() or f"upstream answered {status}"
    return status, anthropic_error(status, message)


# ---------------------------------------------------------------- stream


class OpenAIStreamToAnthropic:
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

    def feed(self, chunk: bytes) -> bytes:
        if self._closed:
            return b""
        return self._events(self._sse.feed(chunk))

    def end(self) -> bytes:
        if self._closed:
            return b""
        out = self._events(self._sse.flush())
        if self._closed:
            return out
        return out + (self._done() if self._finish is not None else self._cut())

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
                self._stop_seq = _stop_sequence(choice)
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


# ---------------------------------------------------------------- the translator


class AnthropicToOpenAI:
    upstream_path = "/chat/completions"  # after the OpenAI backend's prefix, e.g. "/v1"

    def request(self, body: dict[str, Any], model: str) -> bytes:
        return dumps(guarded(build_request, body, model))

    def response(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        answer = loads_object(body)
        if answer is None or not isinstance(answer.get("choices"), list):
            return body, None, None  # not an answer we understand: relay it unchanged
        try:
            out, usage = build_response(answer)
        except (AttributeError, TypeError):  # a malformed answer: relay it as it came
            return body, None, None
        return dumps(out), usage, answer.get("model")

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_from_openai(status, body)

    def stream(self, include_usage: bool) -> OpenAIStreamToAnthropic:
        return OpenAIStreamToAnthropic()  # Anthropic streams always carry usage

"""OpenAI chat completions client -> Anthropic Messages backend.

Request mapping decisions (OpenAI field -> Anthropic field):
- system and developer messages, wherever they appear -> top-level `system`
  (Anthropic has no mid-conversation system turn); one -> a string, several -> text blocks.
- consecutive messages that land on the same Anthropic role are merged into one turn;
  `tool` messages become `tool_result` blocks of a user turn.
- `max_completion_tokens` or `max_tokens` -> `max_tokens`, else DEFAULT_MAX_TOKENS
  (Anthropic requires it; OpenAI lets the model run to its limit).
- `temperature` is clamped to 1.0 (OpenAI allows 0..2, Anthropic 0..1).
- `reasoning_effort` -> `thinking: {type: enabled, budget_tokens}` per THINKING_BUDGETS.
  OpenAI counts reasoning inside max_completion_tokens, so a client limit caps the budget
  (budget < 1024, Anthropic's minimum, is a 400); without a client limit the budget is
  added on top of DEFAULT_MAX_TOKENS. Thinking forbids a custom temperature, so it is
  dropped, and top_p is raised to 0.95 at least (Anthropic's allowed range with thinking).
- `response_format`: json_schema -> `output_config.format` (Anthropic structured outputs);
  json_object has no Anthropic switch, so a system instruction asks for a bare JSON object.
- `parallel_tool_calls: false` -> `tool_choice.disable_parallel_tool_use`.
- `user` -> `metadata.user_id`.
- `n` > 1 is a 400; seed, penalties, logit_bias, logprobs are not expressible and ignored.
- assistant `reasoning_content` cannot be sent back (Anthropic needs the signed thinking
  block), so it is dropped; a `thinking_blocks` list on an assistant message (the
  convention of some OpenAI-compatible SDKs) is passed through as is.

Response: text blocks -> `content`, tool_use -> `tool_calls`, thinking -> `reasoning_content`
(the field DeepSeek, vLLM and most OpenAI-compatible clients read reasoning from) and
`thinking_blocks` (with signatures, so a client may send them back).
Usage: OpenAI's prompt_tokens includes cached tokens, Anthropic's input_tokens does not,
so prompt_tokens = input + cache_read + cache_creation; cached_tokens = cache_read.
Anthropic reports no separate thinking-token count, so reasoning_tokens stays 0.
"""

from __future__ import annotations

import time
from typing import Any

from modelyard.core.errors import openai_error, sse_error_event
from modelyard.core.usage import Usage

from .common import (
    SSEParser,
    TranslationError,
    dumps,
    dumps_str,
    guarded,
    loads,
    loads_object,
    text_of,
)

DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024  # Anthropic rejects smaller budgets
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
NO_THINKING = {"none"}
JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."

# Anthropic stop_reason -> OpenAI finish_reason. pause_turn (a server-tool loop paused)
# and unknown reasons are "stop": the turn ended without an error the client can act on.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

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

__all__ = ["OpenAIToAnthropic", "finish_reason", "openai_error", "openai_usage", "usage_of"]


# ---------------------------------------------------------------- request


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise TranslationError("image_url data URLs must be base64 encoded", "messages")
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise TranslationError("image_url must be an http(s) or data: URL", "messages")


def _file_block(file: dict[str, Any]) -> dict[str, Any]:
    data = file.get("file_data")
    if not isinstance(data, str) or not data.startswith("data:"):
        raise TranslationError("file parts need inline file_data (file_id is OpenAI-only)", "messages")
    source = _image_source(data)  # same data: URL shape
    block: dict[str, Any] = {"type": "document", "source": source}
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            url = image if isinstance(image, str) else image.get("url", "")
            blocks.append({"type": "image", "source": _image_source(url)})
        elif kind == "file":
            blocks.append(_file_block(part.get("file") or {}))
        else:
            raise TranslationError(f"content part type {kind!r} is not supported by this backend", "messages")
    return blocks


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    parsed = loads(arguments or "{}")
    if not isinstance(parsed, dict):
        raise TranslationError("tool_calls[].function.arguments must be a JSON object", "messages")
    return parsed


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = [b for b in msg.get("thinking_blocks") or [] if isinstance(b, dict)]
    content = msg.get("content")
    if isinstance(content, list):  # text and refusal parts
        text = "".join(p.get("text") or p.get("refusal") or "" for p in content if isinstance(p, dict))
    else:
        text = content or ""
    if text:
        blocks.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                       "input": _tool_input(fn.get("arguments"))})
    return blocks


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": msg.get("tool_call_id"), "content": text_of(msg.get("content"))}


def _messages(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            if text := text_of(msg.get("content")):
                system.append(text)
            continue
        if role == "user":
            out_role, blocks = "user", _user_blocks(msg.get("content"))
        elif role == "assistant":
            out_role, blocks = "assistant", _assistant_blocks(msg)
        elif role == "tool":
            out_role, blocks = "user", [_tool_result(msg)]
        else:
            raise TranslationError(f"message role {role!r} is not supported by this backend", "messages")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == out_role:  # Anthropic turns alternate: merge
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": out_role, "content": blocks})
    return system, turns


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if tool.get("type", "function") != "function":
            raise TranslationError(f"tool type {tool.get('type')!r} is not supported by this backend", "tools")
        fn = tool.get("function") or {}
        entry: dict[str, Any] = {"name": fn.get("name"),
                                 "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None:
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise TranslationError(f"tool_choice {choice!r} is not supported", "tool_choice")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _thinking(effort: Any, max_tokens: int | None) -> tuple[dict[str, Any] | None, int | None]:
    """(thinking config, max_tokens to send) for a reasoning_effort."""
    if effort is None or effort in NO_THINKING:
        return None, max_tokens
    budget = THINKING_BUDGETS.get(effort)
    if budget is None:
        raise TranslationError(f"reasoning_effort {effort!r} is not supported", "reasoning_effort")
    if max_tokens is None:
        return {"type": "enabled", "budget_tokens": budget}, DEFAULT_MAX_TOKENS + budget
    budget = min(budget, max_tokens - 1)  # must stay below max_tokens
    if budget < MIN_THINKING_BUDGET:
        raise TranslationError(f"reasoning_effort needs max_completion_tokens above {MIN_THINKING_BUDGET} "
                               "on this backend", "max_completion_tokens")
    return {"type": "enabled", "budget_tokens": budget}, max_tokens


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list", "messages")
    if (body.get("n") or 1) != 1:
        raise TranslationError("n > 1 is not supported by this backend", "n")
    system, turns = _messages(messages)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    thinking, limit = _thinking(body.get("reasoning_effort"), limit)
    out: dict[str, Any] = {"model": model, "max_tokens": limit or DEFAULT_MAX_TOKENS, "messages": turns}

    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif fmt.get("type") == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    if system:
        out["system"] = system[0] if len(system) == 1 else [{"type": "text", "text": s} for s in system]

    if thinking:
        out["thinking"] = thinking
    elif body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = max(body["top_p"], 0.95) if thinking else body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


# ---------------------------------------------------------------- response


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def usage_of(u: dict[str, Any]) -> Usage:
    """The gateway's Usage from an Anthropic usage block (input counted with its cache parts)."""
    read = u.get("cache_read_input_tokens") or 0
    created = u.get("cache_creation_input_tokens") or 0
    inp = (u.get("input_tokens") or 0) + read + created
    out = u.get("output_tokens") or 0
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out,
                 cached_input_tokens=read, cache_creation_input_tokens=created)


def openai_usage(u: Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens}}


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    return {"id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"), "arguments": dumps_str(block.get("input") or {})}}


def build_response(msg: dict[str, Any], created: int) -> tuple[dict[str, Any], Usage | None]:
    text: list[str] = []
    reasoning: list[str] = []
    thinking_blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
            thinking_blocks.append(block)
        elif kind == "redacted_thinking":
            thinking_blocks.append(block)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    if calls:
        message["tool_calls"] = calls
    usage = usage_of(msg["usage"]) if isinstance(msg.get("usage"), dict) else None
    out: dict[str, Any] = {
        "id": msg.get("id"), "object": "chat.completion", "created": created, "model": msg.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(msg.get("stop_reason")) or "stop"}],
    }
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out, usage


# ---------------------------------------------------------------- errors


def client_status(status: int) -> int:
    """529 (Anthropic's overloaded) is not an HTTP status OpenAI clients know: 503 says the same."""
    return 503 if status == 529 else status


def error_from_anthropic(status: int, body: bytes) -> tuple[int, bytes]:
    parsed = loads_object(body) or {}
    err = parsed.get("error") if isinstance(parsed.get("error"), dict) else {}
    message = err.get("message") or body.decode("utf-8", "replace").strip() or f"upstream answered {status}"
    etype = err.get("type") if isinstance(err.get("type"), str) else None
    status = client_status(status)
    return status, openai_error(status, message, etype)


# ---------------------------------------------------------------- stream


class AnthropicStreamToOpenAI:
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
        self._closed = True
        if self._stop is None:  # no message_delta: the answer was cut short
            return out + sse_error_event("the backend's stream ended before the message did", "upstream_reset")
        return out + self._finish() + b"data: [DONE]\n\n"

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


# ---------------------------------------------------------------- the translator


class OpenAIToAnthropic:
    upstream_path = "/v1/messages"

    def request(self, body: dict[str, Any], model: str) -> bytes:
        return dumps(guarded(build_request, body, model))

    def response(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        msg = loads_object(body)
        if msg is None or msg.get("type") != "message":
            return body, None, None  # not an answer we understand: relay it unchanged
        try:
            out, usage = build_response(msg, int(time.time()))
        except (AttributeError, TypeError):  # a malformed answer: relay it as it came
            return body, None, None
        return dumps(out), usage, msg.get("model")

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_from_anthropic(status, body)

    def stream(self, include_usage: bool) -> AnthropicStreamToOpenAI:
        return AnthropicStreamToOpenAI(include_usage)

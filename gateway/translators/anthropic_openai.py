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

from modelyard.core.errors import anthropic_error
from modelyard.core.usage import Usage

from .common import TranslationError, dumps, dumps_str, guarded, loads_object, text_of
from .anthropic_openai_answer import (
    anthropic_error_event, anthropic_usage, build_response, error_from_openai, stop_reason,
)
from .anthropic_openai_stream import OpenAIStreamToAnthropic

# The pair behind one interface: its answer and stream halves are in anthropic_openai_answer.py and _stream.py.
__all__ = ["AnthropicToOpenAI", "OpenAIStreamToAnthropic", "anthropic_error", "anthropic_error_event",
           "anthropic_usage", "build_request", "stop_reason"]


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


# ---------------------------------------------------------------- the translator


class AnthropicToOpenAI:
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

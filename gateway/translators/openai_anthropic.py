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

from modelyard.core.usage import Usage

from .common import (TranslationError, assistant_text, dumps, functions_of, guarded, image_url_of,
                     loads_object, merged_turns, text_of, tool_arguments, user_blocks)
from .openai_anthropic_answer import (
    build_response, error_from_anthropic, finish_reason, openai_error, openai_usage, usage_of,
)
from .openai_anthropic_stream import AnthropicStreamToOpenAI

DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024  # Anthropic rejects smaller budgets
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
NO_THINKING = {"none"}
JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."

# The pair behind one interface: its answer and stream halves are in openai_anthropic_answer.py and _stream.py.
__all__ = ["AnthropicStreamToOpenAI", "OpenAIToAnthropic", "build_request", "finish_reason", "openai_error",
           "openai_usage", "usage_of"]


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
    return user_blocks(content, lambda t: {"type": "text", "text": t}, {
        "image_url": lambda p: {"type": "image", "source": _image_source(image_url_of(p) or "")},
        "file": lambda p: _file_block(p.get("file") or {})})


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = [b for b in msg.get("thinking_blocks") or [] if isinstance(b, dict)]
    text = assistant_text(msg.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                       "input": tool_arguments(fn.get("arguments"))})
    return blocks


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": msg.get("tool_call_id"), "content": text_of(msg.get("content"))}


def _messages(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    return merged_turns(messages, {  # Anthropic turns alternate
        "user": ("user", lambda msg: _user_blocks(msg.get("content"))),
        "assistant": ("assistant", _assistant_blocks),
        "tool": ("user", lambda msg: [_tool_result(msg)])})


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for fn in functions_of(tools):
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


def thinking_for(effort: Any, max_tokens: int | None) -> tuple[dict[str, Any] | None, int | None]:
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
    thinking, limit = thinking_for(body.get("reasoning_effort"), limit)
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


# ---------------------------------------------------------------- the translator


class OpenAIToAnthropic:
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

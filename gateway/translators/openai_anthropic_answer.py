"""OpenAI chat completions client -> Anthropic Messages backend: the answer (whole, and errors) in
OpenAI's shape. The mapping is described in openai_anthropic.py."""

from __future__ import annotations

from typing import Any

from modelyard.core.errors import openai_error
from modelyard.core.usage import Usage

from .common import cache_usage, dumps_str, loads_object, openai_usage

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


# ---------------------------------------------------------------- response


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def usage_of(u: dict[str, Any]) -> Usage:
    """The gateway's Usage from an Anthropic usage block (input counted with its cache parts)."""
    return cache_usage(u.get("input_tokens") or 0, u.get("cache_read_input_tokens") or 0,
                       u.get("cache_creation_input_tokens") or 0, u.get("output_tokens") or 0)


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

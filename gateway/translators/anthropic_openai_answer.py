"""Anthropic Messages client -> OpenAI chat completions backend: the answer (whole, and errors) in
Anthropic's shape. The mapping is described in anthropic_openai.py."""

from __future__ import annotations

from typing import Any

from modelyard.core.errors import anthropic_error
from modelyard.core.usage import Usage

from .common import loads, loads_object, sse, text_of

# OpenAI finish_reason -> Anthropic stop_reason.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

def anthropic_error_event(message: str, etype: str = "api_error") -> bytes:
    """The SSE event Anthropic clients raise on when a stream fails midway."""
    return sse({"type": "error", "error": {"type": etype, "message": message}}, "error")


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


def stop_sequence(choice: dict[str, Any]) -> str | None:
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
    stop_seq = stop_sequence(choice)
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

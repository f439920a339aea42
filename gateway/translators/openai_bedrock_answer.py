"""OpenAI chat completions client -> AWS Bedrock Converse backend: the answer (whole, and errors) in
OpenAI's shape. The request mapping is described in openai_bedrock.py.

Usage: Converse's inputTokens leaves out the tokens read from and written to the prompt cache
(cacheReadInputTokens, cacheWriteInputTokens), while OpenAI's prompt_tokens includes cached tokens,
so prompt_tokens = input + cache read + cache write; cached_tokens = cache read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from modelyard.core.usage import Usage

from .common import cache_usage, dumps, dumps_str, loads_object, openai_usage

# Converse stopReason -> OpenAI finish_reason; unknown reasons are "stop".
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}

# Bedrock exception name -> (client status, OpenAI error type), for the names whose status alone
# does not say it; others take their type from the status (_TYPES).
EXCEPTIONS = {
    "ThrottlingException": (429, "rate_limit_error"),
    "ServiceQuotaExceededException": (429, "rate_limit_error"),
    "ModelNotReadyException": (503, "server_error"),
    "ServiceUnavailableException": (503, "server_error"),
    "ModelTimeoutException": (504, "server_error"),
    "ModelErrorException": (502, "server_error"),
    "ModelStreamErrorException": (424, "server_error"),  # the model's stream failed: retry
    "UnrecognizedClientException": (403, "authentication_error"),
    "InvalidSignatureException": (403, "authentication_error"),
    "ExpiredTokenException": (403, "authentication_error"),
    "MissingAuthenticationTokenException": (403, "authentication_error"),
}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


# ---------------------------------------------------------------- response


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def usage_of(u: dict[str, Any]) -> Usage:
    """The gateway's Usage from a Converse usage block (input counted with its cache parts)."""
    return cache_usage(u.get("inputTokens") or 0, u.get("cacheReadInputTokens") or 0,
                       u.get("cacheWriteInputTokens") or 0, u.get("outputTokens") or 0)


def _tool_call(use: dict[str, Any]) -> dict[str, Any]:
    return {"id": use.get("toolUseId"), "type": "function",
            "function": {"name": use.get("name"), "arguments": dumps_str(use.get("input") or {})}}


def build_response(answer: dict[str, Any], created: int | None = None,
                   completion_id: str | None = None) -> tuple[dict[str, Any], Usage | None]:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in (answer["output"].get("message") or {}).get("content") or []:
        if "text" in block:
            text.append(block.get("text") or "")
        elif isinstance(block.get("toolUse"), dict):
            calls.append(_tool_call(block["toolUse"]))
        elif isinstance(block.get("reasoningContent"), dict):
            reasoning.append((block["reasoningContent"].get("reasoningText") or {}).get("text") or "")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    usage = usage_of(answer["usage"]) if isinstance(answer.get("usage"), dict) else None
    out: dict[str, Any] = {
        # Converse answers carry no id (the request id is the x-amzn-requestid header) nor model.
        "id": completion_id or f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()) if created is None else created, "model": None,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(answer.get("stopReason"))}],
    }
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out, usage


def converse_answer(body: bytes, build: Callable[[dict[str, Any]], tuple[dict[str, Any], Usage | None]]
                    ) -> tuple[bytes, Usage | None, str | None]:
    """A Converse answer in the client's shape (`build`'s), with its usage; the answer as it came when
    it is not one this understands. Converse answers name no model: the caller knows it."""
    answer = loads_object(body)
    if answer is None or not isinstance(answer.get("output"), dict):
        return body, None, None
    try:
        out, usage = build(answer)
    except (AttributeError, TypeError):  # a malformed answer
        return body, None, None
    return dumps(out), usage, None


# ---------------------------------------------------------------- errors


def exception_name(raw: Any) -> str | None:
    """'ThrottlingException' from '...#ThrottlingException' or 'ThrottlingException:http://...'."""
    if not isinstance(raw, str) or not raw:
        return None
    return raw.rpartition("#")[2].partition(":")[0] or None


def bedrock_error(status: int, body: bytes, error_type: str | None = None) -> tuple[int, str, str | None]:
    """A Bedrock error ({"message"}, the exception in the x-amzn-errortype header, given here as
    `error_type` when the caller has it, or in the body's "__type") -> (the client's status, the
    message, the exception name)."""
    parsed = loads_object(body) or {}
    message = parsed.get("message") or parsed.get("Message")
    if not isinstance(message, str) or not message:
        message = body.decode("utf-8", "replace").strip() or f"upstream answered {status}"
    name = exception_name(error_type) or exception_name(parsed.get("__type"))
    return EXCEPTIONS.get(name or "", (status, None))[0], message, name


def error_from_bedrock(status: int, body: bytes, error_type: str | None = None) -> tuple[int, bytes]:
    """A Bedrock error (see bedrock_error) -> OpenAI's error shape."""
    status, message, name = bedrock_error(status, body, error_type)
    etype = EXCEPTIONS.get(name or "", (status, None))[1]
    if etype is None:
        etype = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return status, dumps({"error": {"message": message, "type": etype, "param": None, "code": name}})

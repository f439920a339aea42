"""Anthropic Messages client -> AWS Bedrock Converse backend: the answer (whole, and errors) in
Anthropic's shape. The request mapping is described in anthropic_bedrock.py.

Answer: output.message.content -> content blocks: text -> text; toolUse -> tool_use (id, name,
input); reasoningContent.reasoningText -> thinking (with its signature); redactedContent ->
redacted_thinking. stopReason -> stop_reason (STOP_REASONS); the stop sequence that ended the
answer comes from additionalModelResponseFields.stop_sequence, which the request asks Claude for.
Converse answers carry no message id (one is made up: msg_bdrk_...) nor model (null).
Usage: input_tokens = inputTokens (Converse, like Anthropic, counts the prompt cache apart),
cache_read_input_tokens = cacheReadInputTokens, cache_creation_input_tokens = cacheWriteInputTokens.

Errors: a Bedrock error ({"message"}, status; openai_bedrock_answer.bedrock_error) -> Anthropic's
error shape, its type from the status (429 rate_limit_error, 400 invalid_request_error, 403
permission_error, 404 not_found_error, 500 api_error, 503 overloaded_error; 408 timeout_error and
424, a model error, api_error).
"""

from __future__ import annotations

import uuid
from typing import Any

from modelyard.core.errors import ANTHROPIC_ERROR_TYPES
from modelyard.core.usage import Usage

from .anthropic_openai_answer import anthropic_usage
from .common import dumps
from .openai_bedrock_answer import bedrock_error, usage_of

# Converse stopReason -> Anthropic stop_reason; unknown reasons are end_turn.
STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "model_context_window_exceeded": "model_context_window_exceeded",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
}
# Bedrock statuses with no Anthropic counterpart.
_ERROR_TYPES = {408: "timeout_error", 424: "api_error"}

__all__ = ["STOP_REASONS", "anthropic_error_from_bedrock", "build_response", "message_id", "stop_of"]


def message_id() -> str:
    return f"msg_bdrk_{uuid.uuid4().hex[:24]}"


def stop_of(reason: Any, fields: Any) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a Converse stopReason and additionalModelResponseFields."""
    stop = STOP_REASONS.get(reason if isinstance(reason, str) else "", "end_turn")
    sequence = fields.get("stop_sequence") if isinstance(fields, dict) else None
    return stop, sequence if stop == "stop_sequence" and isinstance(sequence, str) else None


def _block(block: dict[str, Any]) -> dict[str, Any] | None:
    if "text" in block:
        return {"type": "text", "text": block.get("text") or ""}
    use = block.get("toolUse")
    if isinstance(use, dict):
        return {"type": "tool_use", "id": use.get("toolUseId"), "name": use.get("name"),
                "input": use.get("input") if isinstance(use.get("input"), dict) else {}}
    reasoning = block.get("reasoningContent")
    if isinstance(reasoning, dict):
        if "redactedContent" in reasoning:
            return {"type": "redacted_thinking", "data": reasoning["redactedContent"]}
        text = reasoning.get("reasoningText") or {}
        return {"type": "thinking", "thinking": text.get("text") or "", "signature": text.get("signature") or ""}
    return None  # citations, guardrail assessments...: nothing an Anthropic message holds


def build_response(answer: dict[str, Any], msg_id: str | None = None) -> tuple[dict[str, Any], Usage | None]:
    content = [b for b in map(_block, (answer["output"].get("message") or {}).get("content") or []) if b is not None]
    usage = usage_of(answer["usage"]) if isinstance(answer.get("usage"), dict) else None
    stop, sequence = stop_of(answer.get("stopReason"), answer.get("additionalModelResponseFields"))
    out = {"id": msg_id or message_id(), "type": "message", "role": "assistant", "model": None, "content": content,
           "stop_reason": stop, "stop_sequence": sequence, "usage": anthropic_usage(usage)}
    return out, usage


def anthropic_error_from_bedrock(status: int, body: bytes) -> tuple[int, bytes]:
    status, message, _ = bedrock_error(status, body)
    etype = _ERROR_TYPES.get(status) or ANTHROPIC_ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error")
    return status, dumps({"type": "error", "error": {"type": etype, "message": message}})

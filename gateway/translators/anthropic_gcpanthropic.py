"""Anthropic Messages client -> Claude on Google Cloud's Vertex AI (schema GCPAnthropic).

The GCPAnthropic provider (gateway/providers/gcp_anthropic.py) sends it to POST
.../publishers/anthropic/models/{model}:rawPredict, or :streamRawPredict for `stream: true`. The
body is the client's (anthropic_hosted.hosted_body) without `model`, with
`anthropic_version: "vertex-2023-10-16"` (the value Vertex takes; a client's own is replaced, the
backend's schema.version is not used) and with `stream` kept (Vertex reads it).

Beta flags: Vertex reads some flags from the body's `anthropic_beta` (1M context) and some from the
anthropic-beta header only (context management); the client's header therefore goes upstream as
it came (as Anthropic's Vertex SDK sends it) and its flags are also added to the body's list
(request_with_headers). Vertex refuses flags it does not know, as it would from the client directly.

Answers are Anthropic's, whole (relayed as they are, usage read for accounting) and streamed (plain
SSE: relayed as whole events, usage read on the way). Errors come in two shapes: Anthropic's
({"type": "error", "error": {...}}, from the model: relayed as they are) and Google's
({"error": {"code", "message", "status"}}, or a list holding one, from Vertex itself: quota,
permission, a model not found), which Anthropic clients get in Anthropic's shape.
"""

from __future__ import annotations

from typing import Any

from modelyard.core.errors import anthropic_error

from .anthropic_hosted import AnthropicEvents, AnthropicToHosted, hosted_body
from .common import TranslationError, dumps, loads

VERTEX_VERSION = "vertex-2023-10-16"

__all__ = ["VERTEX_VERSION", "AnthropicToGCPAnthropic", "raw_predict_body", "vertex_error"]


def raw_predict_body(body: dict[str, Any], betas: list[str]) -> bytes:
    """An Anthropic body as rawPredict and streamRawPredict take it."""
    if not isinstance(body.get("messages"), list):
        raise TranslationError("messages: must be a list")
    return dumps(hosted_body(body, VERTEX_VERSION, True, betas))


def vertex_error(body: bytes) -> dict[str, Any] | None:
    """A Vertex error body as an object: Google's list of one error unwrapped."""
    parsed = loads(body)
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    return parsed if isinstance(parsed, dict) else None


def anthropic_error_from_vertex(status: int, body: bytes) -> tuple[int, bytes]:
    parsed = vertex_error(body)
    if parsed is not None and parsed.get("type") == "error" and isinstance(parsed.get("error"), dict):
        return status, body  # the model's own error: already Anthropic's
    err = parsed.get("error") if parsed is not None else None
    message = err.get("message") if isinstance(err, dict) else None
    if not isinstance(message, str) or not message:
        message = body.decode("utf-8", "replace").strip() or f"upstream answered {status}"
    return status, anthropic_error(status, message)


class AnthropicToGCPAnthropic(AnthropicToHosted):
    def _body(self, body: dict[str, Any], betas: list[str]) -> bytes:
        return raw_predict_body(body, betas)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return anthropic_error_from_vertex(status, body)

    def stream(self, include_usage: bool) -> AnthropicEvents:
        return AnthropicEvents()

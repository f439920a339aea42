"""OpenAI chat completions client -> Claude on Google Cloud's Vertex AI (schema GCPAnthropic).

Composed of two translations: OpenAI's request to Anthropic's (openai_anthropic.build_request, with
every mapping decision described there), then Anthropic's body as rawPredict takes it
(anthropic_gcpanthropic.raw_predict_body: no model, Vertex's anthropic_version, `stream` kept). The
answers, whole and streamed (plain SSE), are Anthropic's: openai_anthropic's answer and stream
halves read them. Errors in Google's shape are unwrapped to an object first
(anthropic_gcpanthropic.vertex_error); openai_anthropic's error half reads both shapes.
"""

from __future__ import annotations

from typing import Any

from .anthropic_gcpanthropic import raw_predict_body, vertex_error
from .common import dumps, guarded
from .openai_anthropic import OpenAIToAnthropic, build_request

__all__ = ["OpenAIToGCPAnthropic"]

class OpenAIToGCPAnthropic(OpenAIToAnthropic):
    """OpenAIToAnthropic (whose answer and stream halves it keeps) with rawPredict's body and errors."""

    def request(self, body: dict[str, Any], model: str) -> bytes:
        return raw_predict_body(guarded(build_request, body, model), [])

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        parsed = vertex_error(body)
        return super().error(status, dumps(parsed) if parsed is not None else body)

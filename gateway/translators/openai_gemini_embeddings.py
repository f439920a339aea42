"""OpenAI embeddings client -> Vertex AI text embeddings (`:predict` on a publisher model).

The GCPVertexAI provider sends /embeddings here (Provider.operation_translators): the model is in the
URL (.../publishers/google/models/{model}:predict), so the body names none.

Request: `input` (a string, or a list of strings) -> `instances: [{"content": text}, ...]`, one per
string, in order; `dimensions` -> `parameters.outputDimensionality`. Token-id inputs (a list of
integers, or of lists of integers) are a 400: Vertex embeds text only. encoding_format must be
"float" or "base64"; user is ignored.

Answer: `predictions[i].embeddings.values` -> `data[i].embedding`, index i; encoding_format "base64"
-> the values as little-endian float32 bytes in base64, what OpenAI sends (and what its SDKs ask for
by default and decode). usage.prompt_tokens = total_tokens = the sum of the predictions'
`statistics.token_count`. `model` is the request's model (Vertex's answer names none).
The answer depends on the request (encoding_format, model): the relay gives it to `response_to`.
Errors are Google's, translated as for chat (openai_gemini_answer.error_from_google).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from modelyard.core.usage import Usage

from .common import JSONTranslator, TranslationError
from .openai_gemini_answer import error_from_google
from .openai_gemini_stream import GeminiStreamToOpenAI

__all__ = ["OpenAIToGeminiEmbeddings", "build_request", "build_response"]


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (int, list)) and not isinstance(v, bool) for v in value):
        raise TranslationError("token-id inputs are not supported by this backend: send the text", "input")
    raise TranslationError("input must be a string or a non-empty list of strings", "input")


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    texts = _texts(body.get("input"))
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise TranslationError("encoding_format must be float or base64", "encoding_format")
    out: dict[str, Any] = {"instances": [{"content": t} for t in texts]}
    if body.get("dimensions") is not None:
        out["parameters"] = {"outputDimensionality": int(body["dimensions"])}
    return out


def _encoded(values: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return values
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def build_response(answer: dict[str, Any], model: str | None, as_base64: bool) -> tuple[dict[str, Any], Usage]:
    data = []
    tokens = 0
    for i, prediction in enumerate(answer["predictions"]):
        embeddings = prediction["embeddings"]
        values = embeddings["values"]
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                  for v in values):
            raise TypeError("embedding values are not numbers")
        stats = embeddings.get("statistics")
        count = stats.get("token_count") if isinstance(stats, dict) else None
        if isinstance(count, (int, float)) and not isinstance(count, bool):
            tokens += int(count)
        data.append({"object": "embedding", "index": i, "embedding": _encoded(values, as_base64)})
    usage = Usage(input_tokens=tokens, total_tokens=tokens)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}, usage


class OpenAIToGeminiEmbeddings(JSONTranslator):
    def build_request(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return build_request(body, model)

    def is_answer(self, answer: dict[str, Any]) -> bool:
        return isinstance(answer.get("predictions"), list)

    def build_answer(self, answer: dict[str, Any], request: dict[str, Any]) -> tuple[Any, Usage, str | None]:
        """Floats, or base64 when the client asked for it; the client's model (the answer names none)."""
        model = request.get("model") if isinstance(request.get("model"), str) else None
        out, usage = build_response(answer, model, request.get("encoding_format") == "base64")
        return out, usage, model

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_from_google(status, body)

    def stream(self, include_usage: bool) -> GeminiStreamToOpenAI:
        # Embeddings are never streamed; should Vertex send an event stream, it is read as generateContent's.
        return GeminiStreamToOpenAI(include_usage)

"""generateContent answers, stream events and errors shared by the Vertex AI translator tests, after the
examples in Google's Vertex AI reference (model-reference/inference, function-calling, text-embeddings-api)."""

from __future__ import annotations

import json
from typing import Any

# The documented text answer (trimmed safetyRatings), whole.
TEXT_ANSWER: dict[str, Any] = {
    "candidates": [{
        "content": {"role": "model", "parts": [{"text": "The sky appears blue because of Rayleigh scattering."}]},
        "finishReason": "STOP",
        "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE",
                           "probabilityScore": 0.05, "severity": "HARM_SEVERITY_NEGLIGIBLE", "severityScore": 0.04}],
        "avgLogprobs": -0.21,
    }],
    "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 104, "totalTokenCount": 110,
                      "trafficType": "ON_DEMAND",
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 6}],
                      "candidatesTokenDetails": [{"modality": "TEXT", "tokenCount": 104}]},
    "modelVersion": "gemini-2.0-flash-001",
    "createTime": "2025-02-20T19:50:53.148155Z",
    "responseId": "3YK3Z5WJCbGg0-kP9JOI8Ag",
}
CREATED = 1740081053  # 2025-02-20T19:50:53Z

# The function-calling example: two parallel calls, a thinking model's thoughts and counts.
CALL_ANSWER: dict[str, Any] = {
    "candidates": [{
        "content": {"role": "model", "parts": [
            {"text": "The user wants two cities.", "thought": True},
            {"functionCall": {"name": "get_current_weather", "args": {"location": "Boston, MA"}},
             "thoughtSignature": "CpwBAVKzPZ0="},
            {"functionCall": {"name": "get_current_weather", "args": {"location": "San Francisco, CA"}}},
        ]},
        "finishReason": "STOP",
    }],
    "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 30, "thoughtsTokenCount": 50,
                      "cachedContentTokenCount": 100, "totalTokenCount": 200},
    "modelVersion": "gemini-2.5-flash",
    "createTime": "2025-06-01T08:00:00Z",
    "responseId": "resp-calls",
}


def sse(events: list[Any], crlf: bool = True) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    return b"".join(b"data: " + json.dumps(e).encode() + nl + nl for e in events)


def _chunk(parts: list[dict[str, Any]] | None, finish: str | None = None, usage: dict[str, Any] | None = None,
           rid: str = "stream-1") -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts or []}}
    if finish:
        cand["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [cand], "modelVersion": "gemini-2.5-flash",
                           "createTime": "2025-06-01T08:00:00.5Z", "responseId": rid}
    if usage is not None:
        out["usageMetadata"] = usage
    return out


STREAM_USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 8, "thoughtsTokenCount": 4, "totalTokenCount": 22}
# A streamGenerateContent?alt=sse answer: thoughts, text in pieces (non-ASCII cut nowhere special),
# a call, and the last event with the finish reason and the final counts.
STREAM_EVENTS: list[dict[str, Any]] = [
    _chunk([{"text": "Think ", "thought": True}], usage={"promptTokenCount": 10, "totalTokenCount": 10}),
    _chunk([{"text": "hard.", "thought": True}]),
    _chunk([{"text": "Hel"}]),
    _chunk([{"text": "lo — é中 🌧."}]),
    _chunk([{"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}]),
    _chunk([{"text": ""}], "STOP", STREAM_USAGE),
]
TEXT_EVENTS: list[dict[str, Any]] = [
    _chunk([{"text": "Hel"}]),
    _chunk([{"text": "lo"}], "STOP", {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}),
]

# Errors as Vertex AI answers them.
ERRORS = {
    400: {"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}},
    401: {"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access "
                    "token, login cookie or other valid authentication credential.", "status": "UNAUTHENTICATED"}},
    403: {"error": {"code": 403, "message": "Permission 'aiplatform.endpoints.predict' denied on resource "
                    "'//aiplatform.googleapis.com/projects/p/locations/us-central1/publishers/google/models/x'.",
                    "status": "PERMISSION_DENIED"}},
    404: {"error": {"code": 404, "message": "Publisher Model `projects/p/locations/us-central1/publishers/google/"
                    "models/gemini-9` was not found or your project does not have access to it.",
                    "status": "NOT_FOUND"}},
    429: {"error": {"code": 429, "message": "Resource exhausted. Please try again later.",
                    "status": "RESOURCE_EXHAUSTED"}},
    500: {"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}},
    503: {"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}},
}

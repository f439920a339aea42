"""Google's error shapes: the API error object (``google.rpc.Status`` as JSON) and OAuth's.

API errors are ``{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT",
"details": [...]}}``; a request the JSON parser refuses lists each problem in a
``google.rpc.BadRequest`` detail, and authentication failures carry a ``google.rpc.ErrorInfo``
whose ``reason`` says what was wrong (missing, expired, scope). The OAuth and STS token endpoints
answer RFC 6749's ``{"error": ..., "error_description": ...}`` instead.
"""

from __future__ import annotations

from typing import Any

from modelyard.loadtest.mock.wire import _BadRequest, _encode

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# What Vertex says for the statuses the mock's controls inject.
STATUS_MESSAGES = {
    429: "Resource exhausted. Please try again later. Please refer to "
         "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    504: "The request timed out. Please try again.",
}

_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_OAUTH = "oauth"  # the `kind` of an OAuth-shaped error


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status) or ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


class GoogleError(_BadRequest):
    """An API error in Google's shape; ``details`` are google.rpc detail objects."""

    def __init__(self, status: int, message: str, name: str | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(status, message, None, None, name or status_name(status))
        self.details = details or []


def error_body(status: int, message: str, name: str | None = None, details: list[dict[str, Any]] | None = None) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message, "status": name or status_name(status)}
    if details:
        error["details"] = details
    return _encode({"error": error})


def invalid_argument(message: str) -> GoogleError:
    return GoogleError(400, message)


def field_violations(violations: list[tuple[str, str]]) -> GoogleError:
    """A 400 for what the JSON parser refused: every (field path, description), all in the message."""
    return GoogleError(
        400, "\n".join(description for _, description in violations), "INVALID_ARGUMENT",
        [{"@type": _BAD_REQUEST, "fieldViolations": [
            ({"field": field, "description": description} if field else {"description": description})
            for field, description in violations]}],
    )


def unauthenticated(message: str, reason: str, method: str, service: str) -> GoogleError:
    """A 401 with the ErrorInfo reason (CREDENTIALS_MISSING, ACCESS_TOKEN_EXPIRED, ...)."""
    return GoogleError(401, message, "UNAUTHENTICATED", [error_info(reason, method, service)])


def error_info(reason: str, method: str, service: str = "aiplatform.googleapis.com") -> dict[str, Any]:
    return {"@type": _ERROR_INFO, "reason": reason, "domain": "googleapis.com",
            "metadata": {"service": service, "method": method}}


class OAuthError(_BadRequest):
    """An OAuth 2.0 / STS token endpoint error: ``{"error": code, "error_description": ...}``."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(status, description, None, code, _OAUTH)


def oauth_body(code: str, description: str) -> bytes:
    return _encode({"error": code, "error_description": description})

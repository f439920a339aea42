"""Client-facing error bodies, encoded once per distinct message."""

from __future__ import annotations

import msgspec

_encode = msgspec.json.encode

# HTTP status -> OpenAI error "type", as the OpenAI API names them.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    """The body OpenAI returns for an error: {"error": {"message", "type", "param", "code"}}."""
    etype = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return _encode({"error": {"message": message, "type": etype, "param": param, "code": code}})


def sse_error_event(message: str, code: str) -> bytes:
    """An SSE event that OpenAI clients surface as an APIError when a stream fails midway."""
    return b"data: " + _encode({"error": {"message": message, "type": "server_error", "param": None, "code": code}}) + b"\n\n"


# HTTP status -> Anthropic error type, as Anthropic's API documents them.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",  # what an OpenAI-compatible server means by 503
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str) -> bytes:
    """The body Anthropic returns for an error: {"type": "error", "error": {"type", "message"}}."""
    etype = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return _encode({"type": "error", "error": {"type": etype, "message": message}})


class GatewayError(Exception):
    """An error the gateway answers itself, raised where it is found and answered once, at the top,
    in the shape of the API the client speaks (error_body). `backend` names the backend it concerns
    (sent in the x-ai-gateway-backend header); `headers` are extra response headers."""

    def __init__(self, status: int, code: str, message: str, backend: str = "",
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message
        self.backend = backend
        self.headers = headers

    def body(self, client: str) -> bytes:
        return error_body(client, self.status, self.message, self.code)


def error_body(client: str, status: int, message: str, code: str) -> bytes:
    """An error in the shape the client's API ("openai" or "anthropic") uses."""
    return anthropic_error(status, message) if client == "anthropic" else openai_error(status, message, code)

"""The interface between the proxy and an API translation.

A translator turns one client API (what the client spoke: "openai" chat
completions or "anthropic" messages) into one backend schema (what the
AIServiceBackend's `schema.name` says: "OpenAI" or "Anthropic") and back.
Same API on both sides means no translator: the proxy passes bytes through. Which translator
a backend needs for each client API is its provider's to say (gateway/providers/).

Contract for callers:
- `request` may raise `TranslationError`: answer 400 in the client's error shape
  (`client_error` below builds it) without calling the backend.
- `response` is for 2xx whole answers, `error` for non-2xx ones.
- A stream translator gets every upstream chunk through `feed` and, on a clean
  upstream EOF, one `flush()`; on a reset the proxy writes its own error event instead.
- Translators hold no per-request state; `stream()` returns a fresh object per stream.
- Two optional methods (RequestAware below) stand in for `request` and `response` where a
  translator defines them: the proxy checks for them with getattr, so others need not.
"""

from __future__ import annotations

from typing import Any, Protocol

from modelyard.core.usage import Usage

from . import anthropic_openai, openai_anthropic
from .common import TranslationError


class StreamTranslator(Protocol):
    usage: Usage | None  # final usage once known
    model: str | None

    def feed(self, chunk: bytes) -> bytes:
        """Upstream SSE bytes, split anywhere -> client bytes (whole events only)."""
        ...

    def flush(self) -> bytes:
        """Upstream ended: the remaining client bytes (OpenAI: the final `data: [DONE]`)."""
        ...


class Translator(Protocol):
    def request(self, body: dict[str, Any], model: str) -> bytes:
        """Client request -> upstream body; raises TranslationError when not expressible."""
        ...

    def response(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        """Upstream 2xx answer -> (client body, usage, model)."""
        ...

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        """Upstream error answer -> client status and body in the client API's error shape."""
        ...

    def stream(self, include_usage: bool) -> StreamTranslator:
        """A fresh translator for one streamed answer."""
        ...


class RequestAware(Protocol):
    """Optional, beside Translator's methods, for a translation that needs more than the body."""

    def request_with_headers(self, body: dict[str, Any], model: str, headers: Any) -> bytes:
        """`request`, for a translation that reads the client's headers too (`headers.get(name)`,
        lower-case names): the anthropic-beta header becomes a body field on Bedrock and Vertex."""
        ...

    def response_to(self, request: dict[str, Any], body: bytes) -> tuple[bytes, Usage | None, str | None]:
        """`response`, for an answer whose shape follows the client's request (decoded): an
        embeddings answer in the encoding_format the client asked for."""
        ...


def client_error(client: str, err: TranslationError) -> tuple[int, bytes]:
    """The 400 a client gets for a request its backend cannot express."""
    if client == "anthropic":
        return 400, anthropic_openai.anthropic_error(400, err.message)
    return 400, openai_anthropic.openai_error(400, err.message, "unsupported_parameter", err.param)


__all__ = ["RequestAware", "StreamTranslator", "TranslationError", "Translator", "client_error"]

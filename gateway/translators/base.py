"""The interface between the proxy and an API translation, and the registry of them.

A translator turns one client API (what the client spoke: "openai" chat
completions or "anthropic" messages) into one backend schema (what the
AIServiceBackend's `schema.name` says: "OpenAI" or "Anthropic") and back.
Same API on both sides means no translator: the proxy passes bytes through.

Contract for callers:
- `request` may raise `TranslationError`: answer 400 in the client's error shape
  (`client_error` below builds it) without calling the backend.
- `response` is for 2xx whole answers, `error` for non-2xx ones.
- A stream translator gets every upstream chunk through `feed` and, on a clean
  upstream EOF, one `end()`; on a reset the proxy writes its own error event instead.
- Translators hold no per-request state; `stream()` returns a fresh object per stream.
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

    def end(self) -> bytes:
        """Upstream ended: the remaining client bytes (OpenAI: the final `data: [DONE]`)."""
        ...


class Translator(Protocol):
    upstream_path: str  # appended to the backend's path prefix by the caller

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


TRANSLATORS: dict[tuple[str, str], Translator] = {
    ("openai", "Anthropic"): openai_anthropic.OpenAIToAnthropic(),
    ("anthropic", "OpenAI"): anthropic_openai.AnthropicToOpenAI(),
}

# Which client API is already native to which backend schema (no translation needed).
_NATIVE = {("openai", "OpenAI"), ("anthropic", "Anthropic")}


def translator_for(client: str, schema: str) -> Translator | None:
    """The translator for this pair; None when the backend speaks the client's API.

    Raises KeyError for a pair nobody translates yet (the proxy answers 501).
    """
    if (client, schema) in _NATIVE:
        return None
    return TRANSLATORS[(client, schema)]


def client_error(client: str, err: TranslationError) -> tuple[int, bytes]:
    """The 400 a client gets for a request its backend cannot express."""
    if client == "anthropic":
        return 400, anthropic_openai.anthropic_error(400, err.message)
    return 400, openai_anthropic.openai_error(400, err.message, "unsupported_parameter", err.param)


__all__ = ["TRANSLATORS", "StreamTranslator", "TranslationError", "Translator", "client_error", "translator_for"]

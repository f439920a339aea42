"""Followers of a relayed stream that the proxy feeds chunk by chunk, beside core.usage.StreamUsage
(OpenAI streams) and the stream translators (same feed/flush/usage face): an Anthropic stream
passed through unchanged whose usage is read on the side.
"""

from __future__ import annotations

from modelyard.core.usage import Usage
from modelyard.gateway.translators.common import loads_object
from modelyard.gateway.translators.openai_anthropic import AnthropicStreamToOpenAI as ANTHROPIC_TO_OPENAI_STREAM
from modelyard.gateway.translators.openai_anthropic import usage_of as anthropic_usage_of


class AnthropicStreamUsage:
    """Usage of an Anthropic stream relayed unchanged (read with the translator's event parser)."""

    __slots__ = ("shadow",)

    def __init__(self) -> None:
        self.shadow = ANTHROPIC_TO_OPENAI_STREAM(True)

    def feed(self, chunk: bytes) -> bytes:
        self.shadow.feed(chunk)
        return chunk

    def flush(self) -> bytes:
        return b""

    @property
    def usage(self) -> Usage | None:
        return self.shadow.usage

    @property
    def model(self) -> str | None:
        return self.shadow.model


def anthropic_usage(data: bytes) -> tuple[Usage | None, str | None]:
    """Usage and model of a whole Anthropic Messages answer."""
    msg = loads_object(data)
    if msg is None or not isinstance(msg.get("usage"), dict):
        return None, None
    return anthropic_usage_of(msg["usage"]), msg.get("model")

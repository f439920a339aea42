"""Anthropic's Messages API: schema "Anthropic"."""

from __future__ import annotations

from typing import ClassVar

from modelyard.core.table import Backend
from modelyard.gateway.providers.base import COUNT_TOKENS, Provider
from modelyard.gateway.translators import Translator
from modelyard.gateway.translators.openai_anthropic import OpenAIToAnthropic

DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


class Anthropic(Provider):
    schema = "Anthropic"
    metric_name = "anthropic"
    # Chat completions are translated to messages; completions and embeddings have no counterpart.
    paths: ClassVar[dict[str, str]] = {"/chat/completions": "/v1/messages", "/messages": "/v1/messages"}
    translators: ClassVar[dict[str, Translator | None]] = {"openai": OpenAIToAnthropic(), "anthropic": None}
    passthrough: ClassVar[dict[str, str]] = {COUNT_TOKENS: "{prefix}/v1/messages/count_tokens"}

    def static_headers(self, backend: Backend) -> tuple[tuple[str, str], ...]:
        return (("anthropic-version", backend.version or DEFAULT_ANTHROPIC_VERSION),)

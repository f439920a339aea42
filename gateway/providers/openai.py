"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, Ollama, ...): schema "OpenAI"."""

from __future__ import annotations

from typing import ClassVar

from modelyard.gateway.providers.base import OPENAI_PATHS, TOKENIZE, Provider
from modelyard.gateway.translators import Translator
from modelyard.gateway.translators.anthropic_openai import AnthropicToOpenAI

# OpenAI clients pass through; Anthropic clients are translated to chat completions.
OPENAI_BODIES: dict[str, Translator | None] = {"openai": None, "anthropic": AnthropicToOpenAI()}


class OpenAI(Provider):
    schema = "OpenAI"
    metric_name = "openai"
    paths = OPENAI_PATHS
    translators = OPENAI_BODIES
    # vLLM serves /tokenize at the server's root; a server without it is remembered per generation.
    passthrough: ClassVar[dict[str, str]] = {TOKENIZE: "/tokenize"}

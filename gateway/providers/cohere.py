"""Cohere: schema "Cohere", OpenAI's chat and embeddings under its compatibility prefix, and rerank."""

from __future__ import annotations

from typing import ClassVar

from modelyard.gateway.providers.base import OPENAI_PATHS, RERANK, Provider
from modelyard.gateway.providers.openai import OPENAI_BODIES


class Cohere(Provider):
    schema = "Cohere"
    metric_name = "cohere"
    paths = OPENAI_PATHS
    translators = OPENAI_BODIES
    passthrough: ClassVar[dict[str, str]] = {RERANK: "/v2/rerank"}  # at the root, not under the prefix

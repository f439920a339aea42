"""The provider registry: one Provider per backend schema (core/schemas.py names them), looked up
once per backend when a worker builds the state of a table generation.

Adding a schema: a module here with its Provider, its translators, its tests, and its name moved
to core/schemas.SERVED_SCHEMAS.
"""

from __future__ import annotations

from modelyard.core.schemas import NOT_SERVED_SCHEMAS, SCHEMA_NAMES, SERVED_SCHEMAS
from modelyard.gateway.providers import (anthropic, aws_anthropic, aws_bedrock, azure_openai, cohere, gcp_anthropic,
                                         gcp_vertex_ai, not_served, openai)
from modelyard.gateway.providers.base import COUNT_TOKENS, RERANK, TOKENIZE, AuthHook, Provider, UpstreamRequest

_SERVED: list[Provider] = [openai.OpenAI(), azure_openai.AzureOpenAI(), cohere.Cohere(), anthropic.Anthropic(),
                          aws_bedrock.AWSBedrock(), aws_anthropic.AWSAnthropic(), gcp_vertex_ai.GCPVertexAI(),
                          gcp_anthropic.GCPAnthropic()]
PROVIDERS: dict[str, Provider] = {p.schema: p for p in (*_SERVED, *not_served.PROVIDERS)}
assert {p.schema for p in _SERVED} == set(SERVED_SCHEMAS)
assert {p.schema for p in not_served.PROVIDERS} == set(NOT_SERVED_SCHEMAS)
assert set(PROVIDERS) == set(SCHEMA_NAMES)


def provider_for(schema: str) -> Provider:
    """The provider of a backend schema; one that serves nothing for a schema no provider knows
    (a placeholder backend for a missing AIServiceBackend has none)."""
    provider = PROVIDERS.get(schema)
    return provider if provider is not None else not_served.NotServed(schema, schema.lower())


__all__ = ["COUNT_TOKENS", "PROVIDERS", "RERANK", "TOKENIZE", "AuthHook", "Provider", "UpstreamRequest", "provider_for"]

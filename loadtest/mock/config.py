"""The mock's settings: what every API reads (``MockConfig``) and what only some do (``ProviderConfig``).

The command line builds both (``loadtest.mock.cli``); they travel to the Granian workers as JSON,
each in its own environment variable, and each worker's app reads them when it starts.
"""

from __future__ import annotations

import os

import msgspec

ENV_VAR = "MODELYARD_MOCK_CONFIG"
PROVIDER_ENV_VAR = "MODELYARD_MOCK_PROVIDER"
APIS = ("openai", "anthropic", "azure", "vertex")
DEFAULT_MODEL = "mock-model"


class MockConfig(msgspec.Struct, frozen=True):
    """Per-process settings, handed to Granian workers as JSON in ``ENV_VAR``."""

    models: tuple[str, ...] = ()
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens: int = 16
    error_rate: float = 0.0
    stall_rate: float = 0.0
    name: str = "mock"
    embedding_dim: int = 8
    # Deterministic misbehaviour of every model POST, so one mock of several can play the broken backend.
    status: int | None = None
    retry_after: int | None = None
    hang: bool = False
    die_after: int | None = None
    no_usage: bool = False  # like servers that report no token usage
    tokenize: bool = False  # serve vLLM's POST /tokenize


def config_from_env() -> MockConfig:
    raw = os.environ.get(ENV_VAR)
    return msgspec.json.decode(raw, type=MockConfig) if raw else MockConfig()


class ServiceAccountKey(msgspec.Struct, frozen=True):
    """A Google service account's public key, for the assertions its private key signs."""

    public_key_pem: str
    email: str | None = None  # None: any `iss` signed by this key
    key_id: str | None = None  # the JSON key file's private_key_id, which google-auth puts in `kid`
    token_uri: str | None = None  # the key file's token_uri, accepted as an assertion audience


class ProviderConfig(msgspec.Struct, frozen=True):
    """What only some APIs read (`--api` and its flags), handed to the workers in ``PROVIDER_ENV_VAR``."""

    api: str = "openai"
    api_key: str | None = None  # None: any non-empty key is accepted
    cache_read: int = 0  # Anthropic usage.cache_read_input_tokens
    cache_creation: int = 0  # Anthropic usage.cache_creation_input_tokens
    error_after: int | None = None  # Anthropic: an `event: error` after this many stream deltas
    # Identity: access tokens the mock issues (vertex: Google OAuth, STS, IAM; azure: Microsoft Entra ID).
    token_lifetime: int = 3600
    oidc_jwks: str | None = None  # the trusted OIDC issuer's JWKS document, fetched at start
    oidc_issuer: str | None = None  # None: any issuer whose token verifies against oidc_jwks
    oidc_audiences: tuple[str, ...] = ()  # accepted subject-token audiences; () the provider's default
    # vertex
    project: str | None = None  # None: any project in the path
    location: str | None = None  # None: any location in the path
    service_accounts: tuple[ServiceAccountKey, ...] = ()
    # azure: the one app registration the Entra token endpoint knows
    azure_tenant_id: str | None = None
    azure_client_id: str | None = None
    azure_client_secret_sha256: str | None = None  # a digest, so no secret travels in the environment


def provider_config_from_env() -> ProviderConfig:
    raw = os.environ.get(PROVIDER_ENV_VAR)
    return msgspec.json.decode(raw, type=ProviderConfig) if raw else ProviderConfig()

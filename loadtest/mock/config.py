"""The mock's settings: what every API reads (``MockConfig``), what only some do (``ProviderConfig``,
with the identity settings every token endpoint shares: the lifetime of the tokens the mock issues and
the OIDC issuer it trusts), and what only the AWS side reads (``CloudConfig``: Bedrock with its STS,
and the OIDC issuer mock).

The command line builds them (``loadtest.mock.cli``); they travel to the Granian workers as JSON,
each in its own environment variable, and each worker's app reads them when it starts.
"""

from __future__ import annotations

import os

import msgspec

ENV_VAR = "MODELYARD_MOCK_CONFIG"
PROVIDER_ENV_VAR = "MODELYARD_MOCK_PROVIDER"
CLOUD_ENV_VAR = "MODELYARD_MOCK_CLOUD"
AWS_KEYS_ENV_VAR = "MODELYARD_MOCK_AWS_KEYS"  # JSON key pairs, as --aws-keys FILE holds them
APIS = ("openai", "anthropic", "azure", "vertex", "bedrock", "oidc")
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
    cache_read: int = 0  # cache-read input tokens to report (anthropic, vertex, bedrock)
    cache_creation: int = 0  # cache-creation (write) input tokens to report (anthropic, bedrock)
    error_after: int | None = None  # end streams with an error after this many deltas (anthropic, bedrock)
    # Identity: the tokens the mock issues (vertex: Google OAuth, STS, IAM; azure: Microsoft Entra ID;
    # oidc: its RS256 tokens) live this long; the OIDC issuer whose tokens vertex's STS, azure's client
    # assertions and bedrock's STS accept.
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


class CloudConfig(msgspec.Struct, frozen=True):
    """What ``--api bedrock`` (with its STS) and ``--api oidc`` read, handed over in ``CLOUD_ENV_VAR``.

    It holds the mock's own test secrets (accepted keys, the STS and OIDC signing secrets): the
    environment of the mock's workers is where they travel, and no repr or log shows them."""

    # --api bedrock
    region: str = "us-east-1"
    aws_keys: dict[str, str] = {}  # access key id -> secret access key; empty: AWS's documented example pair
    sts_secret: str = ""  # HMAC key of the STS-issued credentials; empty: the run's token key (tokens.py)
    sts_duration: int | None = None  # lifetime of STS-issued credentials; None: the requested DurationSeconds
    sts_roles: tuple[str, ...] = ()  # the roles STS lets assume; empty: any well-formed role ARN
    stream_error: str = "modelStreamErrorException"  # the exception --error-after ends a stream with
    throttle_rate: float = 0.0  # fraction of model calls answered 429 ThrottlingException
    # --api oidc
    signing_key: str = ""  # PEM of the RSA key that signs tokens (generated at start when not given)
    client_id: str = "mock-client"
    client_secret: str = "mock-secret"
    issuer: str | None = None  # None: the URL the discovery document is reached at

    def __repr__(self) -> str:
        return (f"CloudConfig(region={self.region!r}, {len(self.aws_keys)} keys, sts_duration={self.sts_duration}, "
                f"issuer={self.issuer!r})")

    __str__ = __repr__


def cloud_config_from_env() -> CloudConfig:
    raw = os.environ.get(CLOUD_ENV_VAR)
    return msgspec.json.decode(raw, type=CloudConfig) if raw else CloudConfig()

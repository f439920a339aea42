"""The backend schemas and credential types the configuration accepts: plain names, shared by the
control plane (which validates and compiles them) and the data plane, whose providers
(gateway/providers/) register against these names, one module per served schema.

A schema or credential type listed as not served yet loads, and its backends answer 501: the
config compiler gives such a backend an error, and the data plane has no translator for it.
Serving one means adding its provider module and moving its name here from NOT_SERVED to SERVED.
"""

from __future__ import annotations

# AIServiceBackend spec.schema.name values with a provider in this release.
SERVED_SCHEMAS = ("OpenAI", "Cohere", "AzureOpenAI", "Anthropic", "AWSBedrock", "AWSAnthropic", "GCPVertexAI",
                  "GCPAnthropic")
# Accepted, and answered 501 (schema_not_supported) until their providers land: none left.
NOT_SERVED_SCHEMAS: tuple[str, ...] = ()
SCHEMA_NAMES = ("OpenAI", "Cohere", "AWSBedrock", "AzureOpenAI", "GCPVertexAI", "GCPAnthropic", "Anthropic",
                "AWSAnthropic")
assert set(SCHEMA_NAMES) == set(SERVED_SCHEMAS) | set(NOT_SERVED_SCHEMAS)

# The path prefix of a backend whose schema names none. Cohere speaks OpenAI's chat and embeddings
# under its compatibility prefix; Azure's paths are built per request
# (/openai/deployments/{deployment}/...), so its prefix is /openai; Bedrock's are too
# (/model/{modelId}/converse), at the endpoint's root, and Vertex AI's
# (/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:generateContent).
DEFAULT_PREFIX = {"OpenAI": "/v1", "AzureOpenAI": "/openai", "Cohere": "/compatibility/v1", "Anthropic": "",
                  "AWSBedrock": "", "AWSAnthropic": "", "GCPVertexAI": "", "GCPAnthropic": ""}
FALLBACK_PREFIX = "/v1"
# The version (Azure: the api-version query parameter) of a backend whose schema names none.
DEFAULT_VERSION = {"AzureOpenAI": "2024-10-21"}

# BackendSecurityPolicy types whose credential is an API key (Secret data "apiKey") sent in a
# header: type -> (upstream header, value template).
API_KEY_HEADERS = {
    "APIKey": ("authorization", "Bearer {}"),
    "AzureAPIKey": ("api-key", "{}"),
    "AnthropicAPIKey": ("x-api-key", "{}"),
}
# Cloud credentials: fetched and refreshed by the control process (config/cloud_credentials/), handed
# to the workers in the credentials segment (core/credentials.py).
CLOUD_CREDENTIALS = ("AWSCredentials", "AzureCredentials", "GCPCredentials")
CREDENTIAL_TYPES = ("APIKey", "AWSCredentials", "AzureAPIKey", "AzureCredentials", "GCPCredentials", "AnthropicAPIKey")
assert set(CREDENTIAL_TYPES) == set(API_KEY_HEADERS) | set(CLOUD_CREDENTIALS)

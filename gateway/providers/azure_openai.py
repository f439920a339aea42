"""Azure OpenAI: schema "AzureOpenAI", OpenAI's bodies at /openai/deployments/{model}/...?api-version=.

Authenticated with an API key (AzureAPIKey: the api-key header) or, with AzureCredentials, with a
Microsoft Entra ID token the control process fetches and refreshes (`authorization: Bearer`, read
from the credentials segment under the policy's key).
"""

from __future__ import annotations

from urllib.parse import quote

from modelyard.core.table import Backend, CredentialOverride
from modelyard.gateway.providers.base import OPENAI_PATHS, AuthHook, Provider
from modelyard.gateway.providers.credentials import bearer_auth
from modelyard.gateway.providers.openai import OPENAI_BODIES


class AzureOpenAI(Provider):
    schema = "AzureOpenAI"
    metric_name = "azure.ai.openai"
    paths = OPENAI_PATHS
    translators = OPENAI_BODIES

    def upstream_path(self, backend: Backend, operation: str) -> tuple[bytes, bytes | None] | None:
        # The deployment (the request's model) goes between the two parts; the proxy inserts it.
        op = self.paths.get(operation)
        if op is None:
            return None
        return (f"{backend.prefix}/deployments/".encode("latin-1"),
                f"{op}?api-version={quote(backend.version or '', safe='')}".encode("latin-1"))

    def auth(self, backend: Backend, mutation_lines: bytes, auth_lines: bytes,
             override: CredentialOverride | None) -> AuthHook:
        if backend.cloud is not None:
            return bearer_auth(mutation_lines, backend.cloud.key)
        return super().auth(backend, mutation_lines, auth_lines, override)

"""Azure OpenAI: schema "AzureOpenAI", OpenAI's bodies at /openai/deployments/{model}/...?api-version=."""

from __future__ import annotations

from urllib.parse import quote

from modelyard.core.table import Backend
from modelyard.gateway.providers.base import OPENAI_PATHS, Provider
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

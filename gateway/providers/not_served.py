"""The schemas the configuration accepts that no provider serves yet (core/schemas.NOT_SERVED_SCHEMAS).

Their backends carry a 501 error from the config compiler (schema_not_supported); should one be
reached anyway (a client picking it by the backend header), no client API has a translator for
it and the proxy answers 501. Serving one means replacing its entry here by a module of its own.
The same stands in for a backend whose schema no provider knows (a placeholder for a missing one).
"""

from __future__ import annotations

from modelyard.gateway.providers.base import OPENAI_PATHS, Provider


class NotServed(Provider):
    paths = OPENAI_PATHS  # where an OpenAI-style request would go: the 501 comes from the translators
    translators = {}

    def __init__(self, schema: str, metric_name: str):
        self.schema = schema  # type: ignore[misc]
        self.metric_name = metric_name  # type: ignore[misc]


# gen_ai.provider.name per OpenTelemetry's GenAI conventions.
PROVIDERS = [
]

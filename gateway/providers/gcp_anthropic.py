"""Claude on Google Cloud's Vertex AI, in Anthropic's own Messages shapes: schema "GCPAnthropic".

Paths: `{prefix}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:rawPredict`,
or `:streamRawPredict` when the client asked for a stream (its answer is plain Anthropic SSE). The
project and region are the backend's GCPCredentials policy's (Backend.cloud.project and .region);
the model is the request's after modelNameOverride (claude-sonnet-4@20250514), percent-encoded by
the proxy between the two parts upstream_path returns ('@' goes as %40, which Google's front end
decodes). The endpoint host ({region}-aiplatform.googleapis.com, or aiplatform.googleapis.com for the
global region) is the backend's own, as configured. Without a GCPCredentials policy (no
Backend.cloud), or one that names no project or no region, there is no path to build: upstream_path
is None for every operation, so the backend serves nothing (the proxy answers 501
operation_not_supported where no other backend of the route can serve the request).

Translators: Anthropic clients' bodies go as they are but for Vertex's changes (no model,
anthropic_version "vertex-2023-10-16"), their answers come back as they are with usage read
(translators/anthropic_gcpanthropic.py); OpenAI clients' go through the OpenAI -> Anthropic
translation first (translators/openai_gcpanthropic.py).

Auth: `authorization: Bearer <token>` with the OAuth access token the control process publishes
under the policy's key (Backend.cloud.key; providers/credentials.bearer_auth): a 401 until it has.
"""

from __future__ import annotations

from typing import ClassVar

from modelyard.core.table import Backend, CredentialOverride
from modelyard.gateway.providers.base import AuthHook, Provider, static_auth
from modelyard.gateway.providers.credentials import bearer_auth
from modelyard.gateway.providers.gcp_vertex_ai import publisher_path
from modelyard.gateway.translators import Translator
from modelyard.gateway.translators.anthropic_gcpanthropic import AnthropicToGCPAnthropic
from modelyard.gateway.translators.openai_gcpanthropic import OpenAIToGCPAnthropic


class GCPAnthropic(Provider):
    schema = "GCPAnthropic"
    metric_name = "gcp.vertex_ai"
    paths: ClassVar[dict[str, str]] = {"/chat/completions": ":rawPredict", "/messages": ":rawPredict"}
    stream_paths: ClassVar[dict[str, str]] = {"/chat/completions": ":streamRawPredict",
                                              "/messages": ":streamRawPredict"}
    translators: ClassVar[dict[str, Translator | None]] = {"openai": OpenAIToGCPAnthropic(),
                                                           "anthropic": AnthropicToGCPAnthropic()}

    def upstream_path(self, backend: Backend, operation: str) -> tuple[bytes, bytes | None] | None:
        return publisher_path(backend, "anthropic", self.paths.get(operation))

    def auth(self, backend: Backend, mutation_lines: bytes, auth_lines: bytes,
             override: CredentialOverride | None) -> AuthHook:
        cloud = backend.cloud
        if cloud is None:  # no GCPCredentials policy: nothing to send (and no path to send it to)
            return static_auth(mutation_lines + auth_lines)
        return bearer_auth(mutation_lines, cloud.key)

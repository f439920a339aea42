"""Gemini on Google Cloud Vertex AI: schema "GCPVertexAI", every attempt with a GCP access token.

Paths: a publisher model's methods under the project and location of the backend's GCPCredentials
policy (Backend.cloud: `project` is its projectName, `region` its region, the Vertex AI location):

    {prefix}/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:generateContent
    ... {model}:streamGenerateContent?alt=sse   (chat completions with stream: true)
    ... {model}:predict                          (embeddings)

The model is the request's after modelNameOverride, percent-encoded with every reserved character
escaped; the proxy inserts it between the two parts upstream_path returns, and takes stream_tail's
second part for a stream. A client's query string joins the streaming tail's own with '&'.
The prefix is "" by default (core/schemas.DEFAULT_PREFIX).

A backend without a GCPCredentials policy has no project or location to address: upstream_path
returns None for it and the proxy answers 501 (operation_not_supported), as it does for an
operation a backend lacks.

Host: the Backend resource's endpoint, which the user names: `{region}-aiplatform.googleapis.com`
for a regional location, `aiplatform.googleapis.com` for the "global" location (port 443, with a
BackendTLSPolicy). The gateway does not derive it.

Credentials: the control process's credential refresher publishes the policy's OAuth2 access token,
the bare token string, in the credentials segment under the policy's key (Backend.cloud.key); the
hook sends it as `authorization: Bearer <token>` (providers/credentials.bearer_auth). Until one is
published the hook returns None and the client gets a 401 (missing_credentials).
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from modelyard.core.table import Backend, CredentialOverride
from modelyard.gateway.providers.base import AuthHook, Provider
from modelyard.gateway.providers.credentials import bearer_auth
from modelyard.gateway.translators import Translator
from modelyard.gateway.translators.openai_gemini import OpenAIToGemini
from modelyard.gateway.translators.openai_gemini_embeddings import OpenAIToGeminiEmbeddings

CLOUD_TYPE = "GCPCredentials"


def publisher_path(backend: Backend, publisher: str, tail: str | None) -> tuple[bytes, bytes | None] | None:
    """(the path up to a publisher's model, `tail`) under the project and location of the backend's
    GCPCredentials policy; None without a tail, a policy, or a project and location to name."""
    cloud = backend.cloud
    if tail is None or cloud is None or cloud.type != CLOUD_TYPE or not cloud.project or not cloud.region:
        return None
    path = (f"{backend.prefix}/v1/projects/{quote(cloud.project, safe='')}/locations/"
            f"{quote(cloud.region, safe='')}/publishers/{publisher}/models/")
    return path.encode("latin-1"), tail.encode("latin-1")


class GCPVertexAI(Provider):
    schema = "GCPVertexAI"
    metric_name = "gcp.vertex_ai"
    # Operation -> the method after the model; completions and messages have no counterpart.
    paths: ClassVar[dict[str, str]] = {"/chat/completions": ":generateContent", "/embeddings": ":predict"}
    stream_paths: ClassVar[dict[str, str]] = {"/chat/completions": ":streamGenerateContent?alt=sse"}
    # OpenAI clients only; their embeddings go through :predict with a translator of their own.
    translators: ClassVar[dict[str, Translator | None]] = {"openai": OpenAIToGemini()}
    operation_translators: ClassVar[dict[tuple[str, str], Translator | None]] = {
        ("openai", "/embeddings"): OpenAIToGeminiEmbeddings()}

    def upstream_path(self, backend: Backend, operation: str) -> tuple[bytes, bytes | None] | None:
        return publisher_path(backend, "google", self.paths.get(operation))

    def auth(self, backend: Backend, mutation_lines: bytes, auth_lines: bytes,
             override: CredentialOverride | None) -> AuthHook:
        # No API keys and no client keys: the published access token authenticates every attempt.
        cloud = backend.cloud
        return bearer_auth(mutation_lines, cloud.key if cloud is not None else backend.name)

"""What a backend schema brings to the data plane: the Provider interface, and its auth hook.

A provider says, for one AIServiceBackend `schema.name`, where each operation goes upstream,
which headers every request carries, which translator each client API needs, which requests it
takes as they are (passthrough endpoints), the name metrics know it by, and how an attempt is
authenticated. All of it is asked once per table generation, when a worker builds its state; the
hot path only reads what was prepared then, and calls the auth hook once per attempt.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from modelyard.core.table import Backend, CredentialOverride
from modelyard.core.wire import HEADER_ENCODING, header_value_problem
from modelyard.gateway.translators import Translator

# Passthrough endpoints: requests a backend takes as the client sent them (gateway/passthrough.py).
TOKENIZE = "tokenize"  # vLLM's /tokenize
COUNT_TOKENS = "count_tokens"  # Anthropic's /v1/messages/count_tokens
RERANK = "rerank"  # Cohere's /v2/rerank


class AuthHook(Protocol):
    """Authenticates one upstream attempt; called again for every attempt, on every failover.

    `head` is the request head as it goes out, in pieces: the request line (method and path with
    its query), Host, the client's headers that pass and the gateway's; `body` is the exact body.
    The client's own headers come as `client` (a credentialOverride reads the client's key there).
    Returns the header lines that follow (the backendRef's header edits, then the credentials),
    or None when the credentials the backend needs are missing (the client gets a 401).
    The common case returns bytes rendered once per table generation: no work per request.
    """

    def __call__(self, head: list[bytes], body: bytes, client: Any) -> bytes | None: ...


class UpstreamRequest:
    """One attempt's method, path, headers and body, parsed from the pieces an AuthHook gets: for
    hooks that sign what is sent (SigV4), never built for those that do not."""

    __slots__ = ("method", "path", "headers", "body")

    def __init__(self, head: list[bytes], body: bytes):
        lines = b"".join(head).split(b"\r\n")
        self.method, _, self.path = lines[0].partition(b" HTTP/")[0].partition(b" ")
        self.headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines[1:] if line]
        self.body = body


def static_auth(lines: bytes) -> AuthHook:
    """A hook that adds the same bytes to every attempt (configured API keys, no credentials)."""
    def hook(head: list[bytes], body: bytes, client: Any) -> bytes | None:
        return lines
    return hook


def api_key_auth(mutation_lines: bytes, auth_lines: bytes, override: CredentialOverride | None) -> AuthHook:
    """API keys: the configured key's header (rendered once per generation), or with a
    credentialOverride the client's own key from its header, else the configured one if allowed."""
    set_lines = mutation_lines + auth_lines
    if override is None:
        return static_auth(set_lines)
    client_header, upstream_header, template = override.client_header, override.upstream_header, override.template
    fallback = set_lines if override.fallback and auth_lines else None

    def from_client(head: list[bytes], body: bytes, client: Any) -> bytes | None:
        value = client.get(client_header)
        if value and header_value_problem(value, None) is None:
            return mutation_lines + f"{upstream_header}: {template.format(value)}\r\n".encode(HEADER_ENCODING)
        return fallback
    return from_client


class Provider:
    """One backend schema. Subclasses set the class attributes and override what differs."""

    schema: ClassVar[str]  # the AIServiceBackend schema.name it serves
    metric_name: ClassVar[str]  # gen_ai.provider.name in metrics and the access log
    # Operation (the client path's suffix, e.g. "/chat/completions") -> path after the backend's prefix.
    paths: ClassVar[dict[str, str]] = {}
    # Operation -> the tail a streaming request takes instead, for a provider whose path names the
    # model (Bedrock's /converse-stream); an operation missing here takes the same tail either way.
    stream_paths: ClassVar[dict[str, str]] = {}
    # Client API ("openai", "anthropic") -> None (the backend speaks it) or the translator to use;
    # a client API missing here cannot reach the backend (the proxy answers 501).
    translators: ClassVar[dict[str, Translator | None]] = {}
    # (client API, operation) -> the translator for that pair where it differs from `translators`'
    # (Bedrock's embeddings go through InvokeModel, its chat through Converse).
    operation_translators: ClassVar[dict[tuple[str, str], Translator | None]] = {}
    # Passthrough endpoint (TOKENIZE, ...) -> its upstream path; "{prefix}" is the backend's prefix.
    passthrough: ClassVar[dict[str, str]] = {}
    # Headers the provider's auth hook writes (SigV4's x-amz-*): a client's own never go upstream.
    owned_headers: ClassVar[frozenset[str]] = frozenset()
    # Upstream content-types (prefixes) of an answer relayed as a stream, chunk by chunk: SSE, or
    # Bedrock's binary event stream, which its translator turns into the client's SSE.
    stream_content_types: ClassVar[tuple[str, ...]] = ("text/event-stream",)

    def upstream_path(self, backend: Backend, operation: str) -> tuple[bytes, bytes | None] | None:
        """Where an operation goes: (path, None), or (the path up to a deployment named by the model,
        the rest after it) for Azure; None when the backend has no such operation."""
        path = self.paths.get(operation)
        return None if path is None else (f"{backend.prefix}{path}".encode("latin-1"), None)

    def stream_tail(self, backend: Backend, operation: str) -> bytes | None:
        """For a provider whose path depends on the model: the tail a streaming request takes in
        place of upstream_path's (Bedrock's /converse-stream); None: the same tail either way."""
        tail = self.stream_paths.get(operation)
        return None if tail is None else tail.encode("latin-1")

    def translator_table(self, operations: tuple[str, ...]) -> dict[tuple[str, str], Translator | None]:
        """(client API, operation) -> translator for each operation a client can ask for; a pair
        missing from it cannot reach this backend."""
        table = {(client, op): t for client, t in self.translators.items() for op in operations}
        table.update(self.operation_translators)
        return table

    def passthrough_paths(self, backend: Backend) -> dict[str, bytes]:
        return {name: path.format(prefix=backend.prefix).encode("latin-1") for name, path in self.passthrough.items()}

    def static_headers(self, backend: Backend) -> tuple[tuple[str, str], ...]:
        """Headers every request to this backend carries, after the backendRef's own."""
        return ()

    def auth(self, backend: Backend, mutation_lines: bytes, auth_lines: bytes,
             override: CredentialOverride | None) -> AuthHook:
        """The per-attempt hook; `mutation_lines` (the backendRef's header edits) go first."""
        return api_key_auth(mutation_lines, auth_lines, override)


# The operations an OpenAI-compatible server serves, by the client path's suffix; Anthropic
# clients' /messages reaches its chat completions through the translator.
OPENAI_PATHS = {"/chat/completions": "/chat/completions", "/completions": "/completions",
                "/embeddings": "/embeddings", "/messages": "/chat/completions"}


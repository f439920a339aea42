"""The endpoints the gateway serves: a path -> (handler, method) table built once per worker,
and the 404 and 405 answers for requests outside it, which list what is served.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, NamedTuple

from modelyard.core.errors import GatewayError


class Endpoint(NamedTuple):
    path: str
    method: str
    handler: str  # the name of a GatewayApp method
    operation: str  # as logged and in metrics
    upstream: str  # the operation's path at a backend (proxied endpoints); "" otherwise
    client: str  # the API it speaks: the shape of its errors
    listed: bool  # named in the 404's list of what is served


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/v1/chat/completions", "POST", "_proxy", "chat", "/chat/completions", "openai", True),
    Endpoint("/v1/completions", "POST", "_proxy", "text_completion", "/completions", "openai", True),
    Endpoint("/v1/embeddings", "POST", "_proxy", "embeddings", "/embeddings", "openai", True),
    Endpoint("/v1/models", "GET", "_models", "models", "", "openai", True),
    Endpoint("/v1/messages", "POST", "_proxy", "chat", "/messages", "anthropic", True),
    Endpoint("/v1/messages/count_tokens", "POST", "_count", "count_tokens", "", "anthropic", True),
    Endpoint("/tokenize", "POST", "_count", "tokenize", "", "openai", True),
    Endpoint("/cohere/v2/rerank", "POST", "_rerank", "rerank", "", "openai", True),
    Endpoint("/anthropic/v1/messages", "POST", "_proxy", "chat", "/messages", "anthropic", False),
    Endpoint("/anthropic/v1/models", "GET", "_models", "models", "", "anthropic", False),
    Endpoint("/anthropic/v1/messages/count_tokens", "POST", "_count", "count_tokens", "", "anthropic", False),
)


def _listing(paths: list[str]) -> str:
    return ", ".join(paths[:-1]) + " and " + paths[-1]


SERVED = _listing([e.path for e in ENDPOINTS if e.listed])


class Route:
    """One endpoint: the handler that answers it and the one method it takes."""

    __slots__ = ("path", "method", "handler", "operation", "upstream", "client")

    def __init__(self, path: str, method: str, handler: Callable[..., Awaitable[None]], operation: str,
                 upstream: str, client: str):
        self.path = path
        self.method = method
        self.handler = handler  # awaited as handler(scope, proto, exchange, route)
        self.operation = operation
        self.upstream = upstream  # the operation's path at the backend ("/chat/completions"); "" when not proxied
        self.client = client


def build_routes(owner: Any) -> dict[str, Route]:
    """The route table, with the handlers bound to `owner` (the worker's app)."""
    return {e.path: Route(e.path, e.method, getattr(owner, e.handler), e.operation, e.upstream, e.client)
            for e in ENDPOINTS}


def client_of(path: str) -> str:
    """The API a request to an unknown path most likely speaks, for the shape of its 404."""
    return "anthropic" if path.startswith("/anthropic/") or path.endswith("/count_tokens") else "openai"


def refusal(route: Route | None, method: str, path: str) -> GatewayError:
    """404 for a path outside the table, 405 (with Allow) for a method its endpoint does not take."""
    if route is None:
        return GatewayError(404, "unknown_endpoint", f"Unknown endpoint {path!r}. This gateway serves {SERVED}.")
    return GatewayError(405, "method_not_allowed", f"Method {method!r} is not allowed on {path}.",
                        headers=(("allow", route.method),))

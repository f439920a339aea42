"""The endpoints the gateway serves: a path -> (handler, method) table built once per worker,
and the 404 and 405 answers for requests outside it, which list what is served.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from modelyard.core.errors import GatewayError

# path, method, handler (a GatewayApp method), operation (as logged), upstream operation (proxied
# endpoints), the client API (the shape of its errors), listed in the 404's message
ENDPOINTS: tuple[tuple[str, str, str, str, str, str, bool], ...] = (
    ("/v1/chat/completions", "POST", "_proxy", "chat", "/chat/completions", "openai", True),
    ("/v1/completions", "POST", "_proxy", "text_completion", "/completions", "openai", True),
    ("/v1/embeddings", "POST", "_proxy", "embeddings", "/embeddings", "openai", True),
    ("/v1/models", "GET", "_models", "models", "", "openai", True),
    ("/v1/messages", "POST", "_proxy", "chat", "/messages", "anthropic", True),
    ("/v1/messages/count_tokens", "POST", "_count", "count_tokens", "", "anthropic", True),
    ("/tokenize", "POST", "_count", "tokenize", "", "openai", True),
    ("/cohere/v2/rerank", "POST", "_rerank", "rerank", "", "openai", True),
    ("/anthropic/v1/messages", "POST", "_proxy", "chat", "/messages", "anthropic", False),
    ("/anthropic/v1/models", "GET", "_models", "models", "", "anthropic", False),
    ("/anthropic/v1/messages/count_tokens", "POST", "_count", "count_tokens", "", "anthropic", False),
)


def _listing(paths: list[str]) -> str:
    return ", ".join(paths[:-1]) + " and " + paths[-1]


SERVED = _listing([path for path, *_, listed in ENDPOINTS if listed])


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
    return {path: Route(path, method, getattr(owner, handler), operation, upstream, client)
            for path, method, handler, operation, upstream, client, _ in ENDPOINTS}


def client_of(path: str) -> str:
    """The API a request to an unknown path most likely speaks, for the shape of its 404."""
    return "anthropic" if path.startswith("/anthropic/") or path.endswith("/count_tokens") else "openai"


def refusal(route: Route | None, method: str, path: str) -> GatewayError:
    """404 for a path outside the table, 405 (with Allow) for a method its endpoint does not take."""
    if route is None:
        return GatewayError(404, "unknown_endpoint", f"Unknown endpoint {path!r}. This gateway serves {SERVED}.")
    return GatewayError(405, "method_not_allowed", f"Method {method!r} is not allowed on {path}.",
                        headers=(("allow", route.method),))

"""The route table, its 404/405 refusals and GatewayError's answers in each client API's shape (no processes)."""

from __future__ import annotations

import json

import pytest

from modelyard.core.errors import GatewayError
from modelyard.gateway.accounting import Exchange
from modelyard.gateway.errors import BACKEND_HEADER, JSON_HEADERS, answer_error
from modelyard.gateway.routes import ENDPOINTS, SERVED, build_routes, client_of, refusal


class _Owner:
    """Stands in for the app: a handler per name the table uses."""

    async def _proxy(self, *args: object) -> None: ...
    async def _models(self, *args: object) -> None: ...
    async def _count(self, *args: object) -> None: ...
    async def _rerank(self, *args: object) -> None: ...


class _Proto:
    def __init__(self) -> None:
        self.answers: list[tuple[int, list[tuple[str, str]], bytes]] = []

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answers.append((status, headers, body))


def test_every_endpoint_routes_to_its_handler_method_operation_and_client() -> None:
    owner = _Owner()
    routes = build_routes(owner)
    assert len(routes) == len(ENDPOINTS)
    chat = routes["/v1/chat/completions"]
    assert (chat.method, chat.operation, chat.upstream, chat.client) == ("POST", "chat", "/chat/completions", "openai")
    assert chat.handler == owner._proxy
    messages = routes["/anthropic/v1/messages"]
    assert (messages.upstream, messages.client, messages.handler) == ("/messages", "anthropic", owner._proxy)
    models = routes["/anthropic/v1/models"]
    assert (models.method, models.operation, models.client, models.handler) == ("GET", "models", "anthropic",
                                                                                 owner._models)
    assert routes["/tokenize"].operation == "tokenize" and routes["/tokenize"].client == "openai"
    assert routes["/v1/messages/count_tokens"].client == "anthropic"
    assert routes["/cohere/v2/rerank"].handler == owner._rerank
    assert "/v1/chat/completions/" not in routes  # paths are matched exactly


def test_unknown_paths_take_the_likely_client_api() -> None:
    assert client_of("/anthropic/v2/other") == "anthropic"
    assert client_of("/v2/messages/count_tokens") == "anthropic"
    assert client_of("/no/such/endpoint") == "openai"


def test_404_lists_what_is_served_and_405_names_the_method() -> None:
    assert SERVED == ("/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /v1/messages, "
                      "/v1/messages/count_tokens, /tokenize and /cohere/v2/rerank")
    missing = refusal(None, "GET", "/nope")
    assert (missing.status, missing.code) == (404, "unknown_endpoint")
    assert missing.message == f"Unknown endpoint '/nope'. This gateway serves {SERVED}."
    route = build_routes(_Owner())["/v1/models"]
    wrong = refusal(route, "DELETE", "/v1/models")
    assert (wrong.status, wrong.code, wrong.message) == (405, "method_not_allowed",
                                                          "Method 'DELETE' is not allowed on /v1/models.")
    assert wrong.headers == (("allow", "GET"),)


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_a_gateway_error_is_answered_once_in_the_clients_shape(client: str) -> None:
    exchange = Exchange(0.0, "chat", client)
    proto = _Proto()
    answer_error(proto, exchange, GatewayError(429, "rate_limited", "Slow down."))
    ((status, headers, body),) = proto.answers
    assert status == 429 and headers == JSON_HEADERS
    assert (exchange.status, exchange.error, exchange.backend) == (429, "rate_limited", "")
    if client == "anthropic":
        assert json.loads(body) == {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down."}}
    else:
        assert json.loads(body) == {"error": {"message": "Slow down.", "type": "rate_limit_error", "param": None,
                                              "code": "rate_limited"}}


def test_a_gateway_error_names_its_backend_and_extra_headers() -> None:
    exchange = Exchange(0.0, "chat")
    proto = _Proto()
    answer_error(proto, exchange, GatewayError(502, "upstream_reset", "b broke off.", "default/b",
                                               (("connection", "close"),)))
    ((status, headers, body),) = proto.answers
    assert status == 502 and exchange.backend == "default/b"
    assert headers == [*JSON_HEADERS, (BACKEND_HEADER, "default/b"), ("connection", "close")]
    assert json.loads(body)["error"]["type"] == "server_error"

"""Requests passed to a backend as they are, outside the chat path: vLLM's /tokenize, Anthropic's
count_tokens and Cohere's rerank. Each goes to the backend the body's model (`exchange.model`,
sniffed by the caller) routes to, when that backend has the endpoint; the caller answers locally
(or with an error) when it does not.
"""

from __future__ import annotations

from typing import Any, Callable

from modelyard.core.sniff import rewrite_body
from modelyard.gateway.accounting import Exchange
from modelyard.gateway.client_window import ClientWindow
from modelyard.gateway.errors import CLIENT_GONE
from modelyard.gateway.http1 import HIGH_WATER, UpstreamError
from modelyard.gateway.providers import COUNT_TOKENS, RERANK, TOKENIZE
from modelyard.gateway.proxy import Upstream, attempt
from modelyard.gateway.relay import pump, relay_sized, response_headers
from modelyard.gateway.state import BackendRuntime, GenerationState

_UNSERVED = frozenset({404, 405, 501})


async def forward_tokenize(upstream: Upstream, state: GenerationState, scope: Any, proto: Any, body: bytes,
                           exchange: Exchange) -> bool:
    """Send vLLM's /tokenize to the backend the body's model routes to, at the server's root as
    vLLM serves it; True when the backend answered. A backend that does not serve it is
    remembered for the rest of the table generation and not asked again."""
    def path(backend: BackendRuntime) -> bytes | None:
        return None if backend.tokenize_unserved else backend.passthrough.get(TOKENIZE)
    return await _forward_plain(upstream, state, scope, proto, body, exchange, path)


async def forward_count_tokens(upstream: Upstream, state: GenerationState, scope: Any, proto: Any,
                               body: bytes, exchange: Exchange) -> bool:
    """Anthropic's count_tokens, to the Anthropic backend the model routes to; False for other backends."""
    def path(backend: BackendRuntime) -> bytes | None:
        return backend.passthrough.get(COUNT_TOKENS)
    return await _forward_plain(upstream, state, scope, proto, body, exchange, path)


def may_pass_through(state: GenerationState, path: str) -> bool:
    """Whether some backend of this table may answer a /tokenize (`path`) or count_tokens itself: only
    then is the body read past what the gateway's own counting takes (--max-count-bytes)."""
    if path == "/tokenize":
        return any(TOKENIZE in b.passthrough and not b.tokenize_unserved for b in state.backends)
    return any(COUNT_TOKENS in b.passthrough for b in state.backends)


async def forward_rerank(upstream: Upstream, state: GenerationState, scope: Any, proto: Any, body: bytes,
                         exchange: Exchange) -> bool:
    """Cohere's rerank, as it is, to the Cohere backend the model routes to; False for other backends."""
    def path(backend: BackendRuntime) -> bytes | None:
        return backend.passthrough.get(RERANK)
    return await _forward_plain(upstream, state, scope, proto, body, exchange, path)


async def _forward_plain(upstream: Upstream, state: GenerationState, scope: Any, proto: Any, body: bytes,
                         exchange: Exchange, path_of: Callable[[BackendRuntime], bytes | None]) -> bool:
    """One request, as it is, to the backend `exchange.model` routes to at the path `path_of` gives."""
    rule = state.router.match(exchange.model, scope.headers)
    if rule is None or rule.error is not None:
        return False
    ref = state.pick(rule)
    backend = ref.backend
    path = path_of(backend)
    targets = backend.targets["/chat/completions"] or backend.targets["/messages"]
    if path is None or not targets:
        return False
    target = targets[0]
    if ref.rewrite and ref.ref.model_override is not None:
        body = rewrite_body(body, ref.ref.model_override, (), ())
    head = b"".join((b"POST ", path, target.head, ref.set_lines,
                     b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)))
    loop = upstream.pools.loop
    assert loop is not None
    result = await attempt(target, head, body, loop.time() + (ref.timeout or 60.0))
    conn = result.conn
    if conn is None:
        return False
    try:
        status, headers = conn.status, response_headers(conn.headers, backend.name)
        if status in _UNSERVED and path == backend.passthrough.get(TOKENIZE):
            backend.tokenize_unserved = True
            return False
        exchange.status, exchange.route, exchange.backend = status, rule.rule.route, backend.name
        if result.streaming:  # no length: relayed as it comes, as the chat path does
            transport = proto.response_stream(status, headers)
            try:
                if result.first:
                    await transport.send_bytes(result.first)
                await pump(conn, transport, None, None, None, ClientWindow(scope))
            except (UpstreamError, *CLIENT_GONE):  # the upstream broke off or the client left: it ends here
                conn.abort()
            return True
        if not await conn.fill():  # over HIGH_WATER: relayed with its length, in bounded memory
            await relay_sized(conn, proto, status, headers, scope, None)
            return True
        proto.response_bytes(status, headers, await conn.read_all(HIGH_WATER))
        return True
    except UpstreamError:
        conn.abort()
        return False
    finally:
        conn.release()

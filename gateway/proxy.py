"""Forwarding one request upstream: choose a backend, prepare the request for it, attempt it,
and fail over as the route's retry policy (gateway/retry.py) allows.

The request head is assembled from parts prepared once per table generation
(request line, Host, the backendRef's header edits and credentials) plus the
client's headers that may pass; the body goes upstream as the client sent it
unless a model override or a body mutation asks for a rewrite. Once an attempt
has an answer to give, gateway/relay.py relays it to the client.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import msgspec

from modelyard.core.errors import GatewayError
from modelyard.core.router import RuleRuntime
from modelyard.core.sniff import Sniffed, rewrite_body, wants_usage, with_usage_requested
from modelyard.core.table import MODEL_HEADER
from modelyard.core.wire import HEADER_ENCODING, header_value_problem
from modelyard.core import metrics
from modelyard.gateway.accounting import Exchange
from modelyard.gateway.http1 import Connection, UpstreamError
from modelyard.gateway.relay import BACKEND_HEADER, IdleWatch, relay_answer
from modelyard.gateway.retry import Retries, attempt_deadline, backoff_pause, retriable_status, retry_after
from modelyard.gateway.state import GenerationState, Pools, RefRuntime, RouteRuntime, Target
from modelyard.gateway.translators import TranslationError

# Never forwarded upstream: hop-by-hop headers, those the gateway sets itself, and the
# client's own credentials (a BackendSecurityPolicy decides what goes upstream).
_REQUEST_STRIP = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "transfer-encoding", "te", "trailer", "upgrade", "expect", "authorization", "x-api-key", "api-key",
    BACKEND_HEADER, MODEL_HEADER,  # the model header upstream is the body's model, set by the gateway
})
_MODEL_LINE = MODEL_HEADER.encode("ascii") + b": %s\r\n"
# Model names go upstream in x-ai-eg-model as they are where they are plain printable ASCII.
_MODEL_SAFE = "".join(chr(c) for c in range(0x21, 0x7f) if chr(c) != "%") + " "
DOT_SEGMENTS = frozenset({"", ".", ".."})  # never a path segment built from a client's model


class Upstream:
    """The worker's one upstream client: connection pools shared by every table generation."""

    def __init__(self) -> None:
        self.pools = Pools()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pools.loop = loop

    async def close(self) -> None:
        self.pools.keep_only(set())


def _safe_value(value: str) -> bool:
    """A client's header value the head may carry: the rule configured values follow (core/wire.py)."""
    return header_value_problem(value, None) is None


def _client_lines(headers: Any, remove: frozenset[str]) -> bytes:
    """The client's headers that may pass, minus those its Connection header names (hop-by-hop)."""
    hop = headers.get("connection")
    if hop:
        remove = remove | {t.strip().lower() for t in hop.split(",")}
    lines = "".join([f"{k}: {v}\r\n" for k, v in headers.items() if k not in _REQUEST_STRIP and k not in remove])
    try:
        return lines.encode(HEADER_ENCODING)
    except UnicodeEncodeError:  # text HTTP/1.1 cannot carry: that header stays behind
        return "".join([f"{k}: {v}\r\n" for k, v in headers.items() if k not in _REQUEST_STRIP and k not in remove
                        and _safe_value(v)]).encode(HEADER_ENCODING)


def _query(query: str) -> bytes:
    # Granian hands the query decoded to text; what is not a plain URL character goes out percent-encoded.
    return quote(query, safe="/?&=+%:@!$'()*,;~[]").encode("ascii")


def _request_head(scope: Any, ref: RefRuntime, target: Target, body: bytes, model: str,
                  body_model: str, stream: bool = False) -> bytes | None:
    """The upstream request up to its body; None when the credentials it needs are missing."""
    headers = scope.headers
    lines = _client_lines(headers, ref.remove)
    query = scope.query_string
    if target.tail is None:
        path = (target.path, b"?" + _query(query) if query else b"")
    else:  # Azure, Bedrock, Vertex AI: the model is a path segment (dot segments refused before), every
        # reserved character escaped; Azure's api-version is in the tail, Bedrock's and Vertex AI's tails
        # depend on streaming (Vertex AI's streaming one has a query of its own: alt=sse).
        tail, joint = (target.stream_tail, target.stream_query_joint) if stream else (target.tail, target.query_joint)
        path = (target.path, quote(model, safe="").encode("ascii"), tail, joint + _query(query) if query else b"")
    model_line = _MODEL_LINE % (body_model.encode("ascii") if body_model.isascii() and body_model.isprintable()
                                else quote(body_model, safe=_MODEL_SAFE).encode("ascii"))
    head = [*path, target.head, lines, model_line]
    credentials = ref.auth(head, body, headers)  # the provider's per-attempt hook: header edits, credentials
    if credentials is None:
        return None
    head += (credentials, b"content-length: %d\r\n\r\n" % len(body))
    return b"".join(head)


_OUTCOMES = {200: "200"}  # the common label value without formatting a number per request


class Attempt:
    """What one try ended with: a response to relay (conn, and its first body bytes when it
    streams), or a failure before any response byte (error)."""

    __slots__ = ("conn", "first", "streaming", "error")

    def __init__(self, conn: Connection | None = None, first: bytes | None = None, streaming: bool = False,
                 error: UpstreamError | None = None):
        self.conn = conn
        self.first = first
        self.streaming = streaming
        self.error = error


async def attempt(target: Target, head: bytes, body: bytes, deadline: float | None) -> Attempt:
    """One try, up to the response head, and for a stream up to its first body bytes: until then
    nothing has reached the client, so any failure can still be retried elsewhere. One
    coroutine and one timer for all of it: this runs for every request."""
    conn: Connection | None = None
    try:
        async with asyncio.timeout_at(deadline):
            pool = target.pool
            conn = await pool.acquire()
            reused = conn.used > 0
            conn.send(head, body)
            try:
                await conn.response()
            except UpstreamError as e:
                # A reused keep-alive connection the upstream closed just before the request went
                # out: sent once more on a new connection (not a retry: nothing was served).
                if not (reused and e.kind == "reset" and not conn.received):
                    raise
                conn.abort()
                conn = await pool.connect()
                conn.send(head, body)
                await conn.response()
            if not _streams(conn, target.stream_types) or conn.status >= 400:
                return Attempt(conn)
            first = await conn.read_chunk()
    except UpstreamError as e:
        if conn is not None:
            conn.abort()
        return Attempt(error=e.with_traceback(None))
    except TimeoutError:
        if conn is not None:
            conn.abort()
        return Attempt(error=UpstreamError("timeout", "no response"))
    except BaseException:  # cancelled: the connection is in an unknown state
        if conn is not None:
            conn.abort()
        raise
    return Attempt(conn, first, True)


def _streams(conn: Connection, types: tuple[bytes, ...]) -> bool:
    """Whether the answer is relayed chunk by chunk: an event stream (a content-type of the
    provider's stream_content_types), or a body without a length."""
    sized = False
    for name, value in conn.headers:
        lname = name.lower()
        if lname == b"content-type" and value.startswith(types):
            return True
        if lname == b"content-length":
            sized = True
    return not sized


class Forwarding:
    """One proxied request on its way upstream, as the router matched it: what choosing,
    preparing and relaying need, gathered once instead of passed along argument by argument."""

    __slots__ = ("scope", "proto", "exchange", "state", "route", "rule", "fixed", "sniffed", "operation",
                 "passthrough", "forced", "decoded", "idle")

    def __init__(self, scope: Any, proto: Any, exchange: Exchange, state: GenerationState, route: RouteRuntime,
                 rule: RuleRuntime | None, fixed: RefRuntime | None, sniffed: Sniffed, operation: str):
        self.scope, self.proto, self.exchange, self.state = scope, proto, exchange, state
        self.route, self.rule, self.fixed, self.sniffed = route, rule, fixed, sniffed
        self.operation = operation  # the upstream operation: "/chat/completions", "/messages", ...
        self.decoded: dict[str, Any] | None = None  # the client's body decoded, once, if a translation needs it
        body = exchange.request_body
        if sniffed.stream is True:
            exchange.stream = True
            self.idle = rule.rule.stream_idle if rule is not None else 0.0
            if exchange.client == "openai" and operation != "/embeddings" and not wants_usage(sniffed):
                # Ask for the usage chunk, so tokens are counted exactly and at no cost; the client,
                # who did not ask for it, does not get it (`forced`).
                self.passthrough, self.forced = with_usage_requested(body, sniffed), True
                return
        else:
            self.idle = 0.0
        self.passthrough, self.forced = body, False  # what goes upstream untranslated (before a rewrite)

    def choose(self, tried: list[Target], now: float,
               skip: frozenset[int] = frozenset()) -> tuple[RefRuntime, Target] | None:
        """The backend and endpoint for the next attempt; None when nothing is left to try."""
        if self.fixed is not None:  # picked by the client's header: only its endpoints are tried
            return self.state.choose_fixed(self.fixed, self.operation, tried, now)
        if self.rule is None:
            return None
        return self.state.choose(self.rule, self.operation, tried, now, skip)

    def prepare(self, ref: RefRuntime, target: Target) -> tuple[bytes, bytes]:
        """The body and head of an attempt at `target`: translated or rewritten as the backend
        needs. Raises GatewayError for a request this backend cannot take."""
        exchange = self.exchange
        client = exchange.client
        name = ref.backend.name
        model = ref.ref.model_override or exchange.model
        try:
            translator = ref.backend.translators[(client, self.operation)]
        except KeyError:  # no translator from the client's API to this backend's schema yet
            raise GatewayError(501, "schema_not_supported", f"Backend {name} speaks {ref.backend.backend.schema}, "
                               f"which {'Anthropic' if client == 'anthropic' else 'OpenAI'} clients cannot reach yet.",
                               name) from None
        if translator is None:  # the backend speaks the client's API: bytes through, edited at most
            body = rewrite_body(self.passthrough, ref.ref.model_override, ref.ref.body_set,
                                ref.ref.body_remove) if ref.rewrite else self.passthrough
        else:
            try:
                if self.decoded is None:
                    self.decoded = msgspec.json.decode(exchange.request_body)
                with_headers = getattr(translator, "request_with_headers", None)  # translators/base.RequestAware
                body = (translator.request(dict(self.decoded), model) if with_headers is None
                        else with_headers(dict(self.decoded), model, self.scope.headers))
                if ref.ref.body_set or ref.ref.body_remove:
                    body = rewrite_body(body, None, ref.ref.body_set, ref.ref.body_remove)
            except TranslationError as e:
                raise GatewayError(400, "untranslatable_request", f"The request cannot be sent to {name}: {e}",
                                   name) from None
        if target.tail is not None and model in DOT_SEGMENTS:  # Azure, Bedrock: the model is a path segment
            raise GatewayError(400, "invalid_model", f"The model name {model!r} cannot name a model or deployment "
                               f"of {name}.", name)
        # The one place an attempt's request head is built (with the provider's per-attempt auth hook).
        head = _request_head(self.scope, ref, target, body, model, exchange.model, exchange.stream)
        if head is None:
            if ref.override is None:  # credentials published by the control process (AWS keys): none yet
                raise GatewayError(401, "missing_credentials", f"Backend {name} has no credentials yet.", name)
            raise GatewayError(401, "missing_credentials", f"Backend {name} needs your API key in the "
                               f"{ref.override.client_header} header.", name)
        return body, head


def _without_credentials(fwd: Forwarding, ref: RefRuntime, tried: list[Target],
                         error: GatewayError) -> tuple[RefRuntime, Target] | None:
    """Another backend to try when this one's cloud credential is not published (it expired without
    a refresh, or the first fetch has not succeeded): it cannot be asked, so the request fails over
    without spending a retry. None for any other error, or when nothing else is left."""
    if error.code != "missing_credentials" or ref.override is not None:  # a client's own key is missing
        return None
    tried.extend(t for t in ref.backend.targets[fwd.operation] if t not in tried)
    return fwd.choose(tried, time.monotonic())


def _failure(error: UpstreamError, where: str, timeout: float | None) -> GatewayError:
    """The answer to an attempt that failed before any response byte."""
    kind = error.kind
    if kind == "timeout":
        return GatewayError(504, "upstream_timeout", f"{where} did not answer within the rule's {timeout:g}s timeout.")
    if kind == "tls":
        return GatewayError(502, "upstream_tls_error", f"TLS with {where} failed: {error.detail}. Check the "
                            "BackendTLSPolicy's caCertificateRefs and hostname.")
    if kind == "unreachable":
        return GatewayError(502, "upstream_unreachable", f"Could not connect to {where}: {error.detail}.")
    if kind == "invalid":
        return GatewayError(502, "upstream_invalid_response",
                            f"{where} sent a response the gateway does not relay: {error.detail}.")
    return GatewayError(502, "upstream_reset", f"{where} closed the connection before answering ({error.detail}).")


async def forward(upstream: Upstream, fwd: Forwarding) -> None:
    """Send the request upstream, failing over while nothing has reached the client, and relay
    the answer; what happened goes into the exchange for accounting. Raises GatewayError when
    the gateway answers instead of a backend."""
    exchange = fwd.exchange
    loop = upstream.pools.loop
    assert loop is not None
    route = fwd.route
    policy, outlier, board = route.retry, route.outlier, fwd.state.board
    tried: list[Target] = []
    retries: Retries | None = None  # made at the first failure
    pick = fwd.choose(tried, time.monotonic())
    if pick is None:  # every backend of the rule lacks this operation (e.g. embeddings on Anthropic)
        raise GatewayError(501, "operation_not_supported",
                           f"No backend of this route can serve {fwd.operation.lstrip('/')}.")
    ref, target = pick
    timeout = ref.timeout
    deadline = loop.time() + timeout if timeout is not None else None
    per_try_or_idle = policy.per_try or fwd.idle  # without either, an attempt ends at the rule's deadline
    while True:
        tried.append(target)
        try:
            body, head = fwd.prepare(ref, target)  # GatewayError: answered at the top, naming the backend
        except GatewayError as e:
            pick = _without_credentials(fwd, ref, tried, e)
            if pick is None:
                raise
            ref, target = pick
            continue
        limit = attempt_deadline(loop.time(), deadline, policy.per_try, fwd.idle) if per_try_or_idle else deadline
        result = await attempt(target, head, body, limit)
        conn, error = result.conn, result.error
        now = time.monotonic()
        status = conn.status if conn is not None else 0
        metrics.ATTEMPTS.inc((ref.backend.name, _OUTCOMES.get(status) or str(status) if error is None else error.kind))
        if error is not None:
            retriable = policy.transport
            board.failure(target.health, 0, outlier, now)
        elif status >= 500 or status == 429:
            retriable = retriable_status(status, policy)
            hint = retry_after(conn.headers) if status == 429 else None  # type: ignore[union-attr]
            board.failure(target.health, status, outlier, now, hint)
        else:
            retriable = False
            board.success(target.health)
        nxt = None
        if retriable and exchange.retries < policy.retries and (deadline is None or loop.time() < deadline):
            if retries is None:
                retries = Retries(policy)
            skip = retries.spend(ref.ref.priority) if fwd.fixed is None else retries.skip
            nxt = fwd.choose(tried, now, skip)
        if nxt is None:
            break
        exchange.retries += 1
        metrics.RETRIES.inc((route.name, ref.backend.name, f"{status}" if error is None else error.kind))
        if conn is not None:
            conn.abort()  # its answer is not wanted; a fresh connection is cheaper than reading it
        if policy.backoff:
            await asyncio.sleep(backoff_pause(policy, exchange.retries,
                                              deadline - loop.time() if deadline is not None else None))
        ref, target = nxt
    name = exchange.backend = ref.backend.name
    exchange.provider = ref.backend.provider_name
    exchange.request_model = ref.ref.model_override or exchange.model
    if error is not None:
        if error.kind == "timeout" and (deadline is None or loop.time() < deadline):
            spans = [s for s in (policy.per_try, fwd.idle) if s]
            failure = GatewayError(504, "upstream_timeout", f"{target.where} sent nothing within {min(spans):g}s.")
        else:
            failure = _failure(error, target.where, ref.timeout)
        failure.backend = name
        raise failure
    assert conn is not None
    handles = []
    if deadline is not None:
        # The rule's timeout bounds the whole exchange, up to the last byte, as Envoy's route timeout does.
        handles.append(loop.call_at(deadline, conn.timed_out, "timeout"))
    if result.streaming and fwd.idle:
        handles.append(IdleWatch(loop, conn, fwd.idle))
    try:
        await relay_answer(fwd, result, ref, target)
    finally:
        for h in handles:
            h.cancel()
        conn.release()

"""Forwarding one request upstream: choosing the backend, trying it, failing over.

The request head is assembled from parts prepared once per table generation
(request line, Host, the backendRef's header edits and credentials) plus the
client's headers that may pass; the body goes upstream as the client sent it
unless a model override or a body mutation asks for a rewrite. Once an attempt
has an answer to give, gateway/relay.py relays it to the client.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any
from urllib.parse import quote

import msgspec

from modelyard.core.router import RuleRuntime
from modelyard.core.sniff import Sniffed, rewrite_body, wants_usage, with_usage_requested
from modelyard.core.table import MODEL_HEADER, RetryPolicy
from modelyard.core.wire import HEADER_ENCODING, header_value_problem
from modelyard.core import metrics
from modelyard.gateway.accounting import Outcome
from modelyard.gateway.http1 import Connection, UpstreamError
from modelyard.gateway.relay import (  # noqa: F401  (JSON_HEADERS, error_body: imported from here by gateway/app.py)
    BACKEND_HEADER, EVENT_STREAM, JSON_HEADERS, IdleWatch, error_body, fail, relay_answer,
)
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
                  body_model: str) -> bytes | None:
    """The upstream request up to its body; None when the credentials it needs are missing."""
    headers = scope.headers
    lines = _client_lines(headers, ref.remove)
    query = scope.query_string
    if target.tail is None:
        path = (target.path, b"?" + _query(query) if query else b"")
    else:  # Azure: the deployment is the model (dot segments refused before), api-version is in the tail
        path = (target.path, quote(model, safe="").encode("ascii"), target.tail,
                b"&" + _query(query) if query else b"")
    model_line = _MODEL_LINE % (body_model.encode("ascii") if body_model.isascii() and body_model.isprintable()
                                else quote(body_model, safe=_MODEL_SAFE).encode("ascii"))
    head = [*path, target.head, lines, model_line]
    credentials = ref.auth(head, body, headers)  # the provider's per-attempt hook: header edits, credentials
    if credentials is None:
        return None
    head += (credentials, b"content-length: %d\r\n\r\n" % len(body))
    return b"".join(head)

def _describe(error: UpstreamError, where: str, ref: RefRuntime) -> tuple[int, str, str]:
    kind = error.kind
    if kind == "timeout":
        return 504, f"{where} did not answer within the rule's {ref.timeout:g}s timeout.", "upstream_timeout"
    if kind == "tls":
        return (502, f"TLS with {where} failed: {error.detail}. Check the BackendTLSPolicy's caCertificateRefs "
                "and hostname.", "upstream_tls_error")
    if kind == "unreachable":
        return 502, f"Could not connect to {where}: {error.detail}.", "upstream_unreachable"
    if kind == "invalid":
        return 502, f"{where} sent a response the gateway does not relay: {error.detail}.", "upstream_invalid_response"
    return 502, f"{where} closed the connection before answering ({error.detail}).", "upstream_reset"


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name.lower() == b"retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # an HTTP date: no hint
    return None


def _retriable_status(status: int, retry: RetryPolicy) -> bool:
    if status >= 500:
        return retry.any_5xx or (retry.gateway_errors and status in (502, 503, 504)) or status in retry.statuses
    return status in retry.statuses


_OUTCOMES = {200: "200"}  # the common label value without formatting a number per request


class _Attempt:
    """What one try ended with: a response to relay (conn, and its first body bytes when it
    streams), or a failure before any response byte (error)."""

    __slots__ = ("conn", "first", "streaming", "error")

    def __init__(self, conn: Connection | None = None, first: bytes | None = None, streaming: bool = False,
                 error: UpstreamError | None = None):
        self.conn = conn
        self.first = first
        self.streaming = streaming
        self.error = error


async def attempt(target: Target, head: bytes, body: bytes, deadline: float | None) -> _Attempt:
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
            if not _streams(conn) or conn.status >= 400:
                return _Attempt(conn)
            first = await conn.read_chunk()
    except UpstreamError as e:
        if conn is not None:
            conn.abort()
        return _Attempt(error=e.with_traceback(None))
    except TimeoutError:
        if conn is not None:
            conn.abort()
        return _Attempt(error=UpstreamError("timeout", "no response"))
    except BaseException:  # cancelled: the connection is in an unknown state
        if conn is not None:
            conn.abort()
        raise
    return _Attempt(conn, first, True)


def _streams(conn: Connection) -> bool:
    """Whether the answer is relayed chunk by chunk: an event stream, or a body without a length."""
    sized = False
    for name, value in conn.headers:
        lname = name.lower()
        if lname == b"content-type" and value.startswith(EVENT_STREAM):
            return True
        if lname == b"content-length":
            sized = True
    return not sized


async def forward(upstream: Upstream, scope: Any, proto: Any, body: bytes, suffix: str, state: GenerationState,
                  route: RouteRuntime, rule: RuleRuntime | None, fixed: RefRuntime | None, sniffed: Sniffed,
                  o: Outcome) -> None:
    """Send the request upstream, failing over while nothing has reached the client, and relay
    the answer; what happened goes into `o` for accounting."""
    stream = o.stream = sniffed.stream is True
    client = o.client
    passthrough_body = body
    forced = False
    if client == "openai" and stream and suffix != "/embeddings" and not wants_usage(sniffed):
        # Ask for the usage chunk, so tokens are counted exactly and at no cost; the client,
        # who did not ask for it, does not get it.
        passthrough_body = with_usage_requested(body, sniffed)
        forced = True
    request: dict[str, Any] | None = None  # the client's body decoded, once, if a translation needs it
    loop = upstream.pools.loop
    assert loop is not None
    retry, outlier, board = route.retry, route.outlier, state.board
    idle = rule.rule.stream_idle if stream and rule is not None else 0.0
    tried: list[Target] = []
    skip: frozenset[int] = frozenset()
    per_priority: dict[int, int] = {}
    now = time.monotonic()
    pick = state.choose_fixed(fixed, suffix, tried, now) if fixed is not None else (
        state.choose(rule, suffix, tried, now) if rule is not None else None)
    if pick is None:  # every backend of the rule lacks this operation (e.g. embeddings on Anthropic)
        o.status = fail(proto, 501, f"No backend of this route can serve {suffix.lstrip('/')}.",
                         "operation_not_supported", "", client)
        return
    ref, target = pick
    timeout = ref.timeout
    started = loop.time()
    deadline = started + timeout if timeout is not None else None
    while True:
        tried.append(target)
        model = ref.ref.model_override or o.model
        try:
            translator = ref.backend.translators[client]
        except KeyError:  # no translator from the client's API to this backend's schema yet
            o.backend = ref.backend.name
            o.status = fail(proto, 501, f"Backend {ref.backend.name} speaks {ref.backend.backend.schema}, which "
                             f"{'Anthropic' if client == 'anthropic' else 'OpenAI'} clients cannot reach yet.",
                             "schema_not_supported", ref.backend.name, client)
            return
        if translator is None:  # the backend speaks the client's API: bytes through, edited at most
            body_out = rewrite_body(passthrough_body, ref.ref.model_override, ref.ref.body_set,
                                    ref.ref.body_remove) if ref.rewrite else passthrough_body
        else:
            try:
                if request is None:
                    request = msgspec.json.decode(body)
                body_out = translator.request(dict(request), model)
                if ref.ref.body_set or ref.ref.body_remove:
                    body_out = rewrite_body(body_out, None, ref.ref.body_set, ref.ref.body_remove)
            except TranslationError as e:
                o.backend, o.error = ref.backend.name, "untranslatable_request"
                o.status = fail(proto, 400, f"The request cannot be sent to {ref.backend.name}: {e}",
                                 "untranslatable_request", ref.backend.name, client)
                return
        if target.tail is not None and model in DOT_SEGMENTS:  # Azure: the model is a path segment
            o.backend, o.error = ref.backend.name, "invalid_model"
            o.status = fail(proto, 400, f"The model name {model!r} cannot name a deployment of "
                             f"{ref.backend.name}.", "invalid_model", ref.backend.name, client)
            return
        head = _request_head(scope, ref, target, body_out, model, o.model)
        if head is None:
            header = ref.override.client_header  # type: ignore[union-attr]
            o.backend, o.error = ref.backend.name, "missing_credentials"
            o.status = fail(proto, 401, f"Backend {ref.backend.name} needs your API key in the {header} header.",
                             "missing_credentials", ref.backend.name, client)
            return
        # Until the first response byte an attempt is bounded by the rule's deadline, the
        # per-try timeout and, for a stream, the stream idle timeout.
        limit = deadline
        for span in (retry.per_try, idle):
            if span:
                t = loop.time() + span
                limit = t if limit is None or t < limit else limit
        result = await attempt(target, head, body_out, limit)
        conn, error = result.conn, result.error
        now = time.monotonic()
        status = conn.status if conn is not None else 0
        metrics.ATTEMPTS.inc((ref.backend.name, _OUTCOMES.get(status) or str(status) if error is None else error.kind))
        if error is not None:
            retriable = retry.transport
            board.failure(target.health, 0, outlier, now)
        elif status >= 500 or status == 429:
            retriable = _retriable_status(status, retry)
            hint = _retry_after(conn.headers) if status == 429 else None  # type: ignore[union-attr]
            board.failure(target.health, status, outlier, now, hint)
        else:
            retriable = False
            board.success(target.health)
        nxt = None
        if retriable and o.retries < retry.retries and (deadline is None or loop.time() < deadline):
            if retry.per_priority and fixed is None:
                p = ref.ref.priority
                per_priority[p] = per_priority.get(p, 0) + 1
                if per_priority[p] >= retry.per_priority:
                    skip = skip | {p}
            nxt = state.choose_fixed(fixed, suffix, tried, now) if fixed is not None else \
                state.choose(rule, suffix, tried, now, skip)  # type: ignore[arg-type]
        if nxt is None:
            break
        o.retries += 1
        reason = f"{status}" if error is None else error.kind
        metrics.RETRIES.inc((route.name, ref.backend.name, reason))
        if conn is not None:
            conn.abort()  # its answer is not wanted; a fresh connection is cheaper than reading it
        if retry.backoff:
            pause = random.random() * min(retry.backoff * (2 ** (o.retries - 1)), retry.backoff_max or retry.backoff)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - loop.time()))
            await asyncio.sleep(pause)
        ref, target = nxt
    name = o.backend = ref.backend.name
    o.provider = ref.backend.provider_name
    o.request_model = ref.ref.model_override or o.model
    if error is not None:
        if error.kind == "timeout" and deadline is not None and loop.time() >= deadline:
            status, message, code = _describe(error, target.where, ref)
        elif error.kind == "timeout":
            spans = [s for s in (retry.per_try, idle) if s]
            status, message, code = 504, f"{target.where} sent nothing within {min(spans):g}s.", "upstream_timeout"
        else:
            status, message, code = _describe(error, target.where, ref)
        o.error = code
        o.status = fail(proto, status, message, code, name, client)
        return
    assert conn is not None
    translator = ref.backend.translators[client]
    strip = forced and translator is None
    handles = []
    if deadline is not None:
        # The rule's timeout bounds the whole exchange, up to the last byte, as Envoy's route timeout does.
        handles.append(loop.call_at(deadline, conn.timed_out, "timeout"))
    if result.streaming and idle:
        handles.append(IdleWatch(loop, conn, idle))
    try:
        await relay_answer(conn, proto, name, target.where, ref, result.streaming, result.first, idle, o, strip,
                           translator, wants_usage(sniffed), scope)
    finally:
        for h in handles:
            h.cancel()
        conn.release()

"""Forwarding one request upstream and streaming the answer back.

The request head is assembled from parts prepared once per table generation
(request line, Host, the backendRef's header edits and credentials) plus the
client's headers that may pass; the body goes upstream as the client sent it
unless a model override or a body mutation asks for a rewrite. The answer is
relayed as the upstream sent it: whole when it has a length and is not an
event stream, otherwise chunk by chunk as bytes arrive.
"""

from __future__ import annotations

import asyncio
from typing import Any

from core.errors import openai_error, sse_error_event
from core.sniff import rewrite_body
from gateway.http1 import Connection, UpstreamError
from gateway.state import Pools, RefRuntime, Target

JSON_HEADERS = [("content-type", "application/json")]
BACKEND_HEADER = "x-ai-gateway-backend"

# Never forwarded upstream: hop-by-hop headers, those the gateway sets itself, and the
# client's own credentials (a BackendSecurityPolicy decides what goes upstream).
_REQUEST_STRIP = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "transfer-encoding", "te", "trailer", "upgrade", "expect", "authorization", "x-api-key", "api-key",
})
_RESPONSE_STRIP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    b"content-length", BACKEND_HEADER.encode(),
})
_EVENT_STREAM = b"text/event-stream"


class Upstream:
    """The worker's one upstream client: connection pools shared by every table generation."""

    def __init__(self) -> None:
        self.pools = Pools()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pools.loop = loop

    async def close(self) -> None:
        self.pools.keep_only(set())


def _request_head(scope: Any, ref: RefRuntime, target: Target, length: int) -> bytes:
    remove = ref.remove
    lines = [f"{k}: {v}\r\n" for k, v in scope.headers.items() if k not in _REQUEST_STRIP and k not in remove]
    query = scope.query_string
    return b"".join((
        target.path, b"?" + query.encode("latin-1") if query else b"", target.head,
        "".join(lines).encode("utf-8"), ref.set_lines, b"content-length: %d\r\n\r\n" % length,
    ))


def _response_headers(raw: list[tuple[bytes, bytes]], backend: str) -> tuple[list[tuple[str, str]], bool, bool]:
    """Headers for the client, whether the upstream gave a length, and whether it is an event stream."""
    out = []
    sized = sse = False
    for name, value in raw:
        lname = name.lower()
        if lname in _RESPONSE_STRIP:
            sized = sized or lname == b"content-length"
            continue
        if lname == b"content-type" and value.startswith(_EVENT_STREAM):
            sse = True
        out.append((lname.decode("latin-1"), value.decode("latin-1")))
    out.append((BACKEND_HEADER, backend))
    return out, sized, sse


def _fail(proto: Any, status: int, message: str, code: str, backend: str) -> int:
    proto.response_bytes(status, [*JSON_HEADERS, (BACKEND_HEADER, backend)], openai_error(status, message, code))
    return status


def _describe(error: UpstreamError, where: str, ref: RefRuntime) -> tuple[int, str, str]:
    kind = error.kind
    if kind == "timeout":
        return 504, f"{where} did not answer within the rule's {ref.timeout:g}s timeout.", "upstream_timeout"
    if kind == "tls":
        return (502, f"TLS with {where} failed: {error.detail}. Check the BackendTLSPolicy's caCertificateRefs "
                "and hostname.", "upstream_tls_error")
    if kind == "unreachable":
        return 502, f"Could not connect to {where}: {error.detail}.", "upstream_unreachable"
    return 502, f"{where} closed the connection before answering ({error.detail}).", "upstream_reset"


async def _exchange(target: Target, head: bytes, body: bytes) -> Connection:
    """Send the request on a pooled connection and wait for the response head.

    A reused keep-alive connection may have been closed by the upstream just
    before the request went out; when it ends without a byte of response, the
    request is sent once more on a new connection.
    """
    pool = target.pool
    conn = await pool.acquire()
    try:
        reused = conn.used > 0
        conn.send(head, body)
        try:
            await conn.response()
        except UpstreamError as e:
            if not (reused and e.kind == "reset" and not conn.received):
                raise
            conn.abort()
            conn = await pool.connect()
            conn.send(head, body)
            await conn.response()
    except BaseException:  # failed, timed out or cancelled: the connection is in an unknown state
        conn.abort()
        raise
    return conn


async def forward(upstream: Upstream, scope: Any, proto: Any, body: bytes, suffix: str, ref: RefRuntime,
                  stream: bool) -> int:
    """Send the request to `ref`'s backend and relay the answer; returns the status sent to the client."""
    backend = ref.backend
    name = backend.name
    if ref.rewrite:
        r = ref.ref
        body = rewrite_body(body, r.model_override, r.body_set, r.body_remove)
    target = backend.target(suffix)
    head = _request_head(scope, ref, target, len(body))
    timeout = ref.timeout
    deadline = None
    try:
        if timeout is None:
            conn = await _exchange(target, head, body)
        else:
            # The rule's timeout bounds the whole exchange, up to the last byte, as Envoy's route timeout does.
            async with asyncio.timeout(timeout) as timer:
                conn = await _exchange(target, head, body)
            deadline = timer.when()
    except UpstreamError as e:
        status, message, code = _describe(e, target.where, ref)
        return _fail(proto, status, message, code, name)
    except TimeoutError:
        status, message, code = _describe(UpstreamError("timeout", ""), target.where, ref)
        return _fail(proto, status, message, code, name)
    handle = None
    if deadline is not None:
        handle = upstream.pools.loop.call_at(deadline, conn.timed_out, "timeout")  # type: ignore[union-attr]
    try:
        return await _relay(conn, proto, name, target.where, ref)
    finally:
        if handle is not None:
            handle.cancel()
        conn.release()


async def _relay(conn: Connection, proto: Any, name: str, where: str, ref: RefRuntime) -> int:
    status = conn.status
    headers, sized, sse = _response_headers(conn.headers, name)
    if sized and not sse:
        try:
            data = await conn.read_all()
        except UpstreamError as e:
            if e.kind == "timeout":
                return _fail(proto, 504, f"{where} did not finish its answer within {ref.timeout:g}s.",
                             "upstream_timeout", name)
            return _fail(proto, 502, f"{where} broke off its answer ({e.detail}).", "upstream_reset", name)
        proto.response_bytes(status, headers, data)
        return status
    transport = proto.response_stream(status, headers)
    try:
        await _pump(conn, transport)
    except UpstreamError as e:
        if e.kind == "timeout":
            message, code = f"{where} did not finish within the rule's {ref.timeout:g}s timeout.", "upstream_timeout"
        else:
            message, code = f"{where} broke off the stream ({e.detail}).", "upstream_reset"
        await _end_stream(transport, sse, message, code)
    except Exception:  # the client went away: stop reading and drop the upstream connection
        conn.abort()
    return status


async def _pump(conn: Connection, transport: Any) -> None:
    while (chunk := await conn.read_chunk()) is not None:
        await transport.send_bytes(chunk)


async def _end_stream(transport: Any, sse: bool, message: str, code: str) -> None:
    # Headers are already out; an SSE client still gets a readable error event.
    if sse:
        try:
            await transport.send_bytes(sse_error_event(message, code))
        except Exception:
            pass

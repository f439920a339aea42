"""Relaying an upstream answer to the client.

A whole answer with a length comes back in one piece when it is small or must be
translated between APIs; a larger one passed through is relayed as it arrives, with its
length (relay_sized). An event stream or a body without a length goes chunk by chunk
(pump), its usage read on the way. Granian does not wait for a slow client, so both
stop reading the upstream while too much is unacknowledged (gateway/client_window.py):
memory per answer stays bounded.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any

import msgspec

from modelyard.core.errors import GatewayError, sse_error_event
from modelyard.core.sniff import wants_usage
from modelyard.core.usage import StreamUsage, Usage, first_event_model, from_body
from modelyard.gateway.accounting import MAX_KEPT, Exchange
from modelyard.gateway.client_window import ClientWindow
from modelyard.gateway.errors import BACKEND_HEADER, CLIENT_GONE, INTERNAL_ERROR_MESSAGE, JSON_HEADERS, log_unexpected
from modelyard.gateway.http1 import Connection, UpstreamError
from modelyard.gateway.state import RefRuntime, Target
from modelyard.gateway.stream_trackers import AnthropicStreamUsage, anthropic_usage
from modelyard.gateway.translators import Translator
from modelyard.gateway.translators.anthropic_openai import anthropic_error_event

if TYPE_CHECKING:
    from modelyard.gateway.proxy import Attempt, Forwarding

_RESPONSE_STRIP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    b"content-length", BACKEND_HEADER.encode(),
})
EVENT_STREAM = b"text/event-stream"
MAX_TRANSLATED_BODY = 64 << 20  # bytes of a whole answer decoded to translate it; over it: 502
CLIENT_CLOSED = 499  # the status logged and counted for an answer the client did not wait for
_HEAD_KEPT, _TAIL_KEPT = 4096, 65536  # bytes of a large relayed answer searched for its model and usage
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.)*")')


def response_headers(raw: list[tuple[bytes, bytes]], backend: str) -> list[tuple[str, str]]:
    """The upstream's headers the client gets, and the backend that served it."""
    out = []
    for name, value in raw:
        lname = name.lower()
        if lname not in _RESPONSE_STRIP:
            out.append((lname.decode("latin-1"), value.decode("latin-1")))
    out.append((BACKEND_HEADER, backend))
    return out


class IdleWatch:
    """Ends a stream whose upstream has sent nothing for `idle` seconds: one timer, re-armed
    from the connection's last receive time instead of per chunk."""

    __slots__ = ("loop", "conn", "idle", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, conn: Connection, idle: float):
        self.loop, self.conn, self.idle = loop, conn, idle
        self.handle = loop.call_at(loop.time() + idle, self._check)

    def _check(self) -> None:
        conn = self.conn
        # Paused: the upstream sent more than the client has taken yet (backpressure), so
        # the silence is the client's, not the upstream's.
        due = (self.loop.time() if conn.paused else conn.received_at) + self.idle
        if self.loop.time() >= due:
            self.conn.timed_out("idle")
        else:
            self.handle = self.loop.call_at(due, self._check)

    def cancel(self) -> None:
        self.handle.cancel()


async def relay_answer(fwd: Forwarding, result: Attempt, ref: RefRuntime, target: Target) -> None:
    """The answer of `result.conn`, whose head is in, to the client; what it held goes into the
    exchange. `result.first` is a stream's first body bytes, read before the attempt was chosen.
    Raises GatewayError for a whole answer that cannot be relayed (nothing has been sent yet)."""
    conn = result.conn
    assert conn is not None
    exchange = fwd.exchange
    proto = fwd.proto
    name = ref.backend.name
    where = target.where
    status = conn.status  # the exchange's status once an answer begins: a bug before it is answered 500
    headers = response_headers(conn.headers, name)
    client = exchange.client
    translator: Translator | None = ref.backend.translators[(client, fwd.operation)]  # prepare() found it
    if not result.streaming:
        try:
            # A translated answer is decoded whole (up to MAX_TRANSLATED_BODY); one passed through
            # is relayed as it arrives once it is over HIGH_WATER, in bounded memory.
            if translator is None and not await conn.fill():
                exchange.status = status
                await relay_sized(conn, proto, status, headers, fwd.scope, exchange)
                return
            data = await conn.read_all(MAX_TRANSLATED_BODY)
        except UpstreamError as e:
            if e.kind == "timeout":
                raise GatewayError(504, "upstream_timeout", f"{where} did not finish its answer within "
                                   f"{ref.timeout:g}s.", name) from None
            if e.kind == "too_large":
                raise GatewayError(502, "upstream_too_large", f"{where} answered with over "
                                   f"{MAX_TRANSLATED_BODY >> 20} MiB, more than the gateway translates between "
                                   "APIs.", name) from None
            raise GatewayError(502, "upstream_reset", f"{where} broke off its answer ({e.detail}).", name) from None
        if translator is not None:
            if status < 300:
                respond = getattr(translator, "response_to", None)  # translators/base.RequestAware
                data, exchange.usage, exchange.response_model = (
                    translator.response(data) if respond is None else respond(fwd.decoded or {}, data))
            else:
                status, data = translator.error(status, data)
            exchange.status = status
            proto.response_bytes(status, [*JSON_HEADERS, (BACKEND_HEADER, name)], data)
            return
        exchange.status = status
        proto.response_bytes(status, headers, data)
        if status < 300:
            exchange.usage, exchange.response_model = from_body(data) if client == "openai" else anthropic_usage(data)
            if exchange.usage is None and len(data) <= MAX_KEPT:
                exchange.answer = [data]
        return
    exchange.status = status
    tracker: Any = None
    kept: list[bytes] | None = None  # the bytes kept for the token estimator, in case no usage comes
    pumped: list[bytes] | None = None  # where pump keeps them (None: a _KeepOutput tracker does)
    sse: bool | None = None  # whether the client gets SSE; found from the upstream's head when needed
    if status < 300:
        kept = pumped = []
        if translator is not None:
            # A translated stream is SSE to the client whatever the upstream sent (Bedrock: a binary
            # event stream). Its kept bytes feed the token estimator, which reads SSE text: an
            # upstream's SSE is kept as it comes, a binary stream's translation (the client's SSE)
            # instead, by a wrapper, so that pump's loop stays the same for every stream.
            tracker = translator.stream(wants_usage(fwd.sniffed))
            headers = [h for h in headers if h[0] != "content-type"]
            headers.append(("content-type", "text/event-stream"))
            if not _is_sse(conn):
                tracker, pumped = _KeepOutput(tracker, kept), None  # the wrapper keeps what it sends
            sse = True
        elif client == "anthropic":
            tracker = AnthropicStreamUsage()
        else:
            tracker = StreamUsage(fwd.forced)
    transport = proto.response_stream(status, headers)
    first = result.first
    try:
        if first:
            if pumped is not None:
                pumped.append(first)
            out = tracker.feed(first) if tracker is not None else first
            if out:  # never an empty write: to chunked encoding that is the end of the body
                await transport.send_bytes(out)
                exchange.first_byte = time.perf_counter()
        await pump(conn, transport, tracker, pumped, exchange, ClientWindow(fwd.scope))
    except UpstreamError as e:
        idle = fwd.idle
        if e.detail == "idle":
            message, code = (f"{where} sent nothing for {idle:g}s (the rule's streamIdleTimeout).",
                             "stream_idle_timeout")
        elif e.kind == "timeout":
            message, code = f"{where} did not finish within the rule's {ref.timeout:g}s timeout.", "upstream_timeout"
        else:
            message, code = f"{where} broke off the stream ({e.detail}).", "upstream_reset"
        exchange.error = code
        # The stored error's traceback holds the frames that hold the client's transport, and
        # Granian ends the response only when the transport is released: drop it now.
        e.__traceback__ = None
        await _end_stream(transport, _is_sse(conn) if sse is None else sse, message, code, client)
    except CLIENT_GONE:  # the client went away: stop reading and drop the upstream connection
        exchange.error, exchange.status = "client_disconnected", CLIENT_CLOSED
        conn.abort()
    except Exception as e:  # a bug of ours (a translator's, say): logged, and the stream ends with an error
        log_unexpected(e, exchange)
        exchange.error, exchange.status = "internal_error", 500
        conn.abort()
        e.__traceback__ = None
        await _end_stream(transport, _is_sse(conn) if sse is None else sse, INTERNAL_ERROR_MESSAGE,
                          "internal_error", client)
    if tracker is not None:
        exchange.usage, exchange.response_model = tracker.usage, tracker.model
        if exchange.usage is None:
            exchange.answer = kept
            if kept and client == "openai" and translator is None:
                exchange.response_model = first_event_model(kept[0])  # the first event names it too


def _is_sse(conn: Connection) -> bool:
    return any(n.lower() == b"content-type" and v.startswith(EVENT_STREAM) for n, v in conn.headers)


class _KeepOutput:
    """A stream translator whose output, not its input, is kept (up to MAX_KEPT bytes) for the
    token estimator: for an upstream that is not SSE text (Bedrock's binary event stream), whose
    translation is the client's SSE. Only such streams pay for it."""

    __slots__ = ("inner", "kept", "size")

    def __init__(self, inner: Any, kept: list[bytes]):
        self.inner, self.kept, self.size = inner, kept, 0

    @property
    def usage(self) -> Usage | None:
        return self.inner.usage

    @property
    def model(self) -> str | None:
        return self.inner.model

    def _keep(self, out: bytes) -> bytes:
        if out:
            self.size += len(out)
            if self.size <= MAX_KEPT:
                self.kept.append(out)
        return out

    def feed(self, chunk: bytes) -> bytes:
        return self._keep(self.inner.feed(chunk))

    def flush(self) -> bytes:
        return self._keep(self.inner.flush())


async def pump(conn: Connection, transport: Any, tracker: StreamUsage | None, kept: list[bytes] | None,
               exchange: Exchange | None, window: ClientWindow) -> None:
    # Granian's send_bytes does not wait for the client: `window` stops the reading of the
    # upstream while too much of what was sent is unacknowledged (see gateway/client_window.py).
    send = transport.send_bytes
    if tracker is None:
        while (chunk := await conn.read_chunk()) is not None:
            window.sent += len(chunk)
            if window.sent > window.check_at:  # waited for before the send: after the last one, nobody waits
                await window.wait()
            await send(chunk)
        return
    size = 0
    while (chunk := await conn.read_chunk()) is not None:
        if kept is not None:  # for counting tokens, in case no usage comes
            size += len(chunk)
            if size <= MAX_KEPT:
                kept.append(chunk)
        out = tracker.feed(chunk)
        if out:
            window.sent += len(out)
            if window.sent > window.check_at:
                await window.wait()
            await send(out)
            if exchange is not None and exchange.first_byte is None:
                exchange.first_byte = time.perf_counter()
    rest = tracker.flush()
    if rest:
        await send(rest)


async def relay_sized(conn: Connection, proto: Any, status: int, headers: list[tuple[str, str]], scope: Any,
                      exchange: Exchange | None) -> None:
    """A whole (not streamed) answer over HIGH_WATER, relayed as it arrives with its length, in
    bounded memory; its usage block is read from the last bytes (it ends OpenAI's and
    Anthropic's answers) and its model from the first."""
    length = next((v.decode("latin-1") for n, v in conn.headers if n.lower() == b"content-length"), None)
    transport = proto.response_stream(status, [*headers, ("content-length", length)] if length else headers)
    window = ClientWindow(scope)
    tail = _Tail()
    try:
        while (chunk := await conn.read_chunk()) is not None:
            tail.feed(chunk)
            window.sent += len(chunk)
            if window.sent > window.check_at:
                await window.wait()
            await transport.send_bytes(chunk)
    except UpstreamError as e:
        # The length is promised and cannot be kept: the client sees a short body and a closed connection.
        e.__traceback__ = None
        if exchange is not None:
            exchange.error = "upstream_timeout" if e.kind == "timeout" else "upstream_reset"
        return
    except CLIENT_GONE:  # the client went away
        conn.abort()
        if exchange is not None:
            exchange.error, exchange.status = "client_disconnected", CLIENT_CLOSED
        return
    if exchange is not None and status < 300:
        exchange.usage, exchange.response_model = tail.usage(exchange.client)


def _last(matches: Any) -> Any:
    found = None
    for found in matches:
        pass
    return found


class _Tail:
    """The first and last bytes of a body relayed in pieces, for its model and usage block."""

    __slots__ = ("head", "tail")

    def __init__(self) -> None:
        self.head = b""
        self.tail = b""

    def feed(self, chunk: bytes) -> None:
        if not self.head:
            self.head = chunk[:_HEAD_KEPT]
        self.tail = chunk[-_TAIL_KEPT:] if len(chunk) >= _TAIL_KEPT else (self.tail + chunk)[-_TAIL_KEPT:]

    def usage(self, client: str) -> tuple[Usage | None, str | None]:
        at = self.tail.rfind(b'"usage"')
        usage = None
        if at != -1:  # `{` + `"usage": {...}, ...}`: the top-level object's last members
            usage = (from_body if client == "openai" else anthropic_usage)(b"{" + self.tail[at:])[0]
        found = _MODEL_FIELD.search(self.head) or _last(_MODEL_FIELD.finditer(self.tail))  # embeddings: at the end
        model = None
        if found:
            try:
                model = msgspec.json.decode(found.group(1))
            except msgspec.DecodeError:
                pass
        return usage, model if isinstance(model, str) else None


async def _end_stream(transport: Any, sse: bool, message: str, code: str, client: str = "openai") -> None:
    # Headers are already out; an SSE client still gets a readable error event.
    if sse:
        try:
            event = anthropic_error_event(message) if client == "anthropic" else sse_error_event(message, code)
            await transport.send_bytes(event)
        except Exception:
            pass

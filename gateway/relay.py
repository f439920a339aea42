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
from typing import Any

import msgspec

from modelyard.core.errors import anthropic_error, openai_error, sse_error_event
from modelyard.core.usage import StreamUsage, Usage, first_event_model, from_body
from modelyard.gateway.accounting import MAX_KEPT, Outcome
from modelyard.gateway.client_window import ClientWindow
from modelyard.gateway.http1 import Connection, UpstreamError
from modelyard.gateway.state import RefRuntime
from modelyard.gateway.stream_trackers import AnthropicStreamUsage, anthropic_usage
from modelyard.gateway.translators import Translator
from modelyard.gateway.translators.anthropic_openai import anthropic_error_event

JSON_HEADERS = [("content-type", "application/json")]
BACKEND_HEADER = "x-ai-gateway-backend"
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


def error_body(client: str, status: int, message: str, code: str) -> bytes:
    """An error in the shape the client's API uses."""
    return anthropic_error(status, message) if client == "anthropic" else openai_error(status, message, code)


def fail(proto: Any, status: int, message: str, code: str, backend: str, client: str = "openai") -> int:
    headers = [*JSON_HEADERS, (BACKEND_HEADER, backend)] if backend else JSON_HEADERS
    proto.response_bytes(status, headers, error_body(client, status, message, code))
    return status


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


async def relay_answer(conn: Connection, proto: Any, name: str, where: str, ref: RefRuntime, streaming: bool,
                       first: bytes | None, idle: float, o: Outcome, strip: bool, translator: Translator | None,
                       client_wants_usage: bool, scope: Any) -> None:
    """The answer of `conn`, whose head is in, to the client; what it held goes into `o`.
    `first` is a stream's first body bytes, read before the attempt was chosen."""
    o.status = status = conn.status
    headers = response_headers(conn.headers, name)
    client = o.client
    if not streaming:
        try:
            # A translated answer is decoded whole (up to MAX_TRANSLATED_BODY); one passed through
            # is relayed as it arrives once it is over HIGH_WATER, in bounded memory.
            if translator is None and not await conn.fill():
                await relay_sized(conn, proto, status, headers, scope, o)
                return
            data = await conn.read_all(MAX_TRANSLATED_BODY)
        except UpstreamError as e:
            if e.kind == "timeout":
                o.error = "upstream_timeout"
                o.status = fail(proto, 504, f"{where} did not finish its answer within {ref.timeout:g}s.",
                                 "upstream_timeout", name, client)
            elif e.kind == "too_large":
                o.error = "upstream_too_large"
                o.status = fail(proto, 502, f"{where} answered with over {MAX_TRANSLATED_BODY >> 20} MiB, more "
                                 "than the gateway translates between APIs.", "upstream_too_large", name, client)
            else:
                o.error = "upstream_reset"
                o.status = fail(proto, 502, f"{where} broke off its answer ({e.detail}).", "upstream_reset", name,
                                 client)
            return
        if translator is not None:
            if status < 300:
                data, o.usage, o.response_model = translator.response(data)
            else:
                o.status, data = translator.error(status, data)
            proto.response_bytes(o.status, [*JSON_HEADERS, (BACKEND_HEADER, name)], data)
            return
        proto.response_bytes(status, headers, data)
        if status < 300:
            o.usage, o.response_model = from_body(data) if client == "openai" else anthropic_usage(data)
            if o.usage is None and len(data) <= MAX_KEPT:
                o.answer = [data]
        return
    transport = proto.response_stream(status, headers)
    tracker: Any = None
    if status < 300:
        if translator is not None:
            tracker = translator.stream(client_wants_usage)
        elif client == "anthropic":
            tracker = AnthropicStreamUsage()
        else:
            tracker = StreamUsage(strip)
    kept: list[bytes] | None = [] if tracker is not None else None
    try:
        if first:
            if kept is not None:
                kept.append(first)
            out = tracker.feed(first) if tracker is not None else first
            if out:  # never an empty write: to chunked encoding that is the end of the body
                await transport.send_bytes(out)
                o.first_byte = time.perf_counter()
        await pump(conn, transport, tracker, kept, o, ClientWindow(scope))
    except UpstreamError as e:
        if e.detail == "idle":
            message, code = (f"{where} sent nothing for {idle:g}s (the rule's streamIdleTimeout).",
                             "stream_idle_timeout")
        elif e.kind == "timeout":
            message, code = f"{where} did not finish within the rule's {ref.timeout:g}s timeout.", "upstream_timeout"
        else:
            message, code = f"{where} broke off the stream ({e.detail}).", "upstream_reset"
        o.error = code
        # The stored error's traceback holds the frames that hold the client's transport, and
        # Granian ends the response only when the transport is released: drop it now.
        e.__traceback__ = None
        await _end_stream(transport, _is_sse(conn), message, code, client)
    except Exception:  # the client went away: stop reading and drop the upstream connection
        o.error, o.status = "client_disconnected", CLIENT_CLOSED
        conn.abort()
    if tracker is not None:
        o.usage, o.response_model = tracker.usage, tracker.model
        if o.usage is None:
            o.answer = kept
            if kept and client == "openai" and translator is None:
                o.response_model = first_event_model(kept[0])  # the first event names it too


def _is_sse(conn: Connection) -> bool:
    return any(n.lower() == b"content-type" and v.startswith(EVENT_STREAM) for n, v in conn.headers)


async def pump(conn: Connection, transport: Any, tracker: StreamUsage | None, kept: list[bytes] | None,
               o: Outcome | None, window: ClientWindow) -> None:
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
            if o is not None and o.first_byte is None:
                o.first_byte = time.perf_counter()
    rest = tracker.flush()
    if rest:
        await send(rest)


async def relay_sized(conn: Connection, proto: Any, status: int, headers: list[tuple[str, str]], scope: Any,
                      o: Outcome | None) -> None:
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
        if o is not None:
            o.error = "upstream_timeout" if e.kind == "timeout" else "upstream_reset"
        return
    except Exception:  # the client went away
        conn.abort()
        if o is not None:
            o.error, o.status = "client_disconnected", CLIENT_CLOSED
        return
    if o is not None and status < 300:
        o.usage, o.response_model = tail.usage(o.client)


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

"""A lean HTTP/1.1 client for upstream requests.

Each upstream address has a Pool of keep-alive connections. A Connection is an
asyncio Protocol with an llhttp parser (httptools): the request goes out in one
write, the response arrives as a status, raw headers and body chunks that are
handed to the caller as they are, without copies or decoding. Everything a
general-purpose client does per request (URL parsing, header multidicts,
cookie jars, timers per phase, a task per connection) is either done once per
routing-table generation by the caller or not needed by a proxy.

Failures are raised as UpstreamError with a stable kind: unreachable, tls,
reset, timeout, invalid (a response head over its bounds) or too_large (a body
read whole over the caller's limit), which the proxy maps to client errors.

Memory per exchange is bounded: reading pauses when HIGH_WATER body bytes wait
for the caller, and a response head is refused over MAX_RESPONSE_HEAD bytes or
MAX_RESPONSE_HEADERS fields.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from typing import Any

import httptools

IDLE_TTL = 50.0  # seconds an idle connection is reused for; below common server keep-alive timeouts
MAX_IDLE = 512  # idle connections kept per pool
HIGH_WATER = 1 << 20  # buffered response bytes before reading from the upstream pauses
MAX_RESPONSE_HEAD = 64 << 10  # bytes of status line and headers (Envoy's default is 60 KiB)
MAX_RESPONSE_HEADERS = 100  # header fields in one response (Envoy's default)
DNS_TTL = 10.0


class UpstreamError(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind  # unreachable | tls | reset | timeout | invalid | too_large
        self.detail = detail


class _HeadTooLarge(Exception):
    pass


class Connection(asyncio.Protocol):
    """One keep-alive connection; serves one request at a time."""

    __slots__ = ("pool", "transport", "parser", "status", "headers", "chunks", "buffered", "complete", "error",
                 "waiter", "keep_alive", "closed", "used", "received", "received_at", "paused", "idle_since", "_ready",
                 "head_size", "field_bytes", "limit", "whole")

    def __init__(self, pool: Pool):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.used = 0  # requests sent on this connection
        self.idle_since = 0.0
        self.received_at = 0.0  # loop time of the last bytes from the upstream (stream idle timeouts)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.complete = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.keep_alive = False
        self.received = False  # any byte of the current response
        self.paused = False
        self._ready = False  # headers parsed
        self.head_size = 0  # bytes received while the head was incomplete
        self.field_bytes = 0  # of the header fields parsed: a whole head can come in one read
        self.limit = HIGH_WATER  # buffered body bytes before pausing (or, reading whole, failing)
        self.whole = False  # read_all: the caller wants the whole body, up to `limit`

    # -- protocol callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.received_at = self.pool.loop.time()
        try:
            self.parser.feed_data(data)
            if not self._ready:
                self.head_size += len(data)
                if self.head_size > MAX_RESPONSE_HEAD:
                    raise _HeadTooLarge(f"its response head is over {MAX_RESPONSE_HEAD >> 10} KiB")
        except _HeadTooLarge as e:
            self._fail(UpstreamError("invalid", str(e)))
            self.abort()
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("reset", "the upstream asked for a protocol upgrade"))
        except httptools.HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, _HeadTooLarge):  # raised by on_header, through the parser
                self._fail(UpstreamError("invalid", str(cause)))
                self.abort()
            else:
                self._fail(UpstreamError("reset", f"the upstream sent a malformed response ({e})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamError("reset", "the upstream closed the connection"))

    def pause_writing(self) -> None:  # request bodies are written whole; the transport buffers them
        pass

    def resume_writing(self) -> None:
        pass

    # -- parser callbacks ----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append((name, value))
        if len(headers) > MAX_RESPONSE_HEADERS:
            raise _HeadTooLarge(f"its response has over {MAX_RESPONSE_HEADERS} header fields")
        self.field_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self.field_bytes > MAX_RESPONSE_HEAD:
            raise _HeadTooLarge(f"its response head is over {MAX_RESPONSE_HEAD >> 10} KiB")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._ready = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > self.limit and not self.paused and self.transport is not None:
            if self.whole:
                if self.error is None:
                    self._fail(UpstreamError("too_large", f"its answer is over {self.limit >> 20} MiB"))
                    self.abort()
                return
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # -- the caller's side ---------------------------------------------------------------------

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def timed_out(self, detail: str) -> None:
        self._fail(UpstreamError("timeout", detail))
        self.abort()

    def send(self, head: bytes, body: bytes) -> None:
        self._reset()
        self.used += 1
        transport = self.transport
        assert transport is not None
        if len(body) < 16384:
            transport.write(head + body)  # one small copy beats a second write's syscall
        else:
            transport.writelines((head, body))

    async def _wait(self) -> None:
        self.waiter = self.pool.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def response(self) -> int:
        """Wait for the status line and headers; returns the status."""
        while not self._ready:
            if self.error is not None:
                raise self.error
            await self._wait()
        return self.status

    async def read_chunk(self) -> bytes | None:
        """Every body byte buffered so far (waiting for some if none), or None at the end."""
        while True:
            chunks = self.chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                if self.paused and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait()

    async def fill(self) -> bool:
        """Wait until the whole body is buffered (True) or reading paused at HIGH_WATER bytes
        of it (False: the caller relays it with read_chunk, in bounded memory)."""
        while not self.complete:
            if self.error is not None:
                raise self.error
            if self.paused:
                return False
            await self._wait()
        return True

    async def read_all(self, limit: int) -> bytes:
        """The whole body, read on past HIGH_WATER; UpstreamError('too_large') over `limit` bytes."""
        self.whole = True
        self.limit = limit
        if self.buffered > limit:
            self._fail(UpstreamError("too_large", f"its answer is over {limit >> 20} MiB"))
            self.abort()
        elif self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        while not self.complete:
            if self.error is not None:
                raise self.error
            await self._wait()
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def release(self) -> None:
        """Back to the pool if the exchange finished cleanly and both sides keep the connection."""
        if self.complete and self.keep_alive and self.error is None and not self.closed:
            self.pool.put(self)
        else:
            self.abort()


class Pool:
    """Keep-alive connections to one upstream address (host:port, TLS settings)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None, server_hostname: str | None,
                 loop: asyncio.AbstractEventLoop):
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.server_hostname = server_hostname if ssl_context is not None else None
        self.loop = loop
        self.idle: list[Connection] = []
        self.closed = False
        self._addrs: tuple[float, list[tuple[Any, ...]]] | None = None

    async def _addresses(self) -> list[tuple[Any, ...]]:
        cached = self._addrs
        if cached is not None and time.monotonic() - cached[0] < DNS_TTL:
            return cached[1]
        infos = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        addrs = [(info[0], info[4]) for info in infos]
        self._addrs = (time.monotonic(), addrs)
        return addrs

    async def connect(self) -> Connection:
        try:
            addrs = await self._addresses()
        except OSError as e:
            raise UpstreamError("unreachable", f"cannot resolve {self.host}: {e.strerror or e}") from None
        last: Exception | None = None
        for family, sockaddr in addrs:
            try:
                _, conn = await self._open(family, sockaddr)
                return conn
            except ssl.SSLError as e:
                raise UpstreamError("tls", str(getattr(e, "verify_message", None) or e.reason or e)) from None
            except OSError as e:
                last = e
        detail = last.strerror if isinstance(last, OSError) and last.strerror else str(last)
        raise UpstreamError("unreachable", detail or "no address")

    async def _open(self, family: int, sockaddr: tuple[Any, ...]) -> tuple[asyncio.BaseTransport, Connection]:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self.loop.sock_connect(sock, sockaddr)
        except BaseException:
            sock.close()
            raise
        return await self.loop.create_connection(lambda: Connection(self), sock=sock, ssl=self.ssl,
                                                 server_hostname=self.server_hostname)

    async def acquire(self) -> Connection:
        idle = self.idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_TTL:
                return conn
            conn.abort()
        return await self.connect()

    def put(self, conn: Connection) -> None:
        if self.closed or len(self.idle) >= MAX_IDLE:
            conn.abort()
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


"""The upstream HTTP/1.1 client (modelyard.gateway.http1) against a scripted asyncio server in this
process on 127.0.0.1: requests written once, keep-alive reuse, chunked and content-length answers,
answers split anywhere, connections the server closes, backpressure at HIGH_WATER, malformed or
oversized heads, and the pool's limits. No gateway process; each test runs its own event loop."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from modelyard.gateway import http1
from modelyard.gateway.http1 import HIGH_WATER, IDLE_TTL, Connection, Pool, UpstreamError
from tests.support import free_port

# What the server answers one request with: bytes written in pieces (with a pause between them so
# they leave as separate segments), and whether to close the connection afterwards. None: close
# the connection without answering.
Answer = tuple[list[bytes], bool] | None


def ok(body: bytes = b"hello", *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode() + body


def chunked(*parts: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n"


class Upstream:
    """An HTTP/1.1 server on 127.0.0.1 that reads each request whole (head and content-length body)
    and answers it as `answer` says."""

    def __init__(self, answer: Callable[[bytes], Answer]):
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                               if line.startswith(b"content-length:")), 0)
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.answer(request)
                if answer is None:
                    break
                pieces, close = answer
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test's loop is ending
        finally:
            writer.close()


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(test(), 30))


def pool_for(upstream: Upstream) -> Pool:
    return Pool("127.0.0.1", upstream.port, None, None, asyncio.get_running_loop())


def request(body: bytes = b"") -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: %d\r\n\r\n" % len(body)


async def exchange(pool: Pool, body: bytes = b"{}") -> tuple[Connection, int, bytes]:
    conn = await pool.acquire()
    conn.send(request(body), body)
    status = await conn.response()
    data = b""
    while (chunk := await conn.read_chunk()) is not None:
        data += chunk
    conn.release()
    return conn, status, data


# --- requests and answers ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 16383, 16384, 200_000])
def test_request_is_written_in_one_call(size: int) -> None:
    body = bytes(itertools.islice(itertools.cycle(b"0123456789"), size))

    async def test() -> None:
        async with Upstream(lambda _: ([ok()], False)) as up:
            pool = pool_for(up)
            conn = await pool.acquire()
            calls: list[str] = []
            transport = conn.transport
            assert transport is not None
            write, writelines = transport.write, transport.writelines
            nested = False  # the transport's writelines may call its write

            def count_write(data: bytes) -> None:
                if not nested:
                    calls.append("write")
                write(data)

            def count_writelines(seq: Any) -> None:
                nonlocal nested
                calls.append("writelines")
                nested = True
                try:
                    writelines(seq)
                finally:
                    nested = False

            transport.write = count_write  # type: ignore[method-assign]
            transport.writelines = count_writelines  # type: ignore[method-assign]
            conn.send(request(body), body)
            assert calls == ["write" if size < 16384 else "writelines"]
            assert await conn.response() == 200 and await conn.read_all(1 << 20) == b"hello"
            assert up.requests == [request(body) + body]
            pool.close()

    run(test)


def test_keep_alive_connection_is_reused() -> None:
    async def test() -> None:
        async with Upstream(lambda r: ([ok(r[-2:])], False)) as up:
            pool = pool_for(up)
            first, status, data = await exchange(pool, b"a1")
            assert (status, data) == (200, b"a1") and first.keep_alive and pool.idle == [first]
            second, status, data = await exchange(pool, b"b2")
            assert (status, data) == (200, b"b2") and second is first and first.used == 2
            assert up.connections == 1 and len(up.requests) == 2
            pool.close()
            assert first.closed and pool.idle == []

    run(test)


def test_chunked_and_content_length_answers() -> None:
    answers = iter([[chunked(b"data: 1\n\n", b"data: 2\n\n")], [ok(b"x" * 5000, "x-extra: yes")],
                    [chunked(b"a", b"b", b"c")]])

    async def test() -> None:
        async with Upstream(lambda _: (next(answers), False)) as up:
            pool = pool_for(up)
            conn, status, data = await exchange(pool)
            assert status == 200 and data == b"data: 1\n\ndata: 2\n\n"
            assert (b"transfer-encoding", b"chunked") in conn.headers
            conn, status, data = await exchange(pool)
            assert status == 200 and data == b"x" * 5000 and (b"x-extra", b"yes") in conn.headers
            conn = await pool.acquire()
            conn.send(request(), b"")
            assert await conn.response() == 200
            assert await conn.fill() is True and await conn.read_all(1 << 20) == b"abc"
            conn.release()
            assert up.connections == 1
            pool.close()

    run(test)


class FakeTransport:
    def __init__(self) -> None:
        self.reading = True
        self.aborted = False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        self.aborted = True


def fed(pieces: list[bytes]) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool, bool]:
    """What a Connection makes of an answer that arrives in `pieces` (its protocol callbacks alone)."""
    async def test() -> tuple[int, list[tuple[bytes, bytes]], bytes, bool, bool]:
        conn = Connection(Pool("127.0.0.1", 1, None, None, asyncio.get_running_loop()))
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        for piece in pieces:
            conn.data_received(piece)
        assert conn.error is None, conn.error
        return conn.status, conn.headers, b"".join(conn.chunks), conn.complete, conn.keep_alive

    return run(test)


@pytest.mark.parametrize("answer", [ok(b'{"id": "x"}', "x-request-id: 7"),
                                    chunked(b"data: {}\n\n", b"data: [DONE]\n\n")], ids=["length", "chunked"])
def test_answer_split_at_every_byte(answer: bytes) -> None:
    whole = fed([answer])
    assert whole[0] == 200 and whole[3] and whole[4]
    for i in range(1, len(answer)):
        assert fed([answer[:i], answer[i:]]) == whole, i
    assert fed([answer[i:i + 1] for i in range(len(answer))]) == whole


# --- connections the server closes ---------------------------------------------------------------


def test_server_closing_before_answering_is_a_reset() -> None:
    async def test() -> None:
        async with Upstream(lambda _: None) as up:
            conn = await pool_for(up).acquire()
            conn.send(request(), b"")
            with pytest.raises(UpstreamError) as e:
                await conn.response()
            assert e.value.kind == "reset" and conn.closed

    run(test)


def test_server_closing_mid_body_is_a_reset() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"

    async def test() -> None:
        async with Upstream(lambda _: ([head, b"x" * 10], True)) as up:
            pool = pool_for(up)
            conn = await pool.acquire()
            conn.send(request(), b"")
            assert await conn.response() == 200
            with pytest.raises(UpstreamError) as e:
                while await conn.read_chunk() is not None:
                    pass
            assert e.value.kind == "reset"
            conn.release()
            assert pool.idle == []  # a broken exchange never goes back to the pool

    run(test)


def test_connection_close_answer_is_not_pooled() -> None:
    async def test() -> None:
        async with Upstream(lambda _: ([ok(b"bye", "connection: close")], True)) as up:
            pool = pool_for(up)
            conn, status, data = await exchange(pool)
            assert (status, data) == (200, b"bye") and not conn.keep_alive
            assert pool.idle == [] and conn.closed

    run(test)


def test_idle_connection_the_server_closed_is_replaced() -> None:
    async def test() -> None:
        # The upstream's keep-alive timeout: it answers, then closes the idle connection.
        async with Upstream(lambda _: ([ok()], True)) as up:
            pool = pool_for(up)
            first, status, _ = await exchange(pool)
            assert status == 200 and pool.idle == [first]
            for _ in range(200):
                if first.closed:
                    break
                await asyncio.sleep(0.01)
            assert first.closed
            second, status, _ = await exchange(pool)
            assert status == 200 and second is not first and up.connections == 2
            pool.close()

    run(test)


def test_nothing_listening_is_unreachable() -> None:
    async def test() -> None:
        pool = Pool("127.0.0.1", free_port(), None, None, asyncio.get_running_loop())
        with pytest.raises(UpstreamError) as e:
            await pool.acquire()
        assert e.value.kind == "unreachable"

    run(test)


# --- bounded memory and malformed answers --------------------------------------------------------


def test_reading_pauses_at_high_water_and_resumes_when_read() -> None:
    size = 3 * HIGH_WATER + 12345
    body = bytes(itertools.islice(itertools.cycle(range(251)), size))

    async def test() -> None:
        async with Upstream(lambda _: ([ok(body)], False)) as up:
            pool = pool_for(up)
            conn = await pool.acquire()
            conn.send(request(), b"")
            assert await conn.response() == 200
            assert await conn.fill() is False  # paused with part of the body buffered
            transport = conn.transport
            assert transport is not None
            assert conn.paused and not transport.is_reading()
            assert HIGH_WATER < conn.buffered < size
            received = await conn.read_chunk()
            assert received is not None and not conn.paused and transport.is_reading()
            while (chunk := await conn.read_chunk()) is not None:
                assert conn.buffered <= HIGH_WATER + (1 << 20)  # never far over the mark
                received += chunk
            assert received == body
            conn.release()
            assert pool.idle == [conn]
            pool.close()

    run(test)


def test_read_all_reads_past_high_water_up_to_its_limit() -> None:
    size = 2 * HIGH_WATER

    async def test() -> None:
        async with Upstream(lambda _: ([ok(b"y" * size)], False)) as up:
            pool = pool_for(up)
            conn = await pool.acquire()
            conn.send(request(), b"")
            assert await conn.response() == 200
            assert await conn.read_all(4 * HIGH_WATER) == b"y" * size
            conn.release()
            conn = await pool.acquire()
            conn.send(request(), b"")
            assert await conn.response() == 200
            with pytest.raises(UpstreamError) as e:
                await conn.read_all(HIGH_WATER // 2)
            assert e.value.kind == "too_large" and conn.closed
            pool.close()

    run(test)


@pytest.mark.parametrize("answer, kind", [
    (b"HTTP/1.1 abc Nope\r\ncontent-length: 0\r\n\r\n", "reset"),
    (b"SMTP ready\r\n\r\n", "reset"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(101)) + b"\r\n", "invalid"),
    (b"HTTP/1.1 200 OK\r\nx-big: " + b"v" * (65 << 10), "invalid"),  # the rest of the head never comes
    # Whole heads over the limit, each in one write: one huge field, and many fields that add up.
    (b"HTTP/1.1 200 OK\r\nx-big: " + b"v" * (65 << 10) + b"\r\ncontent-length: 0\r\n\r\n", "invalid"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 1400) for i in range(50))
     + b"content-length: 0\r\n\r\n", "invalid"),
], ids=["status-line", "not-http", "too-many-headers", "head-too-large", "whole-head-too-large",
        "fields-add-up-too-large"])
def test_malformed_or_oversized_head_is_an_upstream_error(answer: bytes, kind: str) -> None:
    async def test() -> None:
        async with Upstream(lambda _: ([answer], False)) as up:
            pool = pool_for(up)
            conn = await pool.acquire()
            conn.send(request(), b"")
            with pytest.raises(UpstreamError) as e:
                await conn.response()
            assert e.value.kind == kind, e.value.detail
            conn.release()
            assert pool.idle == []

    run(test)


# --- the pool's limits ---------------------------------------------------------------------------


def test_pool_keeps_at_most_max_idle_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_IDLE", 2)

    async def test() -> None:
        async with Upstream(lambda _: ([ok()], False)) as up:
            pool = pool_for(up)
            conns = [await pool.acquire() for _ in range(3)]
            assert len({id(c) for c in conns}) == 3
            for conn in conns:
                conn.send(request(), b"")
                assert await conn.response() == 200 and await conn.read_all(100) == b"hello"
                conn.release()
            assert pool.idle == conns[:2] and conns[2].closed and up.connections == 3
            pool.close()
            assert all(c.closed for c in conns)

    run(test)


def test_pool_drops_connections_idle_past_their_ttl() -> None:
    async def test() -> None:
        async with Upstream(lambda _: ([ok()], False)) as up:
            pool = pool_for(up)
            first, _, _ = await exchange(pool)
            first.idle_since -= IDLE_TTL + 1
            second, status, _ = await exchange(pool)
            assert status == 200 and second is not first and first.closed and up.connections == 2
            pool.close()

    run(test)


def test_closed_pool_keeps_nothing() -> None:
    async def test() -> None:
        async with Upstream(lambda _: ([ok()], False)) as up:
            pool = pool_for(up)
            conn = await pool.acquire()
            pool.close()
            conn.send(request(), b"")
            assert await conn.response() == 200 and await conn.read_all(100) == b"hello"
            conn.release()
            assert pool.idle == [] and conn.closed

    run(test)

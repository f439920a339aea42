"""Token counting for all workers in one place: the control process, over a Unix socket.

A loaded tokenizer takes ~150 MB (Qwen's vocabulary), so one copy serves every
worker instead of one per worker, and its CPU time is spent outside the
processes that proxy. Counting is needed only when a backend reports no usage
and for the /tokenize and count_tokens endpoints, so the round trip is off the
common path. Frames are a 4-byte length and a msgpack array, both ways.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from core.usage import Usage

TOKENS_SOCKET_ENV = "MODELYARD_TOKENS_SOCKET"
_LEN = struct.Struct("<I")
_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode


class TokenServiceError(RuntimeError):
    pass


# -- the service (control process) -------------------------------------------------------------


def _handle(counter: Any, call: list[Any]) -> Any:
    from gateway import accounting, token_endpoints

    op = call[0]
    if op == "tokenize":
        return list(token_endpoints.tokenize(counter, call[1]))
    if op == "count_tokens":
        return list(token_endpoints.count_tokens(counter, call[1]))
    if op == "estimate":  # model, request body, answer bytes, stream, operation
        usage = accounting.count_usage(counter, call[1], call[2], call[3], call[4], call[5])
        return [usage.input_tokens, usage.output_tokens]
    raise TokenServiceError(f"unknown call {op!r}")


async def serve(path: str, counter: Any) -> asyncio.AbstractServer:
    """Answer counting calls on `path`; the tokenizers encode with the GIL released, in threads."""
    pool = ThreadPoolExecutor(2, thread_name_prefix="tokens")
    loop = asyncio.get_running_loop()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = _LEN.unpack(await reader.readexactly(_LEN.size))[0]
                call = _decode(await reader.readexactly(size))
                try:
                    reply = [True, await loop.run_in_executor(pool, _handle, counter, call)]
                except Exception as e:  # the caller logs it; the service goes on
                    reply = [False, f"{type(e).__name__}: {e}"]
                data = _encode(reply)
                writer.write(_LEN.pack(len(data)) + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    if os.path.exists(path):
        os.unlink(path)
    return await asyncio.start_unix_server(connection, path)


# -- the client (workers) -------------------------------------------------------------------------


class RemoteCounter:
    """Blocking calls to the service, one connection per calling thread (calls run in threads)."""

    def __init__(self, path: str, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout
        self._local = threading.local()

    def _conn(self) -> socket.socket:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            self._local.sock = sock
        return sock

    def call(self, *call: Any) -> Any:
        data = _encode(list(call))
        for attempt in (0, 1):  # a connection the service closed (it restarted) is opened again once
            try:
                sock = self._conn()
                sock.sendall(_LEN.pack(len(data)) + data)
                size = _LEN.unpack(_recv(sock, _LEN.size))[0]
                ok, result = _decode(_recv(sock, size))
                break
            except OSError as e:
                self._local.sock = None
                if attempt:
                    raise TokenServiceError(f"token service at {self.path}: {e}") from None
        if not ok:
            raise TokenServiceError(result)
        return result

    def tokenize(self, body: bytes) -> tuple[int, bytes]:
        status, answer = self.call("tokenize", body)
        return status, answer

    def count_tokens(self, body: bytes) -> tuple[int, bytes]:
        status, answer = self.call("count_tokens", body)
        return status, answer

    def estimate(self, model: str, request: bytes, answer: bytes, stream: bool, operation: str) -> Usage:
        inp, out = self.call("estimate", model, request, answer, stream, operation)
        return Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out, estimated=True)


def _recv(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        part = sock.recv(n)
        if not part:
            raise ConnectionResetError("the token service closed the connection")
        parts.append(part)
        n -= len(part)
    return b"".join(parts)

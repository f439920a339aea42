"""The workers' side of the token service (modelyard.config.token_service): blocking calls over its
Unix socket, in frames of a 4-byte length and a msgpack array."""

from __future__ import annotations

import socket
import threading
from typing import Any

from modelyard.core.token_frames import FRAME_LEN as _LEN
from modelyard.core.token_frames import TokenServiceError, decode as _decode, encode as _encode
from modelyard.core.usage import Usage


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

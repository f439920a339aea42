"""Requests to the bundled mock backend and readers of its answers, shared by its tests."""

from __future__ import annotations

import json
import socket
from typing import Any

CHAT = {"model": "mock-a", "messages": [{"role": "user", "content": "hello there"}]}


def error_fields(body: bytes) -> dict[str, Any]:
    """The `error` object of an error body, with exactly the fields OpenAI's have."""
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def stream_request(die_after: int | None = None) -> bytes:
    """A streaming chat request as raw HTTP/1.1 bytes, cut off after `die_after` tokens when set."""
    body = json.dumps({**CHAT, "stream": True}).encode()
    extra = b"" if die_after is None else b"x-mock-die-after: %d\r\n" % die_after
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"%scontent-length: %d\r\n\r\n%s" % (extra, len(body), body)
    )


def raw_stream(port: int, die_after: int | None) -> bytes:
    """POST a stream on a bare socket and read until the server closes it (a timeout fails the test)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(stream_request(die_after))
        while chunk := sock.recv(65536):
            data += chunk
    return data

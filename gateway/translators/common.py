"""Pieces shared by every translator: SSE framing, JSON helpers, the request error.

Nothing here does I/O; the proxy feeds bytes in and writes what comes out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.decode


class TranslationError(ValueError):
    """A client request that cannot be expressed in the backend's API.

    The caller answers it with a 400 in the client API's shape, naming `param`.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


def guarded(build: Callable[[dict[str, Any], str], Any], body: dict[str, Any], model: str) -> Any:
    """build(body, model), with a wrongly typed field (a string where a list belongs...) as a 400."""
    try:
        return build(body, model)
    except TranslationError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError) as e:
        raise TranslationError(f"malformed request: {e}") from None


def dumps(value: Any) -> bytes:
    return _encoder.encode(value)


def dumps_str(value: Any) -> str:
    return _encoder.encode(value).decode()


def loads(data: bytes | str) -> Any:
    """Decoded JSON, or None when it is not JSON (upstream bodies are not trusted)."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def loads_object(data: bytes | str) -> dict[str, Any] | None:
    value = loads(data)
    return value if isinstance(value, dict) else None


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event; Anthropic names each event, OpenAI sends data lines only."""
    payload = dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


class SSEParser:
    """Splits a byte stream, cut anywhere, into whole (event, data) pairs.

    Line ends may be LF, CRLF or CR (the SSE spec allows all three); they are
    normalised to LF as bytes arrive. A CR that ends a chunk is a line end at once;
    an LF starting the next chunk is then its CRLF partner and is skipped.
    """

    __slots__ = ("_pending", "_skip_lf")

    def __init__(self) -> None:
        self._pending = b""  # normalised bytes of the unfinished event
        self._skip_lf = False  # the previous chunk ended with a CR

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        if not chunk:
            return []
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        data = self._pending + chunk if self._pending else chunk
        if b"\n\n" not in data:
            self._pending = data
            return []
        *whole, self._pending = data.split(b"\n\n")
        return [ev for ev in map(_parse_event, whole) if ev is not None]

    def flush(self) -> list[tuple[str | None, str]]:
        """The last event when the stream ended without its blank line."""
        rest, self._pending, self._skip_lf = self._pending, b"", False
        ev = _parse_event(rest) if rest.strip() else None
        return [ev] if ev is not None else []


class SSETranslator:
    """What both stream translators do with the bytes: parse them as SSE, turn the events into the
    client's (`_events`), add what the stream's end calls for (`_end`), and send nothing once closed."""

    _sse: SSEParser
    _closed: bool

    def feed(self, chunk: bytes) -> bytes:
        if self._closed:
            return b""
        return self._events(self._sse.feed(chunk))

    def feed_events(self, events: list[tuple[str | None, str]]) -> bytes:
        """Events already cut out of their framing (Bedrock wraps each of Anthropic's in an
        event-stream message: aws_eventstream.py), in place of SSE bytes."""
        if self._closed:
            return b""
        return self._events(events)

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self) -> bytes:
        if self._closed:
            return b""
        out = self._events(self._sse.flush())
        return out if self._closed else out + self._end()

    def _events(self, events: list[tuple[str | None, str]]) -> bytes:
        raise NotImplementedError

    def _end(self) -> bytes:
        """The client's end of the stream, when the backend's ended without an error that closed it."""
        raise NotImplementedError


def _parse_event(raw: bytes) -> tuple[str | None, str] | None:
    event: str | None = None
    data: list[str] = []
    for line in raw.decode("utf-8", "replace").split("\n"):
        if not line or line.startswith(":"):  # blank or comment (keep-alive)
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if not data:
        return None
    return event, "\n".join(data)


def text_of(content: Any) -> str:
    """The text of a string or of a list of text parts/blocks (others are skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""

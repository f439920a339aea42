"""AWS event-stream framing, as Bedrock Runtime's streaming answers use it (the one encoder of the
project: the translators' tests build their streams with it too).

One message is: a 12-byte prelude (total length, headers length, both big-endian uint32, then the
CRC32 of those 8 bytes), the headers, the payload, and the CRC32 of everything before it. Each
header is its name's length (uint8), the name, a value type (7: string, the only one Bedrock sends),
the value's length (uint16) and the value. Bedrock's events carry ``:event-type``,
``:content-type: application/json`` and ``:message-type: event``; a failure mid-stream is a message
with ``:message-type: exception`` and ``:exception-type``. Bedrock pads each event's JSON with a
``"p"`` field of letters of varying length, so a payload's size does not give its content away.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_STRING = 7
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"
JSON = "application/json"


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value)) + raw_value


def message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude and its CRC, string headers, payload, message CRC."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def padding(size: int) -> str:
    """Bedrock's "p" value: letters, ``size`` of them (cycled)."""
    return (_PAD * (size // len(_PAD) + 1))[:size]


def event(kind: str, payload: dict[str, Any], pad: int | None = None) -> bytes:
    """An ``event`` message of type ``kind`` whose JSON payload is ``payload`` with a "p" field of
    ``pad`` letters (no "p" when ``pad`` is None)."""
    body = payload if pad is None else {**payload, "p": padding(pad)}
    return message({":event-type": kind, ":content-type": JSON, ":message-type": "event"}, _encode(body))


def chunk(document: dict[str, Any] | bytes, pad: int | None = None) -> bytes:
    """A ``chunk`` event of InvokeModelWithResponseStream: ``{"bytes": base64(document's JSON)}``,
    the document being one of the model's own stream events (e.g. Anthropic's), as JSON text or an
    object to encode; padded as ``event``."""
    raw = document if isinstance(document, bytes) else _encode(document)
    return event("chunk", {"bytes": base64.b64encode(raw).decode("ascii")}, pad)


def exception(kind: str, payload: dict[str, Any]) -> bytes:
    """An ``exception`` message (a failure after the stream began): ``kind`` is the event-stream
    member name, e.g. ``modelStreamErrorException``; the payload is ``{"message": ...}`` and any
    other members of the exception's shape."""
    return message({":exception-type": kind, ":content-type": JSON, ":message-type": "exception"},
                   _encode(payload))

"""What every mock API shares on the wire: JSON coding, the client-error exception, header reading,
the deterministic answer text and SSE event framing. Names keep their leading underscore: they are
internal to the mock package.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode


class _BadRequest(Exception):
    """A client error; carries the error fields (OpenAI's; the other APIs map them onto their shapes)."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def _int_header(headers: Any, name: str) -> int | None:
    value = headers.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    """One named server-sent event: ``event: <name>`` and its JSON ``data:`` line."""
    return b"event: " + name + b"\ndata: " + _encode(data) + b"\n\n"


# --- deterministic content ----------------------------------------------------

_TOKENS: list[bytes] = []


def _token(i: int) -> bytes:
    """``tok{i} `` as bytes; grown on demand and kept, so streams only index a list."""
    while len(_TOKENS) <= i:
        _TOKENS.append(b"tok%d " % len(_TOKENS))
    return _TOKENS[i]


@lru_cache(maxsize=64)
def _content(n: int) -> str:
    # The concatenation of the streamed deltas, so streamed and whole answers agree.
    return "".join(f"tok{i} " for i in range(n))

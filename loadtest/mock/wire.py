"""What every mock API shares on the wire: JSON coding, the client-error exception, header reading,
the deterministic answer text and SSE event framing. Names keep their leading underscore: they are
internal to the mock package.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

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


def _form_fields(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict; the first of repeated fields wins."""
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    """One named server-sent event: ``event: <name>`` and its JSON ``data:`` line."""
    return b"event: " + name + b"\ndata: " + _encode(data) + b"\n\n"


# --- deterministic content ----------------------------------------------------


def _choose_tool(names: list[str], text: str, forced: bool) -> int | None:
    """Which tool a mock answer calls (an index into ``names``), by the mocks' shared convention:
    a tool named in the last user text, else one with "weather" in its name (or the first) when the
    text mentions weather; when the request forces a tool call, the named one or the first."""
    if not names:
        return None
    text = text.lower()
    named = next((i for i, name in enumerate(names) if name.lower() in text), None) if text else None
    if named is not None:
        return named
    if forced:
        return 0
    if "weather" in text:
        return next((i for i, name in enumerate(names) if "weather" in name.lower()), 0)
    return None


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

"""What every mock API shares on the wire: JSON coding, the client-error exception, header and form
reading, unpadded base64url, the deterministic answer text and tool choice, SSE event framing and the
pacing and cutting of streams. Names keep their leading underscore (``b64url``/``unb64url`` aside,
which the token code shares): they are internal to the mock package.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from modelyard.loadtest.mock.abort import _abort_connection
from modelyard.loadtest.mock.config import MockConfig

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


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), as JOSE and the mock's session tokens use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def unb64url(text: str) -> bytes:
    """The bytes of unpadded base64url text; ValueError for anything else."""
    if not isinstance(text, str) or any(c not in _B64URL for c in text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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


class _Pacer:
    """Paces a stream's deltas and cuts it short: ``--ttft-ms`` before the first delta, ``--itl-ms``
    before each other; after ``error_after`` deltas ``error()`` ends the stream, after
    ``x-mock-die-after`` (or ``--die-after``) deltas the connection is cut."""

    def __init__(self, scope: Any, config: MockConfig, error_after: int | None = None,
                 error: Callable[[], Awaitable[None]] | None = None):
        die_after = _int_header(scope.headers, "x-mock-die-after")
        self._die_after = config.die_after if die_after is None else die_after
        self._scope, self._error_after, self._error = scope, error_after, error
        self._ttft, self._itl = config.ttft_ms / 1000, config.itl_ms / 1000
        self.sent = 0

    async def cut(self) -> bool:
        """Whether the stream ends here (the error event sent, or the connection cut)."""
        if self._error is not None and self._error_after is not None and self.sent >= self._error_after:
            await self._error()
            return True
        if self._die_after is not None and self.sent >= self._die_after:
            await _abort_connection(self._scope.client)
            return True
        return False

    async def delta(self) -> bool:
        """Before each delta: False when the stream ends instead, else wait for the delta's turn."""
        if await self.cut():
            return False
        delay = self._ttft if self.sent == 0 else self._itl
        if delay:
            await asyncio.sleep(delay)
        self.sent += 1
        return True

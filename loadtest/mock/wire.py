"""What every mock API shares on the wire: JSON coding, the client-error exception, header reading,
the deterministic answer text, SSE event framing and the pacing and cutting of streams. Names keep
their leading underscore: they are internal to the mock package.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

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

    def __init__(self, scope: Any, config: MockConfig, error_after: int | None,
                 error: Callable[[], Awaitable[None]]):
        die_after = _int_header(scope.headers, "x-mock-die-after")
        self._die_after = config.die_after if die_after is None else die_after
        self._scope, self._error_after, self._error = scope, error_after, error
        self._ttft, self._itl = config.ttft_ms / 1000, config.itl_ms / 1000
        self.sent = 0

    async def cut(self) -> bool:
        """Whether the stream ends here (the error event sent, or the connection cut)."""
        if self._error_after is not None and self.sent >= self._error_after:
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

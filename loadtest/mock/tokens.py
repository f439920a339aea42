"""Access tokens the mocks' identity endpoints issue and their model endpoints accept.

A token is an HS256 JWT over the claims the endpoint that issued it chose (``aud`` says for which
service, ``exp`` until when), keyed by a secret the command line draws once per run and hands to
every Granian worker in ``TOKEN_KEY_ENV``. So a token one worker issues is good at every other
worker, with no shared state, and a token from another run (or a forged one) is refused. Mocks
started with the same ``MODELYARD_MOCK_TOKEN_KEY`` (64 hex digits) in their environment share it,
and so accept each other's tokens. Google's tokens carry its ``ya29.`` prefix; to clients they are
opaque either way.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from typing import Any

import msgspec

from modelyard.loadtest.mock.jwt import JWTError, numeric, parse
from modelyard.loadtest.mock.wire import b64url

TOKEN_KEY_ENV = "MODELYARD_MOCK_TOKEN_KEY"
_HEADER = b64url(b'{"alg":"HS256","typ":"JWT"}')
_encode = msgspec.json.encode


class Expired(Exception):
    """A token this mock issued whose time is up."""


def new_key() -> str:
    """A fresh secret for ``TOKEN_KEY_ENV`` (hex)."""
    return os.urandom(32).hex()


_LOCAL_KEY = new_key()


def key_from_env() -> bytes:
    """The run's token key; a process-local one when the command line set none (in-process tests)."""
    return bytes.fromhex(os.environ.get(TOKEN_KEY_ENV) or _LOCAL_KEY)


class TokenMint:
    """Issues and reads this run's access tokens."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "TokenMint()"

    def _mac(self, signing_input: bytes) -> str:
        return b64url(hmac.new(self._key, signing_input, hashlib.sha256).digest())

    def issue(self, claims: dict[str, Any], lifetime: int, prefix: str = "", now: float | None = None) -> tuple[
            str, int]:
        """A token carrying ``claims`` that expires ``lifetime`` seconds from now; the token and its ``exp``."""
        now = time.time() if now is None else now
        issued, exp = int(now), math.ceil(now) + max(1, lifetime)  # never shorter than promised
        payload = b64url(_encode({**claims, "iat": issued, "exp": exp, "jti": os.urandom(8).hex()}))
        signing_input = f"{_HEADER}.{payload}"
        return f"{prefix}{signing_input}.{self._mac(signing_input.encode())}", exp

    def read(self, token: str, audience: str, prefix: str = "", now: float | None = None) -> dict[str, Any] | None:
        """The claims of a token this run issued for ``audience``; None for any other string;
        Expired when it was ours but its time is up."""
        if not token.startswith(prefix):
            return None
        body = token[len(prefix):]
        signing_input, _, mac = body.rpartition(".")
        if not signing_input or not hmac.compare_digest(mac.encode(), self._mac(signing_input.encode()).encode()):
            return None
        try:
            claims = parse(body).claims
        except JWTError:
            return None
        if claims.get("aud") != audience:
            return None
        exp = numeric(claims, "exp")
        if exp is None or exp <= (time.time() if now is None else now):
            raise Expired()
        return claims

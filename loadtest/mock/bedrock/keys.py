"""The AWS access keys the Bedrock mock accepts: static key pairs, and the temporary ones its STS issues.

Static pairs come from the command line (``--aws-access-key-id``/``--aws-secret-access-key``,
``--aws-keys FILE``); they take no session token, as an IAM user's long-term keys take none.

Temporary credentials are stateless, so that every Granian worker (and a restarted mock given the
same ``--sts-secret``, or by default the same ``MODELYARD_MOCK_TOKEN_KEY``, the run's token key of
``tokens``) accepts what any of them issued: the access key is ``ASIA`` and 16 random base32
characters; the secret key is an HMAC of the access key under that STS secret; the
session token carries the access key, the expiration, the role and session names, and an HMAC of
them. A request signed with one must send the token as ``x-amz-security-token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

import msgspec

from modelyard.loadtest.mock.bedrock.sigv4 import EXPIRED_TOKEN, INVALID_TOKEN, AuthError
from modelyard.loadtest.mock.wire import b64url, unb64url

# The documented example key pair (AWS's docs use it everywhere): what the mock accepts when given no keys.
EXAMPLE_KEYS = {"AKIAIOSFODNN7EXAMPLE": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
_TOKEN_PREFIX = "IQoJmock"


class _Session(msgspec.Struct, frozen=True):
    k: str  # access key id
    e: int  # expiration, epoch seconds
    r: str  # role ARN
    s: str  # role session name


_decode_session = msgspec.json.Decoder(_Session).decode


class TemporaryCredentials(msgspec.Struct, frozen=True):
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: int

    def __repr__(self) -> str:
        return f"TemporaryCredentials(access_key_id={self.access_key_id[:4]}..., expiration={self.expiration})"

    __str__ = __repr__


class KeyStore:
    """Looks up the secret of a static or STS-issued access key; issues temporary ones."""

    def __init__(self, static: dict[str, str], sts_secret: bytes):
        self._static = dict(static)
        self._sts = sts_secret or os.urandom(32)

    def __repr__(self) -> str:
        return f"KeyStore({len(self._static)} static keys)"

    def _mac(self, purpose: bytes, data: bytes) -> bytes:
        return hmac.new(self._sts, purpose + b"\0" + data, hashlib.sha256).digest()

    def _secret(self, access_key: str) -> str:
        return base64.b64encode(self._mac(b"secret", access_key.encode())).decode("ascii")[:40]

    def issue(self, role_arn: str, session_name: str, lifetime: int, now: float) -> TemporaryCredentials:
        access_key = "ASIA" + base64.b32encode(os.urandom(10)).decode("ascii")[:16]
        expiration = int(now) + lifetime
        raw = msgspec.json.encode(_Session(access_key, expiration, role_arn, session_name))
        token = _TOKEN_PREFIX + b64url(raw) + "." + b64url(self._mac(b"token", raw))
        return TemporaryCredentials(access_key, self._secret(access_key), token, expiration)

    def session(self, token: str) -> _Session | None:
        """The session a token carries, when the token is one this store (or its STS secret) issued."""
        if not token.startswith(_TOKEN_PREFIX) or token.count(".") != 1:
            return None
        body, _, mac = token[len(_TOKEN_PREFIX):].partition(".")
        try:
            raw, given = unb64url(body), unb64url(mac)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._mac(b"token", raw)):
            return None
        try:
            return _decode_session(raw)
        except msgspec.DecodeError:
            return None

    def secret_for(self, access_key: str, token: str | None, now: float) -> str:
        """The secret that signs for ``access_key``; an AuthError for an unknown key or a bad token."""
        static = self._static.get(access_key)
        if static is not None:
            if token:  # a long-term key sends no session token
                raise AuthError("UnrecognizedClientException", INVALID_TOKEN)
            return static
        if not access_key.startswith("ASIA") or not token:
            raise AuthError("UnrecognizedClientException", INVALID_TOKEN)
        session = self.session(token)
        if session is None or not hmac.compare_digest(session.k, access_key):
            raise AuthError("UnrecognizedClientException", INVALID_TOKEN)
        if session.e <= now:
            raise AuthError("ExpiredTokenException", EXPIRED_TOKEN)
        return self._secret(access_key)


def parse_key_file(text: str) -> dict[str, str]:
    """``{"AKID": "secret", ...}`` or ``[{"access_key_id": ..., "secret_access_key": ...}, ...]``."""
    doc: Any = msgspec.json.decode(text)
    out: dict[str, str] = {}
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = [(d.get("access_key_id"), d.get("secret_access_key")) for d in doc if isinstance(d, dict)]
    else:
        items = []
    for akid, secret in items:
        if not isinstance(akid, str) or not isinstance(secret, str) or not akid or not secret:
            raise ValueError("each key needs a non-empty access key id and secret access key")
        out[akid] = secret
    if not out:
        raise ValueError("no keys in the file")
    return out

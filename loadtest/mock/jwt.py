"""RS256 JSON Web Tokens and JWK sets for the mock OIDC issuer (``oidc``) and the STS mock that trusts it.

Signing is RSASSA-PKCS1-v1_5 with SHA-256 over ``base64url(header) "." base64url(claims)``
(RFC 7515/7518), done with ``cryptography``. Verification takes a token and a JWK set (the keys by
``kid``), checks the algorithm, the signature, and the registered claims: ``exp`` (required),
``nbf`` and ``iat`` (not in the future, with a small leeway), and ``iss``/``aud`` when asked to.
A refusal is a ``JWTError`` whose ``reason`` names what failed and never the token itself.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from modelyard.loadtest.mock.wire import b64url, unb64url

__all__ = ["JWTError", "b64url", "key_id", "load_private_key", "new_key", "parse_jwks", "private_pem", "public_jwk",
           "sign", "unb64url", "verify"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
LEEWAY = 60  # seconds of clock skew allowed on nbf and iat
MAX_TOKEN = 20_000  # characters; STS's WebIdentityToken limit


class JWTError(Exception):
    """A token refused; ``kind`` is "expired" for an exp in the past, else "invalid"."""

    def __init__(self, reason: str, kind: str = "invalid", detail: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason, self.kind, self.detail = reason, kind, detail or {}


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


# --- keys -------------------------------------------------------------------------------


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the signing key is not an RSA private key")
    return key


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def key_id(public: rsa.RSAPublicKey) -> str:
    """A stable kid: the RFC 7638 thumbprint of the public key."""
    numbers = public.public_numbers()
    canonical = _encode({"e": b64url(_uint_bytes(numbers.e)), "kty": "RSA", "n": b64url(_uint_bytes(numbers.n))})
    return b64url(hashlib.sha256(canonical).digest())


def public_jwk(public: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": key_id(public),
            "n": b64url(_uint_bytes(numbers.n)), "e": b64url(_uint_bytes(numbers.e))}


def parse_jwks(text: str | bytes) -> dict[str, rsa.RSAPublicKey]:
    """The RSA signing keys of a JWK set (``{"keys": [...]}``) by kid; other keys are skipped."""
    doc = _decode(text)
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise ValueError('a JWK set is an object with a "keys" list')
    out: dict[str, rsa.RSAPublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
            continue
        try:
            public = rsa.RSAPublicNumbers(_uint(unb64url(jwk["e"])), _uint(unb64url(jwk["n"]))).public_key()
        except (KeyError, ValueError, TypeError):
            continue
        out[str(jwk.get("kid") or key_id(public))] = public
    return out


# --- tokens -----------------------------------------------------------------------------


def sign(key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str | None = None) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": kid or key_id(key.public_key())}
    signing_input = b64url(_encode(header)) + "." + b64url(_encode(claims))
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


def _segment(text: str, what: str) -> dict[str, Any]:
    try:
        value = _decode(unb64url(text))
    except (ValueError, msgspec.DecodeError):
        raise JWTError(f"the token's {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise JWTError(f"the token's {what} is not a JSON object")
    return value


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JWTError(f"the {name} claim is not a number")
    return float(value)


def verify(token: str, keys: dict[str, rsa.RSAPublicKey], now: float, issuer: str | None = None,
           audience: str | None = None) -> dict[str, Any]:
    """The claims of a valid RS256 token signed by one of ``keys``; else a JWTError."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN or token.count(".") != 2:
        raise JWTError("the token is not a JWS compact serialization (three base64url parts)")
    head_text, claims_text, signature_text = token.split(".")
    header = _segment(head_text, "header")
    claims = _segment(claims_text, "claims")
    if header.get("alg") != "RS256":
        raise JWTError(f"the token's algorithm is {str(header.get('alg'))[:20]!r}, not RS256")
    kid = header.get("kid")
    if isinstance(kid, str) and kid in keys:
        candidates = [keys[kid]]
    elif kid is None:
        candidates = list(keys.values())
    else:
        raise JWTError("the token's kid names no key of the issuer's JWK set")
    try:
        signature = unb64url(signature_text)
    except ValueError:
        raise JWTError("the token's signature is not base64url") from None
    signing_input = (head_text + "." + claims_text).encode("ascii")
    for public in candidates:
        try:
            public.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            break
        except InvalidSignature:
            continue
    else:
        raise JWTError("the token's signature does not verify with the issuer's keys")
    exp = _number(claims, "exp")
    if exp is None:
        raise JWTError("the token has no exp claim")
    if exp <= now:
        raise JWTError("the token has expired", "expired", {"exp": int(exp), "now": int(now)})
    for name in ("nbf", "iat"):
        moment = _number(claims, name)
        if moment is not None and moment > now + LEEWAY:
            raise JWTError(f"the token's {name} is in the future")
    if issuer is not None and claims.get("iss") != issuer:
        raise JWTError("the token's iss is not the trusted issuer", "issuer")
    if audience is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if audience not in audiences:
            raise JWTError("the token's aud does not name the expected audience", "audience")
    return claims

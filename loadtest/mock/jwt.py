"""RS256 JSON Web Tokens and JWK sets, for every mock identity endpoint.

The issuers sign with it: the OIDC issuer mock (``oidc``) signs its client-credentials tokens
(``sign``, ``public_jwk``). The token endpoints verify with it what clients present: Google's (``vertex``)
a service account's signed assertion or a workload's OIDC token, Microsoft Entra ID's (``entra``) a
federated client assertion, Bedrock's STS (``bedrock.sts``) a web identity token. Verifying is two
steps, so that each endpoint words a refusal its own provider's way: ``verify_rs256`` (the
signature, RSASSA-PKCS1-v1_5 with SHA-256 over ``base64url(header) "." base64url(claims)``, RFC
7515/7518, by a key of a JWK set) and ``check_claims`` (``exp`` required, ``iat``/``nbf`` not in the
future, give or take a leeway, and the lifetime, audience and issuer when asked). A refusal is a
``JWTError`` whose ``reason`` is one of the constants below.

Nothing here talks to the network except ``fetch_jwks``, which the command line calls once at
start; nothing puts a token, a key or a signature into an exception message.
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from modelyard.loadtest.mock.wire import b64url, unb64url

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# Why a token was refused; each endpoint words the reason its own provider's way.
MALFORMED = "malformed"
UNSUPPORTED_ALG = "alg"
UNKNOWN_KEY = "kid"
BAD_SIGNATURE = "signature"
EXPIRED = "expired"
NOT_YET_VALID = "not-yet-valid"
TOO_LONG = "lifetime"
WRONG_AUDIENCE = "aud"
WRONG_ISSUER = "iss"


class JWTError(Exception):
    """A token that cannot be accepted; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Parsed(msgspec.Struct, frozen=True):
    """A JWS compact token split into its parts, nothing verified yet."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _segment(text: str) -> bytes:
    try:
        return unb64url(text)
    except ValueError:
        raise JWTError(MALFORMED, "not base64url") from None


def parse(token: str) -> Parsed:
    """Split and decode a compact JWS (``header.claims.signature``); JWTError if it is not one."""
    if not isinstance(token, str) or not token.isascii():
        raise JWTError(MALFORMED, "not a compact JWS")
    pieces = token.split(".")
    if len(pieces) != 3 or not all(pieces[:2]):
        raise JWTError(MALFORMED, "not a compact JWS")
    try:
        header = _decode(_segment(pieces[0]))
        claims = _decode(_segment(pieces[1]))
    except msgspec.DecodeError:
        raise JWTError(MALFORMED, "header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise JWTError(MALFORMED, "header or claims are not JSON objects")
    return Parsed(header, claims, f"{pieces[0]}.{pieces[1]}".encode("ascii"), _segment(pieces[2]))


def verify_rs256(token: str, keys: dict[str | None, rsa.RSAPublicKey]) -> dict[str, Any]:
    """The claims of an RS256 token signed by one of ``keys`` (by its ``kid``; any key when the
    token names none, or names one not in ``keys`` while ``keys`` has an entry under None)."""
    parsed = parse(token)
    if parsed.header.get("alg") != "RS256":
        raise JWTError(UNSUPPORTED_ALG, "only RS256 is accepted")
    kid = parsed.header.get("kid")
    if isinstance(kid, str) and kid in keys:
        candidates = [keys[kid]]
    elif kid is None or None in keys:
        candidates = list(keys.values())
    else:
        raise JWTError(UNKNOWN_KEY, "no key with this kid")
    for key in candidates:
        try:
            key.verify(parsed.signature, parsed.signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return parsed.claims
    raise JWTError(BAD_SIGNATURE)


def numeric(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim, or None when absent or not a number."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def audience_list(claims: dict[str, Any]) -> list[str]:
    """``aud`` as a list (RFC 7519 allows a string or an array of strings)."""
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def check_claims(claims: dict[str, Any], now: float, *, audiences: set[str] | frozenset[str] | None = None,
                 issuer: str | None = None, max_lifetime: float | None = None, leeway: float = 60.0) -> None:
    """JWTError unless the token is current (``exp`` required; ``iat``/``nbf`` not in the future, give
    or take ``leeway``), at most ``max_lifetime`` long (which then requires ``iat``), for one of
    ``audiences`` and from ``issuer`` (each checked only when given)."""
    exp = numeric(claims, "exp")
    if exp is None or exp <= now - leeway:
        raise JWTError(EXPIRED)
    for name in ("iat", "nbf"):
        at = numeric(claims, name)
        if at is not None and at > now + leeway:
            raise JWTError(NOT_YET_VALID, name)
    if max_lifetime is not None:
        iat = numeric(claims, "iat")
        if iat is None or exp - iat > max_lifetime:
            raise JWTError(TOO_LONG)
    if issuer is not None and claims.get("iss") != issuer:
        raise JWTError(WRONG_ISSUER)
    if audiences is not None and not audiences.intersection(audience_list(claims)):
        raise JWTError(WRONG_AUDIENCE)


# --- signing ------------------------------------------------------------------


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def sign(key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str | None = None) -> str:
    """An RS256 token over ``claims``; its header names ``kid``, by default the key's thumbprint."""
    header = {"alg": "RS256", "typ": "JWT", "kid": kid or key_id(key.public_key())}
    signing_input = b64url(_encode(header)) + "." + b64url(_encode(claims))
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


# --- keys ---------------------------------------------------------------------


def public_key_from_pem(pem: str | bytes) -> rsa.RSAPublicKey:
    """An RSA public key from a PEM public key, certificate or private key (whose public half is kept)."""
    data = pem.encode() if isinstance(pem, str) else pem
    key: Any
    if b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    elif b"CERTIFICATE" in data:
        from cryptography import x509

        key = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA key")
    return key


def public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _uint_b64(value: int) -> str:
    return b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _b64_int(value: Any) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError("missing RSA parameter")
    try:
        return int.from_bytes(unb64url(value), "big")
    except ValueError:
        raise ValueError("RSA parameter is not base64url") from None


def key_id(key: rsa.RSAPublicKey) -> str:
    """A stable kid: the RFC 7638 thumbprint of the public key."""
    numbers = key.public_numbers()
    return b64url(hashlib.sha256(_encode({"e": _uint_b64(numbers.e), "kty": "RSA",
                                          "n": _uint_b64(numbers.n)})).digest())


def public_jwk(key: rsa.RSAPublicKey, kid: str | None = None) -> dict[str, str]:
    """The JWK form of an RSA public key, its ``kid`` by default the key's thumbprint."""
    numbers = key.public_numbers()
    return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid or key_id(key),
            "n": _uint_b64(numbers.n), "e": _uint_b64(numbers.e)}


def load_jwks(document: str | bytes | dict[str, Any]) -> dict[str | None, rsa.RSAPublicKey]:
    """The RSA signing keys of a JWKS document, by ``kid`` (None for a key without one).

    Keys that are not RSA, are marked for encryption (``use: enc``) or another algorithm, or are
    malformed, are skipped; a document without a usable key is refused, since nothing could ever
    verify against it.
    """
    doc = document if isinstance(document, dict) else _decode(document)
    keys_list = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys_list, list):
        raise ValueError("a JWKS document is an object with a 'keys' array")
    keys: dict[str | None, rsa.RSAPublicKey] = {}
    for jwk in keys_list:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
            continue
        if jwk.get("alg", "RS256") != "RS256":
            continue
        try:
            public = rsa.RSAPublicNumbers(_b64_int(jwk.get("e")), _b64_int(jwk.get("n"))).public_key()
        except ValueError:  # a malformed key is skipped, as unusable
            continue
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) else None] = public
    if not keys:
        raise ValueError("the JWKS document has no RSA signing key")
    return keys


def fetch_jwks(source: str, timeout: float = 10.0) -> str:
    """The JWKS document at ``source`` (an http(s) URL, else a file path), checked to hold a key.

    An issuer started alongside the mock may not listen yet, so connection failures are retried
    until ``timeout``; an answer that is not a JWKS document is not.
    """
    if not source.startswith(("http://", "https://")):
        text = Path(source).read_text()
        try:
            load_jwks(text)
        except (ValueError, msgspec.DecodeError) as e:
            raise ValueError(f"the JWKS in {source}: {e}") from None
        return text
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(source, timeout=max(0.5, deadline - time.monotonic())) as answer:
                raw = answer.read(1 << 20)
            break
        except urllib.error.HTTPError as e:
            raise ValueError(f"fetching the JWKS from {source}: HTTP {e.code}") from None
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ValueError(f"fetching the JWKS from {source}: {e}") from None
            time.sleep(0.1)
    try:
        text = raw.decode()
        load_jwks(text)
    except (ValueError, msgspec.DecodeError) as e:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"the JWKS from {source}: {e}") from None
    return text

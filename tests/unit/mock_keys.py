"""RSA keys, JWKS documents and signed tokens for the identity mocks' tests (no network, no files)."""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt
from google.auth import jwt as google_jwt

from modelyard.loadtest.mock import jwt

SA_EMAIL = "runner@proj-1.iam.gserviceaccount.com"
SA_KEY_ID = "a1b2c3"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


@lru_cache(maxsize=None)
def private_pem(name: str) -> str:
    """A 2048-bit RSA private key (PKCS#8 PEM), one per name and test session."""
    return jwt.private_pem(jwt.new_key())


def public_key(name: str) -> rsa.RSAPublicKey:
    return jwt.public_key_from_pem(private_pem(name))


def service_account_info(name: str = "sa", token_uri: str = "http://127.0.0.1:1/token") -> dict[str, str]:
    """A service-account JSON key as the console downloads it, with a local token_uri."""
    return {
        "type": "service_account", "project_id": "proj-1", "private_key_id": SA_KEY_ID,
        "private_key": private_pem(name), "client_email": SA_EMAIL, "client_id": "1234567890",
        "token_uri": token_uri,
    }


def jwks(*names: str) -> str:
    """A JWKS document with the public keys of ``names`` (kid = the name)."""
    return json.dumps({"keys": [jwt.public_jwk(public_key(n), kid=n) for n in names]})


def sign(name: str, claims: dict[str, Any], kid: str | None = None) -> str:
    """An RS256 JWT over ``claims`` with key ``name`` (kid defaults to the name)."""
    signer = crypt.RSASigner.from_string(private_pem(name), key_id=name if kid is None else kid)
    return google_jwt.encode(signer, claims).decode()


def oidc_token(name: str = "issuer", audience: str = "api://AzureADTokenExchange", lifetime: int = 600,
               now: float | None = None, **extra: Any) -> str:
    """A workload's OIDC token (as a Kubernetes or CI issuer signs one)."""
    now = time.time() if now is None else now
    claims = {"iss": "https://issuer.example", "sub": "system:serviceaccount:ns:app", "aud": audience,
              "iat": int(now), "exp": int(now) + lifetime, **extra}
    return sign(name, claims)

"""An OpenID Connect issuer of client-credentials tokens (``modelyard mock --api oidc``).

Endpoints:

- ``GET /.well-known/openid-configuration``: the discovery document; ``issuer`` is ``--issuer``, else
  the URL the request reached (scheme and Host), with ``token_endpoint`` and ``jwks_uri`` under it.
- ``GET /jwks``: the JWK set, the RSA public key that signs the tokens: ``--signing-key PEM``, else
  one generated when the mock starts (shared by all its workers).
- ``POST /token``: OAuth 2.0 client credentials (RFC 6749 4.4), a form body with
  ``grant_type=client_credentials`` and optional ``scope`` and ``audience``; the client
  authenticates with ``client_secret_basic`` (an ``Authorization: Basic`` header) or
  ``client_secret_post`` (``client_id``/``client_secret`` in the body) as ``--client-id`` /
  ``--client-secret``. The answer is ``{"access_token", "token_type": "Bearer", "expires_in",
  "scope"?}``, the token an RS256 JWT with ``iss``, ``sub`` (the client id), ``aud`` (the
  ``audience`` asked for, else the client id), ``iat``, ``nbf``, ``exp`` (``--token-lifetime``
  seconds later), ``jti``, ``client_id`` and ``scope``.
- ``GET /health``.

Errors are RFC 6749's JSON ``{"error", "error_description"}``: invalid_client (401, with
``WWW-Authenticate: Basic`` when the client used Basic), invalid_request and
unsupported_grant_type (400). The Bedrock mock's STS, the Vertex AI mock's STS and the Azure mock's
Entra ID endpoint trust this issuer with ``--oidc-jwks http://HOST:PORT/jwks``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from modelyard.loadtest.mock.config import CloudConfig, ProviderConfig, cloud_config_from_env, provider_config_from_env
from modelyard.loadtest.mock.jwt import load_private_key, new_key, public_jwk, sign
from modelyard.loadtest.mock.wire import _encode

_JSON = ("content-type", "application/json")
_NO_STORE = [("cache-control", "no-store"), ("pragma", "no-cache")]


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str, basic: bool = False):
        super().__init__(description)
        self.status, self.error, self.description, self.basic = status, error, description, basic


class OIDCApp:
    """The RSGI app; one per worker, its signing key from ``CLOUD_ENV_VAR`` (or generated), its tokens'
    lifetime (``--token-lifetime``) from ``PROVIDER_ENV_VAR``."""

    def __init__(self, cloud: CloudConfig | None = None, provider: ProviderConfig | None = None) -> None:
        self._fixed, self._fixed_provider = cloud, provider
        self.configure()

    def __repr__(self) -> str:
        return f"OIDCApp(kid={self._jwk['kid']!r})"

    def configure(self) -> None:
        self.cloud = cloud = self._fixed or cloud_config_from_env()
        self.provider = self._fixed_provider or provider_config_from_env()
        self._key = load_private_key(cloud.signing_key) if cloud.signing_key else new_key()
        self._jwk = public_jwk(self._key.public_key())
        self._jwks_body = _encode({"keys": [self._jwk]})

    def __rsgi_init__(self, loop: Any) -> None:
        self.configure()

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path, method = scope.path.rstrip("/") or "/", scope.method
        if method == "GET" and path == "/health":
            proto.response_bytes(200, [("content-type", "text/plain; charset=utf-8")], b"ok")
        elif method == "GET" and path == "/.well-known/openid-configuration":
            proto.response_bytes(200, [_JSON], _encode(self._discovery(scope)))
        elif method == "GET" and path == "/jwks":
            proto.response_bytes(200, [_JSON], self._jwks_body)
        elif path == "/token":
            body = await proto()
            try:
                if method != "POST":
                    raise _OAuthError(405, "invalid_request", "the token endpoint takes POST")
                answer = self._token(scope, body)
            except _OAuthError as e:
                headers = [_JSON, *_NO_STORE]
                if e.basic:
                    headers.append(("www-authenticate", 'Basic realm="modelyard-mock"'))
                proto.response_bytes(e.status, headers, _encode({"error": e.error, "error_description": e.description}))
                return
            proto.response_bytes(200, [_JSON, *_NO_STORE], _encode(answer))
        else:
            proto.response_bytes(404, [_JSON], _encode({"error": "not_found", "error_description": path[:200]}))

    def _issuer(self, scope: Any) -> str:
        if self.cloud.issuer:
            return self.cloud.issuer.rstrip("/")
        host = scope.headers.get("host") or scope.authority or "127.0.0.1"
        return f"{scope.scheme}://{host}"

    def _discovery(self, scope: Any) -> dict[str, Any]:
        issuer = self._issuer(scope)
        return {
            "issuer": issuer,
            "token_endpoint": issuer + "/token",
            "jwks_uri": issuer + "/jwks",
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"],
        }

    def _client(self, scope: Any, form: dict[str, list[str]]) -> str:
        """The authenticated client id (client_secret_basic or client_secret_post)."""
        scheme, _, credentials = (scope.headers.get("authorization") or "").partition(" ")
        basic = scheme.lower() == "basic"
        if basic:
            if "client_secret" in form:
                raise _OAuthError(400, "invalid_request", "use one client authentication method, not two")
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise _OAuthError(401, "invalid_client", "malformed Basic credentials", basic=True) from None
            client_id, sep, secret = decoded.partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)  # RFC 6749 2.3.1: form-encoded, then Basic
            if not sep:
                raise _OAuthError(401, "invalid_client", "malformed Basic credentials", basic=True)
        else:
            client_id = form.get("client_id", [""])[0]
            secret = form.get("client_secret", [""])[0]
            if not client_id or not secret:
                raise _OAuthError(401, "invalid_client", "client authentication is required")
        right_id = hmac.compare_digest(client_id.encode(), self.cloud.client_id.encode())
        right_secret = hmac.compare_digest(secret.encode(), self.cloud.client_secret.encode())
        if not (right_id and right_secret):
            raise _OAuthError(401, "invalid_client", "client authentication failed", basic=basic)
        return client_id

    def _token(self, scope: Any, body: bytes) -> dict[str, Any]:
        ctype = (scope.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise _OAuthError(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise _OAuthError(400, "invalid_request", "the body is not UTF-8") from None
        if any(len(values) > 1 for values in form.values()):
            raise _OAuthError(400, "invalid_request", "a parameter is repeated")
        grant = form.get("grant_type", [""])[0]
        if not grant:
            raise _OAuthError(400, "invalid_request", "grant_type is required")
        client_id = self._client(scope, form)
        if grant != "client_credentials":
            raise _OAuthError(400, "unsupported_grant_type", f"grant_type {grant[:40]} is not supported")
        now = int(time.time())
        lifetime = self.provider.token_lifetime
        claims: dict[str, Any] = {
            "iss": self._issuer(scope), "sub": client_id, "aud": form.get("audience", [""])[0] or client_id,
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": str(uuid.uuid4()), "client_id": client_id,
        }
        scope_value = form.get("scope", [""])[0]
        if scope_value:
            claims["scope"] = scope_value
        answer: dict[str, Any] = {"access_token": sign(self._key, claims, self._jwk["kid"]), "token_type": "Bearer",
                                  "expires_in": lifetime}
        if scope_value:
            answer["scope"] = scope_value
        return answer


app = OIDCApp()

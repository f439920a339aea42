"""The Microsoft identity platform's token endpoint, as the Azure OpenAI mock serves it.

``POST /{tenant}/oauth2/v2.0/token`` with OAuth 2.0's client credentials grant, as MSAL and
``azure-identity`` send it: ``grant_type=client_credentials``, ``client_id``, ``scope`` (a
resource's ``/.default``, ``https://cognitiveservices.azure.com/.default`` for Azure OpenAI) and
either ``client_secret`` or a federated credential, ``client_assertion_type=urn:ietf:params:oauth:
client-assertion-type:jwt-bearer`` with ``client_assertion`` an RS256 token of a trusted OIDC
issuer (``--oidc-jwks``; its ``aud`` must be ``api://AzureADTokenExchange`` unless
``--oidc-audience`` says otherwise, its ``iss`` ``--oidc-issuer`` when given). The one app
registration is ``--azure-tenant-id``/``--azure-client-id``/``--azure-client-secret`` (each
unchecked when not given; without a secret only assertions are accepted).

Answers are ``{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}``; the
token, a JWT for the scope's resource, is good until ``--token-lifetime`` runs out. Refusals are
Entra ID's: ``{"error", "error_description": "AADSTS<n>: ... Trace ID: ... Correlation ID: ...
Timestamp: ...", "error_codes": [n], "timestamp", "trace_id", "correlation_id", "error_uri"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from typing import Any

from modelyard.loadtest.mock import jwt
from modelyard.loadtest.mock.config import ProviderConfig
from modelyard.loadtest.mock.tokens import TokenMint

COGNITIVE_SERVICES = "https://cognitiveservices.azure.com"
AI_FOUNDRY = "https://ai.azure.com"
OPENAI_AUDIENCES = (COGNITIVE_SERVICES, AI_FOUNDRY)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FEDERATION_AUDIENCE = "api://AzureADTokenExchange"
TOKEN_PATH = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")


class EntraError(Exception):
    """A refusal: the HTTP status, OAuth error code, AADSTS number and its message."""

    def __init__(self, status: int, code: str, number: int, message: str) -> None:
        super().__init__(f"AADSTS{number}")
        self.status, self.code, self.number, self.message = status, code, number, message

    def body(self, now: float) -> dict[str, Any]:
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(now))
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        return {
            "error": self.code,
            "error_description": f"AADSTS{self.number}: {self.message} Trace ID: {trace} "
                                 f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.number],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.number}",
        }


def _missing(name: str, status: int = 400, code: str = "invalid_request", number: int = 900144) -> EntraError:
    return EntraError(status, code, number, f"The request body must contain the following parameter: '{name}'.")


class EntraIdentity:
    """The app registration the token endpoint knows, the trusted issuer, and the run's token mint."""

    def __init__(self, provider: ProviderConfig, mint: TokenMint) -> None:
        self.mint = mint
        self.lifetime = provider.token_lifetime
        self.tenant = provider.azure_tenant_id
        self.client_id = provider.azure_client_id
        self.secret_sha256 = provider.azure_client_secret_sha256
        self.oidc_keys = jwt.load_jwks(provider.oidc_jwks) if provider.oidc_jwks else None
        self.oidc_issuer = provider.oidc_issuer
        self.oidc_audiences = frozenset(provider.oidc_audiences) or frozenset({FEDERATION_AUDIENCE})
        self.configured = any((self.tenant, self.client_id, self.secret_sha256, self.oidc_keys))

    def token(self, tenant: str, form: dict[str, str], now: float | None = None) -> tuple[int, dict[str, Any]]:
        """(status, body) for a token request to ``tenant``."""
        now = time.time() if now is None else now
        try:
            return 200, self._grant(tenant, form, now)
        except EntraError as e:
            return e.status, e.body(now)

    def _grant(self, tenant: str, form: dict[str, str], now: float) -> dict[str, Any]:
        if self.tenant is not None and tenant != self.tenant:
            raise EntraError(400, "invalid_request", 90002,
                             f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                             "signing into the correct cloud. Check with your subscription administrator, this may "
                             "happen if there are no active subscriptions for the tenant.")
        grant = form.get("grant_type")
        if not grant:
            raise _missing("grant_type")
        if grant != "client_credentials":
            raise EntraError(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type "
                                                                   f"'{grant}'.")
        client_id = form.get("client_id")
        if not client_id:
            raise _missing("client_id")
        if self.client_id is not None and client_id != self.client_id:
            raise EntraError(400, "unauthorized_client", 700016,
                             f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                             "This can happen if the application has not been installed by the administrator of the "
                             "tenant or consented to by any user in the tenant. You may have sent your authentication "
                             "request to the wrong tenant.")
        scope = form.get("scope")
        if not scope:
            raise _missing("scope")
        if len(scope.split()) != 1 or not scope.endswith("/.default"):
            raise EntraError(400, "invalid_scope", 1002012,
                             f"The provided value for scope {scope} is not valid. Client credential flows must have "
                             "a scope value with /.default suffixed to the resource identifier (application ID URI).")
        self._authenticate(client_id, form, now)
        resource = scope[:-len("/.default")]
        token, _ = self.mint.issue({
            "aud": resource, "iss": f"https://sts.windows.net/{tenant}/", "tid": tenant, "appid": client_id,
            "sub": client_id, "idtyp": "app",
        }, self.lifetime, now=now)
        return {"token_type": "Bearer", "expires_in": self.lifetime, "ext_expires_in": self.lifetime,
                "access_token": token}

    def _authenticate(self, client_id: str, form: dict[str, str], now: float) -> None:
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if secret:
            digest = hashlib.sha256(secret.encode()).hexdigest()
            if self.secret_sha256 is None or not hmac.compare_digest(digest, self.secret_sha256):
                raise EntraError(401, "invalid_client", 7000215,
                                 "Invalid client secret provided. Ensure the secret being sent in the request is the "
                                 f"client secret value, not the client secret ID, for a secret added to app "
                                 f"'{client_id}'.")
            return
        if not assertion:
            raise EntraError(401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                                                             "'client_assertion' or 'client_secret'.")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise _missing("client_assertion_type")
        try:
            parsed = jwt.parse(assertion)
        except jwt.JWTError:
            raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or malformed.") from None
        claims = parsed.claims
        if self.oidc_keys is None or (self.oidc_issuer is not None and claims.get("iss") != self.oidc_issuer):
            raise EntraError(400, "invalid_request", 700211,
                             f"No matching federated identity record found for presented assertion issuer "
                             f"'{claims.get('iss')}'.")
        try:
            jwt.verify_rs256(assertion, self.oidc_keys)
        except jwt.JWTError:
            raise EntraError(401, "invalid_client", 700027, "Client assertion failed signature validation.") from None
        try:
            jwt.check_claims(claims, now, audiences=self.oidc_audiences)
        except jwt.JWTError as e:
            if e.reason == jwt.WRONG_AUDIENCE:
                raise EntraError(400, "invalid_request", 700212,
                                 "No matching federated identity record found for presented assertion audience "
                                 f"'{', '.join(jwt.audience_list(claims))}'.") from None
            raise EntraError(400, "invalid_client", 700024, "Client assertion is not within its valid time range.") \
                from None

    def read(self, token: str, now: float | None = None) -> dict[str, Any] | None:
        """The claims of an Azure OpenAI token this mock issued (tokens.Expired when its time is up)."""
        for audience in OPENAI_AUDIENCES:
            claims = self.mint.read(token, audience, now=now)
            if claims is not None:
                return claims
        return None

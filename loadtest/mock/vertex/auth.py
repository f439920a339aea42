"""Google's token endpoints as the Vertex mock serves them, and the bearer check of its model routes.

- ``POST /token``: OAuth 2.0's JWT bearer grant (RFC 7523) as ``google.oauth2.service_account``
  sends it: ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<RS256 JWT>``.
  The assertion must be signed by a configured service account's key (found by ``kid``, the key
  file's ``private_key_id``, or by ``iss``, its ``client_email``), be addressed to Google's token
  endpoint (``aud`` ``https://oauth2.googleapis.com/token``, which google-auth always sends, the
  key file's ``token_uri`` or this endpoint's own URL), last at most an hour and ask for a scope.
- ``POST /v1/token``: the Security Token Service's exchange (RFC 8693) that workload identity
  federation (``google.auth.identity_pool``) makes: a trusted OIDC issuer's RS256 token (checked
  against ``--oidc-jwks``) for a federated access token.
- ``POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken``: IAM Credentials, as
  ``google.auth.impersonated_credentials`` (and identity pools with
  ``service_account_impersonation_url``) call it with a token this mock issued.

Every token issued is accepted by the model routes until it expires (``--token-lifetime``); they
also need the cloud-platform scope, as Vertex does (403 ``ACCESS_TOKEN_SCOPE_INSUFFICIENT``).
"""

from __future__ import annotations

import re
import time
from typing import Any

from modelyard.loadtest.mock import jwt
from modelyard.loadtest.mock.config import ProviderConfig
from modelyard.loadtest.mock.tokens import Expired, TokenMint
from modelyard.loadtest.mock.vertex.errors import GoogleError, OAuthError, error_info, unauthenticated
from modelyard.loadtest.mock.vertex.validate import parse_message

AUDIENCE = "https://aiplatform.googleapis.com/"  # the `aud` of the tokens this mock issues for Google APIs
PREFIX = "ya29."
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = frozenset({"urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token"})
GOOGLE_TOKEN_URIS = frozenset({
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
})
WORKLOAD_AUDIENCE = re.compile(
    r"^//iam\.googleapis\.com/projects/[^/]+/locations/global/workloadIdentityPools/[^/]+/providers/[^/]+$")
MAX_ASSERTION_LIFETIME = 3600
MAX_IMPERSONATION_LIFETIME = 3600

CREDENTIALS_HELP = ("Expected OAuth 2 access token, login cookie or other valid authentication credential. "
                    "See https://developers.google.com/identity/sign-in/web/devconsole-project.")
MISSING_CREDENTIALS = "Request is missing required authentication credential. " + CREDENTIALS_HELP
INVALID_CREDENTIALS = "Request had invalid authentication credentials. " + CREDENTIALS_HELP
INSUFFICIENT_SCOPES = "Request had insufficient authentication scopes."
SHORT_LIVED = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
               "Check your iat and exp values in the JWT claim.")
_DURATION = re.compile(r"^(\d+)(\.\d{1,9})?s$")


def expire_time(exp: int) -> str:
    """IAM Credentials' expireTime (RFC 3339, whole seconds, as google-auth parses it)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))


class GoogleIdentity:
    """The keys and issuer settings the token endpoints check against, and the run's token mint."""

    def __init__(self, provider: ProviderConfig, mint: TokenMint) -> None:
        self.mint = mint
        self.lifetime = provider.token_lifetime
        self.accounts = [(sa, jwt.public_key_from_pem(sa.public_key_pem)) for sa in provider.service_accounts]
        self.oidc_keys = jwt.load_jwks(provider.oidc_jwks) if provider.oidc_jwks else None
        self.oidc_issuer = provider.oidc_issuer
        self.oidc_audiences = frozenset(provider.oidc_audiences)

    def _issue(self, subject: str, scope: str, now: float | None) -> tuple[str, int]:
        return self.mint.issue({"aud": AUDIENCE, "sub": subject, "scope": scope}, self.lifetime, PREFIX, now)

    # --- POST /token -------------------------------------------------------------------

    def oauth_token(self, form: dict[str, str], own_urls: set[str], now: float | None = None) -> dict[str, Any]:
        """The JWT bearer grant; OAuthError as Google's token endpoint words it."""
        now = time.time() if now is None else now
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "Missing required parameter: grant_type")
        if grant != JWT_BEARER:
            raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant}")
        assertion = form.get("assertion")
        if not assertion:
            raise OAuthError("invalid_request", "Missing required parameter: assertion")
        try:
            parsed = jwt.parse(assertion)
        except jwt.JWTError:
            raise OAuthError("invalid_grant", "Invalid JWT: the assertion is not a signed JWT.") from None
        iss = parsed.claims.get("iss")
        kid = parsed.header.get("kid")
        accounts = [(sa, key) for sa, key in self.accounts if sa.email is None or sa.email == iss]
        if not accounts:
            raise OAuthError("invalid_grant", "Invalid grant: account not found")
        candidates = [key for sa, key in accounts if sa.key_id is not None and sa.key_id == kid] or [
            key for _, key in accounts]
        try:
            claims = self._verify_any(assertion, candidates)
        except jwt.JWTError:
            raise OAuthError("invalid_grant", "Invalid JWT Signature.") from None
        token_uris = {sa.token_uri for sa, _ in accounts if sa.token_uri}
        try:
            jwt.check_claims(claims, now, max_lifetime=MAX_ASSERTION_LIFETIME, leeway=30)
        except jwt.JWTError:
            raise OAuthError("invalid_grant", SHORT_LIVED) from None
        if not (GOOGLE_TOKEN_URIS | token_uris | own_urls).intersection(jwt.audience_list(claims)):
            raise OAuthError("invalid_grant",
                             "Invalid JWT: Failed audience check. The right audience is https://oauth2.googleapis.com/token")
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.strip():
            raise OAuthError("invalid_scope", "Empty or missing scope not allowed.")
        subject = claims.get("sub") if isinstance(claims.get("sub"), str) else iss
        token, _ = self._issue(str(subject), scope, now)
        return {"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}

    @staticmethod
    def _verify_any(assertion: str, keys: list[Any]) -> dict[str, Any]:
        for key in keys:
            try:
                return jwt.verify_rs256(assertion, {None: key})
            except jwt.JWTError:
                continue
        raise jwt.JWTError(jwt.BAD_SIGNATURE)

    # --- POST /v1/token ------------------------------------------------------------------

    def sts_token(self, form: dict[str, str], now: float | None = None) -> dict[str, Any]:
        """The RFC 8693 exchange of an OIDC token for a federated access token."""
        now = time.time() if now is None else now
        for name, expected in (("grant_type", {TOKEN_EXCHANGE}), ("requested_token_type", {ACCESS_TOKEN_TYPE}),
                               ("subject_token_type", SUBJECT_TOKEN_TYPES)):
            if form.get(name) not in expected:
                raise OAuthError("invalid_request", f'Invalid value for "{name}".')
        audience = form.get("audience") or ""
        if not WORKLOAD_AUDIENCE.match(audience):
            raise OAuthError("invalid_request",
                             'Invalid value for "audience". This value should be the full resource name of the '
                             "Identity Provider. See https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/"
                             "token for the list of possible formats.")
        subject = form.get("subject_token")
        if not subject:
            raise OAuthError("invalid_request", 'Missing required parameter: "subject_token".')
        if self.oidc_keys is None:
            raise OAuthError("invalid_target",
                             'The target service indicated by the "audience" parameters is invalid. This might '
                             "either be because the pool or provider is disabled or deleted or because it doesn't "
                             "exist.")
        try:
            claims = jwt.verify_rs256(subject, self.oidc_keys)
        except jwt.JWTError:
            raise OAuthError("invalid_grant", "Invalid JWT signature: the subject token does not verify against "
                                              "the provider's keys.") from None
        accepted = self.oidc_audiences or {"https:" + audience}
        try:
            jwt.check_claims(claims, now, audiences=accepted, issuer=self.oidc_issuer)
        except jwt.JWTError as e:
            raise OAuthError("invalid_grant", _sts_claim_error(e.reason, claims)) from None
        scope = form.get("scope") or ""
        token, _ = self._issue(f"principal:{claims.get('sub')}", scope, now)
        return {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
                "expires_in": self.lifetime}

    # --- IAM Credentials ----------------------------------------------------------------

    def generate_access_token(self, email: str, authorization: str | None, body: Any,
                              now: float | None = None) -> dict[str, Any]:
        """A service account's access token for a caller holding one of this mock's tokens."""
        method = "google.iam.credentials.v1.IAMCredentials.GenerateAccessToken"
        claims = self.bearer(authorization, method, now, service="iamcredentials.googleapis.com",
                             scopes=(CLOUD_PLATFORM, IAM_SCOPE))
        if "@" not in email:
            raise GoogleError(404, f"Not found; Gaia id not found for email {email}")
        req = parse_message("GenerateAccessTokenRequest", body)
        scopes = req.get("scope") or []
        if not scopes:
            raise GoogleError(400, "Scope required.")
        lifetime = MAX_IMPERSONATION_LIFETIME
        if "lifetime" in req:
            match = _DURATION.match(req["lifetime"])
            seconds = int(match.group(1)) if match else 0
            if not 1 <= seconds <= MAX_IMPERSONATION_LIFETIME:
                raise GoogleError(400, f"The lifetime {req['lifetime']} is not between 1s and "
                                       f"{MAX_IMPERSONATION_LIFETIME}s.")
            lifetime = seconds
        issued = self.mint.issue({"aud": AUDIENCE, "sub": email, "act": claims.get("sub"),
                                  "scope": " ".join(scopes)}, min(lifetime, self.lifetime), PREFIX, now)
        return {"accessToken": issued[0], "expireTime": expire_time(issued[1])}

    # --- the model routes' check ------------------------------------------------------------

    def bearer(self, authorization: str | None, method: str, now: float | None = None,
               service: str = "aiplatform.googleapis.com", scopes: tuple[str, ...] = (CLOUD_PLATFORM,)) -> dict[str, Any]:
        """The claims of the request's bearer token; GoogleError 401/403 as Google answers them."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated(MISSING_CREDENTIALS, "CREDENTIALS_MISSING", method, service)
        try:
            claims = self.mint.read(token, AUDIENCE, PREFIX, now)
        except Expired:
            raise unauthenticated(INVALID_CREDENTIALS, "ACCESS_TOKEN_EXPIRED", method, service) from None
        if claims is None:
            raise unauthenticated(INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED", method, service)
        granted = str(claims.get("scope") or "").split()
        if not any(scope in granted for scope in scopes):
            raise GoogleError(403, INSUFFICIENT_SCOPES, "PERMISSION_DENIED",
                              [error_info("ACCESS_TOKEN_SCOPE_INSUFFICIENT", method, service)])
        return claims


def _sts_claim_error(reason: str, claims: dict[str, Any]) -> str:
    if reason == jwt.WRONG_AUDIENCE:
        return f"The audience in ID Token [{', '.join(jwt.audience_list(claims))}] does not match the expected audience."
    if reason == jwt.WRONG_ISSUER:
        return f"The issuer in ID Token [{claims.get('iss')}] does not match the expected issuer."
    if reason == jwt.EXPIRED:
        return "The ID Token has expired; its exp claim is in the past."
    return "The ID Token is not yet valid; its iat or nbf claim is in the future."

"""OAuth 2.0 token requests the refresher makes itself: the client-credentials grant at an OIDC
provider (oidcExchangeToken) and at the Microsoft identity platform (AzureCredentials).

Each is one form POST (RFC 6749 section 4.4) answered with {access_token, expires_in}: no SDK
has a smaller surface for it, and the SDKs that do it (azure-identity, msal) insist on their own
authority discovery over HTTPS, which a private or test authority cannot offer. Nothing here
signs anything. Errors carry the provider's `error` code and status, never a secret or the token.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from modelyard.config.cloud_credentials.sources import OIDCClient

# The client-credentials scope of Azure OpenAI (Azure AI services), as the Envoy AI Gateway asks for it.
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
AZURE_AUTHORITY = "https://login.microsoftonline.com"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ANSWER = 1 << 20  # bytes of a token or discovery answer
TIMEOUT = aiohttp.ClientTimeout(total=30)


class TokenError(RuntimeError):
    """A token request that failed; the message is safe to log and show."""


class Token:
    __slots__ = ("value", "expires_at")

    def __init__(self, value: str, expires_at: float | None):
        self.value = value
        self.expires_at = expires_at  # wall-clock seconds; None: the answer named no lifetime

    def __repr__(self) -> str:
        return f"Token(expires_at={self.expires_at!r})"


async def _json(response: aiohttp.ClientResponse, what: str) -> Any:
    body = bytearray()
    while len(body) <= MAX_ANSWER:  # read(n) gives what has arrived, up to n: a long answer takes several
        chunk = await response.content.read(MAX_ANSWER + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > MAX_ANSWER:
        raise TokenError(f"{what} answered with over {MAX_ANSWER} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise TokenError(f"{what} answered HTTP {response.status} with a body that is not JSON") from None
    if response.status >= 400 or not isinstance(data, dict):
        code = data.get("error") if isinstance(data, dict) else None
        code = code if isinstance(code, str) and code.isprintable() and len(code) < 100 else "unknown"
        raise TokenError(f"{what} refused the request: HTTP {response.status}, error {code}")
    return data


def token_from(data: dict[str, Any], what: str, now: float | None = None) -> Token:
    """The access token and its expiry from a token endpoint's JSON answer."""
    value = data.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenError(f"{what} answered without an access_token")
    lifetime = data.get("expires_in")
    try:
        seconds = float(lifetime) if lifetime is not None else None
    except (TypeError, ValueError):
        seconds = None
    return Token(value, (now or time.time()) + seconds if seconds is not None and seconds > 0 else None)


class OIDCTokens:
    """Client-credentials tokens from OIDC providers, each provider's token endpoint discovered once."""

    def __init__(self, session: aiohttp.ClientSession):
        self.session = session
        self._discovered: dict[str, tuple[str, tuple[str, ...]]] = {}  # issuer -> (token endpoint, scopes)

    async def _discover(self, issuer: str) -> tuple[str, tuple[str, ...]]:
        found = self._discovered.get(issuer)
        if found is None:
            what = f"the OIDC discovery document of {issuer}"
            try:
                async with self.session.get(f"{issuer}/.well-known/openid-configuration", timeout=TIMEOUT) as r:
                    data = await _json(r, what)
            except aiohttp.ClientError as e:
                raise TokenError(f"could not read {what}: {type(e).__name__}") from None
            endpoint = data.get("token_endpoint")
            if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
                raise TokenError(f"{what} names no token_endpoint")
            scopes = tuple(s for s in data.get("scopes_supported") or () if isinstance(s, str))
            found = self._discovered[issuer] = (endpoint, scopes)
        return found

    async def token(self, client: OIDCClient) -> Token:
        """A token for the client (its access token, as the Envoy AI Gateway exchanges it)."""
        endpoint, scopes = client.token_endpoint, client.scopes
        if endpoint is None:
            endpoint, supported = await self._discover(client.issuer)
            # The Envoy AI Gateway asks for the configured scopes plus those the provider lists.
            scopes = scopes + tuple(s for s in supported if s not in scopes)
        form = {"grant_type": "client_credentials"}
        if scopes:
            form["scope"] = " ".join(scopes)
        if client.audience:
            form["audience"] = client.audience
        # client_secret_basic (RFC 6749 2.3.1: both parts form-encoded), the method every provider takes.
        basic = base64.b64encode(f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
                                 .encode()).decode()
        return await post_form(self.session, endpoint, form, f"the OIDC token endpoint of {client.issuer}",
                               {"authorization": f"Basic {basic}"})


async def post_form(session: aiohttp.ClientSession, url: str, form: dict[str, str], what: str,
                    headers: dict[str, str] | None = None) -> Token:
    try:
        async with session.post(url, data=form, headers={"accept": "application/json", **(headers or {})},
                                timeout=TIMEOUT) as r:
            return token_from(await _json(r, what), what)
    except aiohttp.ClientError as e:
        raise TokenError(f"could not reach {what}: {type(e).__name__}") from None


def azure_token_url(tenant_id: str, authority: str = AZURE_AUTHORITY) -> str:
    return f"{authority.rstrip('/')}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"


async def azure_token(session: aiohttp.ClientSession, tenant_id: str, client_id: str, *, secret: str | None = None,
                      assertion: str | None = None, authority: str = AZURE_AUTHORITY) -> Token:
    """A Microsoft identity platform token for Azure OpenAI, with a client secret or a federated assertion."""
    form = {"grant_type": "client_credentials", "client_id": client_id, "scope": AZURE_SCOPE}
    if secret is not None:
        form["client_secret"] = secret
    else:
        assert assertion is not None
        form["client_assertion_type"] = JWT_BEARER_ASSERTION
        form["client_assertion"] = assertion
    return await post_form(session, azure_token_url(tenant_id, authority), form,
                           f"the Microsoft identity platform (tenant {tenant_id})")

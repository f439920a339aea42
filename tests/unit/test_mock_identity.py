"""The identity mocks' pure pieces: JWT/JWKS verification, the token mint, Google's token endpoints
(OAuth JWT bearer, STS, IAM Credentials) and Microsoft Entra ID's client credentials endpoint."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import Any

import pytest
from google.oauth2 import service_account
from hypothesis import given
from hypothesis import strategies as st

from modelyard.loadtest.mock import jwt
from modelyard.loadtest.mock.cli import add_arguments, provider_config_from_args
from modelyard.loadtest.mock.config import ProviderConfig, ServiceAccountKey
from modelyard.loadtest.mock.entra import EntraIdentity
from modelyard.loadtest.mock.tokens import Expired, TokenMint
from modelyard.loadtest.mock.vertex.auth import CLOUD_PLATFORM, PREFIX, GoogleIdentity
from modelyard.loadtest.mock.vertex.errors import GoogleError, OAuthError
from modelyard.loadtest.mock.wire import b64url
from tests.unit.mock_keys import SA_EMAIL, SA_KEY_ID, jwks, oidc_token, public_key, service_account_info, sign

NOW = 1_800_000_000.0
WIF = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/prov"
MINT = TokenMint(b"k" * 32)


def _sa_key(name: str = "sa") -> ServiceAccountKey:
    return ServiceAccountKey(public_key_pem=jwt.public_pem(public_key(name)), email=SA_EMAIL, key_id=SA_KEY_ID,
                             token_uri="http://127.0.0.1:1/token")


def _google(**kw: Any) -> GoogleIdentity:
    provider = ProviderConfig(api="vertex", service_accounts=(_sa_key(),), oidc_jwks=jwks("issuer"), **kw)
    return GoogleIdentity(provider, MINT)


def _grant_assertion(name: str = "sa", scopes: tuple[str, ...] = (CLOUD_PLATFORM,)) -> str:
    """The assertion google-auth itself signs for a service account's token request."""
    creds = service_account.Credentials.from_service_account_info(service_account_info(name), scopes=list(scopes))
    return creds._make_authorization_grant_assertion().decode()


def _oauth(identity: GoogleIdentity, assertion: str, now: float | None = None) -> dict[str, Any]:
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    return identity.oauth_token(form, {"http://127.0.0.1:1/token"}, now=now)


def _refusal(call: Any) -> tuple[str, str]:
    with pytest.raises(OAuthError) as info:
        call()
    return info.value.code or "", info.value.message


# --- jwt -------------------------------------------------------------------------------------


def test_verify_rs256_accepts_the_signing_key_and_refuses_others() -> None:
    token = sign("issuer", {"sub": "x", "exp": NOW + 60})
    keys = jwt.load_jwks(jwks("issuer", "other"))
    assert jwt.verify_rs256(token, keys)["sub"] == "x"
    with pytest.raises(jwt.JWTError) as info:
        jwt.verify_rs256(token, jwt.load_jwks(jwks("other")))
    assert info.value.reason == jwt.UNKNOWN_KEY  # kid "issuer" is not in that JWKS
    forged = sign("other", {"sub": "x"}, kid="issuer")  # claims the issuer's kid, signed by another key
    with pytest.raises(jwt.JWTError) as info:
        jwt.verify_rs256(forged, keys)
    assert info.value.reason == jwt.BAD_SIGNATURE
    claims = token.split(".")[1]
    unsigned = b64url(b'{"alg":"none"}') + f".{claims}."
    with pytest.raises(jwt.JWTError) as info:
        jwt.verify_rs256(unsigned, keys)
    assert info.value.reason == jwt.UNSUPPORTED_ALG


def test_check_claims_time_audience_and_issuer() -> None:
    claims = {"iss": "i", "aud": ["a", "b"], "iat": NOW - 10, "exp": NOW + 100}
    jwt.check_claims(claims, NOW, audiences={"b"}, issuer="i", max_lifetime=3600)
    cases = [
        ({**claims, "exp": NOW - 120}, {}, jwt.EXPIRED),
        ({**claims, "iat": NOW + 600}, {}, jwt.NOT_YET_VALID),
        ({**claims, "exp": NOW + 7200}, {"max_lifetime": 3600}, jwt.TOO_LONG),
        (claims, {"audiences": {"c"}}, jwt.WRONG_AUDIENCE),
        (claims, {"issuer": "j"}, jwt.WRONG_ISSUER),
        ({"aud": "a"}, {}, jwt.EXPIRED),  # exp is required
    ]
    for bad, kw, reason in cases:
        with pytest.raises(jwt.JWTError) as info:
            jwt.check_claims(bad, NOW, **kw)
        assert info.value.reason == reason, (bad, kw)


def test_load_jwks_keeps_rsa_signing_keys_only() -> None:
    doc = json.loads(jwks("issuer"))
    doc["keys"] += [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, {**doc["keys"][0], "kid": "e", "use": "enc"}]
    assert list(jwt.load_jwks(doc)) == ["issuer"]
    for bad in ('{"keys": []}', '{"nokeys": 1}', '{"keys": [{"kty": "RSA", "n": "", "e": "AQAB"}]}'):
        with pytest.raises(ValueError):
            jwt.load_jwks(bad)


@given(st.text(max_size=300) | st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.text(max_size=60),
                                          st.text(max_size=60), st.text(max_size=60)))
def test_parse_refuses_garbage_with_jwt_error_only(token: str) -> None:
    try:
        jwt.parse(token)
    except jwt.JWTError:
        pass


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_parse_of_arbitrary_segments(header: bytes, claims: bytes) -> None:
    token = f"{b64url(header)}.{b64url(claims)}.{b64url(b'sig')}"
    try:
        parsed = jwt.parse(token)
    except jwt.JWTError:
        return
    assert isinstance(parsed.header, dict) and isinstance(parsed.claims, dict)


# --- the token mint ----------------------------------------------------------------------------


def test_tokens_are_good_until_they_expire_and_only_for_their_audience() -> None:
    token, exp = MINT.issue({"aud": "svc", "sub": "me"}, 30, "ya29.", now=NOW)
    assert exp == NOW + 30 and token.startswith("ya29.")
    assert MINT.read(token, "svc", "ya29.", now=NOW + 29)["sub"] == "me"
    with pytest.raises(Expired):
        MINT.read(token, "svc", "ya29.", now=NOW + 30)
    assert MINT.read(token, "other", "ya29.", now=NOW) is None
    assert MINT.read(token[5:], "svc", "ya29.", now=NOW) is None  # without its prefix
    assert TokenMint(b"x" * 32).read(token, "svc", "ya29.", now=NOW) is None  # another run's key
    assert MINT.read(token[:-2] + "AA", "svc", "ya29.", now=NOW) is None  # tampered
    assert "k" * 8 not in repr(MINT)


# --- Google: POST /token -------------------------------------------------------------------------


def test_oauth_accepts_google_auths_own_assertion() -> None:
    identity = _google()
    answer = _oauth(identity, _grant_assertion())
    assert set(answer) == {"access_token", "expires_in", "token_type"}
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3600
    assert answer["access_token"].startswith(PREFIX)
    claims = identity.bearer("Bearer " + answer["access_token"], "m")
    assert claims["sub"] == SA_EMAIL and CLOUD_PLATFORM in claims["scope"].split()


def test_oauth_refuses_a_wrong_key_audience_or_time() -> None:
    identity = _google()
    assert _refusal(lambda: _oauth(identity, _grant_assertion("stranger"))) == (
        "invalid_grant", "Invalid JWT Signature.")
    base = {"iss": SA_EMAIL, "scope": CLOUD_PLATFORM, "aud": "https://oauth2.googleapis.com/token",
            "iat": int(NOW), "exp": int(NOW) + 3600}
    assert _oauth(identity, sign("sa", base, kid=SA_KEY_ID), now=NOW)["token_type"] == "Bearer"
    assert _oauth(identity, sign("sa", {**base, "aud": "http://127.0.0.1:1/token"}), now=NOW)  # token_uri
    code, message = _refusal(lambda: _oauth(identity, sign("sa", {**base, "aud": "https://evil/token"}), now=NOW))
    assert code == "invalid_grant" and "audience" in message
    for claims in ({**base, "exp": int(NOW) + 7200}, {**base, "iat": int(NOW) - 7200, "exp": int(NOW) - 3600}):
        code, message = _refusal(lambda: _oauth(identity, sign("sa", claims), now=NOW))
        assert code == "invalid_grant" and "short-lived token (60 minutes)" in message
    assert _refusal(lambda: _oauth(identity, sign("sa", {**base, "iss": "else@x"}), now=NOW)) == (
        "invalid_grant", "Invalid grant: account not found")
    assert _refusal(lambda: _oauth(identity, sign("sa", {**base, "scope": ""}), now=NOW))[0] == "invalid_scope"
    assert _refusal(lambda: identity.oauth_token({"grant_type": "password"}, set()))[0] == "unsupported_grant_type"
    assert _refusal(lambda: identity.oauth_token({}, set()))[0] == "invalid_request"


def test_a_public_key_alone_trusts_any_issuer_it_signed_for() -> None:
    provider = ProviderConfig(service_accounts=(ServiceAccountKey(public_key_pem=jwt.public_pem(public_key("sa"))),))
    identity = GoogleIdentity(provider, MINT)
    assert _oauth(identity, _grant_assertion())["token_type"] == "Bearer"


def test_model_routes_need_an_unexpired_cloud_platform_token() -> None:
    identity = _google(token_lifetime=60)
    start = time.time()  # google-auth signs its assertion at the real time
    token = _oauth(identity, _grant_assertion(), now=start)["access_token"]
    identity.bearer(f"Bearer {token}", "m", now=start + 59)

    def reason(auth: str | None, now: float = start) -> tuple[int, str]:
        with pytest.raises(GoogleError) as info:
            identity.bearer(auth, "m", now=now)
        return info.value.status, info.value.details[0]["reason"]

    assert reason(None) == (401, "CREDENTIALS_MISSING")
    assert reason(f"Bearer {token}", start + 61) == (401, "ACCESS_TOKEN_EXPIRED")
    assert reason("Bearer ya29.something-else") == (401, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
    narrow = _oauth(identity, _grant_assertion(scopes=("https://www.googleapis.com/auth/devstorage.read_only",)),
                    now=start)["access_token"]
    assert reason(f"Bearer {narrow}") == (403, "ACCESS_TOKEN_SCOPE_INSUFFICIENT")


# --- Google: STS and IAM Credentials ---------------------------------------------------------------


def _sts_form(subject: str, audience: str = WIF) -> dict[str, str]:
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "audience": audience,
        "scope": CLOUD_PLATFORM, "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": subject, "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
    }


def test_sts_exchanges_a_trusted_oidc_token() -> None:
    identity = _google(token_lifetime=900)
    answer = identity.sts_token(_sts_form(oidc_token(audience="https:" + WIF, now=NOW)), now=NOW)
    assert answer["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 900
    assert identity.bearer("Bearer " + answer["access_token"], "m", now=NOW)["sub"].startswith("principal:")

    assert _refusal(lambda: identity.sts_token(_sts_form(oidc_token("stranger", audience="https:" + WIF)), now=NOW)
                    )[0] == "invalid_grant"
    code, message = _refusal(lambda: identity.sts_token(_sts_form(oidc_token(audience="https://x", now=NOW)), now=NOW))
    assert code == "invalid_grant" and "does not match the expected audience" in message
    expired = oidc_token(audience="https:" + WIF, now=NOW - 7200)
    assert _refusal(lambda: identity.sts_token(_sts_form(expired), now=NOW))[0] == "invalid_grant"
    assert _refusal(lambda: identity.sts_token(_sts_form("x", audience="projects/1"), now=NOW))[0] == "invalid_request"
    custom = _google(oidc_audiences=("my-aud",))
    assert custom.sts_token(_sts_form(oidc_token(audience="my-aud", now=NOW)), now=NOW)["access_token"]


def test_sts_without_a_trusted_issuer_refuses() -> None:
    identity = GoogleIdentity(ProviderConfig(), MINT)
    assert _refusal(lambda: identity.sts_token(_sts_form(oidc_token(audience="https:" + WIF))))[0] == "invalid_target"


def test_iam_generate_access_token() -> None:
    identity = _google(token_lifetime=600)
    federated = identity.sts_token(_sts_form(oidc_token(audience="https:" + WIF, now=NOW)), now=NOW)["access_token"]
    body = {"delegates": [], "scope": [CLOUD_PLATFORM], "lifetime": "3600s"}
    answer = identity.generate_access_token("target@proj-1.iam.gserviceaccount.com", f"Bearer {federated}", body,
                                            now=NOW)
    assert answer["expireTime"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 600))
    assert identity.bearer("Bearer " + answer["accessToken"], "m", now=NOW)["sub"].startswith("target@")
    for auth, call_body, status in ((None, body, 401), (f"Bearer {federated}", {"scope": []}, 400),
                                    (f"Bearer {federated}", {**body, "lifetime": "7200s"}, 400),
                                    (f"Bearer {federated}", {**body, "extra": 1}, 400)):
        with pytest.raises(GoogleError) as info:
            identity.generate_access_token("target@proj-1.iam.gserviceaccount.com", auth, call_body, now=NOW)
        assert info.value.status == status


# --- Microsoft Entra ID ------------------------------------------------------------------------------


def _entra(**kw: Any) -> EntraIdentity:
    provider = ProviderConfig(api="azure", azure_tenant_id="tenant-1", azure_client_id="client-1",
                              azure_client_secret_sha256=hashlib.sha256(b"s3cret").hexdigest(),
                              oidc_jwks=jwks("issuer"), **kw)
    return EntraIdentity(provider, MINT)


def _cc(**fields: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": "client-1",
            "scope": "https://cognitiveservices.azure.com/.default", **fields}


def test_entra_client_secret_grant() -> None:
    entra = _entra(token_lifetime=120)
    status, answer = entra.token("tenant-1", _cc(client_secret="s3cret"), now=NOW)
    assert status == 200 and set(answer) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert (answer["token_type"], answer["expires_in"], answer["ext_expires_in"]) == ("Bearer", 120, 120)
    claims = entra.read(answer["access_token"], now=NOW)
    assert claims["aud"] == "https://cognitiveservices.azure.com" and claims["tid"] == "tenant-1"
    with pytest.raises(Expired):
        entra.read(answer["access_token"], now=NOW + 120)
    _, other = entra.token("tenant-1", _cc(client_secret="s3cret", scope="https://graph.microsoft.com/.default"),
                           now=NOW)
    assert entra.read(other["access_token"], now=NOW) is None  # a Graph token is not an Azure OpenAI token


@pytest.mark.parametrize(("tenant", "fields", "status", "code", "number"), [
    ("tenant-1", {"client_secret": "n0t-the-s3cret"}, 401, "invalid_client", 7000215),
    ("tenant-1", {}, 401, "invalid_client", 7000218),
    ("tenant-2", {"client_secret": "s3cret"}, 400, "invalid_request", 90002),
    ("tenant-1", {"client_id": "client-2", "client_secret": "s3cret"}, 400, "unauthorized_client", 700016),
    ("tenant-1", {"scope": "https://cognitiveservices.azure.com", "client_secret": "s3cret"}, 400,
     "invalid_scope", 1002012),
    ("tenant-1", {"grant_type": "password", "client_secret": "s3cret"}, 400, "unsupported_grant_type", 70003),
])
def test_entra_refusals(tenant: str, fields: dict[str, str], status: int, code: str, number: int) -> None:
    got, answer = _entra().token(tenant, _cc(**fields), now=NOW)
    assert (got, answer["error"], answer["error_codes"]) == (status, code, [number])
    assert answer["error_description"].startswith(f"AADSTS{number}: ")
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(answer)
    assert "s3cret" not in json.dumps(answer)


def test_entra_federated_client_assertion() -> None:
    entra = _entra()
    assertion = {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    status, answer = entra.token("tenant-1", _cc(**assertion, client_assertion=oidc_token(now=NOW)), now=NOW)
    assert status == 200 and entra.read(answer["access_token"], now=NOW)
    for token, number in ((oidc_token("stranger", now=NOW), 700027), (oidc_token(audience="api://x", now=NOW), 700212),
                          (oidc_token(now=NOW - 7200), 700024), ("not-a-jwt", 50027)):
        _, answer = entra.token("tenant-1", _cc(**assertion, client_assertion=token), now=NOW)
        assert answer["error_codes"] == [number]
    pinned = _entra(oidc_issuer="https://elsewhere")
    _, answer = pinned.token("tenant-1", _cc(**assertion, client_assertion=oidc_token(now=NOW)), now=NOW)
    assert answer["error_codes"] == [700211]


# --- the command line -----------------------------------------------------------------------------


def test_identity_flags_keep_public_keys_and_digests_only(tmp_path: Any) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(service_account_info()))
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(jwks("issuer"))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--api", "vertex", "--service-account", str(key_file), "--oidc-jwks", str(jwks_file),
                              "--azure-client-secret", "s3cret", "--token-lifetime", "5", "--project", "p"])
    provider = provider_config_from_args(args)
    (sa,) = provider.service_accounts
    assert (sa.email, sa.key_id, sa.token_uri) == (SA_EMAIL, SA_KEY_ID, "http://127.0.0.1:1/token")
    assert "PRIVATE" not in sa.public_key_pem and "PUBLIC KEY" in sa.public_key_pem
    assert provider.token_lifetime == 5 and provider.project == "p"
    assert jwt.load_jwks(provider.oidc_jwks or "")
    assert "s3cret" not in repr(provider) and provider.azure_client_secret_sha256
    bad = parser.parse_args(["--service-account", str(jwks_file)])
    with pytest.raises(ValueError):
        provider_config_from_args(bad)

"""The mocks' RS256 tokens (loadtest/mock/jwt.py), the OIDC issuer (oidc.py) and STS's
AssumeRoleWithWebIdentity (bedrock/sts.py), in this process. STS answers are parsed by botocore's
own Query-protocol parser, as the sts client parses them."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import urlencode

import botocore.session
import pytest
from botocore.parsers import QueryParser
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.loadtest.mock import jwt
from modelyard.loadtest.mock.bedrock.keys import KeyStore
from modelyard.loadtest.mock.bedrock.sts import STSError, WebIdentityTrust, assume_role_with_web_identity, error_xml
from modelyard.loadtest.mock.config import CloudConfig, ProviderConfig
from modelyard.loadtest.mock.oidc import OIDCApp
from modelyard.loadtest.mock.wire import b64url
from tests.unit.mock_rsgi import call

KEY = jwt.new_key()
OTHER = jwt.new_key()
KEYS = jwt.load_jwks({"keys": [jwt.public_jwk(KEY.public_key())]})
NOW = 1_800_000_000.0
ISSUER = "http://127.0.0.1:9999"
ROLE = "arn:aws:iam::123456789012:role/modelyard-bedrock"
STS_MODEL = botocore.session.get_session().get_service_model("sts")


def claims(**changes: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "sub": "gateway", "aud": "sts.amazonaws.com", "iat": NOW, "exp": NOW + 300, **changes}


def verified(token: str, now: float = NOW, **checks: Any) -> dict[str, Any]:
    """The claims of a token signed by KEY, checked as the STS and the identity endpoints check them."""
    verified_claims = jwt.verify_rs256(token, KEYS)
    jwt.check_claims(verified_claims, now, **checks)
    return verified_claims


# --- JWT signing (verification and claim checks: test_mock_identity.py) -----------------------


def test_signed_tokens_verify_and_name_the_key_by_its_thumbprint() -> None:
    token = jwt.sign(KEY, claims())
    assert jwt.parse(token).header == {"alg": "RS256", "typ": "JWT", "kid": jwt.key_id(KEY.public_key())}
    assert verified(token, issuer=ISSUER, audiences={"sts.amazonaws.com"})["sub"] == "gateway"
    assert verified(jwt.sign(KEY, claims(aud=["a", "sts.amazonaws.com"])), audiences={"sts.amazonaws.com"})


def refusal(token: str) -> str:
    with pytest.raises(jwt.JWTError) as info:
        jwt.verify_rs256(token, KEYS)
    return info.value.reason


def test_tampered_foreign_and_unsigned_tokens_are_refused() -> None:
    head, body, signature = jwt.sign(KEY, claims()).split(".")
    forged = b64url(json.dumps(claims(sub="admin")).encode())
    assert refusal(f"{head}.{forged}.{signature}") == jwt.BAD_SIGNATURE
    assert refusal(jwt.sign(OTHER, claims())) == jwt.UNKNOWN_KEY  # another key, its own kid
    assert refusal(jwt.sign(OTHER, claims(), kid=jwt.key_id(KEY.public_key()))) == jwt.BAD_SIGNATURE
    none_head = b64url(b'{"alg":"none","typ":"JWT"}')
    assert refusal(f"{none_head}.{body}.") == jwt.UNSUPPORTED_ALG
    assert refusal("not-a-token") == jwt.MALFORMED


def test_jwks_loading_skips_what_is_not_an_rsa_signing_key() -> None:
    jwk = jwt.public_jwk(KEY.public_key())
    text = json.dumps({"keys": [{"kty": "EC", "crv": "P-256"}, {**jwk, "use": "enc"}, jwk, {"kty": "RSA", "n": "!"}]})
    assert list(jwt.load_jwks(text)) == [jwk["kid"]]
    assert jwt.load_private_key(jwt.private_pem(KEY)).public_key().public_numbers() == KEY.public_key().public_numbers()
    with pytest.raises(ValueError):
        jwt.load_jwks('{"nokeys": []}')


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.text(alphabet="ABCxyz-_=.{}\"", max_size=40), min_size=3,
                                                  max_size=3).map(".".join)))
def test_any_text_is_verified_or_refused(text: str) -> None:
    with pytest.raises(jwt.JWTError):
        jwt.verify_rs256(text, KEYS)


# --- STS ------------------------------------------------------------------------------------


STORE = KeyStore({}, b"sts-test-secret")
TRUST = WebIdentityTrust(KEYS, ISSUER, ("sts.amazonaws.com",))


def form(**changes: Any) -> bytes:
    params = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": ROLE,
              "RoleSessionName": "modelyard", "WebIdentityToken": jwt.sign(KEY, claims()), "DurationSeconds": "900",
              **changes}
    return urlencode({k: v for k, v in params.items() if v is not None}).encode()


def parsed(xml: bytes, status: int = 200) -> dict[str, Any]:
    shape = STS_MODEL.operation_model("AssumeRoleWithWebIdentity").output_shape
    return QueryParser().parse({"body": xml, "headers": {}, "status_code": status}, shape)


def sts_refusal(body: bytes, trust: WebIdentityTrust | None = TRUST) -> STSError:
    with pytest.raises(STSError) as info:
        assume_role_with_web_identity(body, STORE, trust, now=NOW)
    return info.value


def test_assume_role_answers_credentials_that_botocore_parses_and_the_store_accepts() -> None:
    answer = parsed(assume_role_with_web_identity(form(), STORE, TRUST, now=NOW, rid="rid-1"))
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert creds["Expiration"].timestamp() == NOW + 900
    assert answer["SubjectFromWebIdentityToken"] == "gateway" and answer["Audience"] == "sts.amazonaws.com"
    assert answer["AssumedRoleUser"]["Arn"] == "arn:aws:sts::123456789012:assumed-role/modelyard-bedrock/modelyard"
    assert answer["Provider"] == "127.0.0.1:9999"
    assert answer["ResponseMetadata"]["RequestId"] == "rid-1"
    assert STORE.secret_for(creds["AccessKeyId"], creds["SessionToken"], NOW) == creds["SecretAccessKey"]


def test_sts_duration_overrides_the_requested_lifetime() -> None:
    answer = parsed(assume_role_with_web_identity(form(), STORE, TRUST, lifetime=30, now=NOW))
    assert answer["Credentials"]["Expiration"].timestamp() == NOW + 30


def test_sts_refusals() -> None:
    expired = sts_refusal(form(WebIdentityToken=jwt.sign(KEY, claims(exp=NOW - 61))))  # past a minute's skew
    assert (expired.status, expired.code) == (400, "ExpiredTokenException")
    assert str(int(NOW - 61)) in expired.message
    assert parsed(assume_role_with_web_identity(form(WebIdentityToken=jwt.sign(KEY, claims(exp=NOW - 1))), STORE,
                                                TRUST, now=NOW))["Credentials"]  # within it
    no_exp = {k: v for k, v in claims().items() if k != "exp"}
    assert sts_refusal(form(WebIdentityToken=jwt.sign(KEY, no_exp))).code == "InvalidIdentityToken"
    forged = sts_refusal(form(WebIdentityToken=jwt.sign(OTHER, claims())))
    assert (forged.status, forged.code) == (400, "InvalidIdentityToken")
    assert sts_refusal(form(WebIdentityToken=jwt.sign(KEY, claims(aud="x")))).message == "Incorrect token audience"
    assert sts_refusal(form(WebIdentityToken=jwt.sign(KEY, claims(iss="https://evil")))).code == "InvalidIdentityToken"
    assert sts_refusal(form(), trust=None).code == "InvalidIdentityToken"
    denied = sts_refusal(form(), trust=WebIdentityTrust(KEYS, roles=("arn:aws:iam::123456789012:role/other",)))
    assert (denied.status, denied.code) == (403, "AccessDenied")
    assert sts_refusal(form(RoleArn=None)).code == "ValidationError"
    assert "900" in sts_refusal(form(DurationSeconds="60")).message
    assert "MaxSessionDuration" in sts_refusal(form(DurationSeconds="7200")).message
    assert sts_refusal(form(RoleArn="arn:aws:iam::1:user/x")).code == "ValidationError"
    assert sts_refusal(form(RoleSessionName="a b")).code == "ValidationError"
    assert sts_refusal(form(Action="GetCallerIdentity")).code == "InvalidAction"


def test_sts_error_xml_is_what_botocore_reads() -> None:
    raw = error_xml("InvalidIdentityToken", "Incorrect token audience", "rid-2")
    error = QueryParser().parse({"body": raw, "headers": {}, "status_code": 400}, None)
    assert error["Error"] == {"Type": "Sender", "Code": "InvalidIdentityToken", "Message": "Incorrect token audience"}
    assert error["ResponseMetadata"]["RequestId"] == "rid-2"


# --- the OIDC issuer ------------------------------------------------------------------------

OIDC = OIDCApp(CloudConfig(signing_key=jwt.private_pem(KEY), client_id="gw", client_secret="s3cr:t"),
               ProviderConfig(api="oidc", token_lifetime=120))
FORM = [("content-type", "application/x-www-form-urlencoded"), ("host", "127.0.0.1:9999")]


def test_discovery_and_jwks() -> None:
    doc = call(OIDC, "GET", "/.well-known/openid-configuration", headers=[("host", "idp.test:8080")]).json()
    assert doc["issuer"] == "http://idp.test:8080"
    assert doc["token_endpoint"] == "http://idp.test:8080/token" and doc["jwks_uri"] == "http://idp.test:8080/jwks"
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
    assert list(jwt.load_jwks(call(OIDC, "GET", "/jwks").body)) == [jwt.key_id(KEY.public_key())]


def test_client_credentials_by_basic_and_by_post() -> None:
    basic = "Basic " + base64.b64encode(b"gw:s3cr%3At").decode()  # form-encoded, then Basic (RFC 6749 2.3.1)
    by_basic = call(OIDC, "POST", "/token", b"grant_type=client_credentials&scope=bedrock",
                    [*FORM, ("authorization", basic)])
    assert by_basic.status == 200 and by_basic.headers["cache-control"] == "no-store"
    answer = by_basic.json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 120 and answer["scope"] == "bedrock"
    token = verified(answer["access_token"], time.time(), issuer=ISSUER, audiences={"gw"})
    assert token["sub"] == "gw" and token["exp"] - token["iat"] == 120 and token["scope"] == "bedrock"
    by_post = call(OIDC, "POST", "/token",
                   b"grant_type=client_credentials&client_id=gw&client_secret=s3cr%3At&audience=sts.amazonaws.com",
                   FORM)
    assert verified(by_post.json()["access_token"], time.time(), audiences={"sts.amazonaws.com"})


def test_oauth_errors() -> None:
    wrong = call(OIDC, "POST", "/token", b"grant_type=client_credentials",
                 [*FORM, ("authorization", "Basic " + base64.b64encode(b"gw:nope").decode())])
    assert wrong.status == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    anonymous = call(OIDC, "POST", "/token", b"grant_type=client_credentials", FORM)
    assert anonymous.status == 401 and "www-authenticate" not in anonymous.headers
    grant = call(OIDC, "POST", "/token", b"grant_type=password&client_id=gw&client_secret=s3cr%3At", FORM)
    assert grant.status == 400 and grant.json()["error"] == "unsupported_grant_type"
    assert call(OIDC, "POST", "/token", b"client_id=gw&client_secret=s3cr%3At", FORM).json()["error"] == (
        "invalid_request")
    json_body = call(OIDC, "POST", "/token", b"{}", [("content-type", "application/json")])
    assert json_body.status == 400 and json_body.json()["error"] == "invalid_request"
    assert "s3cr" not in wrong.body.decode() + grant.body.decode()

"""The Bedrock mock's SigV4 check (loadtest/mock/bedrock/sigv4.py) and its keys (keys.py), in this process.

Requests are signed by botocore's own SigV4Auth, as the SDKs and the gateway sign them; the mock
must accept exactly those and refuse any change to what was signed."""

from __future__ import annotations

import calendar
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.loadtest.mock.bedrock.keys import EXAMPLE_KEYS, KeyStore, parse_key_file
from modelyard.loadtest.mock.bedrock.sigv4 import SIGNATURE_MISMATCH, AuthError, Authorization, path_candidates, verify

AKID = "AKIDMOCKSTATIC000001"
SECRET = "mock/secret+key/0000000000000000000000"
STORE = KeyStore({AKID: SECRET}, b"sts-secret-for-tests")
BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"


class Signed:
    """A request as botocore signs it, and as the mock's server hands it over (path percent-decoded)."""

    def __init__(self, raw_path: str, body: bytes = BODY, key: str = AKID, secret: str = SECRET,
                 token: str | None = None, region: str = "us-east-1", service: str = "bedrock",
                 extra: dict[str, str] | None = None, query: str = ""):
        url = "https://127.0.0.1:8443" + raw_path + (f"?{query}" if query else "")
        request = AWSRequest(method="POST", url=url, data=body,
                             headers={"content-type": "application/json", "host": "127.0.0.1:8443", **(extra or {})})
        SigV4Auth(Credentials(key, secret, token), service, region).add_auth(request)
        self.method, self.body = "POST", body
        self.path, self.query = unquote(urlsplit(url).path), query
        self.headers: list[tuple[str, str]] = [(k.lower(), v) for k, v in request.headers.items()]
        self.now = float(calendar.timegm(time.strptime(self.header("x-amz-date"), SIGV4_TIMESTAMP)))

    def header(self, name: str) -> str:
        return next(v for k, v in self.headers if k == name)

    def with_header(self, name: str, value: str | None) -> list[tuple[str, str]]:
        out = [(k, v) for k, v in self.headers if k != name]
        return out if value is None else [*out, (name, value)]

    def verify(self, **changes: Any) -> str:
        args = {"method": self.method, "path": self.path, "query": self.query, "headers": self.headers,
                "body": self.body, "now": self.now, **changes}
        return verify(args["method"], args["path"], args["query"], args["headers"], args["body"], STORE.secret_for,
                      "us-east-1", now=args["now"])


def refused(signed: Signed, code: str, **changes: Any) -> str:
    with pytest.raises(AuthError) as info:
        signed.verify(**changes)
    assert info.value.code == code and info.value.status == 403, info.value.message
    return info.value.message


# --- accepted -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw_path", [
    f"/model/{MODEL.replace(':', '%3A')}/converse",  # botocore's encoding: ':' escaped
    f"/model/{ARN.replace(':', '%3A').replace('/', '%2F')}/converse-stream",  # an ARN: '/' escaped too
    "/model/amazon.titan-embed-text-v2%3A0/invoke",
    "/model/plain.model/invoke",  # nothing to escape
    "/model/m:0/converse",  # a client that sent ':' as it is
])
def test_botocore_signed_requests_are_accepted(raw_path: str) -> None:
    assert Signed(raw_path).verify() == AKID


def test_query_and_extra_signed_headers_count() -> None:
    signed = Signed("/model/m/invoke", query="b=2&a=1", extra={"x-amzn-bedrock-trace": "ENABLED"})
    assert signed.verify() == AKID
    refused(signed, "InvalidSignatureException", query="a=1&b=3")
    refused(signed, "InvalidSignatureException", headers=signed.with_header("x-amzn-bedrock-trace", "DISABLED"))


def test_unsigned_headers_may_change_or_be_added() -> None:
    signed = Signed("/model/m/converse")
    assert signed.verify(headers=[*signed.headers, ("user-agent", "anything"), ("x-extra", "1")]) == AKID


def test_the_example_key_pair_is_the_default() -> None:
    store = KeyStore(EXAMPLE_KEYS, b"")
    [(key, secret)] = EXAMPLE_KEYS.items()
    signed = Signed("/model/m/converse", key=key, secret=secret)
    assert verify("POST", signed.path, "", signed.headers, BODY, store.secret_for, "us-east-1", now=signed.now) == key


def test_the_gateways_own_signer_is_accepted() -> None:
    """gateway/providers/aws_bedrock.sign, as it signs an attempt upstream, with a session token."""
    from modelyard.gateway.providers.aws_bedrock import sign
    from modelyard.gateway.providers.base import UpstreamRequest

    creds = STORE.issue("arn:aws:iam::123456789012:role/r", "gw", 900, time.time())
    raw_path = f"/model/{ARN.replace(':', '%3A').replace('/', '%2F')}/converse-stream"
    head = [b"POST " + raw_path.encode(), b" HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n",
            b"content-type: application/json\r\n"]
    lines = sign(UpstreamRequest(head, BODY), Credentials(creds.access_key_id, creds.secret_access_key,
                                                          creds.session_token), "us-east-1")
    assert lines is not None
    added = [tuple(line.split(": ", 1)) for line in lines.decode().split("\r\n") if line]
    headers = [("host", "127.0.0.1:8000"), ("content-type", "application/json"), *added]
    stamp = dict(added)["x-amz-date"]
    now = float(calendar.timegm(time.strptime(stamp, SIGV4_TIMESTAMP)))
    assert verify("POST", unquote(raw_path), "", headers, BODY, STORE.secret_for, "us-east-1", now=now) == (
        creds.access_key_id)


# --- refused --------------------------------------------------------------------------------


def test_a_changed_body_path_or_signed_header_is_a_signature_mismatch() -> None:
    signed = Signed(f"/model/{MODEL.replace(':', '%3A')}/converse")
    message = refused(signed, "InvalidSignatureException", body=BODY + b" ")
    assert message.startswith(SIGNATURE_MISMATCH)
    assert f"/model/{MODEL.replace(':', '%253A')}/converse" in message  # the canonical path, escaped twice as AWS does
    refused(signed, "InvalidSignatureException", path=signed.path.replace("converse", "converse-stream"))
    refused(signed, "InvalidSignatureException", method="PUT")
    refused(signed, "InvalidSignatureException", headers=signed.with_header("content-type", "text/plain"))
    refused(signed, "InvalidSignatureException", headers=signed.with_header("host", "127.0.0.1:9"))


def test_the_body_hash_header_cannot_vouch_for_another_body() -> None:
    """The body's own hash is signed, whatever x-amz-content-sha256 claims (AWS's rule outside S3)."""
    signed = Signed("/model/m/converse", extra={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    refused(signed, "InvalidSignatureException")


def test_a_wrong_secret_is_a_mismatch_and_an_unknown_key_unrecognized() -> None:
    assert refused(Signed("/model/m/converse", secret="wrong"), "InvalidSignatureException").startswith(
        SIGNATURE_MISMATCH)
    assert refused(Signed("/model/m/converse", key="AKIDNOBODYISSUED0000"), "UnrecognizedClientException") == (
        "The security token included in the request is invalid.")


def test_dates_more_than_five_minutes_off_are_refused() -> None:
    signed = Signed("/model/m/converse")
    assert signed.verify(now=signed.now + 299) == AKID
    assert signed.verify(now=signed.now - 299) == AKID
    stale = refused(signed, "InvalidSignatureException", now=signed.now + 301)
    assert stale.startswith(f"Signature expired: {signed.header('x-amz-date')} is now earlier than ")
    assert stale.endswith(" - 5 min.)")
    early = refused(signed, "InvalidSignatureException", now=signed.now - 301)
    assert early.startswith("Signature not yet current: ")


def test_scope_must_name_the_region_service_and_date() -> None:
    assert "region" in refused(Signed("/model/m/converse", region="eu-west-1"), "InvalidSignatureException")
    assert "'bedrock'" in refused(Signed("/model/m/converse", service="s3"), "InvalidSignatureException")
    signed = Signed("/model/m/converse")
    other_day = time.strftime(SIGV4_TIMESTAMP, time.gmtime(signed.now + 86400))
    message = refused(signed, "InvalidSignatureException", headers=signed.with_header("x-amz-date", other_day),
                      now=signed.now + 86400)
    assert message.startswith("Date in Credential scope does not match")


def test_missing_and_incomplete_authorization() -> None:
    signed = Signed("/model/m/converse")
    assert refused(signed, "AccessDeniedException", headers=signed.with_header("authorization", None)) == (
        "Authorization header is missing")
    message = refused(signed, "IncompleteSignatureException",
                      headers=signed.with_header("authorization", "AWS4-HMAC-SHA256 "))
    assert "'Credential'" in message and "'Signature'" in message and "'SignedHeaders'" in message
    refused(signed, "IncompleteSignatureException", headers=signed.with_header("authorization", "Bearer abc"))
    assert "X-Amz-Date" in refused(signed, "IncompleteSignatureException",
                                   headers=signed.with_header("x-amz-date", None))
    assert "ISO-8601" in refused(signed, "IncompleteSignatureException",
                                 headers=signed.with_header("x-amz-date", "yesterday"))


def test_refusals_name_no_secret() -> None:
    signed = Signed("/model/m/converse", secret="wrong")
    message = refused(signed, "InvalidSignatureException")
    assert SECRET not in message and "wrong" not in message
    assert signed.header("authorization").rsplit("=", 1)[1] not in message  # the client's signature is not echoed


# --- temporary credentials ------------------------------------------------------------------


def test_sts_issued_credentials_sign_with_their_session_token() -> None:
    now = time.time()
    creds = STORE.issue("arn:aws:iam::123456789012:role/r", "s", 900, now)
    assert creds.access_key_id.startswith("ASIA") and len(creds.access_key_id) == 20
    assert creds.secret_access_key not in repr(creds) and creds.session_token not in repr(creds)
    signed = Signed("/model/m/converse", key=creds.access_key_id, secret=creds.secret_access_key,
                    token=creds.session_token)
    assert signed.verify() == creds.access_key_id
    # Another worker (another KeyStore with the same STS secret) accepts them too.
    twin = KeyStore({}, b"sts-secret-for-tests")
    assert verify("POST", signed.path, "", signed.headers, BODY, twin.secret_for, "us-east-1", now=signed.now)
    # Without the token, with another key's token, or past the expiration: refused.
    refused(signed, "UnrecognizedClientException", headers=signed.with_header("x-amz-security-token", None))
    other = STORE.issue("arn:aws:iam::123456789012:role/r", "s", 900, now)
    refused(signed, "UnrecognizedClientException",
            headers=signed.with_header("x-amz-security-token", other.session_token))
    assert refused(signed, "ExpiredTokenException", now=now + 901) == (
        "The security token included in the request is expired")
    stranger = KeyStore({}, b"another-sts-secret")
    with pytest.raises(AuthError) as info:
        stranger.secret_for(creds.access_key_id, creds.session_token, now)
    assert info.value.code == "UnrecognizedClientException"


def test_a_long_term_key_takes_no_session_token() -> None:
    with pytest.raises(AuthError) as info:
        STORE.secret_for(AKID, "a-token", time.time())
    assert info.value.code == "UnrecognizedClientException"


def test_key_files() -> None:
    assert parse_key_file('{"AKID1": "s1", "AKID2": "s2"}') == {"AKID1": "s1", "AKID2": "s2"}
    assert parse_key_file('[{"access_key_id": "A", "secret_access_key": "s"}]') == {"A": "s"}
    for bad in ('{}', '[]', '{"A": ""}', '"text"', '[{"access_key_id": "A"}]'):
        with pytest.raises(ValueError):
            parse_key_file(bad)


# --- parsing untrusted text -----------------------------------------------------------------


def test_path_candidates() -> None:
    assert path_candidates(f"/model/{ARN}/converse")[0] == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
        "us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse")
    assert path_candidates("/model/m:0/invoke") == ["/model/m%3A0/invoke", "/model/m:0/invoke"]
    assert path_candidates("/") == ["/"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_authorization_header_is_parsed_or_refused(value: str) -> None:
    try:
        auth = Authorization(value)
    except AuthError as e:
        assert e.code == "IncompleteSignatureException"
    else:
        assert auth.signature and auth.signed_headers


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.lists(st.tuples(st.sampled_from(["authorization", "x-amz-date", "host",
                                                                  "x-amz-security-token", "date"]),
                                                 st.text(max_size=120)), max_size=6), st.binary(max_size=64))
def test_any_request_is_verified_or_refused_with_an_aws_error(path: str, headers: list[tuple[str, str]],
                                                               body: bytes) -> None:
    try:
        verify("POST", "/" + path, "", headers, body, STORE.secret_for, "us-east-1", now=time.time())
    except AuthError as e:
        assert e.status == 403 and e.code.endswith("Exception")
    else:
        pytest.fail("an unsigned request was accepted")

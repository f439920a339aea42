"""The Bedrock mock (``--api bedrock``, with STS on its port) and the OIDC issuer mock (``--api oidc``),
as real processes, driven by botocore's own bedrock-runtime and sts clients: what they send is what
the SDKs send, and what the mocks answer must parse as the SDKs expect it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from modelyard.loadtest.mock.bedrock.keys import KeyStore
from tests.conftest import Mock
from tests.support import http_request

AKID, SECRET = "AKIDINTEGRATION00001", "integration/secret/key/000000000000000"
STS_SECRET = "integration-sts-secret"
CLIENT_ID, CLIENT_SECRET = "modelyard-gateway", "client-secret-1"
ROLE = "arn:aws:iam::123456789012:role/modelyard-bedrock"
MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0"
TITAN, COHERE = "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"
HI = [{"role": "user", "content": [{"text": "Hello there"}]}]
WEATHER = {"toolSpec": {"name": "get_weather", "description": "Weather in a city", "inputSchema": {"json": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}
NO_RETRIES = Config(retries={"total_max_attempts": 1})


@pytest.fixture(scope="module")
def idp() -> Iterator[Mock]:
    mock = Mock("idp", "--api", "oidc", "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
                "--token-lifetime", "600")
    try:
        yield mock
    finally:
        mock.stop()
    assert "Traceback" not in mock.proc.output()


@pytest.fixture(scope="module")
def bedrock(idp: Mock) -> Iterator[Mock]:
    mock = Mock("bedrock", "--api", "bedrock", "--aws-access-key-id", AKID, "--aws-secret-access-key", SECRET,
                "--sts-secret", STS_SECRET, "--sts-role", ROLE, "--oidc-jwks", f"http://{idp.address}/jwks",
                "--oidc-issuer", f"http://{idp.address}", "--oidc-audience", "sts.amazonaws.com",
                *(a for m in (MODEL, HAIKU, PROFILE, TITAN, COHERE) for a in ("--model", m)))
    try:
        yield mock
    finally:
        mock.stop()
    assert "Traceback" not in mock.proc.output()


def runtime(mock: Mock, key: str = AKID, secret: str = SECRET, token: str | None = None,
            headers: dict[str, str] | None = None) -> Any:
    client = botocore.session.get_session().create_client(
        "bedrock-runtime", endpoint_url=f"http://{mock.address}", region_name="us-east-1", aws_access_key_id=key,
        aws_secret_access_key=secret, aws_session_token=token, config=NO_RETRIES)
    if headers:
        def add(request: Any, **_: Any) -> None:
            for name, value in headers.items():
                request.headers[name] = value
        client.meta.events.register("before-sign.bedrock-runtime.*", add)
    return client


def aws_code(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


# --- Converse -------------------------------------------------------------------------------


def test_converse_whole_answer(bedrock: Mock) -> None:
    image = {"image": {"format": "png", "source": {"bytes": b"\x89PNG\r\n\x1a\n mock image"}}}
    answer = runtime(bedrock).converse(
        modelId=MODEL, system=[{"text": "Be brief."}], inferenceConfig={"maxTokens": 5, "temperature": 0.2},
        messages=[{"role": "user", "content": [{"text": "Describe this."}, image]}])
    assert answer["output"]["message"] == {"role": "assistant", "content": [{"text": "tok0 tok1 tok2 tok3 tok4 "}]}
    assert answer["stopReason"] == "max_tokens"
    usage = answer["usage"]
    assert usage["outputTokens"] == 5 and usage["totalTokens"] == usage["inputTokens"] + 5
    assert usage["inputTokens"] > 64  # the image's flat estimate is in
    assert answer["metrics"]["latencyMs"] >= 0
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_converse_tool_round_trip(bedrock: Mock) -> None:
    client = runtime(bedrock)
    ask = [{"role": "user", "content": [{"text": "What's the weather in Paris?"}]}]
    first = client.converse(modelId=HAIKU, messages=ask, toolConfig={"tools": [WEATHER]})
    assert first["stopReason"] == "tool_use"
    [text, call] = first["output"]["message"]["content"]
    assert text["text"].startswith("I'll use the get_weather") and call["toolUse"]["name"] == "get_weather"
    assert call["toolUse"]["input"] == {"city": "mock city"}
    result = {"toolResult": {"toolUseId": call["toolUse"]["toolUseId"], "content": [{"json": {"temp": 21}}]}}
    second = client.converse(modelId=HAIKU, toolConfig={"tools": [WEATHER]}, messages=[
        *ask, first["output"]["message"], {"role": "user", "content": [result]}])
    assert second["stopReason"] == "end_turn" and "text" in second["output"]["message"]["content"][0]


def test_converse_stream_text_tool_and_reasoning(bedrock: Mock) -> None:
    client = runtime(bedrock)
    events = list(client.converse_stream(modelId=MODEL, messages=HI, inferenceConfig={"maxTokens": 3})["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds == ["messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockDelta",
                     "contentBlockStop", "messageStop", "metadata"]
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:4]) == "tok0 tok1 tok2 "
    assert events[5]["messageStop"]["stopReason"] == "max_tokens"
    assert events[6]["metadata"]["usage"]["outputTokens"] == 3
    tool = list(client.converse_stream(
        modelId=MODEL, toolConfig={"tools": [WEATHER], "toolChoice": {"any": {}}}, messages=HI)["stream"])
    start = next(e["contentBlockStart"] for e in tool if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "get_weather" and start["contentBlockIndex"] == 0
    pieces = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in tool if "contentBlockDelta" in e)
    assert json.loads(pieces) == {"city": "mock city"}
    assert tool[-2]["messageStop"]["stopReason"] == "tool_use"
    thinking = list(client.converse_stream(modelId=MODEL, messages=HI, additionalModelRequestFields={
        "thinking": {"type": "enabled", "budget_tokens": 1024}})["stream"])
    reasoning = [e["contentBlockDelta"]["delta"]["reasoningContent"] for e in thinking
                 if "reasoningContent" in e.get("contentBlockDelta", {}).get("delta", {})]
    assert "".join(r.get("text", "") for r in reasoning) == "Mock reasoning step." and "signature" in reasoning[-1]


def test_converse_stream_error_event(bedrock: Mock) -> None:
    client = runtime(bedrock, headers={"x-mock-error-after": "2"})
    stream = client.converse_stream(modelId=MODEL, messages=HI)["stream"]
    seen = []
    with pytest.raises(EventStreamError) as info:
        for event in stream:
            seen.append(next(iter(event)))
    assert seen == ["messageStart", "contentBlockDelta", "contentBlockDelta"]
    assert info.value.response["Error"]["Code"] == "modelStreamErrorException"


# --- InvokeModel ----------------------------------------------------------------------------


def anthropic_body(**extra: Any) -> bytes:
    return json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 3,
                       "messages": [{"role": "user", "content": "hi"}], **extra}).encode()


def test_invoke_model_anthropic_and_its_stream(bedrock: Mock) -> None:
    client = runtime(bedrock)
    answer = client.invoke_model(modelId=PROFILE, body=anthropic_body(), contentType="application/json")
    message = json.loads(answer["body"].read())
    assert message["id"].startswith("msg_bdrk_") and message["model"] == "claude-3-5-sonnet-20241022"
    assert message["content"] == [{"type": "text", "text": "tok0 tok1 tok2 "}]
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-output-token-count"] == "3"
    stream = client.invoke_model_with_response_stream(modelId=HAIKU, body=anthropic_body())
    assert stream["contentType"] == "application/json"
    chunks = [json.loads(event["chunk"]["bytes"]) for event in stream["body"]]
    assert chunks[0]["type"] == "message_start" and chunks[-1]["type"] == "message_stop"
    assert "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta") == "tok0 tok1 tok2 "
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 3


def test_invoke_model_embeddings(bedrock: Mock) -> None:
    client = runtime(bedrock)
    titan = json.loads(client.invoke_model(modelId=TITAN, body=json.dumps({"inputText": "hello world",
                                                                            "dimensions": 512}))["body"].read())
    assert len(titan["embedding"]) == 512 and titan["inputTextTokenCount"] == 3
    cohere = json.loads(client.invoke_model(modelId=COHERE, body=json.dumps(
        {"texts": ["a", "b"], "input_type": "search_document"}))["body"].read())
    assert cohere["response_type"] == "embeddings_floats" and len(cohere["embeddings"]) == 2


# --- refusals -------------------------------------------------------------------------------


def test_bad_keys_and_unsigned_requests(bedrock: Mock) -> None:
    with pytest.raises(ClientError) as wrong:
        runtime(bedrock, secret="not-the-secret").converse(modelId=MODEL, messages=HI)
    assert aws_code(wrong.value) == (403, "InvalidSignatureException")
    assert wrong.value.response["Error"]["Message"].startswith("The request signature we calculated does not match")
    with pytest.raises(ClientError) as unknown:
        runtime(bedrock, key="AKIDNOBODYKNOWS00000").converse(modelId=MODEL, messages=HI)
    assert aws_code(unknown.value) == (403, "UnrecognizedClientException")
    status, headers, raw = http_request(bedrock.port, "POST", f"/model/{MODEL}/converse", {"messages": HI})
    assert (status, json.loads(raw)) == (403, {"message": "Authorization header is missing"})
    assert headers["x-amzn-errortype"].startswith("AccessDeniedException:")


def test_validation_not_found_and_throttling(bedrock: Mock) -> None:
    client = runtime(bedrock)
    with pytest.raises(client.exceptions.ValidationException) as alternate:
        client.converse(modelId=MODEL, messages=HI + HI)
    assert "alternate between user and assistant" in str(alternate.value)
    with pytest.raises(client.exceptions.ValidationException):
        client.invoke_model(modelId=HAIKU, body=anthropic_body(model="claude"))
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.converse(modelId="anthropic.claude-instant-v1", messages=HI)
    throttled = runtime(bedrock, headers={"x-mock-status": "429"})
    with pytest.raises(throttled.exceptions.ThrottlingException):
        throttled.converse(modelId=MODEL, messages=HI)


# --- STS and the OIDC issuer ----------------------------------------------------------------


def oidc_token(idp: Mock, **extra: str) -> str:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    status, _, raw = http_request(idp.port, "POST", "/token", raw=urlencode(
        {"grant_type": "client_credentials", "audience": "sts.amazonaws.com", **extra}).encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "authorization": f"Basic {basic}"})
    assert status == 200, raw
    return json.loads(raw)["access_token"]


def sts_client(bedrock: Mock) -> Any:
    return botocore.session.get_session().create_client("sts", endpoint_url=f"http://{bedrock.address}",
                                                        region_name="us-east-1", config=NO_RETRIES)


def test_oidc_token_lifetime_is_the_shared_flag(idp: Mock) -> None:
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    status, _, raw = http_request(idp.port, "POST", "/token", raw=b"grant_type=client_credentials",
                                  headers={"content-type": "application/x-www-form-urlencoded",
                                           "authorization": f"Basic {basic}"})
    assert status == 200 and json.loads(raw)["expires_in"] == 600


def test_oidc_discovery_names_the_issuer_it_is_reached_at(idp: Mock) -> None:
    status, _, raw = http_request(idp.port, "GET", "/.well-known/openid-configuration")
    doc = json.loads(raw)
    assert status == 200 and doc["issuer"] == f"http://{idp.address}"
    assert doc["jwks_uri"] == f"http://{idp.address}/jwks" and doc["token_endpoint"] == f"http://{idp.address}/token"
    status, _, raw = http_request(idp.port, "POST", "/token", raw=b"grant_type=client_credentials",
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert status == 401 and json.loads(raw)["error"] == "invalid_client"


def test_web_identity_credentials_sign_bedrock_calls(bedrock: Mock, idp: Mock) -> None:
    answer = sts_client(bedrock).assume_role_with_web_identity(
        RoleArn=ROLE, RoleSessionName="gateway", WebIdentityToken=oidc_token(idp), DurationSeconds=900)
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and answer["SubjectFromWebIdentityToken"] == CLIENT_ID
    assert 880 <= creds["Expiration"].timestamp() - time.time() <= 900
    client = runtime(bedrock, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    assert client.converse(modelId=MODEL, messages=HI)["stopReason"] == "end_turn"
    with pytest.raises(ClientError) as tokenless:  # the temporary key without its session token
        runtime(bedrock, creds["AccessKeyId"], creds["SecretAccessKey"]).converse(modelId=MODEL, messages=HI)
    assert aws_code(tokenless.value) == (403, "UnrecognizedClientException")


def test_expired_session_credentials_are_refused(bedrock: Mock) -> None:
    # Issued by the same STS secret a while ago (no waiting): the mock's workers check the expiration.
    old = KeyStore({}, STS_SECRET.encode()).issue(ROLE, "gateway", 900, time.time() - 1000)
    with pytest.raises(ClientError) as expired:
        runtime(bedrock, old.access_key_id, old.secret_access_key, old.session_token).converse(modelId=MODEL,
                                                                                              messages=HI)
    assert aws_code(expired.value) == (403, "ExpiredTokenException")


def test_sts_refusals(bedrock: Mock, idp: Mock) -> None:
    sts = sts_client(bedrock)
    with pytest.raises(sts.exceptions.InvalidIdentityTokenException):
        sts.assume_role_with_web_identity(RoleArn=ROLE, RoleSessionName="gw", WebIdentityToken=oidc_token(
            idp, audience="someone-else"))
    with pytest.raises(sts.exceptions.InvalidIdentityTokenException):
        sts.assume_role_with_web_identity(RoleArn=ROLE, RoleSessionName="gw", WebIdentityToken="a.b.c")
    with pytest.raises(ClientError) as denied:
        sts.assume_role_with_web_identity(RoleArn="arn:aws:iam::123456789012:role/other", RoleSessionName="gw",
                                          WebIdentityToken=oidc_token(idp))
    assert aws_code(denied.value) == (403, "AccessDenied")


def test_botocore_web_identity_provider_reaches_sts_by_environment(bedrock: Mock, idp: Mock, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """What a refresher built on botocore's credential chain does: AWS_ROLE_ARN, a token file and
    AWS_ENDPOINT_URL_STS are enough to reach the mock's STS."""
    token_file = tmp_path / "token"
    token_file.write_text(oidc_token(idp))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "refresher")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://{bedrock.address}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    session = botocore.session.get_session()
    creds = session.get_credentials().get_frozen_credentials()
    assert creds.access_key.startswith("ASIA") and creds.token
    client = session.create_client("bedrock-runtime", endpoint_url=f"http://{bedrock.address}", config=NO_RETRIES)
    assert client.converse(modelId=MODEL, messages=HI)["output"]["message"]["role"] == "assistant"


# --- one OIDC issuer for every identity mock ---------------------------------------------------


def entra_token(mock: Mock, assertion: str) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID,
            "scope": "https://cognitiveservices.azure.com/.default", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    status, _, raw = http_request(mock.port, "POST", "/tenant-1/oauth2/v2.0/token", raw=urlencode(form).encode(),
                                  headers={"content-type": "application/x-www-form-urlencoded"})
    return status, json.loads(raw)


def test_the_azure_mock_trusts_the_oidc_mock_through_the_same_flags(idp: Mock) -> None:
    """--oidc-jwks, --oidc-issuer and --oidc-audience are one set of flags that bedrock's STS, azure's
    Entra ID endpoint and vertex's STS read alike; --token-lifetime sets the Entra tokens' lifetime."""
    azure = Mock("azure-idp", "--api", "azure", "--azure-tenant-id", "tenant-1", "--azure-client-id", CLIENT_ID,
                 "--oidc-jwks", f"http://{idp.address}/jwks", "--oidc-issuer", f"http://{idp.address}",
                 "--oidc-audience", "api://AzureADTokenExchange", "--token-lifetime", "120")
    try:
        status, answer = entra_token(azure, oidc_token(idp, audience="api://AzureADTokenExchange"))
        assert status == 200 and answer["expires_in"] == 120, answer
        status, answer = entra_token(azure, oidc_token(idp))  # for sts.amazonaws.com, not Entra's exchange
        assert status == 400 and answer["error_codes"] == [700212], answer
    finally:
        azure.stop()
    assert "Traceback" not in azure.proc.output()


def test_sts_credentials_are_keyed_by_the_run_token_key_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --sts-secret, STS's credentials are keyed by MODELYARD_MOCK_TOKEN_KEY, as the other
    mocks' tokens are: mocks given the same key accept each other's credentials."""
    token_key = "ab" * 32
    monkeypatch.setenv("MODELYARD_MOCK_TOKEN_KEY", token_key)
    mock = Mock("bedrock-shared-key", "--api", "bedrock", "--model", MODEL)
    try:
        creds = KeyStore({}, bytes.fromhex(token_key)).issue(ROLE, "gateway", 900, time.time())
        client = runtime(mock, creds.access_key_id, creds.secret_access_key, creds.session_token)
        assert client.converse(modelId=MODEL, messages=HI)["stopReason"] == "end_turn"
        stranger = KeyStore({}, bytes.fromhex("cd" * 32)).issue(ROLE, "gateway", 900, time.time())
        with pytest.raises(ClientError) as refused:
            runtime(mock, stranger.access_key_id, stranger.secret_access_key,
                    stranger.session_token).converse(modelId=MODEL, messages=HI)
        assert aws_code(refused.value) == (403, "UnrecognizedClientException")
    finally:
        mock.stop()
    assert "Traceback" not in mock.proc.output()

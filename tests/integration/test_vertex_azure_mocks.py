"""The Vertex AI (``--api vertex``) and Azure OpenAI with Entra ID (``--api azure``) mocks as real
processes, driven by the real client libraries: google-auth's service-account, identity-pool and
impersonated credentials, the Anthropic SDK's AnthropicVertex, and the OpenAI SDK's AzureOpenAI."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import google.auth.transport.requests
import openai
import pytest
import requests
from google.auth import exceptions as google_exceptions
from google.auth import identity_pool
from google.oauth2 import service_account

from tests.conftest import Mock
from tests.support import free_port, http_request
from tests.unit.mock_keys import CLOUD_PLATFORM, jwks, oidc_token, service_account_info

PROJECT, LOCATION = "proj-1", "us-central1"
GEMINI, EMBEDDER, CLAUDE = "gemini-2.5-flash", "text-embedding-005", "claude-sonnet-4@20250514"
PREFIX = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers"
HELLO = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
TEXT16 = "".join(f"tok{i} " for i in range(16))
WIF = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/pool/providers/prov"
TARGET_SA = "target@proj-1.iam.gserviceaccount.com"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"


class _JWKSHandler(BaseHTTPRequestHandler):
    document = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200 if self.path == "/jwks" else 404)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.document if self.path == "/jwks" else b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    """A trusted OIDC issuer's JWKS, served from this process (the OIDC issuer mock is not needed)."""
    _JWKSHandler.document = jwks("issuer").encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JWKSHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()


def _stopped(mock: Mock) -> None:
    mock.stop()
    assert "Traceback" not in mock.proc.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def sa_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A service-account key file whose token_uri points at the port the Vertex mock will take."""
    port = free_port()
    path = tmp_path_factory.mktemp("sa") / "sa.json"
    path.write_text(json.dumps(service_account_info(token_uri=f"http://127.0.0.1:{port}/token")))
    return path, port


@pytest.fixture(scope="module")
def vertex(sa_file: tuple[Path, int], jwks_url: str) -> Iterator[Mock]:
    path, port = sa_file
    mock = Mock("vertex", "--api", "vertex", "--service-account", str(path), "--oidc-jwks", jwks_url,
                "--project", PROJECT, "--location", LOCATION, "--model", GEMINI, "--model", EMBEDDER,
                "--model", CLAUDE, "--cache-read", "2", port=port)
    try:
        yield mock
    finally:
        _stopped(mock)


def _sa_credentials(path: Path) -> service_account.Credentials:
    return service_account.Credentials.from_service_account_info(json.loads(path.read_text()), scopes=[CLOUD_PLATFORM])


@pytest.fixture(scope="module")
def sa_token(sa_file: tuple[Path, int], vertex: Mock) -> str:
    creds = _sa_credentials(sa_file[0])
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token and creds.valid
    return creds.token


def _post(mock: Mock, path: str, body: Any, token: str | None = None, **headers: str) -> tuple[int, dict, bytes]:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return http_request(mock.port, "POST", path, body, headers)


def _sse_chunks(raw: bytes) -> list[dict[str, Any]]:
    frames = raw.split(b"\r\n\r\n")
    assert frames[-1] == b"", raw[-80:]
    assert all(f.startswith(b"data: ") and b"\n" not in f for f in frames[:-1])
    return [json.loads(f[len(b"data: "):]) for f in frames[:-1]]


# --- Vertex: service account, Gemini ---------------------------------------------------------------


def test_service_account_token_then_generate_content(vertex: Mock, sa_token: str) -> None:
    status, headers, raw = _post(vertex, f"{PREFIX}/google/models/{GEMINI}:generateContent", HELLO, sa_token)
    assert status == 200 and headers["content-type"].startswith("application/json"), raw
    answer = json.loads(raw)
    (cand,) = answer["candidates"]
    assert cand["content"] == {"role": "model", "parts": [{"text": TEXT16}]} and cand["finishReason"] == "STOP"
    usage = answer["usageMetadata"]
    assert usage["candidatesTokenCount"] == 16 and usage["cachedContentTokenCount"] == 2
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + 16
    assert answer["modelVersion"] == GEMINI and answer["responseId"]

    status, headers, raw = _post(vertex, f"{PREFIX}/google/models/{GEMINI}:streamGenerateContent?alt=sse",
                                 {**HELLO, "generationConfig": {"maxOutputTokens": 4}}, sa_token)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    chunks = _sse_chunks(raw)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "tok0 tok1 tok2 tok3 "
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 4


def test_function_calling_and_embeddings(vertex: Mock, sa_token: str) -> None:
    tools = [{"functionDeclarations": [{"name": "get_weather", "parameters": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]
    body = {"contents": [{"role": "user", "parts": [{"text": "weather in Paris?"}]}], "tools": tools}
    _, _, raw = _post(vertex, f"{PREFIX}/google/models/{GEMINI}:generateContent", body, sa_token)
    parts = json.loads(raw)["candidates"][0]["content"]["parts"]
    assert parts == [{"functionCall": {"name": "get_weather", "args": {"city": "mock city"}}}]

    status, _, raw = _post(vertex, f"{PREFIX}/google/models/{EMBEDDER}:predict",
                           {"instances": [{"content": "hello", "task_type": "RETRIEVAL_DOCUMENT", "title": "t"}],
                            "parameters": {"outputDimensionality": 5}}, sa_token)
    assert status == 200, raw
    (prediction,) = json.loads(raw)["predictions"]
    assert len(prediction["embeddings"]["values"]) == 5
    assert prediction["embeddings"]["statistics"]["token_count"] == 2


def test_vertex_refusals(vertex: Mock, sa_token: str) -> None:
    path = f"{PREFIX}/google/models/{GEMINI}:generateContent"
    cases = [
        (path, HELLO, None, 401, "UNAUTHENTICATED"),
        (path, HELLO, "ya29.not-ours", 401, "UNAUTHENTICATED"),
        (path.replace(PROJECT, "someone-else"), HELLO, sa_token, 403, "PERMISSION_DENIED"),
        (path.replace(LOCATION, "asia-east1"), HELLO, sa_token, 404, "NOT_FOUND"),
        (path.replace(GEMINI, "gemini-nope"), HELLO, sa_token, 404, "NOT_FOUND"),
        (path, {**HELLO, "generationConfig": {"maxTokens": 5}}, sa_token, 400, "INVALID_ARGUMENT"),
    ]
    for target, body, token, code, name in cases:
        status, _, raw = _post(vertex, target, body, token)
        error = json.loads(raw)["error"]
        assert (status, error["code"], error["status"]) == (code, code, name), (target, raw)
    status, _, raw = _post(vertex, path, HELLO, sa_token, **{"x-mock-status": "429"})
    assert status == 429 and json.loads(raw)["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_a_stream_that_dies(vertex: Mock, sa_token: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", vertex.port, timeout=10)
    try:
        conn.request("POST", f"{PREFIX}/google/models/{GEMINI}:streamGenerateContent?alt=sse", json.dumps(HELLO),
                     {"authorization": f"Bearer {sa_token}", "content-type": "application/json",
                      "x-mock-die-after": "2"})
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert info.value.partial.count(b"\r\n\r\n") == 2
    finally:
        conn.close()


def test_a_foreign_key_is_refused_by_the_token_endpoint(sa_file: tuple[Path, int], vertex: Mock) -> None:
    info = service_account_info("stranger", token_uri=f"http://127.0.0.1:{vertex.port}/token")
    creds = service_account.Credentials.from_service_account_info(info, scopes=[CLOUD_PLATFORM])
    with pytest.raises(google_exceptions.RefreshError) as refused:
        creds.refresh(google.auth.transport.requests.Request())
    assert "invalid_grant" in str(refused.value) and "Invalid JWT Signature." in str(refused.value)


# --- Vertex: workload identity federation ------------------------------------------------------------


def _pool_credentials(vertex: Mock, token_file: Path, impersonate: bool) -> identity_pool.Credentials:
    """Workload identity federation from a file-sourced OIDC token, as a GKE or CI workload has it."""
    info = {
        "type": "external_account", "audience": WIF,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"http://127.0.0.1:{vertex.port}/v1/token",
        "credential_source": {"file": str(token_file)},
    }
    if impersonate:
        info["service_account_impersonation_url"] = (
            f"http://127.0.0.1:{vertex.port}/v1/projects/-/serviceAccounts/{TARGET_SA}:generateAccessToken")
    return identity_pool.Credentials.from_info(info, scopes=[CLOUD_PLATFORM])


@pytest.mark.parametrize("impersonate", [False, True])
def test_workload_identity_federation(vertex: Mock, tmp_path: Path, impersonate: bool) -> None:
    token_file = tmp_path / "oidc-token"
    token_file.write_text(oidc_token(audience="https:" + WIF))
    creds = _pool_credentials(vertex, token_file, impersonate)
    vertex.clear()
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token and creds.valid
    iam = f"/v1/projects/-/serviceAccounts/{TARGET_SA}:generateAccessToken"
    assert [r["path"] for r in vertex.requests()] == (["/v1/token", iam] if impersonate else ["/v1/token"])
    status, _, raw = _post(vertex, f"{PREFIX}/google/models/{GEMINI}:countTokens", HELLO, creds.token)
    assert status == 200 and json.loads(raw)["totalTokens"] >= 1


def test_federation_refuses_an_untrusted_subject_token(vertex: Mock, tmp_path: Path) -> None:
    token_file = tmp_path / "oidc-token"
    token_file.write_text(oidc_token("stranger", audience="https:" + WIF))
    creds = _pool_credentials(vertex, token_file, False)
    with pytest.raises(google_exceptions.OAuthError) as refused:
        creds.refresh(google.auth.transport.requests.Request())
    assert "invalid_grant" in str(refused.value)


# --- Vertex: Anthropic ---------------------------------------------------------------------------------


def test_anthropic_vertex_sdk(vertex: Mock, sa_file: tuple[Path, int]) -> None:
    client = anthropic.AnthropicVertex(region=LOCATION, project_id=PROJECT, credentials=_sa_credentials(sa_file[0]),
                                       base_url=f"http://127.0.0.1:{vertex.port}/v1", max_retries=0)
    msg = client.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert msg.model == CLAUDE and msg.content[0].text == TEXT16 and msg.stop_reason == "end_turn"
    with client.messages.stream(model=CLAUDE, max_tokens=3, messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == "tok0 tok1 tok2 "
    counted = client.messages.count_tokens(model=CLAUDE, messages=[{"role": "user", "content": "Hi"}])
    assert counted.input_tokens >= 1
    bad = anthropic.AnthropicVertex(region=LOCATION, project_id=PROJECT, access_token="ya29.forged",
                                    base_url=f"http://127.0.0.1:{vertex.port}/v1", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=CLAUDE, max_tokens=8, messages=[{"role": "user", "content": "Hi"}])


# --- Vertex: short-lived tokens --------------------------------------------------------------------------


def test_short_lived_tokens_expire_and_refresh(tmp_path: Path) -> None:
    port = free_port()
    key = tmp_path / "sa.json"
    key.write_text(json.dumps(service_account_info(token_uri=f"http://127.0.0.1:{port}/token")))
    mock = Mock("vertex-short", "--api", "vertex", "--service-account", str(key), "--token-lifetime", "1", port=port)
    try:
        creds = _sa_credentials(key)
        creds.refresh(google.auth.transport.requests.Request())
        assert creds.expiry is not None
        path = f"{PREFIX}/google/models/{GEMINI}:generateContent"
        deadline = time.monotonic() + 10
        while True:  # the token works, then stops working once its second is up
            status, _, raw = _post(mock, path, HELLO, creds.token)
            if status == 401:
                break
            assert status == 200 and time.monotonic() < deadline
            time.sleep(0.05)
        assert json.loads(raw)["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"
        assert not creds.valid  # google-auth sees it as due for refresh already
        expired = creds.token
        creds.refresh(google.auth.transport.requests.Request())
        assert creds.token != expired
    finally:
        _stopped(mock)


# --- Azure OpenAI with Entra ID -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azure(jwks_url: str) -> Iterator[Mock]:
    mock = Mock("azure-entra", "--api", "azure", "--model", "chat-deploy", "--azure-tenant-id", "tenant-1",
                "--azure-client-id", "client-1", "--azure-client-secret", "s3cret", "--oidc-jwks", jwks_url,
                "--api-key", "az-key")
    try:
        yield mock
    finally:
        _stopped(mock)


def _entra_token(mock: Mock, **fields: str) -> requests.Response:
    form = {"grant_type": "client_credentials", "client_id": "client-1", "scope": AZURE_SCOPE, **fields}
    return requests.post(f"http://127.0.0.1:{mock.port}/tenant-1/oauth2/v2.0/token", data=form, timeout=10)


def _azure_client(mock: Mock, **auth: Any) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=f"http://{mock.address}", api_version="2024-10-21", max_retries=0,
                              **auth)


def test_azure_client_secret_token_with_the_openai_sdk(azure: Mock) -> None:
    answer = _entra_token(azure, client_secret="s3cret")
    assert answer.status_code == 200, answer.text
    token = answer.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == token["ext_expires_in"] == 3600
    client = _azure_client(azure, azure_ad_token=token["access_token"])
    reply = client.chat.completions.create(model="chat-deploy", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == TEXT16
    streamed = _azure_client(azure, azure_ad_token_provider=lambda: token["access_token"]).chat.completions.create(
        model="chat-deploy", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == TEXT16
    assert _azure_client(azure, api_key="az-key").chat.completions.create(
        model="chat-deploy", messages=[{"role": "user", "content": "hi"}]).choices


def test_azure_federated_assertion_and_refusals(azure: Mock) -> None:
    answer = _entra_token(azure, client_assertion_type=ASSERTION_TYPE, client_assertion=oidc_token())
    assert answer.status_code == 200, answer.text
    assert _azure_client(azure, azure_ad_token=answer.json()["access_token"]).chat.completions.create(
        model="chat-deploy", messages=[{"role": "user", "content": "hi"}]).choices

    refused = _entra_token(azure, client_secret="n0t-it")
    error = refused.json()
    assert refused.status_code == 401 and error["error"] == "invalid_client" and error["error_codes"] == [7000215]
    assert error["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    stranger = _entra_token(azure, client_assertion_type=ASSERTION_TYPE, client_assertion=oidc_token("stranger"))
    assert stranger.status_code == 401 and stranger.json()["error_codes"] == [700027]

    with pytest.raises(openai.AuthenticationError) as info:
        _azure_client(azure, azure_ad_token="eyJ.forged.token").chat.completions.create(
            model="chat-deploy", messages=[{"role": "user", "content": "hi"}])
    assert "Access token is missing, invalid" in str(info.value)

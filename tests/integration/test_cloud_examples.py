"""The Envoy AI Gateway's cloud examples (basic/aws.yaml, basic/gcp_vertex.yaml, basic/azure_openai.yaml
and provider_fallback/, as tests/fixtures/cloud_examples/ carries their resources) run against the
mocks with only Secret values and --resolve changed: the mocks serve TLS under the clouds' own host
names, with a test CA the gateway trusts as its system CAs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Gateway, Mock, TlsMock
from tests.support import free_port

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "cloud_examples"
KEY_ID, SECRET = "AKIAEXAMPLEGATEWAY01", "example-secret/key+value"
HELLO = [{"role": "user", "content": "Hello there"}]
BEDROCK_HOST = "bedrock-runtime.us-east-1.amazonaws.com"


def _with_secrets(example: str, values: dict[tuple[str, str], str], folder: Path) -> Path:
    """The example with only these Secret values (by (Secret name, key)) changed."""
    docs = list(yaml.safe_load_all((EXAMPLES / example).read_text()))
    for doc in docs:
        if doc and doc.get("kind") == "Secret":
            for key in list(doc.get("stringData") or {}):
                if (doc["metadata"]["name"], key) in values:
                    doc["stringData"][key] = values[(doc["metadata"]["name"], key)]
    path = folder / example
    path.write_text(yaml.safe_dump_all(docs))
    return path


def _gateway(config: Path, ca: trustme.CA, folder: Path, resolve: dict[str, int]) -> Gateway:
    ca.cert_pem.write_to_path(folder / "ca.pem")
    args: list[str] = ["--config", str(config)]
    for host, port in resolve.items():
        args += ["--resolve", f"{host}:443=127.0.0.1:{port}"]
    # The test CA is the gateway's "System" trust (wellKnownCACertificates: System), for OpenSSL and requests.
    env = {"SSL_CERT_FILE": str(folder / "ca.pem"), "REQUESTS_CA_BUNDLE": str(folder / "ca.pem"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    return Gateway(*args, workers=1, env=env)


def _credentials_file() -> str:
    return f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"


def _answered(gw: Gateway, chat: str, message: str) -> None:
    """An OpenAI chat completion of `chat` and an Anthropic message of `message`, both answered."""
    reply = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0).chat.completions.create(
        model=chat, messages=HELLO)
    assert reply.choices[0].message.content
    answer = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}/anthropic", api_key="k",
                                 max_retries=0).messages.create(model=message, max_tokens=30, messages=HELLO)
    assert answer.content[0].text


def _stop(*procs: Any) -> None:
    for p in procs:
        if isinstance(p, Gateway):  # shown by pytest when the test failed
            print(p.proc.output()[-3000:], file=sys.stderr)
        p.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _bedrock(folder: Path, ca: trustme.CA) -> TlsMock:
    return TlsMock("bedrock", folder, ca, BEDROCK_HOST, extra=("--api", "bedrock", "--aws-access-key-id", KEY_ID,
                                                               "--aws-secret-access-key", SECRET))


def test_basic_aws(tmp_path: Path, ca: trustme.CA) -> None:
    bedrock = _bedrock(tmp_path, ca)
    config = _with_secrets("aws.yaml", {("envoy-ai-gateway-basic-aws-credentials", "credentials"): _credentials_file()},
                           tmp_path)
    gw = _gateway(config, ca, tmp_path, {BEDROCK_HOST: bedrock.port})
    try:
        _answered(gw, chat="us.amazon.nova-micro-v1:0", message="anthropic.claude-3-5-sonnet-20241022-v2:0")
        paths = [r["path"] for r in bedrock.requests()]
        assert any(p.endswith("/converse") for p in paths) and any(p.endswith("/invoke") for p in paths)
    finally:
        _stop(gw, bedrock)


def test_basic_gcp_vertex(tmp_path: Path, ca: trustme.CA) -> None:
    port = free_port()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = {"type": "service_account", "project_id": "GCP_PROJECT_NAME", "private_key_id": "k1",
               "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()).decode(),
               "client_email": "gateway@example.iam.gserviceaccount.com", "client_id": "1",
               "token_uri": f"https://127.0.0.1:{port}/token"}
    (tmp_path / "sa.json").write_text(json.dumps(account))
    vertex = TlsMock("vertex", tmp_path, ca, "us-central1-aiplatform.googleapis.com",
                     "us-east5-aiplatform.googleapis.com", "127.0.0.1",
                     extra=("--api", "vertex", "--service-account", str(tmp_path / "sa.json")), port=port)
    config = _with_secrets("gcp_vertex.yaml", {("envoy-ai-gateway-basic-gcp-service-account-key-file",
                                                "service_account.json"): json.dumps(account)}, tmp_path)
    gw = _gateway(config, ca, tmp_path, {"us-central1-aiplatform.googleapis.com": vertex.port,
                                         "us-east5-aiplatform.googleapis.com": vertex.port})
    try:
        _answered(gw, chat="gemini-2.5-flash", message="claude-3-7-sonnet@20250219")
        paths = [r["path"] for r in vertex.requests()]
        assert "/v1/projects/GCP_PROJECT_NAME/locations/GCP_REGION/publishers/google/models/gemini-2.5-flash" \
               ":generateContent" in paths
    finally:
        _stop(gw, vertex)


def test_basic_azure_openai(tmp_path: Path, ca: trustme.CA) -> None:
    azure = TlsMock("azure", tmp_path, ca, "dummy-azure-resource.openai.azure.com", "login.microsoftonline.com",
                    extra=("--api", "azure", "--azure-tenant-id", "AZURE_TENANT_ID", "--azure-client-id",
                           "AZURE_CLIENT_ID", "--azure-client-secret", "a-real-secret"))
    config = _with_secrets("azure_openai.yaml", {("envoy-ai-gateway-basic-azure-client-secret", "client-secret"):
                                                 "a-real-secret"}, tmp_path)
    gw = _gateway(config, ca, tmp_path, {"dummy-azure-resource.openai.azure.com": azure.port,
                                         "login.microsoftonline.com": azure.port})
    try:
        reply = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0).chat.completions.create(
            model="gpt-4.5-preview", messages=HELLO)
        assert reply.choices[0].message.content
        sent = [r for r in azure.requests() if r["path"].endswith("/chat/completions")][-1]
        assert sent["path"] == "/openai/deployments/gpt-4.5-preview/chat/completions"
        assert "api-version=2025-01-01-preview" in sent["query"]
        assert sent["headers"]["authorization"].startswith("Bearer ")
    finally:
        _stop(gw, azure)


def test_provider_fallback(tmp_path: Path, ca: trustme.CA) -> None:
    bedrock = _bedrock(tmp_path, ca)
    plain = Mock("always-failing")  # speaks plain HTTP where TLS is expected: every attempt fails
    config = _with_secrets("provider_fallback.yaml", {("provider-fallback-aws-credentials", "credentials"):
                                                      _credentials_file()}, tmp_path)
    gw = _gateway(config, ca, tmp_path, {BEDROCK_HOST: bedrock.port,
                                         "provider-fallback-always-failing-upstream.default.svc.cluster.local":
                                         plain.port})
    try:
        status, headers, body = gw.chat("us.amazon.nova-micro-v1:0")
        assert status == 200 and headers["x-ai-gateway-backend"] == "default/provider-fallback-aws", body
        assert [r for r in bedrock.requests() if r["path"].endswith("/converse")]
    finally:
        _stop(gw, bedrock, plain)

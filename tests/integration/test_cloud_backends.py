"""Every cloud schema through a real gateway, with credentials the control process fetches and
refreshes, against mocks that check them as the clouds do: SigV4 by botocore (Bedrock), tokens
issued by the mocks' own token endpoints (Vertex AI, Entra ID), STS web identity from a local OIDC
issuer. Official openai and anthropic SDKs on the client side."""

from __future__ import annotations

import base64
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway, Mock, openai_backend, write_config
from tests.integration.helpers import serve
from tests.resources import model_rules, schema_backend
from tests.support import free_port, http_request, wait_for

AWS_KEY_ID, AWS_SECRET = "AKIAMODELYARDTEST01", "test-secret-key/for+bedrock"
OIDC_PW, AZURE_PW = "oidc-client-pw-7", "azure-client-pw-9"
STS_SECONDS = 4  # the STS mock's credentials live this long: the gateway refreshes them at 2 s
VERTEX_TOKEN_SECONDS = 4
NOVA = "us.amazon.nova-micro-v1:0"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a place",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
HELLO = [{"role": "user", "content": "Hello there"}]
PIXEL = ("data:image/png;base64," + base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode())


def _service_account(path: Path, token_uri: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({"type": "service_account", "project_id": "proj", "private_key_id": "kid-1",
                                "private_key": pem, "client_email": "gateway@proj.iam.gserviceaccount.com",
                                "client_id": "1", "token_uri": token_uri}))
    return path


def _backend(name: str, port: int, schema: str, policy: str, version: str = "") -> str:
    text = openai_backend(name, "127.0.0.1", port).replace(
        "schema: {name: OpenAI}", f"schema: {{name: {schema}{', version: ' + version if version else ''}}}")
    return text + (f"apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\n"
                   f"metadata: {{name: {name}-policy, namespace: default}}\nspec:\n"
                   f"  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]\n"
                   + textwrap.indent(textwrap.dedent(policy), "  ") + "---\n")


def _secret(name: str, key: str, value: str) -> str:
    return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\n"
            f"stringData:\n  {key}: {json.dumps(value)}\n---\n")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("cloud")
    oidc = Mock("oidc", "--api", "oidc", "--client-id", "gateway", "--client-secret", OIDC_PW)
    bedrock = ("--api", "bedrock", "--aws-access-key-id", AWS_KEY_ID, "--aws-secret-access-key", AWS_SECRET,
               "--oidc-jwks", f"http://127.0.0.1:{oidc.port}/jwks", "--oidc-audience", "sts.amazonaws.com",
               "--sts-duration", str(STS_SECONDS))
    # The service account's key file names the Vertex mock's token endpoint: its port comes first.
    vertex_port = free_port()
    sa = _service_account(folder / "sa.json", f"http://127.0.0.1:{vertex_port}/token")
    jwks = ("--oidc-jwks", f"http://127.0.0.1:{oidc.port}/jwks")
    vertex = ("--api", "vertex", "--service-account", str(sa), "--project", "proj", "--location", "us-central1",
              "--token-lifetime", str(VERTEX_TOKEN_SECONDS), *jwks, "--oidc-audience", "gateway-wif")
    mocks = {
        "oidc": oidc,
        "bedrock": Mock("bedrock", *bedrock),
        "bedrock-down": Mock("bedrock-down", *bedrock, "--status", "503"),
        "vertex": Mock("vertex", *vertex, port=vertex_port),
        "vertex-down": Mock("vertex-down", *vertex, "--status", "503"),
        "azure": Mock("azure", "--api", "azure", "--azure-tenant-id", "tenant-1", "--azure-client-id", "app",
                      "--azure-client-secret", AZURE_PW, *jwks, "--oidc-audience", "api://AzureADTokenExchange"),
        "gpt": Mock("gpt"),
        "claude": Mock("claude", "--api", "anthropic", "--api-key", "sk-ant"),
    }
    aws_file = ("type: AWSCredentials\nawsCredentials:\n  region: us-east-1\n"
                "  credentialsFile: {secretRef: {name: aws-file}}\n")
    aws_sts = textwrap.dedent(f"""\
        type: AWSCredentials
        awsCredentials:
          region: us-east-1
          oidcExchangeToken:
            awsRoleArn: arn:aws:iam::123456789012:role/bedrock-caller
            aud: sts.amazonaws.com
            oidc:
              provider: {{issuer: "http://127.0.0.1:{oidc.port}"}}
              clientID: gateway
              clientSecret: {{name: oidc-secret}}
        """)
    gcp = ("type: GCPCredentials\ngcpCredentials:\n  projectName: proj\n  region: us-central1\n"
           "  credentialsFile: {secretRef: {name: gcp-sa}}\n")
    azure = ("type: AzureCredentials\nazureCredentials:\n  clientID: app\n  tenantID: tenant-1\n"
             "  clientSecretRef: {name: azure-secret}\n")
    oidc_client = (f'oidc: {{provider: {{issuer: "http://127.0.0.1:{oidc.port}"}}, clientID: gateway, '
                   'clientSecret: {name: oidc-secret}}')
    azure_federated = ("type: AzureCredentials\nazureCredentials:\n  clientID: app\n  tenantID: tenant-1\n"
                       f"  oidcExchangeToken: {{aud: api://AzureADTokenExchange, {oidc_client}}}\n")
    gcp_wif = textwrap.dedent(f"""\
        type: GCPCredentials
        gcpCredentials:
          projectName: proj
          region: us-central1
          workloadIdentityFederationConfig:
            projectID: "123456"
            workloadIdentityPoolName: gateway-pool
            workloadIdentityProviderName: gateway-provider
            serviceAccountImpersonation: {{serviceAccountName: vertex-caller}}
            oidcExchangeToken: {{aud: gateway-wif, {oidc_client}}}
        """)
    text = (_secret("aws-file", "credentials",
                    f"[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n")
            + _secret("oidc-secret", "client-secret", OIDC_PW)
            + _secret("gcp-sa", "service_account.json", sa.read_text())
            + _secret("azure-secret", "client-secret", AZURE_PW)
            + _backend("bedrock", mocks["bedrock"].port, "AWSBedrock", aws_file)
            + _backend("bedrock-sts", mocks["bedrock"].port, "AWSBedrock", aws_sts)
            + _backend("bedrock-claude", mocks["bedrock"].port, "AWSAnthropic", aws_file, "bedrock-2023-05-31")
            + _backend("bedrock-down", mocks["bedrock-down"].port, "AWSBedrock", aws_file)
            + _backend("vertex", vertex_port, "GCPVertexAI", gcp)
            + _backend("vertex-claude", vertex_port, "GCPAnthropic", gcp, "vertex-2023-10-16")
            + _backend("vertex-down", mocks["vertex-down"].port, "GCPVertexAI", gcp)
            + _backend("vertex-wif", vertex_port, "GCPVertexAI", gcp_wif)
            + _backend("azure-federated", mocks["azure"].port, "AzureOpenAI", azure_federated)
            + _backend("azure", mocks["azure"].port, "AzureOpenAI", azure)
            + _backend("azure-bad", mocks["azure"].port, "AzureOpenAI", azure.replace("azure-secret", "wrong-secret"))
            + _secret("wrong-secret", "client-secret", "not-the-secret")
            + openai_backend("gpt", "127.0.0.1", mocks["gpt"].port)
            + schema_backend("claude", mocks["claude"].port, "Anthropic", policy="AnthropicAPIKey", key="sk-ant")
            + model_rules("cloud", ("nova", f'[{{name: bedrock, modelNameOverride: "{NOVA}"}}]'),
                     ("nova-sts", f'[{{name: bedrock-sts, modelNameOverride: "{NOVA}"}}]'),
                     ("titan-embed", '[{name: bedrock, modelNameOverride: "amazon.titan-embed-text-v2:0"}]'),
                     ("claude-bedrock", '[{name: bedrock-claude, modelNameOverride: '
                                        '"anthropic.claude-3-5-sonnet-20241022-v2:0"}]'),
                     ("gemini", "[{name: vertex, modelNameOverride: gemini-2.0-flash-001}]"),
                     ("text-embedding", "[{name: vertex, modelNameOverride: text-embedding-005}]"),
                     ("claude-vertex", '[{name: vertex-claude, modelNameOverride: "claude-sonnet-4@20250514"}]'),
                     ("azure-gpt", "[{name: azure, modelNameOverride: gpt-4o}]"),
                     ("bedrock-then-openai", "[{name: bedrock-down, priority: 0}, {name: gpt, priority: 1}]"),
                     ("vertex-then-anthropic", "[{name: vertex-down, priority: 0}, {name: claude, priority: 1}]"),
                     ("azure-then-openai", "[{name: azure-bad, priority: 0}, {name: gpt, priority: 1}]"),
                     ("gemini-wif", "[{name: vertex-wif, modelNameOverride: gemini-2.0-flash-001}]"),
                     ("azure-federated", "[{name: azure-federated, modelNameOverride: gpt-4o}]")))
    env = {"AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{mocks['bedrock'].port}",
           "AZURE_AUTHORITY_HOST": f"http://127.0.0.1:{mocks['azure'].port}", "AWS_EC2_METADATA_DISABLED": "true",
           "MODELYARD_GCP_STS_URL": f"http://127.0.0.1:{vertex_port}/v1/token",
           "MODELYARD_GCP_IAM_CREDENTIALS_URL": f"http://127.0.0.1:{vertex_port}"}
    gw = Gateway("--config", str(write_config(folder / "cloud.yaml", text)), workers=1, env=env)
    yield from serve(gw, mocks)


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)


def claude(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}/anthropic", api_key="client-key", max_retries=0)


def access_line(gw: Gateway, before: int, model: str) -> dict:
    def find() -> dict | None:
        lines = [json.loads(x) for x in gw.proc.output().splitlines() if x.startswith("{")][before:]
        return next((x for x in lines if x["model"] == model), None)
    found = wait_for(find, timeout=30.0)
    assert found, gw.proc.output()[-2000:]
    return found


def model_requests(mock: Mock) -> list[dict]:
    """What a cloud mock received on its model routes, without its token endpoints' traffic."""
    return [r for r in mock.requests() if r["path"].startswith(("/model/", "/v1/projects/proj/locations/"))]


def token_sum(gw: Gateway, model: str, kind: str) -> float:
    """The gen_ai_client_token_usage sum of a model and token type on /metrics."""
    text = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == "gen_ai_client_token_usage"
               for s in f.samples if s.name.endswith("_sum") and s.labels.get("gen_ai_token_type") == kind
               and s.labels.get("gen_ai_original_model") == model)


def log_lines(gw: Gateway) -> int:
    return sum(1 for line in gw.proc.output().splitlines() if line.startswith("{"))


# --- AWS Bedrock ----------------------------------------------------------------------------------


def test_bedrock_chat_signed_with_keys_from_a_credentials_file(setup) -> None:
    gw = setup["gw"]
    before, counted = log_lines(gw), token_sum(gw, "nova", "output")  # the module's first nova request
    reply = oai(gw).chat.completions.create(model="nova", messages=HELLO, max_tokens=50)
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    sent = model_requests(setup["bedrock"])[-1]  # (STS calls reach the same mock)
    assert sent["path"].endswith("/converse")
    assert "client-key" not in json.dumps(sent["headers"])
    logged = access_line(gw, before, "nova")
    assert (logged["tokens"]["input"], logged["tokens"]["output"]) == (reply.usage.prompt_tokens,
                                                                        reply.usage.completion_tokens)
    assert wait_for(lambda: token_sum(gw, "nova", "output") == counted + reply.usage.completion_tokens)


def test_bedrock_streaming_tools_and_images(setup) -> None:
    client = oai(setup["gw"])
    chunks = list(client.chat.completions.create(model="nova", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c for c in chunks if c.usage is not None][-1].usage.completion_tokens > 0
    reply = client.chat.completions.create(model="nova", tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris?"}])
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    follow = client.chat.completions.create(model="nova", tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}])
    assert follow.choices[0].message.content
    seen = client.chat.completions.create(model="nova", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    assert seen.choices[0].message.content


def test_bedrock_embeddings_and_anthropic_clients(setup) -> None:
    gw = setup["gw"]
    vectors = oai(gw).embeddings.create(model="titan-embed", input="Hello world")
    assert len(vectors.data) == 1 and len(vectors.data[0].embedding) > 0
    message = claude(gw).messages.create(model="nova", max_tokens=50, messages=HELLO)
    assert message.content[0].text and message.usage.output_tokens > 0
    with claude(gw).messages.stream(model="claude-bedrock", max_tokens=50, messages=HELLO) as stream:
        assert "".join(stream.text_stream) and stream.get_final_message().usage.output_tokens > 0
    reply = oai(gw).chat.completions.create(model="claude-bedrock", messages=HELLO, max_tokens=50)
    assert reply.choices[0].message.content
    invoke = [r for r in model_requests(setup["bedrock"]) if "/invoke" in r["path"]]
    assert invoke and all("anthropic" in r["path"] for r in invoke if "titan" not in r["path"])


def test_errors_reach_clients_in_their_shape(setup) -> None:
    gw = setup["gw"]
    for model in ("nova", "claude-bedrock", "gemini", "claude-vertex"):
        with pytest.raises(openai.RateLimitError):
            oai(gw).chat.completions.create(model=model, messages=HELLO, extra_headers={"x-mock-status": "429"})
    for model in ("nova", "claude-bedrock", "claude-vertex"):
        with pytest.raises(anthropic.RateLimitError) as caught:
            claude(gw).messages.create(model=model, max_tokens=5, messages=HELLO,
                                       extra_headers={"x-mock-status": "429"})
        assert caught.value.body["type"] == "error"


ANTHROPIC_WEATHER = {"name": "get_weather", "description": "Current weather for a place",
                     "input_schema": WEATHER["function"]["parameters"]}


def test_anthropic_client_tools_both_ways(setup) -> None:
    client = claude(setup["gw"])
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    for model in ("nova", "claude-bedrock", "claude-vertex"):
        first = client.messages.create(model=model, max_tokens=100, tools=[ANTHROPIC_WEATHER], messages=ask)
        use = next(b for b in first.content if b.type == "tool_use")
        assert first.stop_reason == "tool_use" and use.name == "get_weather", model
        second = client.messages.create(model=model, max_tokens=100, tools=[ANTHROPIC_WEATHER], messages=[
            *ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}])
        assert second.content[0].text, model


def test_sts_credentials_are_refreshed_mid_run_without_a_failed_request(setup) -> None:
    assert _refreshed_under_load(setup["gw"], "nova-sts", "default/bedrock-sts-policy", STS_SECONDS) > 0


def _refreshed_under_load(gw: Gateway, model: str, policy: str, lifetime: float) -> int:
    """Requests, every one answered, while the policy's credential is refreshed twice; how many."""
    client = oai(gw)
    fetched = {policy_state(gw, policy)["fetched_at"]}
    deadline = time.monotonic() + lifetime * 4 + 10  # a hang guard: two refreshes take about one lifetime
    answered = 0
    while len(fetched) < 3:
        assert time.monotonic() < deadline, policy_state(gw, policy)
        assert client.chat.completions.create(model=model, messages=HELLO, max_tokens=5).choices
        answered += 1
        state = policy_state(gw, policy)
        assert state["status"] == "valid", state
        fetched.add(state["fetched_at"])
    return answered


def policy_state(gw: Gateway, key: str) -> dict:
    view = gw.config()["cloud_credentials"]
    return view[key]


def test_bedrock_fails_over_to_openai(setup) -> None:
    status, headers, body = setup["gw"].chat("bedrock-then-openai")
    assert status == 200 and headers["x-ai-gateway-backend"] == "default/gpt", body
    assert setup["bedrock-down"].requests(), "the Bedrock backend was tried first"


# --- GCP Vertex AI --------------------------------------------------------------------------------


def test_gemini_chat_stream_tools_and_embeddings(setup) -> None:
    gw = setup["gw"]
    client = oai(gw)
    before, counted = log_lines(gw), token_sum(gw, "gemini", "input")  # the module's first gemini request
    reply = client.chat.completions.create(model="gemini", messages=HELLO)
    assert reply.choices[0].message.content
    logged = access_line(gw, before, "gemini")
    assert (logged["tokens"]["input"], logged["tokens"]["output"]) == (reply.usage.prompt_tokens,
                                                                        reply.usage.completion_tokens)
    assert wait_for(lambda: token_sum(gw, "gemini", "input") == counted + reply.usage.prompt_tokens)
    sent = model_requests(setup["vertex"])[-1]  # (token refreshes reach the same mock)
    assert sent["path"].startswith("/v1/projects/proj/locations/us-central1/publishers/google/models/")
    assert sent["headers"]["authorization"].startswith("Bearer ") and "client-key" not in sent["headers"]["authorization"]
    chunks = list(client.chat.completions.create(model="gemini", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    call = client.chat.completions.create(model="gemini", tools=[WEATHER], messages=ask).choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    answered = client.chat.completions.create(model="gemini", tools=[WEATHER], messages=[
        *ask, {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}])
    assert answered.choices[0].message.content
    seen = client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"}, {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    assert seen.choices[0].message.content
    vectors = client.embeddings.create(model="text-embedding", input=["a", "b"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens > 0


def test_anthropic_on_vertex_for_both_clients(setup) -> None:
    gw = setup["gw"]
    message = claude(gw).messages.create(model="claude-vertex", max_tokens=50, messages=HELLO)
    assert message.content[0].text
    with claude(gw).messages.stream(model="claude-vertex", max_tokens=50, messages=HELLO) as stream:
        assert "".join(stream.text_stream)
    assert oai(gw).chat.completions.create(model="claude-vertex", messages=HELLO, max_tokens=20).choices[0].message.content
    assert model_requests(setup["vertex"])[-1]["path"].endswith(":rawPredict")


def test_vertex_tokens_are_refreshed_mid_run_without_a_failed_request(setup) -> None:
    assert _refreshed_under_load(setup["gw"], "gemini", "default/vertex-policy", VERTEX_TOKEN_SECONDS) > 0


def test_vertex_fails_over_to_anthropic(setup) -> None:
    status, headers, body = setup["gw"].chat("vertex-then-anthropic")
    assert status == 200 and headers["x-ai-gateway-backend"] == "default/claude", body


# --- Azure OpenAI with Entra ID -------------------------------------------------------------------


def test_azure_with_an_entra_id_token(setup) -> None:
    reply = oai(setup["gw"]).chat.completions.create(model="azure-gpt", messages=HELLO)
    assert reply.choices[0].message.content
    sent = setup["azure"].chat_requests()[-1]
    assert sent["path"] == "/openai/deployments/gpt-4o/chat/completions"
    assert sent["headers"]["authorization"].startswith("Bearer ") and "api-key" not in sent["headers"]


def test_a_backend_without_its_token_fails_over_without_being_called(setup) -> None:
    gw = setup["gw"]
    state = wait_for(lambda: (s := policy_state(gw, "default/azure-bad-policy"))["consecutive_failures"] and s)
    assert state["status"] == "failing" and "invalid_client" in state["last_error"]
    before = len(setup["azure"].chat_requests())
    status, headers, body = gw.chat("azure-then-openai")
    assert status == 200 and headers["x-ai-gateway-backend"] == "default/gpt", body
    assert len(setup["azure"].chat_requests()) == before  # no request went out unauthenticated


def test_workload_identity_federation_and_azure_federated_credentials(setup) -> None:
    gw = setup["gw"]
    assert oai(gw).chat.completions.create(model="gemini-wif", messages=HELLO).choices[0].message.content
    assert oai(gw).chat.completions.create(model="azure-federated", messages=HELLO).choices[0].message.content
    assert policy_state(gw, "default/vertex-wif-policy")["type"] == "GCPWorkloadIdentity"
    assert policy_state(gw, "default/azure-federated-policy")["type"] == "AzureFederated"


# --- status, metrics, secrecy ---------------------------------------------------------------------


def test_status_and_metrics_show_each_credential_and_no_secret(setup) -> None:
    gw = setup["gw"]
    view = gw.config()
    creds = view["cloud_credentials"]
    assert {k: v["status"] for k, v in creds.items()} == {
        **{f"default/{name}-policy": "valid" for name in ("bedrock", "bedrock-sts", "bedrock-claude", "bedrock-down",
                                                           "vertex", "vertex-claude", "vertex-down", "azure",
                                                           "vertex-wif", "azure-federated")},
        "default/azure-bad-policy": "failing"}
    metrics = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    assert 'modelyard_credential_valid{policy="default/azure-policy",type="AzureClientSecret"} 1.0' in metrics
    everything = json.dumps(view) + metrics + gw.proc.output()
    for secret in (AWS_SECRET, OIDC_PW, AZURE_PW, "not-the-secret", "PRIVATE KEY"):
        assert secret not in everything

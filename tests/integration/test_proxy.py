"""The OpenAI endpoints through a real gateway (2 workers) to real mock backends, and every error case."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import datetime, timezone

import openai
import pytest

from tests.conftest import Gateway, Mock, assert_openai_error, openai_backend, route, write_config
from tests.support import free_port, http_request, wait_for
from tests.integration.helpers import api_key_policy

CONFIG = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: main, namespace: default}}
spec:
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: chat-a}}]}}]
      backendRefs:
        - name: mock-a
          modelNameOverride: upstream-a
          headerMutation:
            set: [{{name: x-shared, value: route}}, {{name: x-route, value: r1}}]
            remove: [x-drop-me]
          bodyMutation:
            set: [{{path: service_tier, value: '"scale"'}}]
            remove: [user]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: plain}}]}}]
      backendRefs: [{{name: mock-a}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: streamer}}]}}]
      backendRefs: [{{name: mock-slow}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: slow}}]}}]
      backendRefs: [{{name: mock-a}}]
      timeouts: {{request: 1s}}
    - matches: [{{headers: [{{name: x-ai-eg-model, value: down}}]}}]
      backendRefs: [{{name: down}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: azure}}]}}]
      backendRefs: [{{name: azure}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: ghost}}]}}]
      backendRefs: [{{name: not-defined-yet}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: pair}}]}}]
      backendRefs: [{{name: pair}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: legacy}}]}}]
      backendRefs: [{{name: legacy}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: anthropic-key}}]}}]
      backendRefs: [{{name: anthropic-key}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: mutated}}]}}]
      backendRefs:
        - name: mutated
          bodyMutation:
            set: [{{path: service_tier, value: '"route"'}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: mutated-by-backend}}]}}]
      backendRefs: [{{name: mutated}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: reset}}]}}]
      backendRefs: [{{name: reset}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: dated}}]}}]
      backendRefs: [{{name: mock-a}}]
      modelsCreatedAt: "2025-01-02T03:04:05Z"
      modelsOwnedBy: team-dated
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {{name: old-style, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  targetRefs: [{{name: gw, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: old-style}}]}}]
      backendRefs: [{{name: mock-a}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: legacy, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
  timeouts: {{request: 1s}}
  backendSecurityPolicyRef: {{name: legacy-key, kind: BackendSecurityPolicy, group: aigateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: legacy-key, namespace: default}}
spec:
  type: APIKey
  apiKey: {{secretRef: {{name: legacy-secret}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: legacy-secret, namespace: default}}
stringData: {{apiKey: {legacy_key}}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: anthropic-key, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: anthropic-key, namespace: default}}
spec:
  type: AnthropicAPIKey
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: anthropic-key}}]
  anthropicAPIKey: {{secretRef: {{name: anthropic-secret}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: anthropic-secret, namespace: default}}
stringData: {{apiKey: {anthropic_key}}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: mutated, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
  bodyMutation:
    set: [{{path: service_tier, value: '"backend"'}}, {{path: seed, value: "7"}}]
    remove: [user]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: reset, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: reset, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: reset, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {reset}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: limits, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  connection: {{bufferLimit: 64Ki}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: mock-a, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
  headerMutation:
    set: [{{name: x-shared, value: backend}}, {{name: x-backend, value: b1}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: mock-slow, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: mock-slow, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: down, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: down, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: azure, namespace: default}}
spec:
  schema: {{name: AWSBedrock}}
  backendRef: {{name: mock-a, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: mock-a, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {a}}}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: mock-slow, namespace: default}}
spec:
  endpoints: [{{fqdn: {{hostname: slow.mock.test, port: 80}}}}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {{name: pair, namespace: default}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: pair, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: pair, namespace: default}}
spec:
  endpoints:
    - ip: {{address: 127.0.0.1, port: {a}}}
    - ip: {{address: 127.0.0.1, port: {slow}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: down, namespace: default}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {down}}}}}]
"""


LEGACY_KEY = "sk-legacy-policy-ref"  # reached only through AIServiceBackend.backendSecurityPolicyRef
ANTHROPIC_KEY = "sk-ant-modelyard-test"


class Closer:
    """A TCP server that accepts each connection, reads the request head and closes without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="closer")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                        data += chunk
                except OSError:
                    pass
                self.accepted += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    mock_a = Mock("mock-a")
    mock_slow = Mock("mock-slow", "--itl-ms", "80", "--tokens", "8")
    closer = Closer()
    cfg = tmp_path_factory.mktemp("proxy") / "config.yaml"
    cfg.write_text(CONFIG.format(a=mock_a.port, slow=mock_slow.port, down=free_port(), reset=closer.port,
                                 legacy_key=LEGACY_KEY, anthropic_key=ANTHROPIC_KEY))
    gw = Gateway("--config", str(cfg), "--resolve", f"slow.mock.test:80=127.0.0.1:{mock_slow.port}")
    yield gw, mock_a, mock_slow, closer
    gw.stop()
    mock_a.stop()
    mock_slow.stop()
    closer.close()


@pytest.fixture
def client(env) -> openai.OpenAI:
    return openai.OpenAI(base_url=env[0].base_url, api_key="client-key", max_retries=0)


def _error(body: bytes) -> dict:
    return assert_openai_error(json.loads(body))


def test_chat_with_override_and_mutations(env, client: openai.OpenAI) -> None:
    gw, mock_a, *_ = env
    mock_a.clear()
    raw = client.chat.completions.with_raw_response.create(
        model="chat-a", messages=[{"role": "user", "content": "hello"}], user="someone",
        extra_headers={"x-drop-me": "1", "x-keep": "yes"},
    )
    reply = raw.parse()
    assert reply.model == "upstream-a"
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    assert raw.headers["x-ai-gateway-backend"] == "default/mock-a"
    (seen,) = mock_a.requests()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"]["model"] == "upstream-a"
    assert seen["body"]["service_tier"] == "scale" and "user" not in seen["body"]
    assert seen["body"]["messages"] == [{"role": "user", "content": "hello"}]
    headers = seen["headers"]
    assert headers["x-shared"] == "route" and headers["x-route"] == "r1" and headers["x-backend"] == "b1"
    assert headers["x-keep"] == "yes" and "x-drop-me" not in headers
    assert "authorization" not in headers  # the client's own key never goes upstream


def test_backend_body_mutation_applies_and_the_route_wins_per_field(env, client: openai.OpenAI) -> None:
    mock_a = env[1]
    mock_a.clear()
    for model in ("mutated-by-backend", "mutated"):
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], user="someone")
        assert reply.choices[0].message.content
    by_backend, by_both = (r["body"] for r in mock_a.chat_requests())
    # The AIServiceBackend's bodyMutation alone: its set and remove both apply.
    assert by_backend["service_tier"] == "backend" and by_backend["seed"] == 7 and "user" not in by_backend
    # With a route-level bodyMutation too: the route's value wins for the same field, the backend's others stay.
    assert by_both["service_tier"] == "route" and by_both["seed"] == 7 and "user" not in by_both
    assert by_both["messages"] == [{"role": "user", "content": "hi"}]


def test_anthropic_api_key_goes_upstream_as_x_api_key(env, client: openai.OpenAI) -> None:
    mock_a = env[1]
    mock_a.clear()
    assert client.chat.completions.create(model="anthropic-key", messages=[{"role": "user", "content": "hi"}]).choices
    (seen,) = mock_a.chat_requests()
    assert seen["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in seen["headers"]  # neither a bearer token nor the client's own key


def test_streaming_chat_arrives_chunk_by_chunk(client: openai.OpenAI) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    text = ""
    stream = client.chat.completions.create(model="streamer", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert text.split() == [f"tok{i}" for i in range(8)]
    assert usage is not None and usage.completion_tokens == 8
    # The mock spaces its 8 tokens 80 ms apart: a proxy that buffered would deliver
    # everything at once; here the first chunk lands well before the last.
    assert arrivals[-1] - arrivals[0] > (arrivals[-1] - 0) / 2


def test_completions_embeddings_and_models(env, client: openai.OpenAI) -> None:
    completion = client.completions.create(model="plain", prompt="Say hi")
    assert completion.choices[0].text
    emb = client.embeddings.create(model="plain", input=["one", "two"])  # SDK asks for base64
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    floats = client.embeddings.create(model="plain", input="x", encoding_format="float")
    assert isinstance(floats.data[0].embedding[0], float)
    ids = {m.id: m.owned_by for m in client.models.list()}
    assert set(ids) == {"chat-a", "plain", "streamer", "slow", "down", "azure", "ghost", "pair", "legacy",
                        "anthropic-key", "mutated", "mutated-by-backend", "reset", "dated", "old-style"}
    assert ids["plain"] == "Envoy AI Gateway"


def test_models_list_gives_created_and_calls_no_backend(env, client: openai.OpenAI) -> None:
    _, mock_a, mock_slow, closer = env
    mock_a.clear()
    mock_slow.clear()
    accepted = closer.accepted
    models = {m.id: m for m in client.models.list()}
    dated = models["dated"]
    assert dated.created == int(datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp())  # modelsCreatedAt
    assert dated.owned_by == "team-dated"
    assert mock_a.requests() == [] and mock_slow.requests() == []
    assert closer.accepted == accepted


def test_upstream_errors_pass_through(env) -> None:
    gw = env[0]
    status, headers, body = gw.post("/v1/chat/completions", {"model": "plain", "messages": [{"role": "user", "content": "x"}]},
                                    {"x-mock-status": "429"})
    assert status == 429 and headers["retry-after"] == "1"
    assert _error(body)["type"] == "rate_limit_exceeded" or _error(body)["code"] is not None
    assert headers["x-ai-gateway-backend"] == "default/mock-a"


@pytest.mark.parametrize("raw, code", [
    (b"{not json", "invalid_json"),
    (b"[1, 2, 3]", "invalid_json"),
    (b'{"messages": []}', "missing_model"),
    (b'{"model": 7, "messages": []}', "invalid_model"),
])
def test_bad_bodies_get_400(env, raw: bytes, code: str) -> None:
    status, headers, body = env[0].post("/v1/chat/completions", raw=raw)
    assert status == 400 and headers["content-type"] == "application/json"
    err = _error(body)
    assert err["code"] == code and err["type"] == "invalid_request_error"


def test_unknown_model_404_lists_models_and_the_catch_all_hint(env, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    message = e.value.body["message"]
    assert "gpt-nope" in message and "chat-a" in message and "catch-all" in message
    assert e.value.code == "model_not_found"


def test_body_over_the_limit_413(env) -> None:
    big = {"model": "plain", "messages": [{"role": "user", "content": "x" * (70 * 1024)}]}
    status, _, body = env[0].post("/v1/chat/completions", big)
    assert status == 413 and _error(body)["code"] == "request_too_large"
    ok, _, _ = env[0].post("/v1/chat/completions", {"model": "plain", "messages": [{"role": "user", "content": "x" * 1000}]})
    assert ok == 200


def test_backend_down_502_and_hanging_backend_504(env) -> None:
    gw = env[0]
    status, headers, body = gw.post("/v1/chat/completions", {"model": "down", "messages": []})
    err = _error(body)
    assert status == 502 and err["code"] == "upstream_unreachable" and "default/down" in err["message"]
    assert headers["x-ai-gateway-backend"] == "default/down"
    status, _, body = gw.post("/v1/chat/completions", {"model": "slow", "messages": []}, {"x-mock-hang": "1"})
    err = _error(body)
    assert status == 504 and err["code"] == "upstream_timeout" and "1s" in err["message"]


def test_backend_closing_the_connection_before_answering_502(env) -> None:
    gw, _, _, closer = env
    accepted = closer.accepted
    status, headers, body = gw.post("/v1/chat/completions", {"model": "reset", "messages": [{"role": "user", "content": "x"}]})
    err = _error(body)
    assert status == 502 and err["code"] == "upstream_reset", (status, err)
    assert "default/reset" in err["message"] or f"127.0.0.1:{closer.port}" in err["message"], err
    assert headers["x-ai-gateway-backend"] == "default/reset"
    assert wait_for(lambda: closer.accepted > accepted, timeout=2.0)  # connected, then cut off: not unreachable


def test_deprecated_backend_timeouts_and_policy_ref_warn_and_are_honoured(env) -> None:
    gw, mock_a, *_ = env
    warnings = gw.config()["warnings"]
    for obj, field in (("AIServiceBackend/default/legacy", "spec.timeouts"),
                       ("AIServiceBackend/default/legacy", "spec.backendSecurityPolicyRef"),
                       ("AIGatewayRoute/default/old-style", "spec.targetRefs")):
        assert any(f"{obj}: {field}: deprecated" in w for w in warnings), (obj, field, warnings)

    # backendSecurityPolicyRef: the policy's key reaches the backend as the bearer token.
    mock_a.clear()
    status, headers, body = gw.chat("legacy", headers={"authorization": "Bearer client-key"})
    assert status == 200, body
    assert headers["x-ai-gateway-backend"] == "default/legacy"
    (seen,) = mock_a.chat_requests()
    assert seen["headers"]["authorization"] == f"Bearer {LEGACY_KEY}"

    # timeouts: the rule sets none, so the AIServiceBackend's 1s applies (not the 60s default).
    started = time.monotonic()
    status, _, body = gw.post("/v1/chat/completions", {"model": "legacy", "messages": []}, {"x-mock-hang": "1"})
    err = _error(body)
    assert status == 504 and err["code"] == "upstream_timeout" and "1s" in err["message"], (status, err)
    assert time.monotonic() - started < 5

    # A route with the deprecated targetRefs (and schema) serves like any other.
    status, headers, body = gw.chat("old-style")
    assert status == 200 and headers["x-ai-gateway-backend"] == "default/mock-a", body


def test_unsupported_schema_501_and_missing_object_503(env) -> None:
    status, _, body = env[0].post("/v1/chat/completions", {"model": "azure", "messages": []})
    assert status == 501 and "AWSBedrock" in _error(body)["message"]
    status, _, body = env[0].post("/v1/chat/completions", {"model": "ghost", "messages": []})
    assert status == 503 and "default/not-defined-yet" in _error(body)["message"]


def test_unknown_endpoint_and_method(env) -> None:
    status, _, body = http_request(env[0].port, "GET", "/v1/chat/completions")
    assert status == 405 and _error(body)["code"] == "method_not_allowed"
    status, _, body = http_request(env[0].port, "POST", "/v2/whatever", {})
    assert status == 404 and _error(body)["code"] == "unknown_endpoint"


def test_backend_dying_mid_stream_ends_with_an_error_event(env, client: openai.OpenAI) -> None:
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}],
                                                    stream=True, extra_headers={"x-mock-die-after": "3"}):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["tok0 ", "tok1 ", "tok2 "]
    assert "broke off the stream" in str(e.value)
    # The gateway keeps serving afterwards.
    assert client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}]).choices


def test_client_sent_model_header_does_not_override_the_body(env) -> None:
    status, _, body = env[0].post("/v1/chat/completions", {"model": "plain", "messages": [{"role": "user", "content": "x"}]},
                                  {"x-ai-eg-model": "down"})
    assert status == 200 and json.loads(body)["model"] == "plain"


def test_endpoints_of_one_backend_share_load(env) -> None:
    names = []
    for _ in range(40):
        status, headers, _ = env[0].chat("pair")
        assert status == 200
        names.append(headers["x-mock-name"])
    assert {"mock-a", "mock-slow"} == set(names)
    assert min(names.count("mock-a"), names.count("mock-slow")) >= 10



def test_v1beta1_route_backend_and_policy_serve_a_chat(tmp_path, start_mock, start_gateway) -> None:
    mock = start_mock("beta-mock")
    text = (openai_backend("beta", "127.0.0.1", mock.port) + api_key_policy("beta", "sk-beta-key")
            + route("beta-route", "beta-chat", backend="beta"))
    text = text.replace("aigateway.envoyproxy.io/v1alpha1", "aigateway.envoyproxy.io/v1beta1")
    for kind in ("AIGatewayRoute", "AIServiceBackend", "BackendSecurityPolicy"):
        assert f"apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: {kind}\n" in text, kind
    assert "aigateway.envoyproxy.io/v1alpha1" not in text
    gw = start_gateway("--config", str(write_config(tmp_path / "beta.yaml", text)), workers=1)
    view = gw.config()
    assert view["errors"] == [] and view["models"] == ["beta-chat"], view
    assert not [w for w in view["warnings"] if "deprecated" in w or "not one the gateway reads" in w], view["warnings"]

    reply = gw.client().chat.completions.create(model="beta-chat", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    (seen,) = mock.chat_requests()
    assert seen["body"]["model"] == "beta-chat"
    assert seen["headers"]["authorization"] == "Bearer sk-beta-key"

"""The OpenAI endpoints through a real gateway (2 workers) to real mock backends, and every error case."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.conftest import Gateway, Mock, assert_openai_error
from tests.support import free_port, http_request

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
  schema: {{name: AzureOpenAI, version: "2025-01-01-preview"}}
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


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    mock_a = Mock("mock-a")
    mock_slow = Mock("mock-slow", "--itl-ms", "80", "--tokens", "8")
    cfg = tmp_path_factory.mktemp("proxy") / "config.yaml"
    cfg.write_text(CONFIG.format(a=mock_a.port, slow=mock_slow.port, down=free_port()))
    gw = Gateway("--config", str(cfg), "--resolve", f"slow.mock.test:80=127.0.0.1:{mock_slow.port}")
    yield gw, mock_a, mock_slow
    gw.stop()
    mock_a.stop()
    mock_slow.stop()


@pytest.fixture
def client(env) -> openai.OpenAI:
    return openai.OpenAI(base_url=env[0].base_url, api_key="client-key", max_retries=0)


def _error(body: bytes) -> dict:
    return assert_openai_error(json.loads(body))


def test_chat_with_override_and_mutations(env, client: openai.OpenAI) -> None:
    gw, mock_a, _ = env
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
    assert set(ids) == {"chat-a", "plain", "streamer", "slow", "down", "azure", "ghost", "pair"}
    assert ids["plain"] == "Envoy AI Gateway"


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


def test_unsupported_schema_501_and_missing_object_503(env) -> None:
    status, _, body = env[0].post("/v1/chat/completions", {"model": "azure", "messages": []})
    assert status == 501 and "AzureOpenAI" in _error(body)["message"]
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

"""The OpenAI endpoints through a real gateway (2 workers) to real mock backends: overrides and
mutations, credentials, streaming, the other endpoints, load sharing, and v1beta1 resources."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import openai

from tests.conftest import openai_backend, route, write_config
from tests.resources import api_key_policy
from tests.integration.proxy.conftest import ANTHROPIC_KEY


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

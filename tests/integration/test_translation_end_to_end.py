"""Schema translation through a real gateway: OpenAI and Anthropic clients, Anthropic, OpenAI and Azure backends."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.conftest import Gateway, Mock, write_config
from tests.integration.helpers import serve
from tests.resources import model_rules, schema_backend
from tests.support import http_request, wait_for

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a place",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def rules(*pairs: tuple[str, str]) -> str:
    return model_rules("translate", *pairs, version="v1alpha1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("translation")
    mocks = {
        "claude": Mock("claude", "--api", "anthropic", "--api-key", "sk-ant", "--cache-read", "7",
                       "--cache-creation", "3"),
        "claude-down": Mock("claude-down", "--api", "anthropic", "--status", "529"),
        "gpt": Mock("gpt"),
        "azure": Mock("azure", "--api", "azure", "--api-key", "az-key"),
    }
    text = (schema_backend("claude", mocks["claude"].port, "Anthropic", policy="AnthropicAPIKey", key="sk-ant")
            + schema_backend("claude-down", mocks["claude-down"].port, "Anthropic", policy="AnthropicAPIKey", key="k")
            + schema_backend("gpt", mocks["gpt"].port, "OpenAI")
            + schema_backend("azure", mocks["azure"].port, "AzureOpenAI", version="2024-10-21", policy="AzureAPIKey",
                      key="az-key")
            + rules(("claude-model", "[{name: claude}]"), ("gpt-model", "[{name: gpt}]"),
                    ("azure-model", "[{name: azure, modelNameOverride: my-deployment}]"),
                    ("flaky", "[{name: claude-down, priority: 0}, {name: gpt, priority: 1}]")))
    gw = Gateway("--config", str(write_config(folder / "r.yaml", text)), workers=1)
    yield from serve(gw, mocks)


def openai_client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="client-key", max_retries=0)


def anthropic_client(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}/anthropic", api_key="client-key", max_retries=0)


HELLO = [{"role": "user", "content": "Hello there"}]


# --- OpenAI clients, Anthropic backend ------------------------------------------------------------


def test_openai_chat_to_anthropic(setup) -> None:
    reply = openai_client(setup["gw"]).chat.completions.create(model="claude-model", messages=HELLO, max_tokens=50)
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.prompt_tokens_details.cached_tokens == 7
    sent = setup["claude"].requests()[-1]
    assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == "sk-ant"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "client-key" not in json.dumps(sent["headers"])


def test_openai_streaming_to_anthropic(setup) -> None:
    chunks = list(openai_client(setup["gw"]).chat.completions.create(
        model="claude-model", messages=HELLO, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert [c for c in chunks if c.usage is not None][-1].usage.completion_tokens > 0


def test_openai_tools_to_anthropic(setup) -> None:
    reply = openai_client(setup["gw"]).chat.completions.create(
        model="claude-model", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER])
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert "location" in json.loads(call.function.arguments)


def test_anthropic_error_mid_stream_reaches_an_openai_client_as_an_error(setup) -> None:
    with pytest.raises(openai.APIError):
        for _ in openai_client(setup["gw"]).chat.completions.create(
                model="claude-model", messages=HELLO, stream=True, extra_headers={"x-mock-error-after": "2"}):
            pass


def test_failover_from_anthropic_to_openai_retranslates(setup) -> None:
    gw = setup["gw"]
    status, headers, body = gw.chat("flaky")
    assert status == 200 and headers["x-ai-gateway-backend"] == "default/gpt", body
    assert setup["claude-down"].requests(), "the Anthropic backend was tried first"


# --- Anthropic clients ----------------------------------------------------------------------------


def test_anthropic_messages_passthrough(setup) -> None:
    client = anthropic_client(setup["gw"])
    message = client.messages.create(model="claude-model", max_tokens=50, messages=HELLO)
    assert message.content[0].text and message.usage.cache_read_input_tokens == 7
    with client.messages.stream(model="claude-model", max_tokens=50, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0
    count = client.messages.count_tokens(model="claude-model", messages=HELLO)
    assert count.input_tokens > 0
    assert setup["claude"].requests()[-1]["path"] == "/v1/messages/count_tokens"


def test_anthropic_client_to_openai_backend(setup) -> None:
    client = anthropic_client(setup["gw"])
    message = client.messages.create(model="gpt-model", max_tokens=50, messages=HELLO)
    assert message.content[0].text and message.usage.output_tokens == 16
    with client.messages.stream(model="gpt-model", max_tokens=50, messages=HELLO) as stream:
        assert "".join(stream.text_stream)
        assert stream.get_final_message().usage.output_tokens == 16
    assert setup["gpt"].chat_requests()[-1]["path"] == "/v1/chat/completions"


def test_anthropic_client_gets_anthropic_errors(setup) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        anthropic_client(setup["gw"]).messages.create(model="no-such-model", max_tokens=5, messages=HELLO)
    assert caught.value.body["type"] == "error"


def test_anthropic_models_list(setup) -> None:

    status, _, body = http_request(setup["gw"].port, "GET", "/anthropic/v1/models")
    answer = json.loads(body)
    assert status == 200 and answer["has_more"] is False
    assert {m["id"] for m in answer["data"]} >= {"claude-model", "gpt-model"}
    assert all(m["type"] == "model" for m in answer["data"])


def test_anthropic_usage_is_counted_once_in_the_access_log(setup) -> None:
    gw = setup["gw"]
    before = sum(1 for line in gw.proc.output().splitlines() if line.startswith("{"))
    with anthropic_client(gw).messages.stream(model="claude-model", max_tokens=50, messages=HELLO) as stream:
        final = stream.get_final_message()

    def line() -> dict | None:
        lines = [json.loads(x) for x in gw.proc.output().splitlines() if x.startswith("{")][before:]
        return next((x for x in lines if x["model"] == "claude-model" and x["stream"]), None)

    logged = wait_for(line, timeout=30.0)
    assert logged, gw.proc.output()[-1500:]
    u = final.usage
    assert logged["tokens"]["input"] == u.input_tokens + 7 + 3
    assert logged["tokens"]["output"] == u.output_tokens
    assert (logged["tokens"]["cached_input"], logged["tokens"]["cache_creation_input"]) == (7, 3)


# --- Azure OpenAI ---------------------------------------------------------------------------------


def test_openai_chat_to_azure(setup) -> None:
    reply = openai_client(setup["gw"]).chat.completions.create(model="azure-model", messages=HELLO)
    assert reply.choices[0].message.content
    sent = setup["azure"].chat_requests()[-1]
    assert sent["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=2024-10-21" in sent["query"]
    assert sent["headers"]["api-key"] == "az-key" and "authorization" not in sent["headers"]


# --- Cohere ---------------------------------------------------------------------------------------


def test_cohere_chat_through_its_openai_compatibility_prefix_and_rerank(tmp_path, start_mock, start_gateway) -> None:

    mock = start_mock("cohere")
    text = schema_backend("cohere", mock.port, "Cohere") + rules(("command-r", "[{name: cohere}]"))
    gw = start_gateway("--config", str(write_config(tmp_path / "r.yaml", text)), workers=1)
    assert gw.chat("command-r")[0] == 200
    assert mock.chat_requests()[-1]["path"] == "/compatibility/v1/chat/completions"
    status, headers, _ = http_request(gw.port, "POST", "/cohere/v2/rerank",
                                      {"model": "command-r", "query": "q", "documents": ["a", "b"]})
    assert headers["x-ai-gateway-backend"] == "default/cohere"  # the mock has no rerank: its 404 is relayed
    assert mock.requests()[-1]["path"] == "/v2/rerank"


ANTHROPIC_WEATHER = {"name": "get_weather", "description": "Current weather for a place",
                     "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                                      "required": ["location"]}}


def test_anthropic_tools_passthrough_and_to_an_openai_backend(setup) -> None:
    client = anthropic_client(setup["gw"])
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    message = client.messages.create(model="claude-model", max_tokens=100, messages=ask, tools=[ANTHROPIC_WEATHER])
    use = next(b for b in message.content if b.type == "tool_use")
    assert message.stop_reason == "tool_use" and use.name == "get_weather"
    # The tool result goes back, and the conversation continues.
    follow = client.messages.create(model="claude-model", max_tokens=100, tools=[ANTHROPIC_WEATHER], messages=[
        *ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}]}])
    assert follow.content[0].type == "text"
    # To an OpenAI backend the tools go as OpenAI functions.
    client.messages.create(model="gpt-model", max_tokens=100, messages=ask, tools=[ANTHROPIC_WEATHER])
    sent = setup["gpt"].chat_requests()[-1]["body"]
    assert sent["tools"][0]["type"] == "function" and sent["tools"][0]["function"]["name"] == "get_weather"


def test_anthropic_count_tokens_for_an_openai_backend_is_answered_locally(setup) -> None:
    count = anthropic_client(setup["gw"]).messages.count_tokens(model="gpt-model", messages=HELLO)
    assert count.input_tokens > 0
    assert not [r for r in setup["gpt"].requests() if "count_tokens" in r["path"]]


def test_anthropic_usage_reaches_the_metrics_once(setup) -> None:
    import time

    from prometheus_client.parser import text_string_to_metric_families


    gw = setup["gw"]

    def cached_sum() -> float:
        text = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
        return sum(s.value for f in text_string_to_metric_families(text) if f.name == "gen_ai_client_token_usage"
                   for s in f.samples if s.name.endswith("_sum") and s.labels.get("gen_ai_token_type") == "cached_input"
                   and s.labels.get("gen_ai_original_model") == "claude-model")

    time.sleep(1.0)  # earlier requests reach the metrics within the workers' half-second flush
    before = cached_sum()
    with anthropic_client(gw).messages.stream(model="claude-model", max_tokens=20, messages=HELLO) as stream:
        stream.get_final_message()
    assert wait_for(lambda: cached_sum() == before + 7, timeout=30.0), cached_sum() - before
    time.sleep(1.0)
    assert cached_sum() == before + 7  # message_start and message_delta both carry it: counted once


def test_azure_embeddings(setup) -> None:
    reply = openai_client(setup["gw"]).embeddings.create(model="azure-model", input="hello")
    assert reply.data[0].embedding
    assert setup["azure"].requests()[-1]["path"] == "/openai/deployments/my-deployment/embeddings"

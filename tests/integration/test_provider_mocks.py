"""The mock backend's Anthropic and Azure OpenAI modes (``--api``), driven by the official SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Mock
from tests.support import http_request

MODEL = "claude-mock-a"
HELLO = [{"role": "user", "content": "Hello there, mock."}]
TEXT16 = "".join(f"tok{i} " for i in range(16))
VERSION_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a place",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location", "unit"],
    },
}


@pytest.fixture(scope="module")
def claude() -> Iterator[Mock]:
    mock = Mock("claude", "--api", "anthropic", "--model", MODEL, "--model", "claude-mock-b",
                "--cache-read", "7", "--cache-creation", "3")
    try:
        yield mock
    finally:
        mock.stop()
    assert "Traceback" not in mock.proc.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def client(claude: Mock) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://{claude.address}", api_key="test-key", max_retries=0)


def _post(mock: Mock, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
    status, hdrs, raw = http_request(mock.port, "POST", path, body, {**VERSION_HEADERS, **(headers or {})})
    return status, hdrs, json.loads(raw) if hdrs.get("content-type", "").startswith("application/json") else raw


def _invalid(mock: Mock, body: Any, headers: dict[str, str] | None = None, status: int = 400) -> str:
    code, hdrs, answer = _post(mock, "/v1/messages", body, headers)
    assert code == status, answer
    assert set(answer) == {"type", "error", "request_id"} and answer["type"] == "error", answer
    assert hdrs["request-id"] == answer["request_id"]
    assert set(answer["error"]) == {"type", "message"}
    return answer["error"]["type"] + ": " + answer["error"]["message"]


def _sse(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# --- Anthropic: answers ------------------------------------------------------------------


def test_message_answer_shape_and_usage(client: anthropic.Anthropic, claude: Mock) -> None:
    claude.clear()
    msg = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO, system="Be terse.",
                                 metadata={"user_id": "u-1"}, extra_body={"temperature": 0.5})
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == MODEL
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == TEXT16
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    assert msg.usage.output_tokens == 16 and msg.usage.input_tokens >= 1
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (7, 3)

    (seen,) = claude.requests()
    assert seen["path"] == "/v1/messages" and seen["body"]["system"] == "Be terse."
    assert seen["headers"]["anthropic-version"] and "test-key" in seen["headers"].get("authorization", "")

    code, hdrs, raw = _post(claude, "/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": HELLO},
                            {"x-mock-cache-read": "11", "x-mock-input-tokens": "40"})
    assert code == 200 and hdrs["request-id"].startswith("req_")
    assert set(raw) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert raw["stop_reason"] == "max_tokens" and raw["content"] == [{"type": "text", "text": TEXT16[:25]}]
    usage = raw["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (40, 5)
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (11, 3)


def test_stop_sequences_and_thinking(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO, stop_sequences=["tok3"])
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "tok3")
    assert msg.content[0].text == "tok0 tok1 tok2 "

    msg = client.messages.create(model=MODEL, max_tokens=2048, messages=HELLO,
                                 thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking and msg.content[0].signature


def test_streaming_with_the_sdk_helper(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT16 and final.content[0].text == TEXT16
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16 and final.usage.input_tokens >= 1
    assert (final.usage.cache_read_input_tokens, final.usage.cache_creation_input_tokens) == (7, 3)


def test_stream_event_sequence(claude: Mock) -> None:
    code, hdrs, raw = _post(claude, "/v1/messages",
                            {"model": MODEL, "max_tokens": 64, "messages": HELLO, "stream": True},
                            {"x-mock-tokens": "4"})
    assert code == 200 and hdrs["content-type"].startswith("text/event-stream")
    events = _sse(raw)
    assert [e for e, _ in events] == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * 4,
        "content_block_stop", "message_delta", "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["output_tokens"] == 1 and start["usage"]["cache_read_input_tokens"] == 7
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [d["delta"] for _, d in events[3:7]] == [{"type": "text_delta", "text": f"tok{i} "} for i in range(4)]
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 4


def test_error_mid_stream_surfaces_as_sdk_error(client: anthropic.Anthropic, claude: Mock) -> None:
    got: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info, client.messages.stream(
            model=MODEL, max_tokens=64, messages=HELLO, extra_headers={"x-mock-error-after": "3"}) as stream:
        got.extend(stream.text_stream)  # what came before the error stays
    assert got == ["tok0 ", "tok1 ", "tok2 "]
    assert info.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}

    _, _, raw = _post(claude, "/v1/messages", {"model": MODEL, "max_tokens": 64, "messages": HELLO, "stream": True},
                      {"x-mock-error-after": "1"})
    events = _sse(raw)
    assert [e for e, _ in events][-2:] == ["content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


# --- Anthropic: tools ----------------------------------------------------------------------


def test_tool_round_trip(client: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "What's the weather in Paris?"}]
    msg = client.messages.create(model=MODEL, max_tokens=256, messages=ask, tools=[WEATHER_TOOL])
    assert msg.stop_reason == "tool_use"
    call = msg.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    assert call.input == {"location": "mock location", "unit": "celsius"}

    follow = [*ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C sunny"}]}]
    answer = client.messages.create(model=MODEL, max_tokens=256, messages=follow, tools=[WEATHER_TOOL])
    assert answer.stop_reason == "end_turn" and answer.content[0].text == TEXT16

    # No tool asked for: plain text, even with tools on offer.
    plain = client.messages.create(model=MODEL, max_tokens=256, messages=HELLO, tools=[WEATHER_TOOL])
    assert plain.stop_reason == "end_turn"


def test_tool_use_streams_input_json(client: anthropic.Anthropic, claude: Mock) -> None:
    ask = [{"role": "user", "content": "weather please"}]
    with client.messages.stream(model=MODEL, max_tokens=256, messages=ask, tools=[WEATHER_TOOL],
                                tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and [b.type for b in final.content] == ["tool_use"]
    assert final.content[0].input == {"location": "mock location", "unit": "celsius"}

    _, _, raw = _post(claude, "/v1/messages", {"model": MODEL, "max_tokens": 256, "messages": ask, "stream": True,
                                               "tools": [WEATHER_TOOL], "tool_choice": {"type": "any"}})
    events = _sse(raw)
    assert events[1][1]["content_block"]["type"] == "tool_use" and events[1][1]["content_block"]["input"] == {}
    fragments = [d["delta"]["partial_json"] for e, d in events if e == "content_block_delta"]
    assert len(fragments) > 2 and json.loads("".join(fragments)) == final.content[0].input
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_pairing_is_checked(claude: Mock) -> None:
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    orphan = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [use]},
              {"role": "user", "content": "never mind"}]
    body = {"model": MODEL, "max_tokens": 9, "tools": [WEATHER_TOOL], "messages": orphan}
    assert "without `tool_result` blocks" in _invalid(claude, body)
    stray = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]}]
    assert "unexpected `tool_use_id`" in _invalid(claude, {**body, "messages": stray})


# --- Anthropic: count_tokens, models, errors -------------------------------------------------


def test_count_tokens(client: anthropic.Anthropic, claude: Mock) -> None:
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO, system="Be terse.", tools=[WEATHER_TOOL])
    assert counted.input_tokens > 1
    msg = client.messages.create(model=MODEL, max_tokens=8, messages=HELLO, system="Be terse.", tools=[WEATHER_TOOL])
    assert msg.usage.input_tokens == counted.input_tokens
    code, _, answer = _post(claude, "/v1/messages/count_tokens", {"model": MODEL, "messages": HELLO, "max_tokens": 5})
    assert code == 400 and answer["error"]["message"] == "max_tokens: Extra inputs are not permitted"


def test_models_list_and_get(client: anthropic.Anthropic) -> None:
    page = client.models.list()
    assert [m.id for m in page.data] == [MODEL, "claude-mock-b"]
    assert all(m.type == "model" and m.display_name and m.created_at for m in page.data)
    first = client.models.list(limit=1)
    assert [m.id for m in first.data] == [MODEL] and first.has_more
    assert (first.first_id, first.last_id) == (MODEL, MODEL)
    assert client.models.retrieve("claude-mock-b").id == "claude-mock-b"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nope")


def test_validation_errors(client: anthropic.Anthropic, claude: Mock) -> None:
    ok = {"model": MODEL, "max_tokens": 10, "messages": HELLO}
    assert _invalid(claude, {"model": MODEL, "messages": HELLO}) == "invalid_request_error: max_tokens: Field required"
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=0, messages=HELLO)
    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in info.value.body["error"]["message"]

    cases = [
        ({**ok, "messages": []}, "at least one message"),
        ({**ok, "messages": [{"role": "assistant", "content": "hi"}]}, 'first message must use the "user" role'),
        ({**ok, "messages": [{"role": "system", "content": "hi"}]}, "messages.0.role"),
        ({**ok, "messages": [{"role": "user", "content": ""}]}, "non-empty content"),
        ({**ok, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "Input tag 'video'"),
        ({**ok, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AA=="}}]}]},
         "media_type"),
        ({**ok, "max_tokens": "10"}, "max_tokens: Input should be a valid integer"),
        ({**ok, "n": 2}, "n: Extra inputs are not permitted"),
        ({**ok, "temperature": 1.5}, "temperature"),
        ({**ok, "system": [{"type": "image"}]}, "system.0.type"),
        ({**ok, "tools": [{"name": "x"}]}, "input_schema: Field required"),
        ({**ok, "tool_choice": {"type": "any"}}, "tool_choice may only be specified while providing tools"),
        ({**ok, "stream": "yes"}, "stream"),
        ({**ok, "thinking": {"type": "enabled", "budget_tokens": 2048}}, "`max_tokens` must be greater"),
        ({k: v for k, v in ok.items() if k != "model"}, "model: Field required"),
    ]
    for body, expected in cases:
        error = _invalid(claude, body)
        assert error.startswith("invalid_request_error: ") and expected in error, (body, error)


def test_headers_are_required(claude: Mock) -> None:
    body = {"model": MODEL, "max_tokens": 10, "messages": HELLO}
    status, _, raw = http_request(claude.port, "POST", "/v1/messages", body, {"anthropic-version": "2023-06-01"})
    assert status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"
    status, _, raw = http_request(claude.port, "POST", "/v1/messages", body, {"x-api-key": "k"})
    assert status == 400 and json.loads(raw)["error"]["message"] == "anthropic-version: header is required"
    status, _, raw = http_request(claude.port, "POST", "/v1/messages", body,
                                  {**VERSION_HEADERS, "content-type": "text/plain"})
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"


def test_error_statuses(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_headers={"x-mock-status": "529"})
    assert info.value.status_code == 529
    assert info.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=HELLO, extra_headers={"x-mock-status": "429"})
    assert info.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="claude-unknown", max_tokens=10, messages=HELLO)
    assert info.value.body["error"] == {"type": "not_found_error", "message": "model: claude-unknown"}


def test_api_key_flag(start_mock) -> None:
    mock = start_mock("keyed", "--api", "anthropic", "--api-key", "sk-right", "--error-after", "2")
    good = anthropic.Anthropic(base_url=f"http://{mock.address}", api_key="sk-right", max_retries=0)
    assert good.messages.create(model="m", max_tokens=4, messages=HELLO).usage.output_tokens == 4
    # --error-after applies to every stream
    with pytest.raises(anthropic.APIStatusError), good.messages.stream(model="m", max_tokens=4, messages=HELLO) as s:
        s.until_done()
    bad = anthropic.Anthropic(base_url=f"http://{mock.address}", api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model="m", max_tokens=4, messages=HELLO)
    assert info.value.body["error"]["type"] == "authentication_error"
    status, _, _ = http_request(mock.port, "POST", "/v1/messages", {"model": "m", "max_tokens": 4, "messages": HELLO},
                                {"x-api-key": "sk-right", "anthropic-version": "2023-06-01"})
    assert status == 200


# --- Azure OpenAI ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azure() -> Iterator[Mock]:
    mock = Mock("azure", "--api", "azure", "--model", "chat-deploy", "--model", "emb-deploy", "--api-key", "az-key")
    try:
        yield mock
    finally:
        mock.stop()
    assert "Traceback" not in mock.proc.log_path.read_text(errors="replace")


def _azure_client(mock: Mock, key: str = "az-key") -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=f"http://{mock.address}", api_key=key, api_version="2024-10-21",
                              max_retries=0)


def test_azure_chat_and_embeddings(azure: Mock) -> None:
    client = _azure_client(azure)
    azure.clear()
    chat = client.chat.completions.create(model="chat-deploy", messages=[{"role": "user", "content": "hi"}])
    assert chat.model == "chat-deploy" and chat.choices[0].message.content == TEXT16
    (seen,) = azure.chat_requests()
    assert seen["path"] == "/openai/deployments/chat-deploy/chat/completions"
    assert seen["query"] == "api-version=2024-10-21" and seen["headers"]["api-key"] == "az-key"

    chunks = list(client.chat.completions.create(model="chat-deploy", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT16

    emb = client.embeddings.create(model="emb-deploy", input=["a", "b"])
    assert emb.model == "emb-deploy" and len(emb.data) == 2 and len(emb.data[0].embedding) == 8

    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "DeploymentNotFound"


def test_azure_api_version_and_key_required(azure: Mock) -> None:
    path = "/openai/deployments/chat-deploy/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    status, _, raw = http_request(azure.port, "POST", path, body, {"api-key": "az-key"})
    assert status == 404 and json.loads(raw) == {"error": {"code": "404", "message": "Resource not found"}}
    status, _, raw = http_request(azure.port, "POST", path + "?api-version=latest-ish", body, {"api-key": "az-key"})
    assert status == 400 and json.loads(raw)["error"] == {"code": "BadRequest", "message": "API version not supported"}
    status, _, raw = http_request(azure.port, "POST", path + "?api-version=2024-10-21", body)
    assert status == 401 and json.loads(raw)["error"]["code"] == "401"
    status, _, raw = http_request(azure.port, "POST", path + "?api-version=2024-10-21", body, {"api-key": "az-key"})
    assert status == 200 and json.loads(raw)["model"] == "chat-deploy"  # the body needs no model

    with pytest.raises(openai.AuthenticationError):
        _azure_client(azure, key="wrong").chat.completions.create(
            model="chat-deploy", messages=[{"role": "user", "content": "hi"}])


def test_azure_v1_routes(azure: Mock) -> None:
    client = openai.OpenAI(base_url=f"http://{azure.address}/openai/v1", api_key="az-key", max_retries=0)
    chat = client.chat.completions.create(model="chat-deploy", messages=[{"role": "user", "content": "hi"}])
    assert chat.model == "chat-deploy"
    assert [m.id for m in client.models.list()] == ["chat-deploy", "emb-deploy"]


def test_api_flag_defaults_to_openai_and_status_flag_speaks_anthropic(start_mock) -> None:
    plain = start_mock("plain")
    status, _, raw = http_request(plain.port, "POST", "/v1/messages", {"model": "m", "max_tokens": 4, "messages": HELLO},
                                  VERSION_HEADERS)
    assert status == 404 and set(json.loads(raw)["error"]) == {"message", "type", "param", "code"}
    assert http_request(plain.port, "POST", "/v1/chat/completions",
                        {"model": "m", "messages": [{"role": "user", "content": "hi"}]})[0] == 200

    broken = start_mock("broken", "--api", "anthropic", "--status", "529")
    status, _, raw = http_request(broken.port, "POST", "/v1/messages",
                                  {"model": "m", "max_tokens": 4, "messages": HELLO}, VERSION_HEADERS)
    assert status == 529 and json.loads(raw)["error"] == {"type": "overloaded_error", "message": "Overloaded"}

"""What both translators share: the registry, client error shapes, malformed input, a round trip
through both, SSE framing, and the official SDKs reading translated streams and errors (pure, no
processes)."""

from __future__ import annotations

import json

import pytest

from modelyard.gateway.providers import PROVIDERS
from modelyard.gateway.translators import TranslationError, client_error
from modelyard.gateway.translators.anthropic_openai import AnthropicToOpenAI
from modelyard.gateway.translators.anthropic_openai import build_request as a2o_request
from modelyard.gateway.translators.common import SSEParser
from modelyard.gateway.translators.openai_anthropic import OpenAIToAnthropic
from tests.unit.translators.samples import (
    A2O,
    ANTHROPIC_EVENTS,
    O2A,
    OPENAI_CHUNKS,
    TOOL_CONVERSATION,
    WEATHER_TOOL,
    anthropic_sse,
    o2a,
    openai_sse,
    sdk_clients,
    user,
)

# ---------------------------------------------------------------- registry


def test_registry():
    # Which translator each (client API, backend schema) pair takes is its provider's to say.
    assert PROVIDERS["OpenAI"].translators["openai"] is None
    assert PROVIDERS["Anthropic"].translators["anthropic"] is None
    assert isinstance(PROVIDERS["Anthropic"].translators["openai"], OpenAIToAnthropic)
    assert isinstance(PROVIDERS["OpenAI"].translators["anthropic"], AnthropicToOpenAI)
    translated = {(client, schema) for schema, p in PROVIDERS.items()
                  for client, t in p.translators.items() if t is not None}
    # Azure OpenAI and Cohere take OpenAI's bodies: the same translator as OpenAI.
    assert translated == {("openai", "Anthropic"), ("anthropic", "OpenAI"), ("anthropic", "AzureOpenAI"),
                          ("anthropic", "Cohere"), ("openai", "AWSBedrock"), ("anthropic", "AWSBedrock"),
                          ("openai", "AWSAnthropic"), ("anthropic", "AWSAnthropic"), ("openai", "GCPVertexAI"),
                          ("openai", "GCPAnthropic"), ("anthropic", "GCPAnthropic")}
    # Where a translated request goes is the provider's path, after the backend's prefix.
    assert PROVIDERS["Anthropic"].paths["/chat/completions"] == "/v1/messages"
    assert PROVIDERS["OpenAI"].paths["/messages"] == "/chat/completions"


def test_client_error_shapes():
    err = TranslationError("n > 1 is not supported", "n")
    status, body = client_error("openai", err)
    assert status == 400 and json.loads(body)["error"] == {
        "message": "n > 1 is not supported", "type": "invalid_request_error", "param": "n",
        "code": "unsupported_parameter"}
    status, body = client_error("anthropic", err)
    assert status == 400 and json.loads(body) == {
        "type": "error", "error": {"type": "invalid_request_error", "message": "n > 1 is not supported"}}

# ---------------------------------------------------------------- malformed input, both ways

@pytest.mark.parametrize("body", [{"messages": "hi"}, {"messages": [{"role": "user", "content": [1]}]},
                                  {"messages": [{"role": "user", "content": "x"}], "tools": "abc"},
                                  {"messages": ["x"]}])
def test_request_malformed_is_a_translation_error(body):
    with pytest.raises(TranslationError):
        O2A.request(body, "m")
    with pytest.raises(TranslationError):
        A2O.request(body, "m")


def test_malformed_answers_are_relayed():
    for body in (b'{"type": "message", "content": [1]}', b'{"choices": [1]}'):
        for t in (O2A, A2O):
            out, usage, _ = t.response(body)
            assert usage is None and (out == body or json.loads(out))

# ---------------------------------------------------------------- through both translators

def test_round_trip_openai_anthropic_openai():
    """An OpenAI conversation through Anthropic's shape and back keeps its meaning."""
    anthropic = o2a(messages=[{"role": "system", "content": "S"}, *TOOL_CONVERSATION], tools=[WEATHER_TOOL],
                    tool_choice="required", stop=["x"], temperature=0.4)
    back = a2o_request(anthropic, "gpt-x")
    assert back["messages"] == [
        {"role": "system", "content": "S"}, user("Weather in Paris and Rome?"),
        TOOL_CONVERSATION[1], TOOL_CONVERSATION[2], {**TOOL_CONVERSATION[3], "content": "25C"}, TOOL_CONVERSATION[4]]
    assert back["tools"] == [WEATHER_TOOL] and back["tool_choice"] == "required"
    assert back["stop"] == ["x"] and back["temperature"] == 0.4

# ---------------------------------------------------------------- SSE framing


def test_sse_parser_framing():
    p = SSEParser()
    assert p.feed(b": keep-alive\n\nevent: a\ndata: 1\ndata: 2\n\nretry: 5\n\nda") == [("a", "1\n2")]
    assert p.feed(b"ta:x\r") == []
    assert p.feed(b"\n\r\ndata: y\r\r") == [(None, "x"), (None, "y")]
    assert p.flush() == []


# ---------------------------------------------------------------- the official SDKs read what we write


ASK = {"model": "m", "messages": [user("hi")]}


def test_openai_sdk_reads_translated_stream():
    st = O2A.stream(True)
    oai, _ = sdk_clients(st.feed(anthropic_sse(ANTHROPIC_EVENTS)) + st.flush())
    with oai.chat.completions.stream(**ASK) as s:
        final = s.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Okay, let's check the weather — é中 🌧."
    assert choice.message.tool_calls[0].function.arguments == '{"location": "San Francisco, CA"}'
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (1492, 89)


def test_anthropic_sdk_reads_translated_stream():
    st = A2O.stream(False)
    _, ant = sdk_clients(st.feed(openai_sse(OPENAI_CHUNKS)) + st.flush())
    with ant.messages.stream(max_tokens=10, **ASK) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert final.content[2].input == {"location": "Paris"} and final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (200, 100, 40)


def test_sdks_raise_on_translated_errors():
    import anthropic
    import openai

    st = O2A.stream(True)
    oai, _ = sdk_clients(st.feed(anthropic_sse([ANTHROPIC_EVENTS[0], {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}])))
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(oai.chat.completions.create(stream=True, **ASK))
    status, body = A2O.error(429, b'{"error": {"message": "slow down", "type": "rate_limit_error"}}')
    _, ant = sdk_clients(body, status, "application/json")
    with pytest.raises(anthropic.RateLimitError, match="slow down"):
        ant.messages.create(max_tokens=10, **ASK)
    status, body = O2A.error(529, b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}')
    oai, _ = sdk_clients(body, status, "application/json")
    with pytest.raises(openai.InternalServerError, match="Overloaded"):
        oai.chat.completions.create(**ASK)

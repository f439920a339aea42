"""Requests, answers and event streams shared by the translator tests, after the documented
examples of the OpenAI chat completions and Anthropic Messages APIs, and the helpers that read what a
translator wrote (the official SDKs among them)."""

from __future__ import annotations

import importlib
import json
from typing import Any

from modelyard.gateway.translators.anthropic_openai import AnthropicToOpenAI
from modelyard.gateway.translators.anthropic_openai import build_request as a2o_request
from modelyard.gateway.translators.openai_anthropic import OpenAIToAnthropic
from modelyard.gateway.translators.openai_anthropic import build_request as o2a_request

O2A = OpenAIToAnthropic()
A2O = AnthropicToOpenAI()
PNG = "iVBORw0KGgo="


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def o2a(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return o2a_request(body, "claude-x")


def a2o(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    body.setdefault("max_tokens", 100)
    return a2o_request(body, "gpt-x")

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}

TOOL_CONVERSATION = [
    user("Weather in Paris and Rome?"),
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location":"Rome"}'}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
    user("Thanks. Which is warmer?"),
]

def anthropic_sse(events: list[dict[str, Any]], crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    return "".join(f"event: {e['type']}{nl}data: {json.dumps(e)}{nl}{nl}" for e in events).encode()


ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 472, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 1000,
                  "output_tokens": 2}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Weather? "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Use the tool."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "ping"},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Okay, let's check "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "the weather — é中 🌧."}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"locat"}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta",
                                                          "partial_json": "ion\": \"San Francisco, CA\"}"}},
    {"type": "content_block_stop", "index": 2},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
]

def chunk(delta=None, finish=None, usage=None, choices=True, **choice):
    c: dict[str, Any] = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                         "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish,
                                      **choice}] if choices else []}
    if usage is not None:
        c["usage"] = usage
    return c


OPENAI_USAGE = {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340,
                "prompt_tokens_details": {"cached_tokens": 100}}
OPENAI_CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Think "}),
    chunk({"reasoning_content": "hard."}),
    chunk({"content": "Sure — é中 🌧, "}),
    chunk({"content": "checking."}),
    chunk({"tool_calls": [{"index": 0, "id": "call_A", "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": \"Paris\"}"}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "call_B", "type": "function",
                           "function": {"name": "get_time", "arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
    chunk(usage=OPENAI_USAGE, choices=False),
]


def openai_sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + (b"data: [DONE]\n\n" if done else b"")


def feed_all(st: Any, data: bytes, cuts: list[int] | None = None) -> bytes:
    """What a stream translator sends for `data` cut at `cuts`, its flush included."""
    bounds = [0, *(cuts or []), len(data)]
    return b"".join(st.feed(data[a:b]) for a, b in zip(bounds, bounds[1:])) + st.flush()


def sse_pairs(out: bytes) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) of each whole SSE event; "[DONE]" as it is."""
    parsed: list[tuple[str | None, Any]] = []
    assert out.endswith(b"\n\n")
    for part in out[:-2].split(b"\n\n"):
        lines = part.split(b"\n")
        name = lines[0][7:].decode() if lines[0].startswith(b"event: ") else None
        data = b"\n".join(line[6:] for line in lines if line.startswith(b"data: "))
        parsed.append((name, "[DONE]" if data == b"[DONE]" else json.loads(data)))
    return parsed


DONE = b"data: [DONE]\n\n"


def events(out: bytes) -> list[Any]:
    """An OpenAI SSE stream's events: each chunk decoded, "[DONE]" as it is."""
    assert out.endswith(b"\n\n")
    parts = out[:-2].split(b"\n\n")
    assert all(p.startswith(b"data: ") for p in parts)
    return [p[6:].decode() if p == DONE[:-2] else json.loads(p[6:]) for p in parts]


def deltas(out: bytes) -> list[dict[str, Any]]:
    """The delta of each OpenAI chunk that has a choice."""
    return [e["choices"][0]["delta"] for e in events(out) if isinstance(e, dict) and e.get("choices")]


def sdk_clients(body: bytes, status: int = 200, ctype: str = "text/event-stream"):
    """An OpenAI and an Anthropic client whose every request gets this answer."""
    import anthropic
    import openai

    # Use the HTTP library the SDKs are built on (httpx, or a fork of it), found from their client class.
    base = next(c for c in type(openai.OpenAI(api_key="x")._client).__mro__ if not c.__module__.startswith("openai"))
    httpx = importlib.import_module(base.__module__.split(".")[0])

    def client():
        transport = httpx.MockTransport(lambda _: httpx.Response(status, content=body, headers={"content-type": ctype}))
        return httpx.Client(transport=transport)

    return (openai.OpenAI(api_key="x", base_url="http://t/v1", max_retries=0, http_client=client()),
            anthropic.Anthropic(api_key="x", base_url="http://t", max_retries=0, http_client=client()))

"""The bundled mock OpenAI backend, exercised as a real process with the official SDK and raw HTTP."""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import ssl
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import trustme

from modelyard.loadtest.mock import backend as mock_backend
from tests.support import Proc, free_port, http_request, wait_http
from tests.integration.mock_wire import CHAT, error_fields, raw_stream

MODELS = ("mock-a", "mock-b")


def _mock(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelyard.loadtest.mock.backend", *args]


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    p = free_port()
    proc = Proc(_mock("--port", str(p), "--model", MODELS[0], "--model", MODELS[1],
                      "--name", "alpha", "--embedding-dim", "16"))
    try:
        wait_http(p, "/health", proc=proc)
        yield p
    finally:
        proc.stop()
    output = proc.log_path.read_text(errors="replace")  # the log is closed once stopped
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)


def _sse_events(body: bytes) -> list[bytes]:
    assert body.endswith(b"\n\n")
    events = body[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") for e in events)
    return [e[6:] for e in events]


# --- official SDK -----------------------------------------------------------------


def test_chat(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(**CHAT)
    assert raw.headers["x-mock-name"] == "alpha"
    resp = raw.parse()
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "mock-a"
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "".join(f"tok{i} " for i in range(16))
    assert resp.usage.completion_tokens == 16
    assert resp.usage.prompt_tokens == 3  # ceil(len("hello there") / 4)
    assert resp.usage.total_tokens == 19
    assert resp.usage.prompt_tokens_details.cached_tokens == 0


def test_chat_max_tokens_and_token_header(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(**CHAT, max_completion_tokens=3)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == "tok0 tok1 tok2 "
    assert resp.usage.completion_tokens == 3
    resp = client.chat.completions.create(**CHAT, extra_headers={"x-mock-tokens": "2", "x-mock-delay-ms": "10"})
    assert resp.usage.completion_tokens == 2
    assert resp.choices[0].finish_reason == "stop"


def test_chat_list_content_prompt_tokens(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "x" * 40}]}]
    resp = client.chat.completions.create(model="mock-b", messages=messages)
    assert resp.usage.prompt_tokens == 10


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True}))
    first, *tokens, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert len(tokens) == 16
    assert "".join(c.choices[0].delta.content for c in tokens) == "".join(f"tok{i} " for i in range(16))
    assert finish.choices[0].finish_reason == "stop"
    assert all(c.usage is None and c.object == "chat.completion.chunk" for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    assert usage.choices == []
    assert usage.usage.completion_tokens == 16


def test_chat_stream_arrives_incrementally(port: int) -> None:
    status, headers, body = http_request(port, "POST", "/v1/chat/completions", {**CHAT, "stream": True},
                                         headers={"x-mock-tokens": "3"})
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-mock-name"] == "alpha"
    events = _sse_events(body)
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 5  # role, 3 tokens, finish; no usage chunk unless asked
    assert all("usage" not in c for c in chunks)
    assert chunks[1]["choices"][0]["delta"] == {"content": "tok0 "}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_completions(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="mock-a", prompt="say something", max_tokens=4)
    assert resp.object == "text_completion"
    assert resp.id.startswith("cmpl-")
    assert resp.choices[0].text == "tok0 tok1 tok2 tok3 "
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.prompt_tokens == 4
    resp = client.completions.create(model="mock-a", prompt=[[1, 2, 3], "abcd"])
    assert resp.usage.prompt_tokens == 4
    assert resp.choices[0].finish_reason == "stop"


def test_completions_stream(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="mock-a", prompt="hi", stream=True,
                                            stream_options={"include_usage": True},
                                            extra_headers={"x-mock-tokens": "5"}))
    *tokens, finish, usage = chunks
    assert "".join(c.choices[0].text for c in tokens) == "tok0 tok1 tok2 tok3 tok4 "
    assert finish.choices[0].finish_reason == "stop"
    assert usage.choices == [] and usage.usage.completion_tokens == 5


def test_embeddings(client: openai.OpenAI) -> None:
    default = client.embeddings.create(model="mock-a", input=["alpha", "beta"])  # SDK asks for base64
    floats = client.embeddings.create(model="mock-a", input=["alpha", "beta"], encoding_format="float")
    assert [d.index for d in default.data] == [0, 1]
    assert all(len(d.embedding) == 16 for d in default.data)
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens == 3  # ceil(5 / 4) + ceil(4 / 4)
    again = client.embeddings.create(model="mock-a", input="alpha", encoding_format="float", dimensions=4)
    assert len(again.data[0].embedding) == 4


def test_embeddings_base64_wire_format(port: int) -> None:
    body = {"model": "mock-a", "input": [[1, 2, 3]], "encoding_format": "base64"}
    status, _, raw = http_request(port, "POST", "/v1/embeddings", body)
    assert status == 200
    item = json.loads(raw)["data"][0]
    values = struct.unpack("<16f", base64.b64decode(item["embedding"]))
    assert all(-1.0 <= v < 1.0 for v in values)
    status, _, raw = http_request(port, "POST", "/v1/embeddings", {**body, "encoding_format": "float"})
    assert tuple(json.loads(raw)["data"][0]["embedding"]) == values


def test_models(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert [m.id for m in models] == list(MODELS)
    assert all(m.object == "model" and m.owned_by == "mock" for m in models)


def test_path_prefixes(port: int) -> None:
    for path in ("/v1beta/openai/chat/completions", "/openai/v1/chat/completions", "/chat/completions"):
        status, _, body = http_request(port, "POST", path, CHAT)
        assert status == 200, path
        assert json.loads(body)["object"] == "chat.completion"


# --- raw HTTP: errors and controls ------------------------------------------------


def test_invalid_json(port: int) -> None:
    status, headers, body = http_request(port, "POST", "/v1/chat/completions", raw=b"{not json")
    assert status == 400
    assert headers["x-mock-name"] == "alpha"
    assert error_fields(body)["type"] == "invalid_request_error"


def test_missing_model_and_messages(port: int) -> None:
    status, _, body = http_request(port, "POST", "/v1/chat/completions", {"messages": [{"role": "user"}]})
    assert status == 400 and error_fields(body)["type"] == "invalid_request_error"
    status, _, body = http_request(port, "POST", "/v1/chat/completions", {"model": "mock-a", "messages": []})
    assert status == 400 and error_fields(body)["param"] == "messages"


def test_unknown_model(port: int, client: openai.OpenAI) -> None:
    status, _, body = http_request(port, "POST", "/v1/chat/completions", {**CHAT, "model": "gpt-x"})
    assert status == 404
    assert error_fields(body)["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gpt-x", input="a")


def test_unknown_path(port: int) -> None:
    status, _, body = http_request(port, "GET", "/v1/nothing/here")
    assert status == 404
    assert "Invalid URL" in error_fields(body)["message"]


def test_status_header(port: int, client: openai.OpenAI) -> None:
    status, headers, body = http_request(port, "POST", "/v1/chat/completions", CHAT, headers={"x-mock-status": "500"})
    assert status == 500 and error_fields(body)["type"] == "server_error"
    assert headers["x-mock-name"] == "alpha"
    status, headers, body = http_request(port, "POST", "/v1/chat/completions", CHAT, headers={"x-mock-status": "429"})
    assert status == 429 and headers["retry-after"] == "1"
    assert error_fields(body)["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(**CHAT, extra_headers={"x-mock-status": "401"})


def test_request_recording(port: int) -> None:
    assert http_request(port, "DELETE", "/mock/requests")[0] == 200
    http_request(port, "POST", "/v1/chat/completions?trace=1", CHAT,
                 headers={"Authorization": "Bearer sk-test", "X-Custom": "yes"})
    status, _, body = http_request(port, "GET", "/mock/requests")
    assert status == 200
    [record] = json.loads(body)
    assert record["method"] == "POST"
    assert record["path"] == "/v1/chat/completions"
    assert record["query"] == "trace=1"
    assert record["headers"]["authorization"] == "Bearer sk-test"
    assert record["headers"]["x-custom"] == "yes"
    assert record["body"] == CHAT
    assert record["raw_len"] == len(json.dumps(CHAT))
    http_request(port, "DELETE", "/mock/requests")
    assert json.loads(http_request(port, "GET", "/mock/requests")[2]) == []


def test_hang_header(port: int) -> None:
    with pytest.raises(TimeoutError):
        http_request(port, "POST", "/v1/chat/completions", CHAT, headers={"x-mock-hang": "1"}, timeout=0.3)


def test_die_after_breaks_the_chunked_stream(port: int) -> None:
    data = raw_stream(port, 2)
    assert b"transfer-encoding: chunked" in data.lower()
    assert data.count(b'"content":"tok') == 2
    assert b"[DONE]" not in data and b"finish_reason\":\"stop" not in data
    assert not data.endswith(b"0\r\n\r\n")  # no terminating chunk: the body is cut short


def test_die_after_sdk_sees_broken_stream(client: openai.OpenAI) -> None:
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):  # the SDK's wrapper for the transport's "incomplete read"
        for chunk in client.chat.completions.create(**CHAT, stream=True, extra_headers={"x-mock-die-after": "3"}):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["tok0 ", "tok1 ", "tok2 "]


def test_flags_parse_into_config() -> None:
    parser = argparse.ArgumentParser()
    mock_backend.add_arguments(parser)
    cfg = mock_backend.config_from_args(parser.parse_args([]))
    assert (cfg.status, cfg.retry_after, cfg.hang, cfg.die_after) == (None, None, False, None)
    args = ["--status", "502", "--retry-after", "3", "--hang", "--die-after", "0"]
    cfg = mock_backend.config_from_args(parser.parse_args(args))
    assert (cfg.status, cfg.retry_after, cfg.hang, cfg.die_after) == (502, 3, True, 0)
    for bad in (["--status", "200"], ["--status", "600"], ["--retry-after", "-1"], ["--die-after", "-2"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


# --- in process: rates that a shared server process cannot use ---------------------


class _FakeHeaders(dict):
    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return list(super().items())


class _FakeScope:
    def __init__(self, method: str, path: str) -> None:
        self.method, self.path, self.query_string = method, path, ""
        self.client = "127.0.0.1:1"
        self.headers = _FakeHeaders()


class _FakeProto:
    def __init__(self, body: bytes) -> None:
        self.body, self.status, self.sent = body, 0, b""

    async def __call__(self) -> bytes:
        return self.body

    async def client_disconnect(self) -> None:
        return None

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.sent = status, body


def test_error_rate_in_process() -> None:
    app = mock_backend.MockApp(mock_backend.MockConfig(error_rate=1.0))
    proto = _FakeProto(json.dumps(CHAT).encode())
    asyncio.run(app.__rsgi__(_FakeScope("POST", "/v1/chat/completions"), proto))
    assert proto.status == 500 and error_fields(proto.sent)["type"] == "server_error"

    app = mock_backend.MockApp(mock_backend.MockConfig(stall_rate=1.0))
    proto = _FakeProto(json.dumps(CHAT).encode())
    asyncio.run(app.__rsgi__(_FakeScope("POST", "/v1/chat/completions"), proto))
    assert proto.status == 0  # never answered; returned only because the fake client left


def test_hang_wins_over_status_in_process() -> None:
    app = mock_backend.MockApp(mock_backend.MockConfig(status=500, hang=True))
    proto = _FakeProto(json.dumps(CHAT).encode())
    asyncio.run(app.__rsgi__(_FakeScope("POST", "/v1/chat/completions"), proto))
    assert proto.status == 0


# --- TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, ssl.SSLContext]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder: Path = tmp_path_factory.mktemp("tls")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    p = free_port()
    proc = Proc(_mock("--port", str(p), "--tls-cert", str(folder / "cert.pem"), "--tls-key", str(folder / "key.pem")))
    try:
        _wait_https(p, ctx, proc)
        yield p, ctx
    finally:
        proc.stop()
    assert "mock listening on https://127.0.0.1" in proc.log_path.read_text(errors="replace")


def _wait_https(port: int, ctx: ssl.SSLContext, proc: Proc) -> None:
    deadline = time.monotonic() + 20
    while True:
        if not proc.alive():
            raise RuntimeError(proc.output())
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            conn.close()


def test_tls(tls_server: tuple[int, ssl.SSLContext]) -> None:
    port, ctx = tls_server
    client = openai.OpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                           http_client=openai.DefaultHttpxClient(verify=ctx))
    resp = client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}])
    assert resp.model == "anything"  # no --model: every model is served
    assert [m.id for m in client.models.list()] == ["mock-model"]
    chunks = list(client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    with pytest.raises(openai.APIConnectionError):  # the abort works under TLS too
        list(client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, extra_headers={"x-mock-die-after": "1"}))

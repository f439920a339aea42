"""Large answers, backpressure towards a client that stops reading, client keys on failover,
paths and headers built from client input, and bounded upstream heads (issue 12)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator

import anthropic
import pytest

from tests.conftest import Gateway, Mock, assert_openai_error, openai_backend, write_config
from tests.resources import keyed_backend
from tests.support import wait_for

MB = 1_000_000
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
STALL_SECONDS = 30.0
STALL_STREAM = 256 * MB  # what the upstream would send the client that reads nothing


def _raw_request(port: int, path: str, body: dict, headers: dict[str, str]) -> socket.socket:
    data = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n{head}"
                 f"content-length: {len(data)}\r\n\r\n".encode() + data)
    return sock


def _descendants(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            children = open(f"/proc/{pid}/task/{task}/children").read().split()
        except FileNotFoundError:
            continue
        for child in map(int, children):
            out += [child, *_descendants(child)]
    return out


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _worker_pids(gw: Gateway) -> list[int]:
    return [p for p in _descendants(gw.proc.pid)
            if b"worker" in open(f"/proc/{p}/cmdline", "rb").read()]


def _access_lines(gw: Gateway) -> list[dict]:
    return [json.loads(line) for line in gw.proc.output().splitlines() if line.startswith('{"time"')]


# -- a client that reads nothing for 30 s; started first so that the wait overlaps the other tests --


@pytest.fixture(scope="module")
def stalled() -> Iterator[dict]:
    mock = Mock("fast")
    gw = Gateway("--backend", f"http://{mock.address}/v1", workers=1)
    (worker,) = _worker_pids(gw)
    before = _rss_mb(worker)
    sock = _raw_request(gw.port, "/v1/chat/completions", {**CHAT, "stream": True},
                        {"x-mock-bytes": str(STALL_STREAM)})
    try:
        yield {"gw": gw, "mock": mock, "sock": sock, "worker": worker, "before": before,
               "started": time.monotonic()}
    finally:
        sock.close()
        gw.stop()
        mock.stop()


def test_stalled_client_starts(stalled) -> None:
    # Only opens the connection (the fixture); the check is the module's last test.
    assert stalled["sock"].fileno() >= 0


# -- large answers, one gateway and mock for all --


@pytest.fixture(scope="module")
def big() -> Iterator[dict]:
    mock = Mock("big", "--tokenize")
    gw = Gateway("--backend", f"http://{mock.address}/v1", workers=1)
    try:
        yield {"gw": gw, "mock": mock}
    finally:
        gw.stop()
        mock.stop()


@pytest.mark.parametrize("size", [1 * MB, 20 * MB, 100 * MB])
def test_large_whole_answers_arrive(big, size: int) -> None:
    gw = big["gw"]
    status, headers, body = gw.post("/v1/chat/completions", CHAT, {"x-mock-bytes": str(size)}, timeout=120)
    assert status == 200, body[:300]
    assert int(headers["content-length"]) == len(body) > size
    answer = json.loads(body)
    assert len(answer["choices"][0]["message"]["content"]) == size
    # the usage block at the end of the answer was found although the body was relayed in pieces
    line = wait_for(lambda: next((x for x in reversed(_access_lines(gw)) if x["operation"] == "chat"
                                  and x["stream"] is False), None), timeout=10)
    assert line["status"] == 200 and line["tokens"]["output"] == answer["usage"]["completion_tokens"]
    assert line["response_model"] == "m"


@pytest.mark.parametrize("size", [1 * MB, 20 * MB, 100 * MB])
def test_large_streams_arrive(big, size: int) -> None:
    status, _, body = big["gw"].post("/v1/chat/completions", {**CHAT, "stream": True}, {"x-mock-bytes": str(size)},
                                     timeout=120)
    assert status == 200
    content = 0
    for event in body.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for choice in json.loads(event[6:])["choices"]:
                content += len(choice["delta"].get("content") or "")
    assert content == size and body.endswith(b"data: [DONE]\n\n")


def test_large_embeddings_and_tokenize(big) -> None:
    gw = big["gw"]
    status, headers, body = gw.post("/v1/embeddings", {"model": "m", "input": "hi"}, {"x-mock-bytes": str(20 * MB)},
                                    timeout=120)
    assert status == 200 and len(body) > 20 * MB and json.loads(body)["usage"]["prompt_tokens"] >= 1
    # vLLM's /tokenize answers one id per token: 3 M words make about 23 MB of ids
    status, _, body = gw.post("/tokenize", {"model": "m", "prompt": "a " * 3_000_000}, timeout=120)
    assert status == 200 and len(body) > 20 * MB and json.loads(body)["count"] == 3_000_000


def test_translated_answers_are_bounded(big) -> None:
    # An Anthropic client on an OpenAI backend: the answer is decoded to be translated.
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{big['gw'].port}", api_key="k", max_retries=0,
                                 timeout=120)
    msg = client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                                 extra_headers={"x-mock-bytes": str(20 * MB)})
    assert len(msg.content[0].text) == 20 * MB
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                                extra_headers={"x-mock-bytes": str(20 * MB)}) as stream:
        assert sum(len(t) for t in stream.text_stream) == 20 * MB
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"x-mock-bytes": str(100 * MB)})
    assert info.value.status_code == 502
    assert info.value.body["error"]["type"] == "api_error" and "64 MiB" in info.value.body["error"]["message"]


def test_oversized_upstream_heads_are_refused(big) -> None:
    gw = big["gw"]
    for headers in ({"x-mock-header-bytes": str(16 * MB)}, {"x-mock-headers": "500"}):
        status, _, body = gw.post("/v1/chat/completions", CHAT, headers, timeout=60)
        assert status == 502, body[:200]
        assert_openai_error(json.loads(body), "upstream_invalid_response")
    assert gw.chat("m", headers={"x-mock-headers": "50"})[0] == 200  # within the bounds


def test_hop_by_hop_and_model_headers(big) -> None:
    gw, mock = big["gw"], big["mock"]
    mock.clear()
    status, _, _ = gw.chat("m", headers={"connection": "keep-alive, x-hop", "x-hop": "1", "x-kept": "2",
                                         "x-ai-eg-model": "other"})
    assert status == 200
    (seen,) = mock.chat_requests()
    assert "x-hop" not in seen["headers"] and seen["headers"]["x-kept"] == "2"
    assert seen["headers"]["x-ai-eg-model"] == "m"


def test_a_stream_the_client_cuts_is_logged_499(big) -> None:
    gw = big["gw"]
    sock = _raw_request(gw.port, "/v1/chat/completions", {**CHAT, "model": "cut", "stream": True},
                        {"x-mock-bytes": str(100 * MB)})
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()
    line = wait_for(lambda: next((x for x in _access_lines(gw) if x["model"] == "cut"), None), timeout=30)
    assert line["status"] == 499 and line["error"] == "client_disconnected"


# (path, body without its model, the client's error shape)
MODEL_ENDPOINTS = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "openai"),
    ("/v1/embeddings", {"input": "hi"}, "openai"),
    ("/tokenize", {"prompt": "hi"}, "openai"),
    ("/cohere/v2/rerank", {"query": "q", "documents": ["d"]}, "openai"),
    ("/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "anthropic"),
    ("/anthropic/v1/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "anthropic"),
]


def _assert_invalid_model(status: int, body: bytes, shape: str) -> None:
    assert status == 400, body[:300]
    answer = json.loads(body)
    if shape == "openai":
        assert_openai_error(answer, "invalid_model")
    else:
        assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error", answer
    assert "limit is 256" in body.decode(), body[:300]


@pytest.mark.parametrize("path,body,shape", MODEL_ENDPOINTS)
def test_megabyte_model_names_are_refused_before_any_backend(big, path: str, body: dict, shape: str) -> None:
    gw, mock = big["gw"], big["mock"]
    mock.clear()
    status, _, answer = gw.post(path, {**body, "model": "m" * MB}, timeout=60)
    _assert_invalid_model(status, answer, shape)
    assert mock.requests() == []


def test_model_names_over_the_limit_are_refused_through_the_sdks(big) -> None:
    import openai

    gw, mock = big["gw"], big["mock"]
    mock.clear()
    with pytest.raises(openai.BadRequestError) as info:
        gw.client().chat.completions.create(model="m" * MB, messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "invalid_model"
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="k", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="m" * 257, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert mock.requests() == []
    # 256 characters is a model name like any other
    answer = gw.client().chat.completions.create(model="m" * 256, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices and mock.chat_requests()[-1]["headers"]["x-ai-eg-model"] == "m" * 256


def test_a_model_header_over_the_limit_is_refused(big) -> None:
    """Without a model in the body, the x-ai-eg-model header names it: the same limit applies."""
    gw, mock = big["gw"], big["mock"]
    mock.clear()
    status, _, body = gw.post("/v1/chat/completions", {"messages": []}, {"x-ai-eg-model": "h" * 257})
    _assert_invalid_model(status, body, "openai")
    assert mock.requests() == []


# -- client keys, failover and Azure paths --


def _azure(name: str, port: int) -> str:
    return openai_backend(name, "127.0.0.1", port).replace(
        "schema: {name: OpenAI}", "schema: {name: AzureOpenAI, version: '2024-10-21'}")


class RequestLines:
    """A raw HTTP/1.1 upstream that records each request line as it arrived (the mock's
    server decodes paths) and answers a minimal chat completion."""

    ANSWER = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}).encode()

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), b"0"))
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                self.lines.append(head.split(b"\r\n")[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                             % len(self.ANSWER) + self.ANSWER)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("hardening")
    mocks = {"keyed": Mock("keyed", "--status", "503"), "plain-down": Mock("plain-down", "--status", "503"),
             "plain": Mock("plain")}
    lines = RequestLines()
    refs = {"failover": "[{name: keyed, priority: 0}, {name: plain, priority: 1}]",
            "retry": "[{name: plain-down, priority: 0}, {name: plain, priority: 1}]",
            "direct": "[{name: plain}]"}
    rules = "".join(f"    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {m}}}]}}]\n"
                    f"      backendRefs: {r}\n" for m, r in refs.items())
    text = (keyed_backend("keyed", mocks["keyed"].port, "{fromRequestHeaders: {}}") + openai_backend("plain-down", "127.0.0.1", mocks["plain-down"].port)
            + openai_backend("plain", "127.0.0.1", mocks["plain"].port) + _azure("azure", lines.port)
            + "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\n"
              "metadata: {name: r, namespace: default}\nspec:\n  rules:\n" + rules
            + "    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: idle}]}]\n"
              "      backendRefs: [{name: plain}]\n      streamIdleTimeout: 1s\n"
            + "    - backendRefs: [{name: azure}]\n")
    gw = Gateway("--config", str(write_config(folder / "r.yaml", text)), workers=1)
    try:
        yield {"gw": gw, "lines": lines, **mocks}
    finally:
        gw.stop()
        lines.close()
        for m in mocks.values():
            m.stop()


def _seen_headers(mock: Mock) -> list[dict]:
    return [r["headers"] for r in mock.requests() if r["method"] == "POST"]


@pytest.mark.parametrize("model", ["failover", "retry", "direct"])
def test_client_keys_reach_no_backend_without_an_override(keys, model: str) -> None:
    gw = keys["gw"]
    for m in keys.values():
        if isinstance(m, Mock):
            m.clear()
    assert gw.chat(model, headers={"x-aigw-api-key": "client-secret"})[0] == 200
    # across schemas: an Anthropic client, translated for the same OpenAI backends
    status, _, body = gw.post("/v1/messages", {"model": model, "max_tokens": 5,
                                               "messages": [{"role": "user", "content": "hi"}]},
                              {"x-aigw-api-key": "client-secret", "anthropic-version": "2023-06-01"})
    assert status == 200, body[:300]
    seen = {name: _seen_headers(keys[name]) for name in ("keyed", "plain-down", "plain")}
    assert len(seen["plain"]) == 2
    for name in ("plain-down", "plain"):
        for headers in seen[name]:
            assert "client-secret" not in json.dumps(headers), (name, headers)
    if model == "failover":  # the override backend got the key, where it belongs, and only as its credential
        assert [h["authorization"] for h in seen["keyed"]] == ["Bearer client-secret"] * 2
        assert all("x-aigw-api-key" not in h for h in seen["keyed"])


@pytest.mark.parametrize("model", ["..", ".", ""])
def test_dot_segment_models_never_reach_an_azure_path(keys, model: str) -> None:
    lines = keys["lines"].lines
    lines.clear()
    status, _, body = keys["gw"].post("/v1/chat/completions", {**CHAT, "model": model})
    assert status == 400
    assert_openai_error(json.loads(body), "invalid_model")
    assert lines == []


def test_azure_deployments_are_encoded(keys) -> None:
    lines = keys["lines"].lines
    lines.clear()
    status, _, body = keys["gw"].post("/v1/chat/completions?extra=1", {**CHAT, "model": "a/../b?x#y é"})
    assert status == 200, body
    assert lines == [b"POST /openai/deployments/a%2F..%2Fb%3Fx%23y%20%C3%A9/chat/completions"
                     b"?api-version=2024-10-21&extra=1 HTTP/1.1"]


def test_a_paused_client_is_not_an_idle_upstream(keys) -> None:
    # streamIdleTimeout 1s: the upstream sends 64 MB at once and is then held back for the
    # client, who reads nothing for 3 s; the stream is not cut as idle.
    sock = _raw_request(keys["gw"].port, "/v1/chat/completions", {**CHAT, "model": "idle", "stream": True},
                        {"x-mock-bytes": str(64 * MB)})
    with sock:
        time.sleep(3)  # the condition is the silence itself
        received, tail = 0, b""
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
            tail = (tail + chunk)[-64:]
            if tail.endswith(b"\r\n0\r\n\r\n"):
                break
    assert received > 64 * MB and tail.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), tail


# -- last: the client that read nothing for 30 s --


def test_a_client_that_reads_nothing_holds_bounded_memory(stalled) -> None:
    wait = stalled["started"] + STALL_SECONDS - time.monotonic()
    if wait > 0:
        time.sleep(wait)  # the condition is the elapsed time itself: memory is sampled after it
    after = _rss_mb(stalled["worker"])
    grown = after - stalled["before"]
    print(f"worker RSS {stalled['before']:.0f} MB -> {after:.0f} MB after {STALL_SECONDS:g}s of a client reading nothing")
    assert grown < 48, f"the worker grew by {grown:.0f} MB for a client that reads nothing"
    # The stream is intact and finishes once the client reads.
    sock = stalled["sock"]
    received = 0
    tail = b""
    while chunk := sock.recv(1 << 20):
        received += len(chunk)
        tail = (tail + chunk)[-64:]
        if tail.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"):  # the last event, then the end of the chunked body
            break
    assert received > STALL_STREAM and tail.endswith(b"0\r\n\r\n")

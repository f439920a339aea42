"""The bundled mock backend's per-process misbehaviour flags (--status, --retry-after, --hang,
--die-after, --ttft-ms), one mock process each."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.integration.mock_wire import CHAT, error_fields, raw_stream, stream_request
from tests.support import http_request


def _post_all(port: int) -> list[tuple[int, dict[str, str], bytes]]:
    """The three inference endpoints, each POSTed once."""
    return [
        http_request(port, "POST", "/v1/chat/completions", CHAT),
        http_request(port, "POST", "/v1/completions", {"model": "mock-a", "prompt": "hi"}),
        http_request(port, "POST", "/v1/embeddings/", {"model": "mock-a", "input": "hi"}),
    ]


def test_status_flag_with_retry_after(start_mock) -> None:
    mock = start_mock("broken", "--status", "503", "--retry-after", "7")
    for status, headers, body in _post_all(mock.port):
        assert status == 503 and headers["retry-after"] == "7"
        assert headers["x-mock-name"] == "broken"
        assert error_fields(body) == {"message": "Mock error (--status 503)", "type": "server_error", "param": None,
                                "code": None}
    assert [r["body"]["model"] for r in mock.requests()] == ["mock-a"] * 3  # bodies read and recorded
    assert http_request(mock.port, "GET", "/v1/models")[0] == 200  # only inference POSTs are broken
    status, headers, _ = http_request(mock.port, "POST", "/v1/chat/completions", CHAT, {"x-mock-status": "429"})
    assert status == 429 and headers["retry-after"] == "7"  # the per-request header wins


def test_status_flag_uses_openai_codes(start_mock) -> None:
    mock = start_mock("limited", "--status", "429")
    status, headers, body = http_request(mock.port, "POST", "/v1/chat/completions", CHAT)
    assert status == 429 and headers["retry-after"] == "1"  # 429's default hint, as without the flag
    assert error_fields(body)["code"] == "rate_limit_exceeded"
    status, headers, _ = http_request(mock.port, "POST", "/v1/chat/completions", CHAT, {"x-mock-status": "503"})
    assert status == 503 and "retry-after" not in headers  # 503 gets one only with --retry-after


def test_retry_after_flag_alone(start_mock) -> None:
    mock = start_mock("hinted", "--retry-after", "0")
    for code, hint in (("429", "0"), ("503", "0"), ("500", None)):
        status, headers, _ = http_request(mock.port, "POST", "/v1/chat/completions", CHAT, {"x-mock-status": code})
        assert status == int(code) and headers.get("retry-after") == hint, code
    status, headers, _ = http_request(mock.port, "POST", "/v1/chat/completions", CHAT)
    assert status == 200 and "retry-after" not in headers


def test_hang_flag(start_mock) -> None:
    mock = start_mock("hung", "--hang")
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/embeddings", {"model": "m", "input": "x"})):
        with pytest.raises(TimeoutError):
            http_request(mock.port, "POST", path, body, timeout=0.3)
    assert http_request(mock.port, "GET", "/v1/models")[0] == 200
    posts = [r["path"] for r in mock.requests() if r["method"] == "POST"]
    assert posts == ["/v1/chat/completions", "/v1/embeddings"]  # recorded although never answered


def test_die_after_flag(start_mock) -> None:
    mock = start_mock("flaky", "--die-after", "2")
    data = raw_stream(mock.port, None)
    assert data.count(b'"content":"tok') == 2
    assert b"[DONE]" not in data and not data.endswith(b"0\r\n\r\n")
    assert raw_stream(mock.port, 4).count(b'"content":"tok') == 4  # the header wins
    status, _, body = http_request(mock.port, "POST", "/v1/chat/completions", CHAT)
    assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 16  # only streams are cut


def test_ttft_sends_the_head_before_the_delay(start_mock) -> None:
    mock = start_mock("slow", "--ttft-ms", "800")
    with socket.create_connection(("127.0.0.1", mock.port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(stream_request())
        head = sock.recv(65536)
        head_at = time.monotonic() - start
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):  # silence after the head
            sock.recv(65536)
        sock.settimeout(5)
        first = sock.recv(65536)
        first_at = time.monotonic() - start
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n"), head
    assert b"data: " in first
    assert head_at < 0.4 and first_at >= 0.75, (head_at, first_at)

"""Configured values on the wire through a real gateway: a block-scalar Secret as a clean
authorization header, header values as UTF-8, and a backtracking pattern answered promptly."""

from __future__ import annotations

import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Gateway, Mock, openai_backend, route, write_config
from tests.resources import key_policy
from tests.support import http_request


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[tuple[Gateway, Mock]]:
    folder = tmp_path_factory.mktemp("wire")
    mock = Mock("wire")
    block_scalar = """\
        stringData:
          apiKey: |
            sk-block-scalar
        """
    text = (openai_backend("keyed", "127.0.0.1", mock.port) + key_policy("keyed", "keyed", block_scalar)
            + textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: regex, namespace: default}
        spec:
          rules:
            - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: '(a+)+$'}]}]
              backendRefs: [{name: keyed}]
        """))
    gw = Gateway("--config", str(write_config(folder / "c.yaml", text)), workers=1)
    try:
        yield gw, mock
    finally:
        gw.stop()
        mock.stop()


def test_a_block_scalar_secret_becomes_a_clean_authorization_header(gateway) -> None:
    gw, mock = gateway
    status, _, _ = gw.chat("aaaa")
    assert status == 200
    assert mock.chat_requests()[-1]["headers"]["authorization"] == "Bearer sk-block-scalar"


def _raw_upstream(heads: list[bytes]) -> socket.socket:
    """A one-answer-per-connection HTTP/1.1 upstream that keeps each request head as its bytes."""
    answer = b'{"id": "c", "object": "chat.completion", "model": "m", "choices": []}'
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed by the test
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length and (chunk := conn.recv(65536)):
                    body += chunk
                if head:
                    heads.append(head)
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(answer), answer))

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_a_configured_header_value_reaches_the_upstream_as_utf8(tmp_path: Path) -> None:
    """The one rule for configured header values: text without control characters, written as
    UTF-8, the bytes Envoy sends for the same configuration."""
    heads: list[bytes] = []
    server = _raw_upstream(heads)
    config = route("r", "m", backend="raw") + "\n---\n" + openai_backend(
        "raw", "127.0.0.1", server.getsockname()[1], extra='headerMutation: {set: [{name: x-team, value: "Müller €"}]}\n')
    gw = Gateway("--config", str(write_config(tmp_path / "c.yaml", config)), workers=1)
    try:
        status, _, _ = gw.chat("m")
    finally:
        gw.stop()
        server.close()
    assert status == 200
    assert "\r\nx-team: Müller €\r\n".encode() in heads[-1], heads


def test_a_backtracking_pattern_answers_promptly(gateway) -> None:
    gw, _ = gateway
    body = {"messages": [{"role": "user", "content": "hi"}]}
    # Under a backtracking engine the first takes minutes and stalls the worker; RE2 is linear.
    status, _, _ = http_request(gw.port, "POST", "/v1/chat/completions", {**body, "model": "a" * 27 + "b"}, timeout=5)
    assert status == 404
    status, _, _ = http_request(gw.port, "POST", "/v1/chat/completions", {**body, "model": "a" * 255 + "!"},
                                timeout=5)
    assert status == 404
    status, _, _ = http_request(gw.port, "POST", "/v1/chat/completions", {**body, "model": "a" * 256}, timeout=5)
    assert status == 200

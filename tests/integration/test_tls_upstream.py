"""An upstream reached over TLS, verified with a CA from a ConfigMap named by a BackendTLSPolicy."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import trustme

from tests.conftest import Gateway, TlsMock, write_config

HOST = "secure-llm.test"
MESSAGES = [{"role": "user", "content": "hello over tls"}]


def _config(ca_pem: str) -> str:
    """A route for model secure-chat to Backend secure-llm.test:443, trusted through a ConfigMap's ca.crt."""
    return textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: secure-route, namespace: default}
        spec:
          rules:
            - matches:
                - headers:
                    - {type: Exact, name: x-ai-eg-model, value: secure-chat}
              backendRefs:
                - name: secure-llm
        ---
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIServiceBackend
        metadata: {name: secure-llm, namespace: default}
        spec:
          schema: {name: OpenAI}
          backendRef: {name: secure-llm, kind: Backend, group: gateway.envoyproxy.io}
        ---
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: Backend
        metadata: {name: secure-llm, namespace: default}
        spec:
          endpoints:
            - fqdn: {hostname: secure-llm.test, port: 443}
        ---
        apiVersion: gateway.networking.k8s.io/v1alpha3
        kind: BackendTLSPolicy
        metadata: {name: secure-llm-tls, namespace: default}
        spec:
          targetRefs:
            - {group: gateway.envoyproxy.io, kind: Backend, name: secure-llm}
          validation:
            caCertificateRefs:
              - {group: "", kind: ConfigMap, name: secure-llm-ca}
            hostname: secure-llm.test
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: secure-llm-ca, namespace: default}
        data:
          ca.crt: |
        """) + textwrap.indent(ca_pem, "    ")


@pytest.fixture(scope="module")
def tls_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsMock, trustme.CA]]:
    ca = trustme.CA()
    mock = TlsMock("secure-mock", tmp_path_factory.mktemp("tls-mock"), ca, HOST)
    yield mock, ca
    mock.stop()


def _gateway(folder: Path, ca_pem: str, mock: TlsMock) -> Gateway:
    config = write_config(folder / "tls.yaml", _config(ca_pem))
    return Gateway("--config", str(config), "--resolve", f"{HOST}:443=127.0.0.1:{mock.port}")


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory, tls_mock: tuple[TlsMock, trustme.CA]) -> Iterator[Gateway]:
    mock, ca = tls_mock
    gw = _gateway(tmp_path_factory.mktemp("trusted"), ca.cert_pem.bytes().decode(), mock)
    yield gw
    gw.stop()
    out = gw.proc.log_path.read_text(errors="replace")
    assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory: pytest.TempPathFactory, tls_mock: tuple[TlsMock, trustme.CA]) -> Iterator[Gateway]:
    mock, _ = tls_mock
    other_ca = trustme.CA()  # a valid CA, but not the one that signed the mock's certificate
    gw = _gateway(tmp_path_factory.mktemp("untrusted"), other_ca.cert_pem.bytes().decode(), mock)
    yield gw
    gw.stop()
    out = gw.proc.log_path.read_text(errors="replace")
    assert "Traceback" not in out, out


def test_config_loads_tls_policy_without_warnings(trusted: Gateway) -> None:
    out = trusted.proc.output()
    assert "warning" not in out.lower(), out
    assert "secure-chat" in out


def test_chat_over_tls(trusted: Gateway, tls_mock: tuple[TlsMock, trustme.CA]) -> None:
    mock, _ = tls_mock
    mock.clear()
    client = openai.OpenAI(base_url=trusted.base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="secure-chat", messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers["x-mock-name"] == "secure-mock"
    resp = raw.parse()
    assert resp.model == "secure-chat"
    assert resp.choices[0].message.content
    [req] = [r for r in mock.requests() if r["path"] == "/v1/chat/completions"]
    assert req["headers"]["host"] == HOST  # https on its default port: no ":443"
    assert req["body"]["messages"] == MESSAGES


def test_streaming_chat_over_tls(trusted: Gateway, tls_mock: tuple[TlsMock, trustme.CA]) -> None:
    mock, _ = tls_mock
    client = openai.OpenAI(base_url=trusted.base_url, api_key="x", max_retries=0)
    for _ in range(2):  # the second one reuses the pooled TLS connection
        chunks = list(client.chat.completions.create(model="secure-chat", messages=MESSAGES, stream=True))
        assert len(chunks) > 2
        assert all(c.model == "secure-chat" for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text


def test_untrusted_ca_is_a_502_naming_the_backend(untrusted: Gateway,
                                                   tls_mock: tuple[TlsMock, trustme.CA]) -> None:
    mock, _ = tls_mock
    mock.clear()
    client = openai.OpenAI(base_url=untrusted.base_url, api_key="x", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as info:
            result = client.chat.completions.create(model="secure-chat", messages=MESSAGES, stream=stream)
            if stream:
                list(result)
        assert info.value.status_code == 502
        message = info.value.message
        assert "secure-llm" in message
        assert "certificate" in message.lower() or "verif" in message.lower(), message
        body = info.value.response.json()
        assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"])
    # the handshake failed, so the mock never saw a request
    assert [r for r in mock.requests() if r["path"] == "/v1/chat/completions"] == []

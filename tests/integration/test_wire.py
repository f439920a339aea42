"""Configured values that reach the wire: rejected by `check` when invalid, RE2 matching, Secret keys,
and a worker that cannot apply a table."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.config.compiler import compile_table
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import load_paths
from modelyard.core.regex import RegexError, compile_full
from modelyard.core.wire import header_name_problem, header_value_problem, owned_header_problem, path_problem
from tests.conftest import Gateway, Mock, openai_backend, route, write_config
from tests.support import http_request, modelyard

BAD = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: r, namespace: ns}
spec:
  hostnames: ["*.example.com", "a(b"]
  rules:
    - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: '(a)\\1'}]}]
      backendRefs:
        - name: be
          modelNameOverride: "gpt\\nx"
          headerMutation:
            set:
              - {name: content-length, value: "5"}
              - {name: "x-a:b", value: v}
              - {name: x-ok, value: "v\\r\\nhost: evil"}
              - {name: x-price, value: "5 €"}
            remove: [Host, proxy-authorization, transfer-encoding]
          bodyMutation: {set: [{path: "a\\nb", value: "1"}]}
    - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: '(?<=a)b'}]}]
      backendRefs: [{name: be2}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: be, namespace: ns}
spec:
  schema: {name: OpenAI, prefix: "/v1\\r\\nx-injected: 1"}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
  headerMutation: {set: [{name: Connection, value: close}]}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: be2, namespace: ns}
spec:
  schema: {name: Anthropic, prefix: "/vé", version: "2023 06 01"}
  backendRef: {name: be, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: be, namespace: ns}
spec:
  endpoints:
    - fqdn: {hostname: "bad host\\r\\n", port: 80}
    - ip: {address: 1.2.3, port: 70000}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: Bad_Name, namespace: ns}
---
apiVersion: v1
kind: Secret
metadata: {name: unused, namespace: ns}
data: {other: "%%%"}
---
"""


def key_policy(backend: str, secret: str, secret_body: str, namespace: str = "default", kind: str = "APIKey") -> str:
    """A BackendSecurityPolicy of `kind` for `backend`, and its Secret with `secret_body`."""
    holder = {"APIKey": "apiKey", "AnthropicAPIKey": "anthropicAPIKey"}[kind]
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: BackendSecurityPolicy
        metadata: {{name: {backend}, namespace: {namespace}}}
        spec:
          type: {kind}
          {holder}: {{secretRef: {{name: {secret}}}}}
          targetRefs: [{{name: {backend}, kind: AIServiceBackend, group: aigateway.envoyproxy.io}}]
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: {secret}, namespace: {namespace}}}
        """) + textwrap.dedent(secret_body) + "---\n"


BAD += (key_policy("be", "s", 'data: {apiKey: "not base64!"}\n', "ns")
        + key_policy("be2", "s2", 'stringData: {apiKey: "sk-one\\nx-injected: 1"}\n', "ns", "AnthropicAPIKey"))

# (object, field, words of the message) for each value above that must not reach the wire.
EXPECTED = [
    ("AIGatewayRoute/ns/r", "spec.hostnames[1]", "not a valid host name"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].matches[0].headers[0].value", "backreference \\1 is not supported by RE2"),
    ("AIGatewayRoute/ns/r", "spec.rules[1].matches[0].headers[0].value", "lookbehind (?<=...) is not supported by RE2"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].modelNameOverride", "control character"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.set[0].name", "content-length is hop-by-hop"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.set[1].name", "not a valid HTTP header name"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.set[2].value", "line break"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.remove[0]", "host is hop-by-hop"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.remove[1]", "proxy-authorization"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].headerMutation.remove[2]", "transfer-encoding"),
    ("AIGatewayRoute/ns/r", "spec.rules[0].backendRefs[0].bodyMutation.set[0].path", "control character"),
    ("AIServiceBackend/ns/be", "spec.schema.prefix", "a URL path cannot carry"),
    ("AIServiceBackend/ns/be", "spec.headerMutation.set[0].name", "connection is hop-by-hop"),
    ("AIServiceBackend/ns/be2", "spec.schema.prefix", "a URL path cannot carry"),
    ("AIServiceBackend/ns/be2", "spec.schema.version", "printable ASCII"),
    ("Backend/ns/be", "spec.endpoints[0].fqdn.hostname", "not a valid host name"),
    ("Backend/ns/be", "spec.endpoints[1].ip.address", "not an IP address"),
    ("Backend/ns/be", "spec.endpoints[1].ip.port", "port 70000"),
    ("ConfigMap/ns/Bad_Name", "metadata.name", "is not a DNS-1123 subdomain"),
    ("Secret/ns/s", "data.apiKey", "Secret ns/s key apiKey: data is not valid base64"),
    ("Secret/ns/unused", "data.other", "data is not valid base64"),  # the API server would refuse it too
    ("Secret/ns/s2", "stringData.apiKey", "Secret ns/s2 key apiKey: the value contains a line break"),
]


def test_check_rejects_every_value_that_would_reach_the_wire_invalid(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad.yaml", BAD)
    out = subprocess.run(modelyard("check", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("error: ")]
    for obj, field, words in EXPECTED:
        assert any(f"{path}: {obj}: {field}: " in e and words in e for e in errors), (obj, field, words, errors)
    assert sum("spec.endpoints[1].ip.port" in e for e in errors) == 1  # two AIServiceBackends share it
    assert sum("Secret/ns/s: data.apiKey" in e for e in errors) == 1
    assert "does not exist" not in out.stdout  # a broken Secret is reported as broken, not as missing
    assert "not base64!" not in out.stdout and "sk-one" not in out.stdout  # no secret material in errors


def _compile(tmp_path: Path, text: str) -> tuple[Diagnostics, object]:
    write_config(tmp_path / "c.yaml", text)
    diags = Diagnostics()
    return diags, compile_table(load_paths([str(tmp_path)], diags, set()).resources, diags)


def test_good_values_pass_and_secret_keys_are_trimmed(tmp_path: Path) -> None:
    diags, compiled = _compile(tmp_path, route("r", "m", backend="b", ref_extra=", modelNameOverride: 'gpt-4o mini/é'")
                               + "\n---\n" + openai_backend("b", "API.example.com", 443, extra="""\
        headerMutation: {set: [{name: X-Team, value: "a\\tb é"}], remove: [x-drop]}
        """) + key_policy("b", "s", 'data: {apiKey: c2stZnJvbS1kYXRhCg==}\n'))  # "sk-from-data\n", as `echo` writes it
    assert not diags.errors, [str(e) for e in diags.errors]
    table = compiled.table  # type: ignore[attr-defined]
    assert table.backends[0].auth_headers == (("authorization", "Bearer sk-from-data"),)
    assert table.rules[0].refs[0].header_set == (("x-team", "a\tb é"),)


@pytest.mark.parametrize("pattern, words", [
    (r"(a)\1", r"backreference \1 is not supported by RE2"),
    (r"(?P<x>a)(?P=x)", "named backreference (?P=name) is not supported by RE2"),
    (r"(?<!a)b", "negative lookbehind (?<!...) is not supported by RE2"),
    (r"a(?=b)", "lookahead (?=...) is not supported by RE2"),
    (r"a++", "possessive quantifier ++ is not supported by RE2"),
    (r"gpt-(", "missing )"),
    ("x{200}", "size 204, over the limit of 100"),
])
def test_re2_rejects_what_needs_backtracking_and_names_the_construct(pattern: str, words: str) -> None:
    with pytest.raises(RegexError) as e:
        compile_full(pattern)
    assert words in str(e.value)


def test_re2_keeps_full_match_semantics() -> None:
    test = compile_full(r"gpt-4o.*|llama-[0-9]+")
    assert test("gpt-4o-mini") and test("llama-3") and not test("xgpt-4o") and not test("llama-3x")
    assert compile_full(r"(a+)+$")("a" * 100_000)
    assert not compile_full(r"(a+)+$")("a" * 100_000 + "b")


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


def test_a_table_workers_cannot_apply_is_logged_once_and_readyz_says_so(tmp_path: Path, monkeypatch,
                                                                          caplog) -> None:
    """A table that got past the watcher some other way: the worker keeps what it serves, logs once
    per generation, and /readyz does not claim the generation it could not apply."""
    from aiohttp import test_utils

    from modelyard.config.compiler import CompileOptions
    from modelyard.config.watcher import ConfigWatcher
    from modelyard.core.shm import TableSegment
    from modelyard.core.table import Backend, Endpoint, Table, encode_table
    from modelyard.core import worker_registry
    from modelyard.core.settings import SETTINGS_ENV, Settings
    from modelyard.config.admin import ListenerProbe, build_admin_app
    from modelyard.gateway.app import GatewayApp

    def table(generation: int, prefix: str) -> bytes:
        backend = Backend("ns/b", "OpenAI", None, prefix, (Endpoint("127.0.0.1", 1),), None)
        return encode_table(Table(generation, (), {}, (), (), (backend,), (), (), {}))

    async def readyz(watcher: ConfigWatcher, probe: ListenerProbe) -> tuple[int, str]:
        async with test_utils.TestClient(test_utils.TestServer(build_admin_app(watcher, probe))) as client:
            resp = await client.get("/readyz")
            return resp.status, await resp.text()

    segment = TableSegment.create(str(tmp_path / "table"), capacity=1 << 16)
    (tmp_path / "workers").mkdir()
    settings = Settings(table=segment.path, workers_dir=str(tmp_path / "workers"))
    monkeypatch.setenv(SETTINGS_ENV, settings.encode())
    segment.publish(table(1, "/v1é\r\nx: y"), 1)
    loop = asyncio.new_event_loop()
    app = GatewayApp()
    try:
        with caplog.at_level(logging.ERROR, logger="modelyard.worker"):
            app.__rsgi_init__(loop)  # the first table fails: the worker starts anyway, serving nothing
            for _ in range(5):
                app._refresh()
        assert app.state is None
        assert sum("could not apply routing table generation 1" in r.getMessage() for r in caplog.records) == 1
        assert worker_registry.live_workers(str(tmp_path / "workers")) == [
            {"pid": os.getpid(), "generation": 0, "failed": 1}]

        watcher = ConfigWatcher([], CompileOptions(), None)
        watcher.generation = 1
        with socket.create_server(("127.0.0.1", 0)) as listener:
            probe = ListenerProbe("127.0.0.1", listener.getsockname()[1])
            status, text = asyncio.run(readyz(watcher, probe))
            assert status == 503 and "could not apply generation 1" in text, (status, text)

            segment.publish(table(2, "/v1"), 2)
            app._refresh()
            assert app.state is not None and app.state.generation == 2
            watcher.generation = 2
            status, text = asyncio.run(readyz(watcher, probe))
            assert status == 200, (status, text)
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        worker_registry.forget(settings.workers_dir)


_TOKENS = st.one_of(st.sampled_from(["Content-Length", "host", "Proxy-Foo"]),
                    st.from_regex(r"[A-Za-z0-9!#$%&'*+\-.^_`|~:]{1,12}", fullmatch=True))
_PATHS = st.from_regex(r"(/[a-z0-9%é ?]{0,4}){0,3}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_TOKENS, st.text()), st.text(), st.one_of(_PATHS, st.text()))
def test_what_the_checks_accept_is_written_as_one_header_line_and_a_clean_path(name: str, value: str,
                                                                              prefix: str) -> None:
    from modelyard.gateway.state import InvalidTable, _header_lines

    if not header_name_problem(name) and not owned_header_problem(name) and not header_value_problem(value, None):
        line = _header_lines(((name, value),), "test")
        head, _, rest = line.partition(b": ")
        assert rest.endswith(b"\r\n") and not any(c in rest[:-2] for c in b"\r\n\0") and b":" not in head
        assert rest[:-2] == value.encode("utf-8")
    else:  # the worker refuses what the watcher would have rejected
        with pytest.raises(InvalidTable):
            _header_lines(((name, value),), "test")
    if not path_problem(prefix):
        assert prefix.isascii() and not any(c in prefix for c in " ?#\r\n\0")

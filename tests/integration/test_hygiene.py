"""Bad input on every endpoint: a 4xx in the client API's shape, never a 5xx or a traceback of ours.

One gateway (1 worker, access log to a file) in front of one mock backend serves the whole
module. Hypothesis fuzzes bodies, headers and query strings over raw sockets (so that bytes
http.client refuses can be sent) and through the official SDKs, with a fixed number of
derandomized examples per endpoint, so a run is reproducible and bounded.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway, Mock, write_config
from tests.support import wait_for
from tests.resources import schema_backend

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SDK_FUZZ = settings(FUZZ, max_examples=25)

# (method, path, the error shape the client expects)
ENDPOINTS = [
    ("POST", "/v1/chat/completions", "openai"),
    ("POST", "/v1/completions", "openai"),
    ("POST", "/v1/embeddings", "openai"),
    ("GET", "/v1/models", "openai"),
    ("POST", "/v1/messages", "anthropic"),
    ("POST", "/anthropic/v1/messages", "anthropic"),
    ("POST", "/v1/messages/count_tokens", "anthropic"),
    ("POST", "/tokenize", "openai"),
    ("POST", "/cohere/v2/rerank", "openai"),
    ("POST", "/v2/unknown", "openai"),
]
ADMIN_PATHS = ["/healthz", "/readyz", "/metrics", "/config"]
POST_PATHS = [(path, shape) for method, path, shape in ENDPOINTS if method == "POST"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("hygiene")
    mock = Mock("hygiene")
    config = (schema_backend("gpt", mock.port, "OpenAI") + schema_backend("cohere", mock.port, "Cohere")
              + schema_backend("bedrock", mock.port, "OpenAI")  # with a policy that cannot sign it: a 501
              + "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: BackendSecurityPolicy\n"
                "metadata: {name: bedrock-aws, namespace: default}\nspec:\n  type: AWSCredentials\n"
                "  awsCredentials: {region: us-east-1}\n"
                "  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: bedrock}]\n---\n"
              + "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIGatewayRoute\n"
                "metadata: {name: hygiene, namespace: default}\nspec:\n  rules:\n"
                "    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: rr}]}]\n"
                "      backendRefs: [{name: cohere}]\n"
                "    - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: bedrock}]}]\n"
                "      backendRefs: [{name: bedrock}]\n"
                "    - backendRefs: [{name: gpt}]\n")
    access = folder / "access.log"
    g = Gateway("--config", str(write_config(folder / "c.yaml", config)), "--access-log", str(access), workers=1)
    g.access_log = access  # type: ignore[attr-defined]
    g.mock = mock  # type: ignore[attr-defined]
    yield g
    g.stop()
    mock.stop()


# -- raw HTTP ----------------------------------------------------------------------------------

def raw(port: int, data: bytes, method: str = "POST", timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Bytes as they are to the port; the response as (status, lower-cased headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        resp = http.client.HTTPResponse(s, method=method)
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def request(method: str, target: bytes, body: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = (),
            host: bytes | None = b"127.0.0.1", version: bytes = b"HTTP/1.1") -> bytes:
    lines = [method.encode() + b" " + target + b" " + version]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [b"Connection: close", b"Content-Length: %d" % len(body), *(n + b": " + v for n, v in headers)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_shape(status: int, headers: dict[str, str], body: bytes, shape: str) -> dict:
    """A gateway-made error body in the client API's shape."""
    assert status >= 400, (status, body[:300])
    data = json.loads(body)
    if shape == "anthropic":
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, data
    else:
        assert set(data) == {"error"} and {"message", "type", "param", "code"} <= set(data["error"]), data
    return data


def assert_not_ours(status: int, headers: dict[str, str], body: bytes, shape: str) -> None:
    """No 5xx unless the backend itself answered it; gateway-made errors in the client's shape.
    Granian's own protocol errors (bytes it cannot parse as HTTP) come with an empty body."""
    assert status < 500 or "x-mock-name" in headers, (status, body[:500])
    if status >= 400 and body and "x-ai-gateway-backend" not in headers:
        assert_shape(status, headers, body, shape)


def assert_clean_log(gw: Gateway) -> None:
    out = gw.proc.output()
    assert "Traceback" not in out and " ERROR " not in out and "[ERROR]" not in out, out[-3000:]


def error_code(body: bytes) -> str | None:
    data = json.loads(body)
    return data["error"].get("code") if "code" in data["error"] else data["error"]["type"]


# -- the cases -------------------------------------------------------------------------

def nested(depth: int, inside: bytes = b'"x"') -> bytes:
    return b"[" * depth + inside + b"]" * depth


@pytest.mark.parametrize("path,shape", POST_PATHS)
def test_json_nested_1000_deep_is_a_400(gw: Gateway, path: str, shape: str) -> None:
    for body in (nested(1000), b'{"model": "m", "x": ' + nested(1000) + b"}",
                 b'{"model": "m", "messages": [{"role": "user", "content": ' + nested(990) + b"}]}"):
        status, headers, data = raw(gw.port, request("POST", path.encode(), body))
        assert 400 <= status < 500, (status, data[:300])
        if "x-ai-gateway-backend" not in headers:
            assert_shape(status, headers, data, shape)
    assert_clean_log(gw)


@pytest.mark.parametrize("method,path,shape", ENDPOINTS)
def test_raw_utf8_in_the_query_string_is_a_400(gw: Gateway, method: str, path: str, shape: str) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}' if method == "POST" else b""
    status, headers, data = raw(gw.port, request(method, path.encode() + "?q=日本&x=é".encode(), body), method)
    assert status == 400 and error_code(data) in ("invalid_query", "invalid_request_error"), data
    assert_shape(status, headers, data, shape)


def test_host_header_missing_or_twice_is_a_400(gw: Gateway) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    for target, shape in ((b"/v1/chat/completions", "openai"), (b"/v1/messages", "anthropic")):
        status, headers, data = raw(gw.port, request("POST", target, body, host=None))
        assert status == 400 and "0" in assert_shape(status, headers, data, shape)["error"]["message"], data
        status, headers, data = raw(gw.port, request("POST", target, body, [(b"Host", b"evil.example")]))
        assert status == 400 and "2" in assert_shape(status, headers, data, shape)["error"]["message"], data
    status, _, data = raw(gw.port, request("POST", b"/v1/chat/completions", body, host=None, version=b"HTTP/1.0"))
    assert status == 200, data  # HTTP/1.0 has no Host requirement


@pytest.mark.parametrize("body", [
    b'{"model": "a", "messages": [], "model": "b"}',
    b'{"model": "a", "mod\\u0065l": "b"}',  # the same key, spelled with an escape
    b'{"model": null, "model": "b"}',
])
@pytest.mark.parametrize("path,shape", [p for p in POST_PATHS if p[0] != "/v2/unknown"])
def test_duplicate_model_keys_are_a_400(gw: Gateway, path: str, shape: str, body: bytes) -> None:
    status, headers, data = raw(gw.port, request("POST", path.encode(), body))
    assert status == 400, data
    err = assert_shape(status, headers, data, shape)["error"]
    assert err.get("code", "duplicate_model") == "duplicate_model" and "more than one" in err["message"], err


def test_model_inside_nested_objects_is_not_a_duplicate(gw: Gateway) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi", "model": "x"}], "metadata": {"model": 1}}'
    status, _, data = raw(gw.port, request("POST", b"/v1/chat/completions", body))
    assert status == 200, data


def access_lines(gw: Gateway) -> list[dict]:
    path: Path = gw.access_log  # type: ignore[attr-defined]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def settled_lines(gw: Gateway) -> int:
    """How many access-log lines there are once earlier requests' lines are all out (the log is
    written in batches every 0.1 s)."""
    count = -1
    while (now := len(access_lines(gw))) != count:
        count = now
        time.sleep(0.5)
    return count


def test_every_request_gets_an_access_log_line(gw: Gateway) -> None:
    chat = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    cases = [  # (request, expected status, expected error code, path logged)
        (request("POST", b"/v1/chat/completions", chat), 200, None, "/v1/chat/completions"),
        (request("POST", b"/v1/chat/completions", b"{"), 400, "invalid_json", "/v1/chat/completions"),
        (request("POST", b"/v1/chat/completions", b'{"model": "bedrock", "messages": []}'), 501,
         "credentials_not_supported", "/v1/chat/completions"),
        (request("GET", b"/v1/chat/completions"), 405, "method_not_allowed", "/v1/chat/completions"),
        (request("GET", b"/no/such/endpoint?key=secret-in-query"), 404, "unknown_endpoint", "/no/such/endpoint"),
        (request("GET", b"/v1/models"), 200, None, "/v1/models"),
        (request("POST", b"/tokenize", b'{"prompt": "hello"}'), 200, None, "/tokenize"),
        (request("POST", b"/v1/messages/count_tokens",
                 b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'), 200, None,
         "/v1/messages/count_tokens"),
        (request("POST", b"/cohere/v2/rerank", b'{"model": "rr", "query": "q", "documents": ["a"]}'), 404, None,
         "/cohere/v2/rerank"),  # the mock serves no rerank: its 404, relayed
        (request("POST", b"/cohere/v2/rerank", b"[]"), 400, "invalid_json", "/cohere/v2/rerank"),
        (request("POST", b"/v1/messages", b'{"model": "m", "max_tokens": 5, "messages": '
                 b'[{"role": "user", "content": "hi"}]}'), 200, None, "/v1/messages"),
        (request("POST", b"/v1/chat/completions", chat, host=None), 400, "invalid_host", "/v1/chat/completions"),
    ]
    before = settled_lines(gw)
    for data, status, _, _ in cases:
        got = raw(gw.port, data, data.split(b" ", 1)[0].decode())[0]
        assert got == status, (data[:80], got)
    # 413: the declared length is over the limit; the gateway answers before reading any of it.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n")
        resp = http.client.HTTPResponse(s, method="POST")
        resp.begin()
        assert resp.status == 413
    cases.append((b"", 413, "request_too_large", "/v1/embeddings"))

    lines = wait_for(lambda: (x := access_lines(gw)[before:]) and len(x) >= len(cases) and x, timeout=10)
    assert len(lines) == len(cases), lines
    for line, (_, status, code, path) in zip(lines, cases):
        assert (line["path"], line["status"]) == (path, status), line
        if code is not None:
            assert line["error"] == code, line
    assert "secret-in-query" not in gw.access_log.read_text()  # type: ignore[attr-defined]


def test_clients_that_disconnect_mid_upload_log_one_info_line_each(gw: Gateway) -> None:
    paths = [p for p, _ in POST_PATHS if p != "/v2/unknown"]
    log_before = gw.proc.output().count("closed the connection before")
    access_before = settled_lines(gw)
    socks = []
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        s.sendall(f"POST {paths[i % len(paths)]} HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n".encode()
                  + b'{"model": "m", "messages": [{"role": "user", "content": "half')
        socks.append(s)
    time.sleep(0.3)
    for s in socks:
        s.close()
    logged = wait_for(lambda: (n := gw.proc.output().count("closed the connection before") - log_before) >= 100
                      and n, timeout=30)
    assert logged == 100, gw.proc.output()[-3000:]
    assert " INFO " in gw.proc.output()
    assert_clean_log(gw)
    lines = wait_for(lambda: (x := access_lines(gw)[access_before:]) and len(x) >= 100 and x, timeout=10)
    assert [(x["status"], x["error"]) for x in lines] == [(499, "client_disconnected")] * 100



# Where a chunked upload is cut: inside a chunk's data, between chunks, inside a chunk-size line.
CHUNKED_CUTS = [b"3c\r\n{\"model\": \"m\", \"messages\": [", b"2\r\n{\"\r\n", b"2\r\n{\"\r\n1"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("cut", CHUNKED_CUTS)
def test_a_chunked_upload_cut_midway_is_logged_499(gw: Gateway, path: str, cut: bytes) -> None:
    gw.mock.clear()  # type: ignore[attr-defined]
    log_before = gw.proc.output().count("closed the connection before")
    access_before = settled_lines(gw)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + cut)
        time.sleep(0.2)  # the head and the first bytes are in before the client leaves
    lines = wait_for(lambda: access_lines(gw)[access_before:], timeout=30)
    assert [(x["path"], x["status"], x["error"]) for x in lines] == [(path, 499, "client_disconnected")], lines
    assert gw.proc.output().count("closed the connection before") == log_before + 1
    assert_clean_log(gw)
    assert gw.mock.requests() == []  # type: ignore[attr-defined]


def test_a_whole_chunked_upload_is_served(gw: Gateway) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    status, _, answer = raw(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert status == 200, answer[:300]


# -- fuzzing -----------------------------------------------------------------------------------

_FORBIDDEN = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer"}
_token = st.from_regex(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,24}", fullmatch=True)
header_names = st.one_of(
    st.sampled_from(["x-ai-eg-model", "x-ai-gateway-backend", "authorization", "content-type", "x-api-key",
                     "anthropic-version", "anthropic-beta", "accept", "accept-encoding", "user-agent"]),
    _token,
).filter(lambda n: n.lower() not in _FORBIDDEN and not n.lower().startswith("x-mock-"))
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
headers = st.lists(st.tuples(header_names, header_values), max_size=6).map(
    lambda hs: [(n.encode(), v.encode("latin-1")) for n, v in hs])
queries = st.one_of(
    st.just(b""),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=40).map(str.encode),
    st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),  # anything, control bytes included
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
messages = st.one_of(json_values, st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "bogus"]), "content": json_values}), max_size=3))
request_objects = st.fixed_dictionaries(
    {"model": st.one_of(st.text(max_size=30), json_values, st.sampled_from(["m", "rr", "bedrock"]))},
    optional={"messages": messages, "stream": json_values, "stream_options": json_values, "max_tokens": json_values,
              "prompt": json_values, "input": json_values, "query": json_values, "documents": json_values,
              "tools": json_values, "system": json_values, "add_special_tokens": json_values},
)
bodies = st.one_of(
    request_objects.map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.integers(1, 2500).map(lambda d: b'{"model": "m", "messages": ' + nested(d) + b"}"),
    st.tuples(st.text(max_size=10), st.text(max_size=10)).map(
        lambda ab: json.dumps({"model": ab[0]}).encode()[:-1] + b', "model": ' + json.dumps(ab[1]).encode() + b"}"),
)


@pytest.mark.parametrize("method,path,shape", ENDPOINTS)
def test_fuzz_endpoint_never_answers_5xx(gw: Gateway, method: str, path: str, shape: str) -> None:
    @FUZZ
    @given(query=queries, hdrs=headers, body=bodies, verb=st.sampled_from([method, method, method, "PUT", "DELETE"]))
    def check(query: bytes, hdrs: list[tuple[bytes, bytes]], body: bytes, verb: str) -> None:
        target = path.encode() + (b"?" + query if query else b"")
        status, got, data = raw(gw.port, request(verb, target, body, hdrs), verb)
        assert_not_ours(status, got, data, shape)

    check()
    assert_clean_log(gw)


def test_fuzz_admin_port_never_answers_5xx(gw: Gateway) -> None:
    @settings(FUZZ, max_examples=40)
    @given(path=st.sampled_from(ADMIN_PATHS), query=queries, hdrs=headers,
           verb=st.sampled_from(["GET", "GET", "POST", "DELETE"]), body=st.binary(max_size=50))
    def check(path: str, query: bytes, hdrs: list[tuple[bytes, bytes]], verb: str, body: bytes) -> None:
        target = path.encode() + (b"?" + query if query else b"")
        status, _, data = raw(gw.admin_port, request(verb, target, body, hdrs), verb)
        assert status < 500 or (path == "/readyz" and status == 503), (status, data[:300])

    check()
    assert_clean_log(gw)


sdk_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
sdk_headers = st.dictionaries(header_names, sdk_text.map(str.strip), max_size=3)  # h11 refuses edge spaces
sdk_query = st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=3)


def test_fuzz_through_the_openai_sdk(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="sk-test", max_retries=0, timeout=30)

    @SDK_FUZZ
    @given(model=st.one_of(st.text(max_size=30), st.just("m")), msgs=messages, extra=st.dictionaries(
        st.text(max_size=10), json_values, max_size=3), hdrs=sdk_headers, query=sdk_query, kind=st.integers(0, 2))
    def check(model: str, msgs: object, extra: dict, hdrs: dict, query: dict, kind: int) -> None:
        kw = dict(extra_body=extra, extra_headers=hdrs, extra_query=query)
        try:
            if kind == 0:
                client.chat.completions.create(model=model, messages=msgs, **kw)  # type: ignore[arg-type]
            elif kind == 1:
                client.embeddings.create(model=model, input=json.dumps(msgs), **kw)
            else:
                client.completions.create(model=model, prompt=json.dumps(msgs), **kw)
        except openai.APIStatusError as e:
            assert e.status_code < 500 or "x-mock-name" in e.response.headers, (e.status_code, e.response.text)
            assert isinstance(e.body, dict) and "message" in e.body, e.response.text

    check()
    assert_clean_log(gw)


def test_fuzz_through_the_anthropic_sdk(gw: Gateway) -> None:
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gw.port}", api_key="sk-ant-test", max_retries=0,
                                 timeout=30)

    @SDK_FUZZ
    @given(model=st.one_of(st.text(max_size=30), st.just("m")), msgs=messages, extra=st.dictionaries(
        st.text(max_size=10), json_values, max_size=3), hdrs=sdk_headers, query=sdk_query, count=st.booleans())
    def check(model: str, msgs: object, extra: dict, hdrs: dict, query: dict, count: bool) -> None:
        kw = dict(extra_body=extra, extra_headers=hdrs, extra_query=query)
        try:
            if count:
                client.messages.count_tokens(model=model, messages=msgs, **kw)  # type: ignore[arg-type]
            else:
                client.messages.create(model=model, max_tokens=8, messages=msgs, **kw)  # type: ignore[arg-type]
        except anthropic.APIStatusError as e:
            assert e.status_code < 500 or "x-mock-name" in e.response.headers, (e.status_code, e.response.text)
            assert isinstance(e.body, dict) and e.body.get("type") == "error", e.response.text

    check()
    assert_clean_log(gw)


# -- an unexpected error ---------------------------------------------------------------------------

class _Proto:
    """What Granian hands the app to answer with: here it only keeps the answer."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes]] = []

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.answers.append((status, body))


@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_an_unexpected_error_is_a_500_in_shape_logged_once_without_its_text(client: str, caplog) -> None:
    from modelyard.gateway.accounting import Exchange
    from modelyard.gateway.errors import internal_error

    def fail() -> None:
        raise ValueError("Bearer sk-secret-key and the body: hello")

    o = Exchange(0.0, "chat", client)
    o.method, o.path = "POST", "/v1/chat/completions"
    proto = _Proto()
    try:
        fail()
    except ValueError as e:
        with caplog.at_level("INFO", logger="modelyard.worker"):
            internal_error(proto, o, e)
    ((status, body),) = proto.answers
    assert status == 500 and (o.status, o.error) == (500, "internal_error")
    assert_shape(status, {}, body, client)
    (record,) = caplog.records
    text = record.getMessage()
    assert record.levelname == "ERROR" and record.exc_info is None and "\n" not in text
    assert "ValueError" in text and "fail" in text and "sk-secret" not in text and "hello" not in text

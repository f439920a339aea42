"""Shared pieces of the provider tests: a 127.0.0.1 stand-in upstream, a fake client protocol, resource
and table builders, one request forwarded through the proxy, the worker's copy of the credentials
segment, and the requests and answers several provider tests send and expect (pure asyncio, no
processes)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

import msgspec
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from modelyard.config.compiler import compile_table
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import Resource
from modelyard.core.schemas import DEFAULT_PREFIX, NOT_SERVED_SCHEMAS, SERVED_SCHEMAS
from modelyard.core.sniff import sniff
from modelyard.core.table import CloudAuth, Table, decode_table, encode_table
from modelyard.gateway.accounting import Exchange
from modelyard.gateway.providers import PROVIDERS, provider_for
from modelyard.gateway.providers.base import Provider
from modelyard.gateway.providers.credentials import CREDENTIALS, WorkerCredentials
from modelyard.gateway.proxy import Forwarding, Upstream, forward
from modelyard.gateway.state import GenerationState

# ---------------------------------------------------------------- shared requests, answers and keys

BEDROCK_HOST = "bedrock-runtime.us-east-1.amazonaws.com"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {"access_key_id": "AKIDEXAMPLE", "secret_access_key": SECRET, "region": "us-west-2"}
"""AWS keys as the control process publishes them (AWS's documented example key pair)."""

CLAUDE_ON_BEDROCK = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
ANSWER = (b'{"id": "msg_bdrk_01", "type": "message", "role": "assistant", "model": "claude-3-7-sonnet-20250219", '
          b'"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn", "stop_sequence": null, '
          b'"usage": {"input_tokens": 3, "output_tokens": 1}}')
"""An Anthropic Messages answer."""
MESSAGES = b'{"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}'
CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
CONVERSE_ANSWER = (b'{"output": {"message": {"role": "assistant", "content": [{"text": "ok"}]}}, '
                   b'"stopReason": "end_turn", "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}}')
"""A Bedrock Converse answer."""


def http_response(body: bytes, status: str = "200 OK", content_type: str = "application/json") -> bytes:
    """A whole HTTP/1.1 response with a content-length."""
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        status.encode(), content_type.encode(), len(body), body)


CONVERSE_RESPONSE = http_response(CONVERSE_ANSWER)


def chunked_response(pieces: list[bytes], content_type: str, end: bool = True, extra: bytes = b"") -> bytes:
    """A 200 response whose body is `pieces` in HTTP chunks; without `end`, the connection closes
    before the last chunk (a reset mid-stream)."""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\n%s" % (content_type.encode(), extra)
    return (head + b"transfer-encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
            + (b"0\r\n\r\n" if end else b""))


def converse_stream(pieces: list[bytes], framing: str, end: bool = True) -> bytes:
    """A ConverseStream (or InvokeModelWithResponseStream) response: its event-stream bytes in HTTP
    chunks, as Bedrock sends them, or with a content-length (`framing` "sized": streamed by its
    content-type alone); without `end`, the connection closes before the body is complete."""
    ctype, request_id = "application/vnd.amazon.eventstream", b"x-amzn-requestid: r-1\r\n"
    if framing != "sized":
        return chunked_response(pieces, ctype, end, request_id)
    data = b"".join(pieces)
    return (b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\n%scontent-length: %d\r\n\r\n%s"
            % (ctype.encode(), request_id, len(data) + (0 if end else 100), data))


# ---------------------------------------------------------------- stand-ins for both ends


class StandIn:
    """A 127.0.0.1 upstream answering each connection's one request with `response`, keeping what it
    received; it closes the connection once the response is written."""

    def __init__(self, response: bytes = CONVERSE_RESPONSE) -> None:
        self.received: list[bytes] = []
        self.response = response

    async def start(self) -> int:
        """Listens on a free port, which it returns."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0])
        self.received.append(head + await reader.readexactly(length))
        writer.write(self.response)
        await writer.drain()
        writer.close()


class Proto:
    """The client's side of the RSGI protocol: keeps a whole answer, or a streamed one's writes."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []  # a streamed answer's writes

    def response_bytes(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.status, self.headers, self.body = status, dict(headers), data

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        self.status, self.headers = status, dict(headers)
        return self

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)


def client_scope(query: str = "", headers: dict[str, str] | None = None) -> Any:
    """The client request's scope as the proxy reads it."""
    return SimpleNamespace(headers=headers or {}, query_string=query)


def auth_ref(hook: Any) -> Any:
    """A backend reference as `_request_head` reads it: no headers to remove, `hook` for auth."""
    return SimpleNamespace(remove=frozenset(), auth=hook)


def request_head(path: bytes, host: str, extra: bytes = b"") -> list[bytes]:
    """The pieces of a request head as an auth hook gets them."""
    return [b"POST " + path, b" HTTP/1.1\r\nhost: " + host.encode() + b"\r\n",
            b"content-type: application/json\r\n" + extra]


def header_lines(text: str) -> dict[str, str]:
    """`name: value` lines as a dict, each name once."""
    pairs = [line.split(": ", 1) for line in text.split("\r\n") if line]
    assert len({name for name, _ in pairs}) == len(pairs), pairs
    return dict(pairs)


def sent(received: list[bytes]) -> tuple[str, dict[str, str], bytes]:
    """The one request a stand-in received: its request line, headers (each once) and body."""
    [request] = received
    head, _, body = request.partition(b"\r\n\r\n")
    request_line, _, lines = head.decode().partition("\r\n")
    return request_line, header_lines(lines), body


def served(schema: str, cls: type[Provider], metric_name: str) -> Provider:
    """The registered provider of `schema`, checked served, of `cls`, with its metric name and no
    default path prefix."""
    assert schema in SERVED_SCHEMAS and schema not in NOT_SERVED_SCHEMAS
    provider = PROVIDERS[schema]
    assert isinstance(provider, cls) and provider_for(schema) is provider
    assert provider.metric_name == metric_name and DEFAULT_PREFIX[schema] == ""
    return provider


# ---------------------------------------------------------------- resources and tables


def resource(kind: str, name: str, spec: dict[str, Any], order: int) -> Resource:
    """A resource in namespace `default` as the loader gives it (a Secret's `spec` is its body)."""
    version = {"AIGatewayRoute": "aigateway.envoyproxy.io/v1alpha1", "AIServiceBackend": "aigateway.envoyproxy.io/v1alpha1",
               "BackendSecurityPolicy": "aigateway.envoyproxy.io/v1alpha1", "Secret": "v1"}.get(
        kind, "gateway.envoyproxy.io/v1alpha1")
    body: dict[str, Any] = {"apiVersion": version, "kind": kind, "metadata": {"name": name, "namespace": "default"}}
    body.update(spec if kind == "Secret" else {"spec": spec})
    return Resource(kind, version, "default", name, body, "mem.yaml", order)


def one_backend(name: str, schema: str, port: int, model: str | None = None) -> list[Resource]:
    """A route to one AIServiceBackend `name` of `schema` (its model overridden with `model`), and its
    Backend at 127.0.0.1:`port`."""
    ref: dict[str, Any] = {"name": name} if model is None else {"name": name, "modelNameOverride": model}
    return [
        resource("AIGatewayRoute", "r", {"rules": [{"backendRefs": [ref]}]}, 0),
        resource("AIServiceBackend", name, {"schema": {"name": schema},
                                            "backendRef": {"name": name, "kind": "Backend"}}, 1),
        resource("Backend", name, {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port}}]}, 2),
    ]


def table_of(resources: list[Resource], cloud: CloudAuth | None = None) -> Table:
    """The table `resources` compile to without errors, at generation 1, as a worker decodes it; with
    `cloud`, every backend has it as what its credentials policy compiled to."""
    diags = Diagnostics()
    table = compile_table(resources, diags).table
    assert not diags.errors, diags.errors
    if cloud is not None:
        table = msgspec.structs.replace(table, backends=tuple(msgspec.structs.replace(b, cloud=cloud, error=None)
                                                              for b in table.backends))
    return decode_table(encode_table(msgspec.structs.replace(table, generation=1)))


# ---------------------------------------------------------------- credentials


def worker_credentials(values: dict[str, str], generation: int = 1) -> WorkerCredentials:
    """A worker's own copy of the credentials segment holding `values`."""
    worker = WorkerCredentials()
    worker.generation, worker.values = generation, values
    return worker


def recompute_sigv4(path: str, body: bytes, amz_date: str, keys: dict[str, Any] = KEYS, host: str = BEDROCK_HOST) -> str:
    """botocore, on its own: the authorization header of the same request at the same timestamp."""
    request = AWSRequest(method="POST", url=f"https://{host}{path}", data=body, headers={"host": host})
    signer = SigV4Auth(Credentials(keys["access_key_id"], keys["secret_access_key"], keys.get("session_token")),
                       "bedrock", keys["region"])
    stamp = datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP)
    with mock.patch("botocore.auth.get_current_datetime", return_value=stamp):
        signer.add_auth(request)
    return request.headers["Authorization"]


@contextlib.contextmanager
def publishing(values: dict[str, str]) -> Iterator[Callable[[dict[str, str]], None]]:
    """The worker's copy of the credentials segment holding `values` (and, through the function it
    gives, others after them, each a new generation), as it held before once done."""
    saved = CREDENTIALS.generation, CREDENTIALS.values
    steps = iter(range(1000, 2000))

    def publish(new: dict[str, str]) -> None:
        CREDENTIALS.generation, CREDENTIALS.values = saved[0] + next(steps), new
    publish(values)
    try:
        yield publish
    finally:
        CREDENTIALS.generation, CREDENTIALS.values = saved[0] + 2000, saved[1]


# ---------------------------------------------------------------- one request through the proxy


def forward_one(schema: str, body: bytes, operation: str, client: str, response: bytes,
                published: dict[str, str], headers: dict[str, str] | None = None,
                cloud: CloudAuth | None = None, model: str = CLAUDE_ON_BEDROCK, *, name: str = "claude",
                query: str = "", exchange: Exchange | None = None,
                table: Callable[[int], Table] | None = None) -> tuple[Proto, list[bytes], Exchange]:
    """One request for model "m" through the proxy to a stand-in answering `response`, with
    `published` in the credentials segment: what the client got, what the stand-in received, and the
    exchange. The table is `table(port)`, or by default one route to one backend `name` of `schema`
    whose credentials policy compiled to `cloud` (by default, keys published under its own name)."""
    def default_table(port: int) -> Table:
        kind = "GCPCredentials" if schema.startswith("GCP") else "AWSCredentials"
        return table_of(one_backend(name, schema, port, model), cloud or CloudAuth(kind, f"default/{name}"))

    async def main() -> tuple[Proto, list[bytes], Exchange]:
        stand_in = StandIn(response)
        port = await stand_in.start()
        upstream = Upstream()
        upstream.start(asyncio.get_running_loop())
        state = GenerationState((table or default_table)(port), upstream.pools)
        rule = state.router.match("m", {})
        assert rule is not None
        proto, o = Proto(), exchange or Exchange(time.perf_counter(), operation.lstrip("/"), client)
        o.model, o.request_body = "m", body
        try:
            await forward(upstream, Forwarding(client_scope(query, headers), proto, o, state,
                                               state.routes[rule.rule.route_index], rule, None, sniff(body), operation))
        finally:
            await upstream.close()
            stand_in.server.close()
        return proto, stand_in.received, o

    with publishing(published):
        return asyncio.run(main())


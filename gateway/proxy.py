"""Forwarding one request upstream and streaming the answer back.

One aiohttp ClientSession per worker keeps pooled keep-alive connections. The
body goes upstream as the client sent it unless a model override or a body
mutation asks for a rewrite; the response is passed through chunk by chunk.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from core.errors import openai_error, sse_error_event
from core.sniff import rewrite_body
from gateway.state import RefRuntime

JSON_HEADERS = [("content-type", "application/json")]

# Never forwarded upstream: hop-by-hop headers, what aiohttp sets itself, and the
# client's own credentials (a BackendSecurityPolicy decides what goes upstream).
_REQUEST_STRIP = frozenset({
    "host", "content-length", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "transfer-encoding", "te", "trailer", "upgrade", "expect", "authorization", "x-api-key", "api-key",
})
_RESPONSE_STRIP = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length",
})


class MappedResolver(AbstractResolver):
    """Resolves configured host:port pairs to local addresses (like curl --resolve), else via DNS."""

    def __init__(self) -> None:
        self.mapping: dict[str, tuple[str, int]] = {}
        self._default: DefaultResolver | None = None  # needs a running loop: made on first use

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        target = self.mapping.get(f"{host}:{port}")
        if target is None:
            if self._default is None:
                self._default = DefaultResolver()
            return await self._default.resolve(host, port, family)
        addr, to_port = target
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        return [{"hostname": host, "host": addr, "port": to_port, "family": fam, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        if self._default is not None:
            await self._default.close()


class Upstream:
    def __init__(self) -> None:
        self.resolver = MappedResolver()
        self.session: aiohttp.ClientSession | None = None
        self._resolve: dict[str, str] = {}

    async def start(self) -> None:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=10, resolver=self.resolver,
                                             enable_cleanup_closed=True)
            # The body passes through untouched: no decompression, no cookie handling.
            self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                 cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",))

    def set_resolve(self, mapping: dict[str, str]) -> None:
        if mapping == self._resolve:
            return
        self._resolve = dict(mapping)
        parsed = {}
        for key, target in mapping.items():
            addr, _, port = target.rpartition(":")
            parsed[key] = (addr.strip("[]"), int(port))
        self.resolver.mapping = parsed
        if self.session is not None:
            self.session.connector.clear_dns_cache()  # type: ignore[union-attr]

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def _request_headers(scope: Any, ref: RefRuntime) -> dict[str, str]:
    remove = ref.remove
    headers = {k: v for k, v in scope.headers.items() if k not in _REQUEST_STRIP and k not in remove}
    for name, value in ref.set:
        headers[name] = value
    return headers


def _response_headers(resp: aiohttp.ClientResponse, backend: str) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in resp.headers.items() if k.lower() not in _RESPONSE_STRIP]
    out.append(("x-ai-gateway-backend", backend))
    return out


def _fail(proto: Any, status: int, message: str, code: str, backend: str) -> int:
    proto.response_bytes(status, [*JSON_HEADERS, ("x-ai-gateway-backend", backend)],
                         openai_error(status, message, code))
    return status


async def forward(upstream: Upstream, scope: Any, proto: Any, body: bytes, suffix: str, ref: RefRuntime,
                  stream: bool) -> int:
    """Send the request to `ref`'s backend and relay the answer; returns the status sent to the client."""
    backend = ref.backend
    name = backend.name
    if ref.rewrite:
        r = ref.ref
        body = rewrite_body(body, r.model_override, r.body_set, r.body_remove)
    url, host, where = backend.target(suffix)
    headers = _request_headers(scope, ref)
    if host is not None:
        headers["host"] = host
    if scope.query_string:
        url = url.with_query(scope.query_string)
    session = upstream.session
    if session is None:
        await upstream.start()
        session = upstream.session
    assert session is not None
    try:
        resp = await session.post(url, data=body, headers=headers, ssl=backend.ssl,
                                  server_hostname=backend.server_hostname, timeout=ref.timeout,
                                  allow_redirects=False)
    except asyncio.TimeoutError:
        return _fail(proto, 504, f"{where} did not answer within the rule's {ref.ref.timeout:g}s timeout.",
                     "upstream_timeout", name)
    except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as e:
        return _fail(proto, 502, f"TLS with {where} failed: {e}. Check the BackendTLSPolicy's "
                     "caCertificateRefs and hostname.", "upstream_tls_error", name)
    except aiohttp.ClientConnectorError as e:
        return _fail(proto, 502, f"Could not connect to {where}: {e.os_error or e}.", "upstream_unreachable", name)
    except aiohttp.ClientError as e:
        return _fail(proto, 502, f"{where} closed the connection before answering ({type(e).__name__}).",
                     "upstream_reset", name)
    try:
        return await _relay(resp, proto, name, where, ref)
    finally:
        resp.release()


async def _relay(resp: aiohttp.ClientResponse, proto: Any, name: str, where: str, ref: RefRuntime) -> int:
    status = resp.status
    headers = _response_headers(resp, name)
    streaming = resp.content_length is None or resp.headers.get("content-type", "").startswith("text/event-stream")
    if not streaming:
        try:
            data = await resp.read()
        except asyncio.TimeoutError:
            return _fail(proto, 504, f"{where} did not finish its answer within {ref.ref.timeout:g}s.",
                         "upstream_timeout", name)
        except aiohttp.ClientError as e:
            return _fail(proto, 502, f"{where} broke off its answer ({type(e).__name__}).", "upstream_reset", name)
        proto.response_bytes(status, headers, data)
        return status
    transport = proto.response_stream(status, headers)
    sse = resp.headers.get("content-type", "").startswith("text/event-stream")
    try:
        async for chunk in resp.content.iter_any():
            await transport.send_bytes(chunk)
    except asyncio.TimeoutError:
        await _end_stream(transport, sse, f"{where} did not finish within the rule's {ref.ref.timeout:g}s timeout.",
                          "upstream_timeout")
        resp.close()
    except aiohttp.ClientError as e:
        await _end_stream(transport, sse, f"{where} broke off the stream ({type(e).__name__}).", "upstream_reset")
        resp.close()
    except Exception:  # the client went away: stop reading and drop the upstream connection
        resp.close()
    return status


async def _end_stream(transport: Any, sse: bool, message: str, code: str) -> None:
    # Headers are already out; an SSE client still gets a readable error event.
    if sse:
        try:
            await transport.send_bytes(sse_error_event(message, code))
        except Exception:
            pass

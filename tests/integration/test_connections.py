"""Connection limits and timeouts: thousands of idle and streaming clients, and slow uploads.

One gateway (2 workers) in front of one slow-streaming mock serves the whole module; its limits come
from a ClientTrafficPolicy (connectionLimit 10,000, requestReceivedTimeout 1s), the head/idle
timeout from its flag, which wins over the policy. Latency is only ever compared with a baseline measured in the same test.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import statistics
import time
from collections.abc import Iterator


import pytest

from tests.conftest import Gateway, Mock, openai_backend, route, write_config
from tests.integration.helpers import module_mock

IDLE = 5_000
STREAMS = 2_000


@pytest.fixture(scope="module", autouse=True)
def open_files() -> None:
    """This process holds thousands of sockets: its soft open-file limit goes up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < IDLE + STREAMS // 2 + 100:
        pytest.skip(f"the open-file hard limit ({hard}) is too low for {IDLE} connections")


mock = module_mock("conn-mock", "--ttft-ms", "100", "--itl-ms", "100", "--tokens", "8")


POLICY = """\
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {name: limits, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  connection: {connectionLimit: {value: 10000}}
  timeout: {http: {requestReceivedTimeout: 1s, idleTimeout: 1s}}
---
"""


@pytest.fixture(scope="module")
def gw(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    conf = write_config(tmp_path_factory.mktemp("conn") / "gateway.yaml",
                        POLICY + openai_backend("mock", "127.0.0.1", mock.port) + route("main", "m"))
    # The flag wins over the policy's 1 s: the idle connections below must stay open.
    g = Gateway("--config", str(conf), "--header-timeout", "120", "--access-log", "off")
    yield g
    code = g.stop()
    assert code == 0, g.proc.output()


def _new_client_latency(port: int) -> float:
    """Seconds for a new client to connect and get GET /v1/models answered."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return time.perf_counter() - start


def _median_latency(port: int, n: int = 30) -> float:
    return statistics.median(_new_client_latency(port) for _ in range(n))


def test_idle_connections_do_not_lock_out_new_clients(gw: Gateway) -> None:
    baseline = _median_latency(gw.port)
    held: list[socket.socket] = []
    try:
        # Most say nothing at all; some make one request and then idle on keep-alive.
        for i in range(IDLE):
            s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
            held.append(s)
            if i % 5 == 0:
                s.sendall(b"GET /v1/models HTTP/1.1\r\nhost: gw\r\n\r\n")
        for s in held[::5]:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")  # accepted and served by a worker
        loaded = _median_latency(gw.port)
        # Far above the 1,024 connections Granian serves by default, a new client is still served at once.
        assert loaded <= 10 * baseline + 0.05, (baseline, loaded)
        # The idle connections are still open (none was dropped to make room).
        s = held[1]
        s.sendall(b"GET /v1/models HTTP/1.1\r\nhost: gw\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for s in held:
            s.close()


async def _stream(port: int) -> bytes:
    body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n"
                     b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        return await reader.read(-1)
    finally:
        writer.close()


def test_2000_concurrent_slow_streams_all_complete(gw: Gateway) -> None:
    async def run() -> list[bytes | BaseException]:
        return await asyncio.wait_for(asyncio.gather(*(_stream(gw.port) for _ in range(STREAMS)),
                                                     return_exceptions=True), 240)

    results = asyncio.run(run())
    failed = [r for r in results if isinstance(r, BaseException) or not r.startswith(b"HTTP/1.1 200")
              or b"data: [DONE]" not in r]
    assert not failed, (len(failed), [r if isinstance(r, BaseException) else r[:300] for r in failed[:3]])


def test_slow_body_is_cut_off_with_408(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
                  b"content-length: 1000\r\n\r\n{")
        s.settimeout(0.2)
        data = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # one byte at a time, never finishing
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                try:
                    s.sendall(b" ")
                except OSError:
                    break
                continue
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), data[:300]
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert b"connection: close" in head.lower()
    output = gw.proc.output()
    assert "not received within 1s; answered 408" in output
    assert "Traceback" not in output

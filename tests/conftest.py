"""Fixtures that start real gateway and mock-backend processes on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import ssl
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import openai
import pytest
import trustme

from tests.support import Proc, free_port, http_request, modelyard, wait_http

_KINDS = ("unit", "integration", "bench")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the folder it lives in (tests/unit, tests/integration, tests/bench),
    subfolders such as tests/unit/translators included."""
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(tests).parts
        if len(parts) > 1 and parts[0] in _KINDS:
            item.add_marker(getattr(pytest.mark, parts[0]))


class Mock:
    def __init__(self, name: str, *extra: str, port: int | None = None):
        self.name = name
        self.port = port or free_port()
        self.proc = Proc(modelyard("mock", "--port", str(self.port), "--name", name, *extra))
        wait_http(self.port, "/health", proc=self.proc)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        _, _, body = http_request(self.port, "GET", "/mock/requests")
        return json.loads(body)

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests() if r["path"].endswith("/chat/completions")]

    def clear(self) -> None:
        http_request(self.port, "DELETE", "/mock/requests")

    def stop(self) -> None:
        self.proc.stop()


class TlsMock:
    """The mock backend serving HTTPS with a certificate for `hostnames` from `ca`."""

    def __init__(self, name: str, folder: Path, ca: trustme.CA, *hostnames: str, extra: Sequence[str] = (),
                 port: int | None = None):
        cert = ca.issue_cert(*hostnames)
        cert.cert_chain_pems[0].write_to_path(folder / f"{name}-cert.pem")
        cert.private_key_pem.write_to_path(folder / f"{name}-key.pem")
        self.ctx = ssl.create_default_context()
        ca.configure_trust(self.ctx)
        self.ctx.check_hostname = False  # probed as 127.0.0.1, not by its name
        self.name = name
        self.port = port or free_port()
        self.proc = Proc(modelyard("mock", "--port", str(self.port), "--name", name, *extra,
                                   "--tls-cert", str(folder / f"{name}-cert.pem"),
                                   "--tls-key", str(folder / f"{name}-key.pem")))
        deadline = time.monotonic() + 20
        while True:
            if not self.proc.alive():
                raise RuntimeError(self.proc.output())
            try:
                if self._request("GET", "/health")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _request(self, method: str, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=5)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def requests(self) -> list[dict]:
        return json.loads(self._request("GET", "/mock/requests")[1])

    def clear(self) -> None:
        self._request("DELETE", "/mock/requests")

    def stop(self) -> None:
        self.proc.stop()


class Gateway:
    def __init__(self, *args: str, env: dict[str, str] | None = None, workers: int = 2, wait: bool = True):
        self.workers = workers
        self.port = free_port()
        self.admin_port = free_port()
        self.proc = Proc(
            modelyard("run", "--host", "127.0.0.1", "--port", str(self.port), "--admin-port", str(self.admin_port),
                      "--workers", str(workers), *args),
            env=env,
        )
        if wait:
            wait_http(self.admin_port, "/readyz", proc=self.proc, timeout=30)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="x", max_retries=0)

    def post(self, path: str, body: object = None, headers: dict[str, str] | None = None, **kw) -> tuple[int, dict, bytes]:
        return http_request(self.port, "POST", path, body, headers, **kw)

    def chat(self, model: str, headers: dict[str, str] | None = None, **extra) -> tuple[int, dict, dict]:
        status, hdrs, body = self.post("/v1/chat/completions",
                                       {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
                                       headers)
        return status, hdrs, json.loads(body)

    def config(self, timeout: float = 10.0) -> dict:
        # A control process busy compiling a big configuration answers once it is done.
        return json.loads(http_request(self.admin_port, "GET", "/config", timeout=timeout)[2])

    def in_sync(self, timeout: float = 10.0) -> bool:
        """Whether every worker serves the watcher's current routing table."""
        view = self.config(timeout)
        workers = view["workers"]
        return len(workers) == self.workers and all(w["generation"] == view["generation"] for w in workers)

    def stop(self) -> int:
        return self.proc.stop()


@pytest.fixture
def start_mock() -> Iterator:
    started: list[Mock] = []

    def start(name: str = "mock", *extra: str, port: int | None = None) -> Mock:
        m = Mock(name, *extra, port=port)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def start_gateway() -> Iterator:
    started: list[Gateway] = []

    def start(*args: str, **kw) -> Gateway:
        g = Gateway(*args, **kw)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def openai_backend(name: str, host: str, port: int, namespace: str = "default", extra: str = "") -> str:
    """YAML for an AIServiceBackend and its Backend at host:port."""
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIServiceBackend
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          schema: {{name: OpenAI}}
          backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
        """) + textwrap.indent(textwrap.dedent(extra), "  ") + textwrap.dedent(f"""\
        ---
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: Backend
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          endpoints:
            - fqdn: {{hostname: {host}, port: {port}}}
        ---
        """)


def route(name: str, *models: str, backend: str = "mock", namespace: str = "default", ref_extra: str = "") -> str:
    """An AIGatewayRoute `name` with one rule per model, each to `backend`."""
    rules = "".join(
        f"    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {m}}}]}}]\n"
        f"      backendRefs: [{{name: {backend}{ref_extra}}}]\n"
        for m in models
    )
    return (
        "apiVersion: aigateway.envoyproxy.io/v1alpha1\n"
        "kind: AIGatewayRoute\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        "spec:\n"
        "  rules:\n" + rules
    )


def assert_openai_error(body: object, code: str | None = None) -> dict:
    """The `error` object of an OpenAI-shaped error body, checked for its required fields."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    if code is not None:
        assert err["code"] == code, err
    return err

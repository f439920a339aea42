"""Priority failover, retries and passive health, with real gateway and mock processes.

Each primary mock misbehaves in one way (`modelyard mock --status/--hang/...`);
a healthy fallback at a lower priority must absorb it without the client seeing
an error, except where a retry would be wrong (a 400, or a stream that already
sent its first chunk).
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import Gateway, Mock, assert_openai_error, openai_backend, write_config
from tests.integration.helpers import serve
from tests.support import free_port, http_request, wait_for

BACKEND = "x-ai-gateway-backend"


def failover_route(name: str, model: str, primary: str, fallback: str | None, rule_extra: str = "") -> str:
    refs = f"[{{name: {primary}, priority: 0}}" + (f", {{name: {fallback}, priority: 1}}]" if fallback else "]")
    return textwrap.dedent(f"""\
        apiVersion: aigateway.envoyproxy.io/v1beta1
        kind: AIGatewayRoute
        metadata: {{name: {name}, namespace: default}}
        spec:
          parentRefs: [{{name: gw}}]
          rules:
            - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
              backendRefs: {refs}
        """) + textwrap.indent(textwrap.dedent(rule_extra), "      ") + "---\n"


def traffic_policy(route: str, body: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: BackendTrafficPolicy
        metadata: {{name: {route}-traffic, namespace: default}}
        spec:
          targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: {route}}}]
        """) + textwrap.indent(textwrap.dedent(body), "  ") + "---\n"


def served_by(headers: dict[str, str]) -> str:
    return headers.get(BACKEND, "").rpartition("/")[2]


# --- a primary that goes away ---------------------------------------------------------------------


def _load(gw: Gateway, model: str, stop: threading.Event, results: list, threads: int = 6) -> list[threading.Thread]:
    def worker() -> None:
        while not stop.is_set():
            try:
                status, headers, body = gw.post("/v1/chat/completions", {
                    "model": model, "messages": [{"role": "user", "content": "hi"}]})
                ok = status == 200 and json.loads(body)["choices"][0]["message"]["content"]
                results.append((time.monotonic(), status if ok else f"bad {status} {body[:200]!r}", served_by(headers)))
            except OSError as e:
                results.append((time.monotonic(), f"error {e}", ""))

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    return pool


def test_primary_killed_mid_load_fails_over_and_traffic_returns(tmp_path: Path, start_mock, start_gateway) -> None:
    primary = start_mock("primary")
    fallback = start_mock("fallback")
    cfg = write_config(tmp_path / "routes.yaml", openai_backend("primary", "127.0.0.1", primary.port)
                       + openai_backend("fallback", "127.0.0.1", fallback.port)
                       + failover_route("chat", "m", "primary", "fallback")
                       + traffic_policy("chat", """\
                           healthCheck:
                             passive: {consecutive5XxErrors: 2, baseEjectionTime: 1s}
                           """))
    gw = start_gateway("--config", str(cfg))
    results: list = []
    stop = threading.Event()
    pool = _load(gw, "m", stop, results)
    try:
        assert wait_for(lambda: len(results) >= 100, timeout=30)
        killed_at = time.monotonic()
        primary.stop()
        assert wait_for(lambda: sum(1 for t, _, _ in results if t > killed_at) >= 300, timeout=60)
        port = primary.port
        restarted = start_mock("primary", port=port)
        back_at = time.monotonic()

        def all_on_primary() -> bool:
            recent = [b for t, _, b in results[-40:] if t > back_at]
            return len(recent) == 40 and set(recent) == {"primary"}

        assert wait_for(all_on_primary, timeout=30, interval=0.2), Counter(b for _, _, b in results[-40:])
    finally:
        stop.set()
        for t in pool:
            t.join(15)
    failures = [r for r in results if r[1] != 200]
    assert not failures, failures[:5]
    during = Counter(b for t, _, b in results if t > killed_at and t < back_at)
    assert during["fallback"] > during["primary"], during
    assert restarted.chat_requests()
    # The ejection is visible on the admin port and as a metric.
    metrics = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    line = next(x for x in metrics.splitlines() if x.startswith("modelyard_endpoint_ejections_total")
                and "default/primary" in x)
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert "modelyard_retries_total" in metrics


# --- primaries that answer badly ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_primaries(tmp_path_factory) -> Iterator[dict]:
    """One gateway; per model a primary that misbehaves one way, all over one healthy fallback."""
    folder = tmp_path_factory.mktemp("failover")
    mocks = {
        "fallback": Mock("fallback"),
        "p500": Mock("p500", "--status", "500"),
        "p429": Mock("p429", "--status", "429", "--retry-after", "30"),
        "phang": Mock("phang", "--hang"),
        "p400": Mock("p400", "--status", "400"),
        "pdie": Mock("pdie", "--die-after", "2", "--itl-ms", "20"),
        "pslow": Mock("pslow", "--ttft-ms", "4000"),
        "pstall": Mock("pstall", "--itl-ms", "3000", "--tokens", "3"),
        "alone": Mock("alone", "--status", "503"),
    }
    text = "".join(openai_backend(n, "127.0.0.1", m.port) for n, m in mocks.items())
    for name in ("p500", "p429", "p400", "pdie"):
        text += failover_route(f"r-{name}", name, name, "fallback")
    text += failover_route("r-phang", "phang", "phang", "fallback") + traffic_policy("r-phang", """\
        retry:
          numRetries: 2
          perRetry: {timeout: 1s}
        """)
    for name in ("pslow", "pstall"):
        text += failover_route(f"r-{name}", name, name, "fallback", "streamIdleTimeout: 1s\n")
    text += failover_route("r-alone", "alone", "alone", None)
    cfg = write_config(folder / "routes.yaml", text)
    gw = Gateway("--config", str(cfg))
    yield from serve(gw, mocks)


@pytest.mark.parametrize("model", ["p500", "p429", "phang"])
def test_failing_primary_fails_over(bad_primaries, model: str) -> None:
    gw, primary = bad_primaries["gw"], bad_primaries[model]
    primary.clear()
    for _ in range(3):
        status, headers, body = gw.chat(model)
        assert status == 200, body
        assert served_by(headers) == "fallback"
        assert body["choices"][0]["message"]["content"]
    assert primary.chat_requests(), "the primary was tried first"


def test_429_retry_after_ejects_the_primary_for_that_long(bad_primaries) -> None:
    gw, primary = bad_primaries["gw"], bad_primaries["p429"]
    gw.chat("p429")  # ejects it for the 30 s the mock asks for
    primary.clear()
    for _ in range(10):
        status, headers, _ = gw.chat("p429")
        assert status == 200 and served_by(headers) == "fallback"
    assert primary.chat_requests() == []
    health = next(b for b in gw.config()["backends"] if b["name"] == "default/p429")["health"][0]
    assert health["state"] == "ejected" and health["ejected_for_s"] > 20, health
    assert health["last_failure_status"] == 429


def test_a_400_is_the_clients_answer_and_not_retried(bad_primaries) -> None:
    gw, fallback = bad_primaries["gw"], bad_primaries["fallback"]
    fallback.clear()
    status, headers, body = gw.chat("p400")
    assert status == 400
    assert served_by(headers) == "p400"
    assert_openai_error(body)
    assert [r for r in fallback.chat_requests() if r["body"].get("model") == "p400"] == []


def test_an_upstream_error_with_nothing_to_fail_over_to_is_relayed_naming_the_backend(bad_primaries) -> None:
    status, headers, body = bad_primaries["gw"].chat("alone")
    assert status == 503
    assert headers[BACKEND] == "default/alone"
    assert_openai_error(body)


def test_stream_broken_after_its_first_chunk_is_not_retried(bad_primaries) -> None:
    gw, fallback = bad_primaries["gw"], bad_primaries["fallback"]
    fallback.clear()
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in gw.client().chat.completions.create(
                model="pdie", messages=[{"role": "user", "content": "hi"}], stream=True):
            received.append(chunk)
    assert received, "chunks before the break reached the client"
    assert "broke off" in str(caught.value)
    assert fallback.chat_requests() == []
    # On the wire: the chunks, one error event, then the response ends (not left hanging).
    status, _, body = gw.post("/v1/chat/completions", {
        "model": "pdie", "stream": True, "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert status == 200 and len(events) >= 2
    assert json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "upstream_reset"


def test_stream_idle_before_its_first_chunk_fails_over(bad_primaries) -> None:
    gw = bad_primaries["gw"]
    status, headers, body = gw.post("/v1/chat/completions", {
        "model": "pslow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}, timeout=20)
    assert status == 200
    assert served_by(headers) == "fallback"
    assert body.rstrip().endswith(b"data: [DONE]")


def test_stream_idle_after_its_first_chunk_ends_with_an_error_event(bad_primaries) -> None:
    gw = bad_primaries["gw"]
    status, headers, body = gw.post("/v1/chat/completions", {
        "model": "pstall", "stream": True, "messages": [{"role": "user", "content": "hi"}]}, timeout=20)
    assert status == 200
    assert served_by(headers) == "pstall"
    events = [e for e in body.decode().split("\n\n") if e.strip()]
    assert len(events) >= 2
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "stream_idle_timeout", last


# --- retries off --------------------------------------------------------------------------------


def test_retries_zero_relays_the_first_failure(tmp_path: Path, start_mock, start_gateway) -> None:
    primary = start_mock("primary", "--status", "500")
    fallback = start_mock("fallback")
    cfg = write_config(tmp_path / "routes.yaml", openai_backend("primary", "127.0.0.1", primary.port)
                       + openai_backend("fallback", "127.0.0.1", fallback.port)
                       + failover_route("chat", "m", "primary", "fallback"))
    gw = start_gateway("--config", str(cfg), "--retries", "0", workers=1)
    status, headers, _ = gw.chat("m")
    assert status == 500 and served_by(headers) == "primary"


# --- endpoints of one Backend --------------------------------------------------------------------


def _retries(gw: Gateway) -> float:
    time.sleep(1.0)  # workers write their metrics every half second
    text = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith("modelyard_retries_total{"))


def test_a_dead_endpoint_of_a_backend_is_ejected_and_gets_nothing(tmp_path: Path, start_mock, start_gateway) -> None:
    live = start_mock("live")
    dead_port = free_port()  # nothing listens there
    backend = openai_backend("pair", "127.0.0.1", live.port).replace(
        f"    - fqdn: {{hostname: 127.0.0.1, port: {live.port}}}\n",
        f"    - fqdn: {{hostname: 127.0.0.1, port: {live.port}}}\n"
        f"    - ip: {{address: 127.0.0.1, port: {dead_port}}}\n")
    cfg = write_config(tmp_path / "routes.yaml", backend + failover_route("chat", "m", "pair", None))
    gw = start_gateway("--config", str(cfg), workers=1)
    for _ in range(20):
        status, headers, _ = gw.chat("m")
        assert status == 200 and served_by(headers) == "pair"
    health = {h["state"] for b in gw.config()["backends"] if b["name"] == "default/pair" for h in b["health"]}
    assert health == {"serving", "ejected"}
    before = _retries(gw)
    assert before >= 1
    for _ in range(20):
        assert gw.chat("m")[0] == 200
    assert _retries(gw) == before, "the ejected endpoint got requests"

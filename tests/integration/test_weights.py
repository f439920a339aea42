"""Traffic split by backendRef weight, counted by the mock that answered (x-mock-name)."""

from __future__ import annotations

import http.client
import json
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import Gateway, Mock, openai_backend, write_config

N = 1000
TOLERANCE = 0.05  # relative to the expected share: 80% of N +- 5% of that, i.e. 760..840 of 1000
# (about 3.2 standard deviations at N = 1000). The 20% side is the complement, 160..240: a relative
# +-5% there (190..210) would be under one standard deviation, so it is not asserted separately.


def _config(heavy: Mock, light: Mock, idle: Mock) -> str:
    backends = "".join(openai_backend(name, "127.0.0.1", m.port) for name, m in
                       (("heavy", heavy), ("light", light), ("idle", idle)))
    return backends + textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: weighted, namespace: default}
        spec:
          rules:
            - matches:
                - headers:
                    - {type: Exact, name: x-ai-eg-model, value: split}
              backendRefs:
                - {name: heavy, weight: 80}
                - {name: light, weight: 20}
                - {name: idle, weight: 0}
            - matches:
                - headers:
                    - {type: Exact, name: x-ai-eg-model, value: drained}
              backendRefs:
                - {name: heavy, weight: 0}
        """)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Mock, Mock, Mock]]:
    mocks = [Mock("heavy"), Mock("light"), Mock("idle")]
    gw = None
    try:
        folder: Path = tmp_path_factory.mktemp("weights")
        config = write_config(folder / "weights.yaml", _config(*mocks))
        gw = Gateway("--config", str(config))
        yield (gw, *mocks)
    finally:
        if gw is not None:
            gw.stop()
            out = gw.proc.log_path.read_text(errors="replace")
            assert "Traceback" not in out, out
        for m in mocks:
            m.stop()


def test_weights_80_20_and_weight_zero_gets_nothing(setup: tuple[Gateway, Mock, Mock, Mock]) -> None:
    gw, heavy, light, idle = setup
    for m in (heavy, light, idle):
        m.clear()
    body = json.dumps({"model": "split", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"content-type": "application/json"}
    counts: Counter[str] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        for _ in range(N):
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200, data
            counts[resp.getheader("x-mock-name")] += 1
    finally:
        conn.close()
    assert sum(counts.values()) == N
    assert set(counts) <= {"heavy", "light"}, counts
    expected = 0.80 * N
    low, high = expected * (1 - TOLERANCE), expected * (1 + TOLERANCE)
    assert (low, high) == pytest.approx((760, 840))
    assert low <= counts["heavy"] <= high, counts
    assert counts["light"] == N - counts["heavy"], counts
    assert counts["idle"] == 0
    # the mocks agree with the response headers; the weight-0 backend was never contacted
    assert len([r for r in idle.requests() if r["path"] == "/v1/chat/completions"]) == 0
    assert len([r for r in light.requests() if r["path"] == "/v1/chat/completions"]) == counts["light"]


def test_rule_with_only_weight_zero_answers_503(setup: tuple[Gateway, Mock, Mock, Mock]) -> None:
    gw, heavy, _, _ = setup
    heavy.clear()
    status, _, body = gw.chat("drained")
    assert status == 503, body
    err = body["error"]
    assert {"message", "type", "code"} <= set(err)
    assert "weight" in err["message"]
    with pytest.raises(openai.APIStatusError) as info:
        openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="drained", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 503
    assert [r for r in heavy.requests() if r["path"] == "/v1/chat/completions"] == []

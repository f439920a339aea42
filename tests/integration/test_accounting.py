"""Usage, costs, GenAI metrics and the access log, through a real gateway and mocks."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Iterator

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway, Mock, openai_backend, write_config
from tests.support import http_request, wait_for

# Token counts are unsigned in CEL, as in the Envoy AI Gateway: literals next to them take a `u`.
CEL = "model == 'm' ? input_tokens * 2u + output_tokens * 8u + (backend == 'mock.default' ? 1u : 0u) : total_tokens"
# Fine for the all-zero check at load time, a division by zero once there is output.
BROKEN = "output_tokens > 0u ? input_tokens / (output_tokens - output_tokens) : 0u"
COSTS = f"""\
  llmRequestCosts:
    - {{metadataKey: in, type: InputToken}}
    - {{metadataKey: out, type: OutputToken}}
    - {{metadataKey: total, type: TotalToken}}
    - {{metadataKey: cached, type: CachedInputToken}}
    - {{metadataKey: creation, type: CacheCreationInputToken}}
    - {{metadataKey: reasoning, type: ReasoningToken}}
    - {{metadataKey: weighted, type: CEL, cel: "{CEL}"}}
    - {{metadataKey: broken, type: CEL, cel: "{BROKEN}"}}
"""


def routes() -> str:
    return textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: acct, namespace: default}
        spec:
          rules:
            - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: m}]}]
              backendRefs: [{name: mock}]
            - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: quiet}]}]
              backendRefs: [{name: quiet}]
            - matches: [{headers: [{type: RegularExpression, name: x-ai-eg-model, value: "wild-.*"}]}]
              backendRefs: [{name: mock}]
        """) + COSTS


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("accounting")
    mock, quiet = Mock("mock"), Mock("quiet", "--no-usage")
    cfg = write_config(folder / "routes.yaml", openai_backend("mock", "127.0.0.1", mock.port)
                       + openai_backend("quiet", "127.0.0.1", quiet.port) + routes())
    gw = Gateway("--config", str(cfg), "--metrics-header", "x-tenant-id=tenant")
    try:
        yield {"gw": gw, "mock": mock, "quiet": quiet}
    finally:
        gw.stop()
        mock.stop()
        quiet.stop()


def tenant() -> str:
    return uuid.uuid4().hex[:12]


def token_sums(gw: Gateway, tenant_id: str) -> dict[str, float]:
    """gen_ai_client_token_usage sums by token type, for one tenant (metrics flush every 0.5 s)."""
    text = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "gen_ai_client_token_usage":
            for s in family.samples:
                if s.name.endswith("_sum") and s.labels.get("tenant") == tenant_id:
                    out[s.labels["gen_ai_token_type"]] = out.get(s.labels["gen_ai_token_type"], 0) + s.value
    return out


def chat_body(model: str, marker: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": f"count me {marker}"}], **extra}


def test_non_streaming_usage_reaches_the_metrics_exactly(setup) -> None:
    gw, t = setup["gw"], tenant()
    status, _, body = gw.post("/v1/chat/completions", chat_body("m", t), {"x-tenant-id": t})
    assert status == 200
    usage = json.loads(body)["usage"]
    # The tenant header became a label: these series hold this one request. A worker's flush creates
    # a series (at 0) before it adds the value, so a scrape in between sees the series without its
    # value: wait for the values themselves.
    expected = {"input": usage["prompt_tokens"], "output": usage["completion_tokens"]}
    sums = wait_for(lambda: (s := token_sums(gw, t)) == expected and s, timeout=30.0) or token_sums(gw, t)
    assert sums == expected


def _last_line(gw: Gateway, model: str, before: int, stream: bool = False) -> dict:
    """The newest access-log line for `model` (streamed or not) after the first `before` lines.
    Each worker writes its own lines in batches, so lines of two workers may come out of order."""
    def find() -> dict | None:
        lines = [json.loads(x) for x in gw.proc.output().splitlines() if x.startswith("{")]
        fresh = [x for x in lines[before:] if x["model"] == model and x["stream"] is stream]
        return fresh[-1] if fresh else None

    found = wait_for(find, timeout=30.0)
    assert found, gw.proc.output()[-2000:]
    return found


def _log_count(gw: Gateway) -> int:
    return sum(1 for x in gw.proc.output().splitlines() if x.startswith("{"))


def test_access_log_line_has_exact_usage_and_every_cost(setup) -> None:
    gw = setup["gw"]
    before = _log_count(gw)
    status, _, body = gw.post("/v1/chat/completions", chat_body("m", "x"))
    assert status == 200
    usage = json.loads(body)["usage"]
    line = _last_line(gw, "m", before)
    inp, out = usage["prompt_tokens"], usage["completion_tokens"]
    assert line["tokens"] == {"input": inp, "output": out, "total": inp + out, "cached_input": 0,
                              "cache_creation_input": 0, "reasoning": 0}
    assert line["usage_estimated"] is False
    assert line["costs"] == {"in": inp, "out": out, "total": inp + out, "cached": 0, "creation": 0, "reasoning": 0,
                             "weighted": inp * 2 + out * 8 + 1, "broken": 0}
    assert (line["route"], line["backend"], line["status"], line["retries"]) == ("default/acct", "default/mock", 200, 0)
    assert "count me" not in json.dumps(line)  # never the prompt
    assert "CEL" in gw.proc.output() or "broken" in gw.proc.output()  # the runtime error is logged


def test_stream_without_usage_asked_gets_no_usage_chunk_but_is_counted(setup) -> None:
    gw = setup["gw"]
    _, _, body = gw.post("/v1/chat/completions", chat_body("m", "s"))
    expected = json.loads(body)["usage"]
    before = _log_count(gw)
    chunks = list(gw.client().chat.completions.create(stream=True, **chat_body("m", "s")))
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk was not stripped"
    line = _last_line(gw, "m", before, stream=True)
    assert line["tokens"]["input"] == expected["prompt_tokens"]
    assert line["tokens"]["output"] == expected["completion_tokens"]
    assert line["ttft_ms"] is not None and line["stream"] is True


def test_stream_that_asked_for_usage_gets_it_once(setup) -> None:
    gw = setup["gw"]
    chunks = list(gw.client().chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                       **chat_body("m", "u")))
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0].choices == []
    assert with_usage[0].usage.completion_tokens == 16


@pytest.mark.parametrize("stream", [False, True])
def test_backend_without_usage_is_counted_with_the_tokenizer_and_marked(setup, stream: bool) -> None:
    from modelyard.core.tokenizer import TokenCounter

    gw = setup["gw"]
    before = _log_count(gw)
    request = chat_body("quiet", "estimate", stream=stream)
    status, _, body = gw.post("/v1/chat/completions", request)
    assert status == 200
    if stream:
        text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
                       for e in body.decode().split("\n\n") if e.startswith("data: {"))
    else:
        text = json.loads(body)["choices"][0]["message"]["content"]
    counter = TokenCounter([])
    line = _last_line(gw, "quiet", before, stream)
    assert line["usage_estimated"] is True
    assert line["tokens"]["input"] == counter.count_request("quiet", request)
    assert line["tokens"]["output"] == counter.count_text("quiet", text)
    metrics = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    assert 'modelyard_estimated_usage_total{backend="default/quiet"' in metrics or wait_for(
        lambda: 'backend="default/quiet"' in http_request(gw.admin_port, "GET", "/metrics")[2].decode(), timeout=30)


def test_metrics_sum_every_worker_and_bound_model_labels(setup) -> None:
    gw = setup["gw"]
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    for i in range(1000):
        client.chat.completions.create(model=f"wild-{i}", messages=[{"role": "user", "content": "hi"}])

    def series() -> tuple[int, float]:
        text = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
        models, count = set(), 0.0
        for family in text_string_to_metric_families(text):
            if family.name == "gen_ai_server_request_duration_seconds":
                for s in family.samples:
                    if s.name.endswith("_count") and s.labels["gen_ai_original_model"].startswith(("wild-", "_other")):
                        models.add(s.labels["gen_ai_original_model"])
                        count += s.value
        return len(models), count

    n, count = wait_for(lambda: (r := series())[1] >= 1000 and r, timeout=30.0) or series()
    assert count == 1000  # every request, from both workers
    assert n <= 2 * 100 + 1, n  # bounded per worker, then "_other"


def _samples(gw: Gateway) -> list:
    text = http_request(gw.admin_port, "GET", "/metrics")[2].decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _refused_count(gw: Gateway, status: str = "400") -> float:
    """Requests the gateway answered itself, before any backend, with this status."""
    return sum(s.value for s in _samples(gw) if s.name == "modelyard_requests_total"
               and s.labels.get("status") == status and not s.labels.get("backend"))


def test_model_names_over_the_limit_leave_metrics_small(setup) -> None:
    """20 requests with 1 MB model names are refused (400 invalid_model) before any backend and grow
    /metrics by under 64 KB (before the bounds one such request grew it to 105 MB). Names at the
    256-character limit reach the backend and become labels of at most that length."""
    gw, mock = setup["gw"], setup["mock"]
    mock.clear()
    refused = _refused_count(gw)
    size_before = len(http_request(gw.admin_port, "GET", "/metrics")[2])  # the module's other series
    name = "wild-" + "x" * (1 << 20)
    for i in range(20):
        status, _, body = gw.post("/v1/chat/completions", chat_body(f"{name}{i}", "big"), timeout=30)
        assert status == 400 and json.loads(body)["error"]["code"] == "invalid_model", body[:300]
    assert mock.chat_requests() == []
    assert wait_for(lambda: _refused_count(gw) >= refused + 20, timeout=30.0)
    grown = len(http_request(gw.admin_port, "GET", "/metrics")[2]) - size_before
    assert grown < 64 * 1024, grown

    at_limit = {f"wild-{i:03d}".ljust(256, "y") for i in range(20)}

    def labelled() -> float:  # as given, or "_other" once a worker's 100 values are taken
        return sum(s.value for s in _samples(gw) if s.name == "gen_ai_server_request_duration_seconds_count"
                   and s.labels.get("gen_ai_original_model") in at_limit | {"_other"})

    before = labelled()
    for model in at_limit:
        assert gw.chat(model)[0] == 200
    assert wait_for(lambda: labelled() >= before + 20, timeout=30.0)
    assert max(len(v) for s in _samples(gw) for v in s.labels.values()) <= 256


def test_the_supervisor_never_imports_prometheus_client_before_its_multiprocess_dir_is_set() -> None:
    # prometheus-client picks process-local or file-backed values when it is first imported;
    # workers fork from the supervisor, so an early import there would hide every worker's metrics.
    import subprocess
    import sys

    code = "import sys, modelyard.gateway.process.cli, modelyard.gateway.process.supervisor, modelyard.config.control; print('prometheus_client' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "False"


# --- token counting endpoints -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def counting(tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("counting")
    vllm, plain = Mock("vllm", "--tokenize"), Mock("plain")
    text = openai_backend("vllm", "127.0.0.1", vllm.port) + openai_backend("plain", "127.0.0.1", plain.port)
    text += textwrap.dedent("""\
        apiVersion: aigateway.envoyproxy.io/v1alpha1
        kind: AIGatewayRoute
        metadata: {name: count, namespace: default}
        spec:
          rules:
            - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: served}]}]
              backendRefs: [{name: vllm}]
            - matches: [{headers: [{type: Exact, name: x-ai-eg-model, value: local}]}]
              backendRefs: [{name: plain}]
        """)
    gw = Gateway("--config", str(write_config(folder / "r.yaml", text)), workers=1)
    try:
        yield {"gw": gw, "vllm": vllm, "plain": plain}
    finally:
        gw.stop()
        vllm.stop()
        plain.stop()


def test_tokenize_is_forwarded_to_a_backend_that_serves_it(counting) -> None:
    status, headers, body = counting["gw"].post("/tokenize", {"model": "served", "prompt": "one two three"})
    assert status == 200 and headers["x-ai-gateway-backend"] == "default/vllm"
    assert json.loads(body) == {"count": 3, "max_model_len": 4096, "tokens": [0, 1, 2]}


def test_tokenize_is_answered_locally_when_the_backend_cannot(counting) -> None:
    from modelyard.core.tokenizer import TokenCounter

    gw = counting["gw"]
    for _ in range(2):  # the second time without asking the backend again
        status, _, body = gw.post("/tokenize", {"model": "local", "prompt": "Hello, tokenizer world!"})
        assert status == 200
        answer = json.loads(body)
        assert answer["count"] == TokenCounter([]).count_text("local", "Hello, tokenizer world!")
        assert answer["tokens"] and answer["max_model_len"] is None
    assert len([r for r in counting["plain"].requests() if r["path"] == "/tokenize"]) == 1


def test_anthropic_count_tokens_is_answered_locally(counting) -> None:
    from modelyard.core.tokenizer import TokenCounter

    request = {"model": "local", "system": "Be brief.", "messages": [{"role": "user", "content": "How many?"}]}
    status, _, body = counting["gw"].post("/v1/messages/count_tokens", request)
    assert status == 200
    assert json.loads(body) == {"input_tokens": TokenCounter([]).count_request("local", request)}
    status, _, body = counting["gw"].post("/v1/messages/count_tokens", raw=b"{not json")
    assert status == 400 and json.loads(body)["type"] == "error"


def test_a_thousand_unknown_models_add_no_series(setup) -> None:
    gw = setup["gw"]

    def series() -> set[tuple]:
        return {(s.name, tuple(sorted(s.labels.items()))) for s in _samples(gw)}

    assert gw.chat("no-such-model-0")[0] == 404  # the 404 series itself may be new
    not_found = wait_for(lambda: _refused_count(gw, "404"), timeout=30.0)
    before = series()
    for i in range(1000):
        assert gw.chat(f"no-such-model-{i}")[0] == 404
    # Wait for the count, not for a series: every request is in it once both workers flushed.
    assert wait_for(lambda: _refused_count(gw, "404") >= not_found + 1000, timeout=30.0)
    added = series() - before  # a series of an earlier test may still arrive; none may name a model
    assert not [s for s in added if "no-such-model" in repr(s) or ("status", "404") in s[1]], added
    assert "no-such-model" not in http_request(gw.admin_port, "GET", "/metrics")[2].decode()


@pytest.mark.parametrize("header", ["Authorization", "x-api-key", "api-key", "cookie", "x-aigw-api-key",
                                    "x-aigw-anthropic-api-key", "x-aigw-azure-api-key"])
def test_credential_headers_cannot_be_metric_labels(header: str) -> None:
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "modelyard.gateway", "run", "--metrics-header", header],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "carries credentials" in run.stderr

"""The shared example folders, loaded unchanged, served against local mocks reached through --resolve.

The examples name hosts that do not exist here (cluster DNS names, api.openai.com);
`--resolve HOST:PORT=127.0.0.1:PORT` points them at mock backends, so the files
themselves are never edited or copied.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import trustme
import yaml

from tests.conftest import Gateway, Mock, TlsMock, assert_openai_error
from tests.support import EXAMPLES, modelyard

NRP = EXAMPLES / "nrp-models-config"
SINGLE = EXAMPLES / "single-backend"
SKILL = EXAMPLES / "skill-routes"

QWEN_OVERRIDE = "Qwen/Qwen3-235B-A22B-Thinking-2507-FP8"
NRP_HOST = "qwen-vllm-inference.nrp-llm.svc.cluster.local:5000"  # Backend envoy-ai-gateway-nrp-qwen
SDSC_HOST = "qwen3.nairr.sdsc.example.org:443"  # Backend envoy-ai-gateway-sdsc-nairr-qwen3
NRP_KEY = "sk-nrp-example-not-a-real-key"  # Secret nrp-llm/openai-apikey, stringData.apiKey
MESSAGES = [{"role": "user", "content": "hi"}]



def _chat_raw(gw: Gateway, model: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    status, hdrs, body = gw.post("/v1/chat/completions", {"model": model, "messages": MESSAGES}, headers)
    return status, hdrs, json.loads(body)




def _routes_in(folder: Path) -> list[str]:
    """namespace/name of every AIGatewayRoute in the folder's YAML files."""
    names = []
    for f in sorted(folder.glob("*.y*ml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "AIGatewayRoute":
                meta = doc["metadata"]
                names.append(f"{meta.get('namespace', 'default')}/{meta['name']}")
    return names


# --- modelyard check --------------------------------------------------------------


@pytest.mark.parametrize("folder", ["nrp-models-config", "single-backend", "skill-routes"])
def test_check_accepts_each_example_folder(folder: str) -> None:
    path = EXAMPLES / folder
    done = subprocess.run(modelyard("check", str(path)), capture_output=True, text=True, timeout=60,
                          cwd=str(Path(__file__).resolve().parents[2]))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out
    routes = _routes_in(path)
    assert routes
    for route in routes:
        lines = [line for line in out.splitlines() if line.startswith(f"AIGatewayRoute {route}:")]
        assert len(lines) == 1, f"no summary line for AIGatewayRoute {route}:\n{out}"
    assert not [line for line in out.splitlines() if line.startswith("error")], out


def _serve(folder: Path, mocks: dict[str, Mock | TlsMock], never_logged: str | None = None) -> Iterator[Gateway]:
    """A fixture's body: the gateway on example `folder`, each `host:port` of `mocks` resolved to its
    mock. Afterwards the gateway is stopped, its log checked for tracebacks (and for `never_logged`,
    a secret), and the mocks stopped."""
    gw = None
    try:
        resolve = [arg for host, m in mocks.items() for arg in ("--resolve", f"{host}=127.0.0.1:{m.port}")]
        gw = Gateway("--config", str(folder), *resolve)
        yield gw
    finally:
        if gw is not None:
            gw.stop()
            out = gw.proc.log_path.read_text(errors="replace")
            assert "Traceback" not in out, out
            if never_logged is not None:
                assert never_logged not in out, "the API key from the Secret must never be logged"
        for m in mocks.values():
            m.stop()


# --- nrp-models-config --------------------------------------------------------------


@pytest.fixture(scope="module")
def nrp() -> Iterator[tuple[Gateway, Mock, Mock]]:
    mock_a = Mock("nrp-a")
    mock_b = Mock("sdsc-b")
    for gw in _serve(NRP, {NRP_HOST: mock_a, SDSC_HOST: mock_b}, never_logged=NRP_KEY):
        yield gw, mock_a, mock_b


def test_nrp_qwen3_reaches_nrp_backend_with_override(nrp: tuple[Gateway, Mock, Mock]) -> None:
    gw, a, b = nrp
    a.clear()
    b.clear()
    raw = gw.client().chat.completions.with_raw_response.create(model="qwen3", messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers["x-mock-name"] == "nrp-a"
    assert raw.parse().choices[0].message.content
    [req] = a.chat_requests()
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == QWEN_OVERRIDE
    assert req["body"]["messages"] == MESSAGES
    assert b.chat_requests() == []


def test_nrp_qwen3_nairr_reaches_sdsc_backend_with_override(nrp: tuple[Gateway, Mock, Mock]) -> None:
    gw, a, b = nrp
    a.clear()
    b.clear()
    raw = gw.client().chat.completions.with_raw_response.create(model="qwen3-nairr", messages=MESSAGES)
    assert raw.headers["x-mock-name"] == "sdsc-b"
    [req] = b.chat_requests()
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == QWEN_OVERRIDE
    assert a.chat_requests() == []


def test_nrp_api_key_from_secret_only_on_its_backend(nrp: tuple[Gateway, Mock, Mock]) -> None:
    """The BackendSecurityPolicy targets AIServiceBackend envoy-ai-gateway-nrp-qwen (mock A) only."""
    gw, a, b = nrp
    a.clear()
    b.clear()
    client = gw.client()  # the SDK itself sends `Authorization: Bearer x`
    client.chat.completions.create(model="qwen3", messages=MESSAGES)
    client.chat.completions.create(model="qwen3-nairr", messages=MESSAGES)
    [to_a] = a.chat_requests()
    [to_b] = b.chat_requests()
    assert to_a["headers"]["authorization"] == f"Bearer {NRP_KEY}"
    assert "authorization" not in to_b["headers"]


def test_nrp_client_authorization_is_never_forwarded(nrp: tuple[Gateway, Mock, Mock]) -> None:
    gw, a, b = nrp
    a.clear()
    b.clear()
    client_auth = {"Authorization": "Bearer sk-client-secret"}
    for model in ("qwen3", "qwen3-nairr"):
        status, hdrs, body = _chat_raw(gw, model, client_auth)
        assert status == 200, body
    [to_a] = a.chat_requests()
    [to_b] = b.chat_requests()
    assert to_a["headers"]["authorization"] == f"Bearer {NRP_KEY}"  # replaced, not appended or passed on
    assert "authorization" not in to_b["headers"]  # stripped
    for req in (to_a, to_b):
        assert "sk-client-secret" not in json.dumps(req["headers"])


def test_nrp_combined_shares_traffic_between_both_backends(nrp: tuple[Gateway, Mock, Mock]) -> None:
    gw, a, b = nrp
    a.clear()
    b.clear()
    client = gw.client()
    seen: Counter[str] = Counter()
    for _ in range(40):
        raw = client.chat.completions.with_raw_response.create(model="qwen3-combined", messages=MESSAGES)
        seen[raw.headers["x-mock-name"]] += 1
    assert set(seen) == {"nrp-a", "sdsc-b"}, seen
    to_a, to_b = a.chat_requests(), b.chat_requests()
    assert len(to_a) == seen["nrp-a"] and len(to_b) == seen["sdsc-b"]
    for req in to_a + to_b:
        assert req["body"]["model"] == QWEN_OVERRIDE
    # credentials follow the backend, not the rule
    assert all(r["headers"].get("authorization") == f"Bearer {NRP_KEY}" for r in to_a)
    assert all("authorization" not in r["headers"] for r in to_b)


def test_nrp_models_list(nrp: tuple[Gateway, Mock, Mock]) -> None:
    gw, _, _ = nrp
    models = {m.id: m for m in gw.client().models.list()}
    assert set(models) == {"qwen3", "qwen3-nairr", "qwen3-combined"}
    assert models["qwen3"].owned_by == "NRP"
    assert models["qwen3-nairr"].owned_by == "SDSC"
    assert models["qwen3-combined"].owned_by == "NRP"
    assert all(m.object == "model" for m in models.values())


def test_nrp_host_header_is_backend_fqdn(nrp: tuple[Gateway, Mock, Mock]) -> None:
    gw, a, b = nrp
    a.clear()
    b.clear()
    client = gw.client()
    client.chat.completions.create(model="qwen3", messages=MESSAGES)
    client.chat.completions.create(model="qwen3-nairr", messages=MESSAGES)
    [to_a] = a.chat_requests()
    [to_b] = b.chat_requests()
    assert to_a["headers"]["host"] == NRP_HOST
    assert to_b["headers"]["host"] == SDSC_HOST


def test_nrp_unknown_model_is_404_listing_models(nrp: tuple[Gateway, Mock, Mock]) -> None:
    gw, a, b = nrp
    a.clear()
    b.clear()
    with pytest.raises(openai.NotFoundError) as info:
        gw.client().chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert info.value.status_code == 404
    status, _, body = _chat_raw(gw, "no-such-model")
    assert status == 404
    err = assert_openai_error(body)
    message = err["message"]
    assert "no-such-model" in message
    for name in ("qwen3", "qwen3-nairr", "qwen3-combined"):
        assert name in message
    assert "catch-all" in message
    assert a.chat_requests() == [] and b.chat_requests() == []


# --- single-backend -------------------------------------------------------------------


@pytest.fixture(scope="module")
def single() -> Iterator[tuple[Gateway, Mock, Mock]]:
    # catch-all.yaml's Backend (127.0.0.1:11434) is read after aigw-run-ollama.yaml's (0.0.0.0:11434)
    # and replaces it; each address goes to its own mock so the test can tell which definition won.
    later = Mock("ollama-later")
    earlier = Mock("ollama-earlier")
    for gw in _serve(SINGLE, {"127.0.0.1:11434": later, "0.0.0.0:11434": earlier}):
        yield gw, later, earlier


def test_single_backend_catch_all_needs_no_header(single: tuple[Gateway, Mock, Mock]) -> None:
    gw, later, earlier = single
    later.clear()
    earlier.clear()
    client = gw.client()
    names = ["llama3.2", "qwen2.5:7b", "gpt-4o", "some/org-model"]
    for name in names:
        raw = client.chat.completions.with_raw_response.create(model=name, messages=MESSAGES)
        assert raw.headers["x-mock-name"] == "ollama-later"
        assert raw.parse().model == name
    reqs = later.chat_requests()
    assert [r["body"]["model"] for r in reqs] == names  # no modelNameOverride: the name goes through
    assert all(r["path"] == "/v1/chat/completions" for r in reqs)
    assert earlier.chat_requests() == []


def test_single_backend_selector_header_still_works(single: tuple[Gateway, Mock, Mock]) -> None:
    gw, later, earlier = single
    later.clear()
    earlier.clear()
    status, hdrs, body = _chat_raw(gw, "llama3.2", {"aigw-backend-selector": "ollama"})
    assert status == 200, body
    assert hdrs["x-mock-name"] == "ollama-later"
    assert earlier.chat_requests() == []


def test_single_backend_warns_about_redefinition(single: tuple[Gateway, Mock, Mock]) -> None:
    gw, _, _ = single
    out = gw.proc.output()
    for ref in ("AIServiceBackend/default/ollama", "Backend/default/ollama"):
        lines = [line for line in out.splitlines()
                 if line.startswith("warning:") and f": {ref}:" in line and "aigw-run-ollama.yaml" in line
                 and "catch-all.yaml" in line]
        assert len(lines) == 1, f"expected one warning about {ref} defined in both files:\n{out}"
        [line] = lines
        # it is reported on the later file (the winner) and says it replaces the earlier one
        assert "catch-all.yaml" in line.split(ref)[0], line
        assert "replaces" in line and "aigw-run-ollama.yaml" in line.split(ref)[1], line


# --- skill-routes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def skill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, TlsMock]]:
    mock = TlsMock("openai-tls", tmp_path_factory.mktemp("skill-tls"), trustme.CA(), "api.openai.com")
    for gw in _serve(SKILL, {"api.openai.com:443": mock}):
        yield gw, mock


def test_skill_failover_rule_names_missing_backend(skill: tuple[Gateway, TlsMock]) -> None:
    gw, _ = skill
    status, _, body = _chat_raw(gw, "gpt-4o-mini")
    assert status == 503
    err = assert_openai_error(body)
    assert "AIServiceBackend" in err["message"] and "default/primary-openai" in err["message"]
    with pytest.raises(openai.APIStatusError) as info:  # the SDK surfaces the same answer
        gw.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 503
    assert "default/primary-openai" in info.value.message


def test_skill_inference_pool_is_not_implemented(skill: tuple[Gateway, TlsMock]) -> None:
    gw, _ = skill
    status, _, body = _chat_raw(gw, "llama-3-8b")
    assert status == 501
    err = assert_openai_error(body)
    assert "InferencePool" in err["message"]


def test_skill_regex_rule_names_anthropic_backend(skill: tuple[Gateway, TlsMock]) -> None:
    gw, _ = skill
    for model in ("claude-3", "claude-3-5-sonnet-latest"):
        status, _, body = _chat_raw(gw, model)
        assert status in (501, 503), body
        err = assert_openai_error(body)
        assert "anthropic-backend" in err["message"]


def test_skill_catch_all_names_missing_backend(skill: tuple[Gateway, TlsMock]) -> None:
    gw, _ = skill
    for model in ("mistral-large", "some-unlisted-model"):
        status, _, body = _chat_raw(gw, model)
        assert status == 503, body
        err = assert_openai_error(body)
        assert "my-openai-backend" in err["message"]


def test_skill_weighted_rule_reaches_openai_backend_over_tls(skill: tuple[Gateway, TlsMock]) -> None:
    # gpt-4o splits 80/20 between openai-backend and azure-openai-backend, whose Backend is missing:
    # an unusable ref leaves the split, so every request goes to openai-backend. That is api.openai.com
    # over TLS verified with the system CAs, which do not trust the test CA: the handshake fails, and
    # the gateway must say so as a 502 naming the backend (not a 500, not the azure ref's 503).
    gw, _ = skill
    for _ in range(5):
        status, _, body = _chat_raw(gw, "gpt-4o")
        assert status == 502, body
        err = assert_openai_error(body)
        assert "openai-backend" in err["message"]

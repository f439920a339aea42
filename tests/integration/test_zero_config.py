"""Starting with no configuration file: a default backend from --backend or OPENAI_BASE_URL."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Gateway, Mock, openai_backend, write_config

MESSAGES = [{"role": "user", "content": "hi"}]
MODELS = ["llama3.2", "gpt-4o", "qwen2.5:7b", "org/some-model-v1", "x"]




def _stop(gw: Gateway | None) -> None:
    if gw is not None:
        gw.stop()
        out = gw.proc.log_path.read_text(errors="replace")
        assert "Traceback" not in out, out


# --- --backend URL, no --config ------------------------------------------------------


@pytest.fixture(scope="module")
def backend_only() -> Iterator[tuple[Gateway, Mock]]:
    mock = Mock("default-mock")
    gw = None
    try:
        gw = Gateway("--backend", f"http://127.0.0.1:{mock.port}/v1")
        yield gw, mock
    finally:
        _stop(gw)
        mock.stop()


def test_backend_flag_routes_every_model(backend_only: tuple[Gateway, Mock]) -> None:
    gw, mock = backend_only
    mock.clear()
    client = gw.client()
    for model in MODELS:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        assert raw.status_code == 200
        assert raw.headers["x-mock-name"] == "default-mock"
        assert raw.parse().model == model
    reqs = mock.chat_requests()
    assert [r["body"]["model"] for r in reqs] == MODELS  # the name goes through unchanged
    assert all(r["path"] == "/v1/chat/completions" for r in reqs)
    assert all(r["method"] == "POST" for r in reqs)
    # no key was given: nothing is sent upstream, and the client's own key is not passed on
    assert all("authorization" not in r["headers"] for r in reqs)


def test_backend_flag_streaming(backend_only: tuple[Gateway, Mock]) -> None:
    gw, _ = backend_only
    chunks = list(gw.client().chat.completions.create(model="any-model", messages=MESSAGES, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == "any-model" for c in chunks)


def test_backend_flag_startup_output(backend_only: tuple[Gateway, Mock]) -> None:
    gw, mock = backend_only
    out = gw.proc.output()
    assert f"http://127.0.0.1:{mock.port}/v1" in out  # what was loaded
    assert f"http://127.0.0.1:{gw.port}" in out  # where it listens
    assert str(gw.admin_port) in out


# --- OPENAI_BASE_URL / OPENAI_API_KEY, no --config, no --backend ---------------------------


@pytest.fixture(scope="module")
def from_env() -> Iterator[tuple[Gateway, Mock]]:
    mock = Mock("env-mock")
    gw = None
    try:
        gw = Gateway(env={"OPENAI_BASE_URL": f"http://127.0.0.1:{mock.port}/v1", "OPENAI_API_KEY": "sk-test"})
        yield gw, mock
    finally:
        _stop(gw)
        out = gw.proc.log_path.read_text(errors="replace") if gw is not None else ""
        assert "sk-test" not in out, "the API key must never be printed"
        mock.stop()


def test_env_base_url_and_key(from_env: tuple[Gateway, Mock]) -> None:
    gw, mock = from_env
    mock.clear()
    client = gw.client()  # sends `Authorization: Bearer x`, which must be replaced
    for model in MODELS[:3]:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        assert raw.headers["x-mock-name"] == "env-mock"
    reqs = mock.chat_requests()
    assert [r["body"]["model"] for r in reqs] == MODELS[:3]
    assert all(r["path"] == "/v1/chat/completions" for r in reqs)
    assert all(r["headers"].get("authorization") == "Bearer sk-test" for r in reqs)


def test_env_startup_output(from_env: tuple[Gateway, Mock]) -> None:
    gw, mock = from_env
    out = gw.proc.output()
    assert f"http://127.0.0.1:{mock.port}/v1" in out  # what was loaded
    assert f"http://127.0.0.1:{gw.port}" in out  # where it listens
    assert "sk-test" not in out


# --- --backend together with --config ----------------------------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Mock, Mock]]:
    routed = Mock("routed-mock")
    default = Mock("default-mock")
    gw = None
    try:
        folder: Path = tmp_path_factory.mktemp("mixed")
        backend = openai_backend("routed", "127.0.0.1", routed.port)
        config = write_config(folder / "route.yaml", backend + textwrap.dedent("""\
            apiVersion: aigateway.envoyproxy.io/v1alpha1
            kind: AIGatewayRoute
            metadata: {name: configured, namespace: default}
            spec:
              rules:
                - matches:
                    - headers:
                        - {type: Exact, name: x-ai-eg-model, value: configured-model}
                  backendRefs:
                    - {name: routed, modelNameOverride: upstream-name}
                - matches:
                    - headers:
                        - {type: Exact, name: x-ai-eg-model, value: other-configured}
                  backendRefs:
                    - {name: routed}
            """))
        gw = Gateway("--config", str(config), "--backend", f"http://127.0.0.1:{default.port}/v1")
        yield gw, routed, default
    finally:
        _stop(gw)
        routed.stop()
        default.stop()


def test_config_and_backend_together(mixed: tuple[Gateway, Mock, Mock]) -> None:
    gw, routed, default = mixed
    routed.clear()
    default.clear()
    client = gw.client()
    for model in ("configured-model", "other-configured"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        assert raw.headers["x-mock-name"] == "routed-mock"
    for model in ("unknown-1", "llama3.2", "configured-model-2"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        assert raw.headers["x-mock-name"] == "default-mock"
    assert [r["body"]["model"] for r in routed.chat_requests()] == ["upstream-name", "other-configured"]
    assert [r["body"]["model"] for r in default.chat_requests()] == ["unknown-1", "llama3.2", "configured-model-2"]
    assert all(r["path"] == "/v1/chat/completions" for r in default.chat_requests())


def test_config_and_backend_models_list(mixed: tuple[Gateway, Mock, Mock]) -> None:
    gw, _, _ = mixed
    ids = [m.id for m in gw.client().models.list()]
    assert {"configured-model", "other-configured"} <= set(ids)

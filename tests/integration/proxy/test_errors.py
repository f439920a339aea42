"""Every error case of the OpenAI endpoints through a real gateway (2 workers): upstream errors,
bad bodies, unknown models and endpoints, limits, backends down, hanging, closing or dying mid-stream."""

from __future__ import annotations

import time

import openai
import pytest

from tests.integration.proxy.conftest import LEGACY_KEY, error_of
from tests.support import http_request, wait_for


def test_upstream_errors_pass_through(env) -> None:
    gw = env[0]
    status, headers, body = gw.post("/v1/chat/completions", {"model": "plain", "messages": [{"role": "user", "content": "x"}]},
                                    {"x-mock-status": "429"})
    assert status == 429 and headers["retry-after"] == "1"
    assert error_of(body)["type"] == "rate_limit_exceeded" or error_of(body)["code"] is not None
    assert headers["x-ai-gateway-backend"] == "default/mock-a"


@pytest.mark.parametrize("raw, code", [
    (b"{not json", "invalid_json"),
    (b"[1, 2, 3]", "invalid_json"),
    (b'{"messages": []}', "missing_model"),
    (b'{"model": 7, "messages": []}', "invalid_model"),
])
def test_bad_bodies_get_400(env, raw: bytes, code: str) -> None:
    status, headers, body = env[0].post("/v1/chat/completions", raw=raw)
    assert status == 400 and headers["content-type"] == "application/json"
    err = error_of(body)
    assert err["code"] == code and err["type"] == "invalid_request_error"


def test_unknown_model_404_lists_models_and_the_catch_all_hint(env, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    message = e.value.body["message"]
    assert "gpt-nope" in message and "chat-a" in message and "catch-all" in message
    assert e.value.code == "model_not_found"


def test_body_over_the_limit_413(env) -> None:
    big = {"model": "plain", "messages": [{"role": "user", "content": "x" * (70 * 1024)}]}
    status, _, body = env[0].post("/v1/chat/completions", big)
    assert status == 413 and error_of(body)["code"] == "request_too_large"
    ok, _, _ = env[0].post("/v1/chat/completions", {"model": "plain", "messages": [{"role": "user", "content": "x" * 1000}]})
    assert ok == 200


def test_backend_down_502_and_hanging_backend_504(env) -> None:
    gw = env[0]
    status, headers, body = gw.post("/v1/chat/completions", {"model": "down", "messages": []})
    err = error_of(body)
    assert status == 502 and err["code"] == "upstream_unreachable" and "default/down" in err["message"]
    assert headers["x-ai-gateway-backend"] == "default/down"
    status, _, body = gw.post("/v1/chat/completions", {"model": "slow", "messages": []}, {"x-mock-hang": "1"})
    err = error_of(body)
    assert status == 504 and err["code"] == "upstream_timeout" and "1s" in err["message"]


def test_backend_closing_the_connection_before_answering_502(env) -> None:
    gw, _, _, closer = env
    accepted = closer.accepted
    status, headers, body = gw.post("/v1/chat/completions", {"model": "reset", "messages": [{"role": "user", "content": "x"}]})
    err = error_of(body)
    assert status == 502 and err["code"] == "upstream_reset", (status, err)
    assert "default/reset" in err["message"] or f"127.0.0.1:{closer.port}" in err["message"], err
    assert headers["x-ai-gateway-backend"] == "default/reset"
    assert wait_for(lambda: closer.accepted > accepted, timeout=30.0)  # connected, then cut off: not unreachable


def test_deprecated_backend_timeouts_and_policy_ref_warn_and_are_honoured(env) -> None:
    gw, mock_a, *_ = env
    warnings = gw.config()["warnings"]
    for obj, field in (("AIServiceBackend/default/legacy", "spec.timeouts"),
                       ("AIServiceBackend/default/legacy", "spec.backendSecurityPolicyRef"),
                       ("AIGatewayRoute/default/old-style", "spec.targetRefs")):
        assert any(f"{obj}: {field}: deprecated" in w for w in warnings), (obj, field, warnings)

    # backendSecurityPolicyRef: the policy's key reaches the backend as the bearer token.
    mock_a.clear()
    status, headers, body = gw.chat("legacy", headers={"authorization": "Bearer client-key"})
    assert status == 200, body
    assert headers["x-ai-gateway-backend"] == "default/legacy"
    (seen,) = mock_a.chat_requests()
    assert seen["headers"]["authorization"] == f"Bearer {LEGACY_KEY}"

    # timeouts: the rule sets none, so the AIServiceBackend's 1s applies (not the 60s default).
    started = time.monotonic()
    status, _, body = gw.post("/v1/chat/completions", {"model": "legacy", "messages": []}, {"x-mock-hang": "1"})
    err = error_of(body)
    assert status == 504 and err["code"] == "upstream_timeout" and "1s" in err["message"], (status, err)
    assert time.monotonic() - started < 5

    # A route with the deprecated targetRefs (and schema) serves like any other.
    status, headers, body = gw.chat("old-style")
    assert status == 200 and headers["x-ai-gateway-backend"] == "default/mock-a", body


def test_unsupported_schema_501_and_missing_object_503(env) -> None:
    status, _, body = env[0].post("/v1/chat/completions", {"model": "azure", "messages": []})
    assert status == 501 and "AWSCredentials cannot authenticate a backend of schema OpenAI" in error_of(body)["message"]
    status, _, body = env[0].post("/v1/chat/completions", {"model": "ghost", "messages": []})
    assert status == 503 and "default/not-defined-yet" in error_of(body)["message"]


def test_unknown_endpoint_and_method(env) -> None:
    status, _, body = http_request(env[0].port, "GET", "/v1/chat/completions")
    assert status == 405 and error_of(body)["code"] == "method_not_allowed"
    status, _, body = http_request(env[0].port, "POST", "/v2/whatever", {})
    assert status == 404 and error_of(body)["code"] == "unknown_endpoint"


def test_backend_dying_mid_stream_ends_with_an_error_event(env, client: openai.OpenAI) -> None:
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}],
                                                    stream=True, extra_headers={"x-mock-die-after": "3"}):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["tok0 ", "tok1 ", "tok2 "]
    assert "broke off the stream" in str(e.value)
    # The gateway keeps serving afterwards.
    assert client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}]).choices

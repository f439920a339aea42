"""Per-request credentials (credentialOverride.fromRequestHeaders) and Azure OpenAI paths."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Gateway, Mock, assert_openai_error, route, write_config
from tests.resources import keyed_backend


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("credentials")
    mock = Mock("keyed")
    text = (keyed_backend("fallback", mock.port, "{fromRequestHeaders: {}}")
            + keyed_backend("strict", mock.port, "{fromRequestHeaders: {header: x-team-key, fallbackToConfigured: false}}")
            + keyed_backend("byok", mock.port, "{fromRequestHeaders: {}}", key=None)
            + route("r1", "fb", backend="fallback") + "---\n" + route("r2", "st", backend="strict") + "---\n"
            + route("r3", "bk", backend="byok"))
    gw = Gateway("--config", str(write_config(folder / "r.yaml", text)), workers=1)
    try:
        yield {"gw": gw, "mock": mock}
    finally:
        gw.stop()
        mock.stop()


def last_headers(mock: Mock) -> dict:
    return mock.chat_requests()[-1]["headers"]


def test_header_present_replaces_the_configured_key_and_never_reaches_upstream(setup) -> None:
    gw, mock = setup["gw"], setup["mock"]
    status, _, _ = gw.chat("fb", headers={"x-aigw-api-key": "client-key", "authorization": "Bearer nope"})
    assert status == 200
    headers = last_headers(mock)
    assert headers["authorization"] == "Bearer client-key"
    assert "x-aigw-api-key" not in headers


def test_header_absent_falls_back_to_the_configured_key(setup) -> None:
    gw, mock = setup["gw"], setup["mock"]
    assert gw.chat("fb")[0] == 200
    assert last_headers(mock)["authorization"] == "Bearer configured-key"


def test_header_absent_without_fallback_is_a_401(setup) -> None:
    gw, mock = setup["gw"], setup["mock"]
    mock.clear()
    status, headers, body = gw.chat("st")
    assert status == 401
    assert "x-team-key" in assert_openai_error(body, "missing_credentials")["message"]
    assert headers["x-ai-gateway-backend"] == "default/strict"
    assert mock.chat_requests() == []
    assert gw.chat("st", headers={"x-team-key": "team"})[0] == 200
    assert last_headers(mock)["authorization"] == "Bearer team"
    assert "x-team-key" not in last_headers(mock)


def test_bring_your_own_key_with_nothing_configured(setup) -> None:
    gw, mock = setup["gw"], setup["mock"]
    assert gw.chat("bk")[0] == 401
    assert gw.chat("bk", headers={"x-aigw-api-key": "mine"})[0] == 200
    assert last_headers(mock)["authorization"] == "Bearer mine"


def test_a_header_that_carries_client_keys_never_becomes_a_metric_label(tmp_path) -> None:
    """`--metrics-header x-team-key` is accepted at start, but a credentialOverride reads client keys
    from that header: the label stays empty (said once in the log), and no key reaches /metrics."""
    import openai

    from tests.support import http_request, wait_for

    mock = Mock("labelled")
    text = (keyed_backend("strict", mock.port, "{fromRequestHeaders: {header: x-team-key, fallbackToConfigured: false}}")
            + route("r", "st", backend="strict"))
    gw = Gateway("--config", str(write_config(tmp_path / "r.yaml", text)), "--metrics-header", "x-team-key=tenant")
    secret = "sk-team-secret-4f1c9e"
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0,
                               default_headers={"x-team-key": secret})
        for _ in range(4):  # both workers
            client.chat.completions.create(model="st", messages=[{"role": "user", "content": "hi"}])
        assert mock.chat_requests()[-1]["headers"]["authorization"] == f"Bearer {secret}"

        def scrape() -> str:
            return http_request(gw.admin_port, "GET", "/metrics")[2].decode()

        counted = 'gen_ai_server_request_duration_seconds_count{'
        line = wait_for(lambda: next((x for x in scrape().splitlines() if x.startswith(counted)
                                      and 'gen_ai_request_model="st"' in x and x.endswith(" 4.0")), None), timeout=30)
        assert line and 'tenant=""' in line, scrape()[-3000:]
        assert secret not in scrape()
        assert secret not in http_request(gw.port, "GET", "/metrics")[2].decode()  # the workers serve none
        assert secret not in gw.proc.output()
        assert gw.proc.output().count("--metrics-header x-team-key: a BackendSecurityPolicy credentialOverride") == 1
    finally:
        gw.stop()
        mock.stop()

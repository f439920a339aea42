"""The AWSBedrock provider: its paths and model-ID encoding, and its SigV4 auth hook, checked against
botocore recomputing the signature of the same request independently."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from typing import Any
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from modelyard.core.errors import GatewayError
from modelyard.core.table import Backend, Endpoint, Table
from modelyard.core.token_estimate import answer_text
from modelyard.gateway.accounting import Exchange
from modelyard.gateway.providers import PROVIDERS, provider_for
from modelyard.gateway.providers.aws_bedrock import AWSBedrock, AWSKeys, parse_keys, region_of_host, sigv4_auth
from modelyard.gateway.providers.credentials import WorkerCredentials
from modelyard.gateway.proxy import Upstream, _request_head
from modelyard.gateway.state import GenerationState, Target
from modelyard.gateway.translators.anthropic_bedrock import AnthropicToBedrock
from modelyard.gateway.translators.openai_bedrock import OpenAIToBedrock
from modelyard.gateway.translators.openai_bedrock_embeddings import OpenAIToBedrockEmbeddings
from tests.unit.provider_support import BEDROCK_HOST as HOST
from tests.unit.provider_support import (CONVERSE_RESPONSE, KEYS, SECRET, Proto, auth_ref, client_scope, converse_stream,
                                         forward_one, header_lines, one_backend, recompute_sigv4, request_head, resource,
                                         sent, served, table_of, worker_credentials)
from tests.unit.translators.eventstream import START, USAGE, block_stop, metadata, stop, text_delta
from tests.unit.translators.samples import events as openai_events

BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
FROZEN = datetime.datetime(2026, 12, 3, 12, 34, 56)


def _backend(prefix: str = "") -> Backend:
    return Backend("default/bedrock", "AWSBedrock", None, prefix, (Endpoint(HOST, 443),), None)


def _credentials(entry: dict[str, Any] | None = KEYS, key: str = "default/bedrock") -> WorkerCredentials:
    return worker_credentials({} if entry is None else {key: json.dumps(entry)})


def _head(path: bytes, host: str = HOST, extra: bytes = b"") -> list[bytes]:
    return request_head(path, host, extra)


def _lines(out: bytes) -> dict[str, str]:
    return header_lines(out.decode())


# ---------------------------------------------------------------- registry and paths


def test_registered_and_served() -> None:
    provider = served("AWSBedrock", AWSBedrock, "aws.bedrock")
    assert set(provider.translators) == {"openai", "anthropic"}
    assert isinstance(provider.translators["openai"], OpenAIToBedrock)
    assert isinstance(provider.translators["anthropic"], AnthropicToBedrock)
    # Embeddings go through InvokeModel with the model's own body, not through Converse.
    table = provider.translator_table(("/chat/completions", "/embeddings", "/messages"))
    assert isinstance(table[("openai", "/embeddings")], OpenAIToBedrockEmbeddings)
    assert table[("openai", "/chat/completions")] is provider.translators["openai"]
    assert table[("anthropic", "/messages")] is provider.translators["anthropic"]


def test_stream_content_types_reach_the_targets() -> None:
    assert AWSBedrock.stream_content_types == ("application/vnd.amazon.eventstream",)
    assert provider_for("OpenAI").stream_content_types == ("text/event-stream",)
    async def main() -> Any:
        upstream = Upstream()
        upstream.start(asyncio.get_running_loop())
        state = GenerationState(_table(9), upstream.pools)
        await upstream.close()
        return state
    [backend] = asyncio.run(main()).backends
    [target] = backend.targets["/chat/completions"]
    assert target.stream_types == (b"application/vnd.amazon.eventstream",)


def test_paths_per_operation_and_stream() -> None:
    provider, backend = PROVIDERS["AWSBedrock"], _backend()
    assert provider.upstream_path(backend, "/chat/completions") == (b"/model/", b"/converse")
    assert provider.stream_tail(backend, "/chat/completions") == b"/converse-stream"
    assert provider.upstream_path(backend, "/messages") == (b"/model/", b"/converse")
    assert provider.stream_tail(backend, "/messages") == b"/converse-stream"
    assert provider.upstream_path(backend, "/embeddings") == (b"/model/", b"/invoke")
    assert provider.stream_tail(backend, "/embeddings") is None  # the same tail either way
    assert provider.upstream_path(backend, "/completions") is None
    assert provider.upstream_path(_backend("/x"), "/chat/completions") == (b"/x/model/", b"/converse")
    # Other providers keep one tail for both.
    assert PROVIDERS["AzureOpenAI"].stream_tail(backend, "/chat/completions") is None


@pytest.mark.parametrize(("model", "encoded"), [
    (MODEL, b"us.anthropic.claude-3-5-sonnet-20241022-v2%3A0"),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-instruct-v1:0",
     b"arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-2-1b-instruct-v1%3A0"),
    ("a b?c#d&e=f+g%h", b"a%20b%3Fc%23d%26e%3Df%2Bg%25h"),
])
def test_model_id_goes_into_the_path_fully_escaped(model: str, encoded: bytes) -> None:
    provider, backend = PROVIDERS["AWSBedrock"], _backend()
    path, tail = provider.upstream_path(backend, "/chat/completions")  # type: ignore[misc]
    target = Target(None, path, HOST, "w", -1, tail, provider.stream_tail(backend, "/chat/completions"))  # type: ignore[arg-type]
    seen: list[bytes] = []
    hook = lambda head, body, client: seen.append(b"".join(head)) or b"x-auth: 1\r\n"  # noqa: E731
    whole = _request_head(client_scope(), auth_ref(hook), target, BODY, model, model)
    assert whole is not None and whole.startswith(b"POST /model/" + encoded + b"/converse HTTP/1.1\r\n")
    streamed = _request_head(client_scope(), auth_ref(hook), target, BODY, model, model, stream=True)
    assert streamed is not None and streamed.startswith(b"POST /model/" + encoded + b"/converse-stream HTTP/1.1\r\n")
    # A client's query joins with '?' here (Azure's tail carries its own '?api-version=').
    queried = _request_head(client_scope("a=1"), auth_ref(hook), target, BODY, model, model)
    assert queried is not None and queried.startswith(b"POST /model/" + encoded + b"/converse?a=1 HTTP/1.1\r\n")
    assert seen[0].startswith(b"POST /model/" + encoded + b"/converse HTTP/1.1\r\n")


def test_azure_query_still_joins_with_ampersand() -> None:
    target = Target(None, b"/openai/deployments/", "h", "w", -1, b"/chat/completions?api-version=1")  # type: ignore[arg-type]
    head = _request_head(client_scope("a=1"), auth_ref(lambda *a: b""), target, b"{}", "m", "m", stream=True)
    assert head is not None and head.startswith(b"POST /openai/deployments/m/chat/completions?api-version=1&a=1 ")


# ---------------------------------------------------------------- the SigV4 hook


def test_signature_verifies_with_botocore() -> None:
    hook = sigv4_auth(b"x-edit: 1\r\n", "default/bedrock", credentials=_credentials())
    path = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    out = hook(_head(path.encode()), BODY, {})
    assert out is not None and out.startswith(b"x-edit: 1\r\n")
    lines = _lines(out[len(b"x-edit: 1\r\n"):])
    assert set(lines) <= {"authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
    assert "x-amz-security-token" not in lines
    auth = lines["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{lines['x-amz-date'][:8]}/us-west-2/bedrock/"
                           "aws4_request, SignedHeaders=host;x-amz-date, Signature=")
    assert auth == recompute_sigv4(path, BODY, lines["x-amz-date"])


def test_signature_at_a_frozen_time_is_deterministic_and_covers_body_path_and_query() -> None:
    hook = sigv4_auth(b"", "default/bedrock", credentials=_credentials())
    path = b"/model/m%3A0/converse"
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN):
        base = _lines(hook(_head(path), BODY, {}))  # type: ignore[arg-type]
        again = _lines(hook(_head(path), BODY, {}))  # type: ignore[arg-type]
        other_body = _lines(hook(_head(path), BODY + b" ", {}))  # type: ignore[arg-type]
        other_path = _lines(hook(_head(b"/model/m%3A0/converse-stream"), BODY, {}))  # type: ignore[arg-type]
        other_query = _lines(hook(_head(path + b"?a=1"), BODY, {}))  # type: ignore[arg-type]
        other_host = _lines(hook(_head(path, host="bedrock-runtime.us-west-2.amazonaws.com"), BODY, {}))  # type: ignore[arg-type]
        client_header = _lines(hook(_head(path, extra=b"x-client: z\r\n"), BODY, {}))  # type: ignore[arg-type]
    assert base["x-amz-date"] == "20261203T123456Z"
    assert base == again == client_header  # only host and the x-amz-* headers are signed
    for changed in (other_body, other_path, other_query, other_host):
        assert changed["authorization"] != base["authorization"]
    assert base["authorization"] == recompute_sigv4(path.decode(), BODY, base["x-amz-date"])
    assert other_query["authorization"] == recompute_sigv4(path.decode() + "?a=1", BODY, base["x-amz-date"])
    # The model ID's escaped ':' is signed as AWS expects for non-S3 services (encoded once more).
    assert other_body["authorization"] == recompute_sigv4(path.decode(), BODY + b" ", base["x-amz-date"])


def test_session_token_is_sent_and_signed() -> None:
    keys = {**KEYS, "session_token": "FwoGZXIvYXdzEXAMPLETOKEN"}
    hook = sigv4_auth(b"", "default/bedrock", credentials=_credentials(keys))
    out = hook(_head(b"/model/m/converse"), BODY, {})
    assert out is not None
    lines = _lines(out)
    assert lines["x-amz-security-token"] == "FwoGZXIvYXdzEXAMPLETOKEN"
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in lines["authorization"]
    assert lines["authorization"] == recompute_sigv4("/model/m/converse", BODY, lines["x-amz-date"], keys)


def test_region_from_the_host_when_the_entry_has_none() -> None:
    keys = {k: v for k, v in KEYS.items() if k != "region"}
    hook = sigv4_auth(b"", "default/bedrock", credentials=_credentials(keys))
    lines = _lines(hook(_head(b"/model/m/converse"), BODY, {}))  # type: ignore[arg-type]
    assert "/us-east-1/bedrock/aws4_request" in lines["authorization"]
    assert lines["authorization"] == recompute_sigv4("/model/m/converse", BODY, lines["x-amz-date"],
                                                {**keys, "region": "us-east-1"})
    assert region_of_host("bedrock-runtime-fips.us-gov-west-1.amazonaws.com") == "us-gov-west-1"
    assert region_of_host("127.0.0.1:8080") is None
    # No region anywhere (a local mock without one in the entry): a 401, not a guess.
    assert hook(_head(b"/model/m/converse", host="127.0.0.1:8080"), BODY, {}) is None


def test_no_credentials_gives_none() -> None:
    assert sigv4_auth(b"", "default/bedrock", credentials=_credentials(None))(_head(b"/model/m/converse"), BODY, {}) is None
    other = _credentials(KEYS, key="default/other")
    assert sigv4_auth(b"", "default/bedrock", credentials=other)(_head(b"/model/m/converse"), BODY, {}) is None
    for bad in ("not json", json.dumps({"access_key_id": "A"}), json.dumps({"access_key_id": "", "secret_access_key": "s"}),
                json.dumps({"access_key_id": "A", "secret_access_key": "s", "session_token": "bad\r\nx: y"})):
        worker = WorkerCredentials()
        worker.generation, worker.values = 1, {"default/bedrock": bad}
        assert sigv4_auth(b"", "default/bedrock", credentials=worker)(_head(b"/model/m/converse"), BODY, {}) is None


def test_a_new_credentials_generation_is_picked_up() -> None:
    worker = _credentials(None)
    hook = sigv4_auth(b"", "default/bedrock", credentials=worker)
    assert hook(_head(b"/model/m/converse"), BODY, {}) is None
    worker.generation, worker.values = 2, {"default/bedrock": json.dumps(KEYS)}
    assert hook(_head(b"/model/m/converse"), BODY, {}) is not None
    worker.generation, worker.values = 3, {}
    assert hook(_head(b"/model/m/converse"), BODY, {}) is None


def test_the_secret_never_shows() -> None:
    keys = parse_keys(json.dumps({**KEYS, "session_token": "TOKENVALUE"}))
    assert isinstance(keys, AWSKeys) and keys.secret_access_key == SECRET
    hook = sigv4_auth(b"", "default/bedrock", credentials=_credentials(KEYS))
    hook(_head(b"/model/m/converse"), BODY, {})
    shown = [repr(keys), str(keys), repr([keys]), f"{keys}", repr(_credentials(KEYS)), repr(hook),
             repr(PROVIDERS["AWSBedrock"])]
    cells = [c.cell_contents for c in hook.__closure__ or ()]  # type: ignore[attr-defined]
    shown += [repr(c) for c in cells] + [str(c) for c in cells]
    for text in shown:
        assert SECRET not in text and "TOKENVALUE" not in text and "wJalr" not in text, text


def test_the_provider_hook_uses_the_backend_name_and_owns_the_amz_headers() -> None:
    provider = PROVIDERS["AWSBedrock"]
    assert {"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"} <= provider.owned_headers
    hook = provider.auth(_backend(), b"", b"", None)
    assert hook(_head(b"/model/m/converse"), BODY, {}) is None  # the process-wide copy holds nothing here


# ---------------------------------------------------------------- through the proxy, to 127.0.0.1

def _table(port: int) -> Table:
    return table_of([
        *one_backend("bedrock", "AWSBedrock", port, MODEL),
        # Its keys are published under the policy's name (here the environment chain's, in the tests by hand).
        resource("BackendSecurityPolicy", "bedrock", {"type": "AWSCredentials", "awsCredentials": {
            "region": "us-west-2"}, "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend",
                                                    "name": "bedrock"}]}, 3),
    ])


def _forward(published: dict[str, str], response: bytes = CONVERSE_RESPONSE, stream: bool = False,
             exchange: Exchange | None = None) -> tuple[Proto, list[bytes]]:
    body = (b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}' if stream
            else b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    proto, received, _ = forward_one("AWSBedrock", body, "/chat/completions", "openai", response, published,
                                     {"x-amz-date": "19990101T000000Z", "x-trace": "t"}, table=_table,
                                     exchange=exchange or Exchange(time.perf_counter(), "chat"))
    return proto, received


def test_a_chat_request_reaches_bedrock_signed() -> None:
    proto, received = _forward({"default/bedrock": json.dumps(KEYS)})
    assert proto.status == 200, proto.body
    assert json.loads(proto.body)["choices"][0]["message"]["content"] == "ok"
    request_line, headers, body = sent(received)  # each header once
    path = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    assert request_line == f"POST {path} HTTP/1.1"
    assert "19990101T000000Z" not in "".join(headers.values())  # the client's x-amz-date is dropped
    assert headers["x-trace"] == "t"
    assert headers["authorization"] == recompute_sigv4(path, body, headers["x-amz-date"], host=headers["host"])


@pytest.mark.parametrize("framing", ["chunked", "sized"])
def test_a_streaming_request_gets_converse_stream_as_openai_sse(framing: str) -> None:
    events = [START, text_delta("Hel"), text_delta("lo"), block_stop(0), stop(), metadata()]
    # Pieces cut mid-message: the translator reassembles them.
    data = b"".join(events)
    exchange = Exchange(time.perf_counter(), "chat")
    proto, received = _forward({"default/bedrock": json.dumps(KEYS)}, converse_stream([data[:50], data[50:200], data[200:]], framing),
                               stream=True, exchange=exchange)
    [sent] = received
    assert sent.startswith(b"POST /model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream HTTP/1.1")
    assert proto.status == 200
    assert proto.headers["content-type"] == "text/event-stream"  # not the upstream's event-stream type
    assert proto.headers["x-amzn-requestid"] == "r-1"
    chunks = openai_events(b"".join(proto.sent))
    assert chunks[-1] == "[DONE]"
    assert [c["object"] for c in chunks[:-1]] == ["chat.completion.chunk"] * (len(chunks) - 1)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"]) == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert (exchange.status, exchange.error) == (200, None)
    assert exchange.usage is not None and exchange.usage.total_tokens == USAGE["totalTokens"]
    assert exchange.answer is None  # usage came: nothing kept for the token estimator


@pytest.mark.parametrize("framing", ["chunked", "sized"])
def test_a_reset_mid_converse_stream_ends_with_the_sse_error_event(framing: str) -> None:
    data = b"".join([START, text_delta("Hel")])
    exchange = Exchange(time.perf_counter(), "chat")
    proto, _ = _forward({"default/bedrock": json.dumps(KEYS)}, converse_stream([data[:30], data[30:]], framing, end=False),
                        stream=True, exchange=exchange)
    assert proto.headers["content-type"] == "text/event-stream"
    chunks = openai_events(b"".join(proto.sent))
    assert chunks[1]["choices"][0]["delta"]["content"] == "Hel"
    assert chunks[-1]["error"]["code"] == "upstream_reset" and "[DONE]" not in chunks
    assert exchange.error == "upstream_reset" and exchange.usage is None
    # Kept for the token estimator: the translated SSE the client got, never the binary event stream.
    kept = b"".join(exchange.answer or ())
    assert kept and kept.startswith(b"data: ") and b"Hel" in kept and b":event-type" not in kept
    assert answer_text(kept, True) == "Hel"


def test_no_published_keys_is_a_401() -> None:
    with pytest.raises(GatewayError) as raised:  # the application answers it (core/errors.py)
        _forward({})
    assert (raised.value.status, raised.value.code) == (401, "missing_credentials")
    assert "default/bedrock" in raised.value.message and "API key" not in raised.value.message


@pytest.mark.parametrize("model", [MODEL, "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x-v1:0"])
def test_the_path_is_the_one_botocore_serializes(model: str) -> None:
    """botocore's own bedrock-runtime model (requestUri /model/{modelId}/converse[-stream]) serializes
    the same path for the same modelId."""
    import botocore.session
    from botocore.serialize import create_serializer
    service = botocore.session.get_session().get_service_model("bedrock-runtime")
    assert service.signing_name == "bedrock"
    provider, backend = PROVIDERS["AWSBedrock"], _backend()
    prefix, tail = provider.upstream_path(backend, "/chat/completions")  # type: ignore[misc]
    encoded = _request_head(client_scope(), auth_ref(lambda *a: b""), Target(None, prefix, HOST, "w", -1, tail, provider.stream_tail(  # type: ignore[arg-type]
        backend, "/chat/completions")), b"{}", model, model, stream=False)
    streamed = _request_head(client_scope(), auth_ref(lambda *a: b""), Target(None, prefix, HOST, "w", -1, tail, provider.stream_tail(  # type: ignore[arg-type]
        backend, "/chat/completions")), b"{}", model, model, stream=True)
    for operation, head in (("Converse", encoded), ("ConverseStream", streamed)):
        expected = create_serializer("rest-json").serialize_to_request(
            {"modelId": model, "messages": []}, service.operation_model(operation))["url_path"]
        assert head is not None and head.startswith(b"POST " + expected.encode() + b" HTTP/1.1\r\n")


def test_the_canonical_path_is_encoded_once_more() -> None:
    """SigV4 for services other than S3 encodes the already-encoded path again: %3A signs as %253A."""
    request = AWSRequest(method="POST", url=f"https://{HOST}/model/m%3A0/converse", data=BODY, headers={"host": HOST})
    request.context["timestamp"] = "20261203T123456Z"
    canonical = SigV4Auth(Credentials("A", "s"), "bedrock", "us-east-1").canonical_request(request)
    assert canonical.split("\n")[1] == "/model/m%253A0/converse"


def test_botocore_never_logs_the_session_token(caplog: pytest.LogCaptureFixture) -> None:
    keys = {**KEYS, "session_token": "TOKENVALUE"}
    assert logging.getLogger("botocore.auth").level == logging.INFO  # set when the provider loads
    with caplog.at_level(logging.DEBUG):  # the root at DEBUG, as a debugging operator would set it
        assert sigv4_auth(b"", "default/bedrock", credentials=_credentials(keys))(_head(b"/model/m/converse"), BODY, {})
    assert "TOKENVALUE" not in caplog.text and SECRET not in caplog.text

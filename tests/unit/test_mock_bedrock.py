"""The Bedrock mock's pieces in this process: event-stream framing read back by botocore's decoder,
request checks (Converse against botocore's service model and Bedrock's rules, InvokeModel bodies),
and the app itself called with botocore-signed requests."""

from __future__ import annotations

import base64
import json
from typing import Any

import botocore.session
import pytest
from botocore.eventstream import EventStream, EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.loadtest.mock.bedrock import converse, eventstream, invoke
from modelyard.loadtest.mock.bedrock.app import BedrockApp
from modelyard.loadtest.mock.config import CloudConfig, MockConfig, ProviderConfig
from modelyard.loadtest.mock.wire import _BadRequest
from tests.unit.mock_rsgi import Answer, call, signed_headers

AKID, SECRET = "AKIDUNITTEST00000001", "unit/test/secret"
MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
HI = [{"role": "user", "content": [{"text": "Hello"}]}]
WEATHER = {"toolSpec": {"name": "get_weather", "description": "Weather in a city", "inputSchema": {"json": {
    "type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city"]}}}}
RUNTIME = botocore.session.get_session().get_service_model("bedrock-runtime")


# --- event-stream framing -------------------------------------------------------------------


def decoded(data: bytes, split: int | None = None) -> list[Any]:
    buffer = EventStreamBuffer()
    for part in ([data] if split is None else [data[:split], data[split:]]):
        buffer.add_data(part)
    return list(buffer)


def test_events_decode_with_botocore() -> None:
    data = eventstream.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "é中 🌧"}}, pad=7)
    [message] = decoded(data)
    assert message.headers == {":event-type": "contentBlockDelta", ":content-type": "application/json",
                               ":message-type": "event"}
    assert json.loads(message.payload) == {"contentBlockIndex": 0, "delta": {"text": "é中 🌧"}, "p": "abcdefg"}
    [error] = decoded(eventstream.exception("modelStreamErrorException", {"message": "boom"}))
    assert error.headers[":message-type"] == "exception"
    assert error.headers[":exception-type"] == "modelStreamErrorException"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) < 256),
                       st.text(max_size=200), max_size=5),
       st.binary(max_size=2000), st.data())
def test_any_message_round_trips_through_botocore_split_anywhere(headers: dict[str, str], payload: bytes,
                                                                 data: st.DataObject) -> None:
    raw = eventstream.message(headers, payload)
    split = data.draw(st.integers(0, len(raw)))
    [message] = decoded(raw + b"", split)
    assert message.headers == headers and message.payload == payload


def converse_stream_events(writes: bytes) -> list[dict[str, Any]]:
    """A ConverseStream body parsed as the bedrock-runtime client parses it."""
    output = RUNTIME.operation_model("ConverseStream").output_shape.members["stream"]

    class Raw:
        def stream(self) -> Any:
            yield writes

    return list(EventStream(Raw(), output, botocore.parsers.EventStreamJSONParser(), "ConverseStream"))


# --- Converse checks ------------------------------------------------------------------------


def refused(req: Any) -> str:
    with pytest.raises(_BadRequest) as info:
        converse.validate(req)
    assert info.value.status == 400 and info.value.kind == "ValidationException"
    return info.value.message


def test_converse_conversation_rules() -> None:
    assert converse.validate({"messages": HI})
    assert refused({"messages": []}).startswith("A conversation must start with a user message")
    assert refused({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}).startswith(
        "A conversation must start with a user message")
    assert refused({"messages": HI + HI}) == converse.ALTERNATE
    assert refused({"messages": [{"role": "user", "content": []}]}).startswith(
        "The content field in the Message object at messages.0 is empty.")
    assert refused({}) == ("1 validation error detected: Value null at 'messages' failed to satisfy constraint: "
                           "Member must not be null")


def test_converse_shape_rules_come_from_the_service_model() -> None:
    assert "Member must satisfy enum value set" in refused({"messages": [{"role": "bot", "content": [{"text": "x"}]}]})
    assert refused({"messages": HI, "temperature": 0.5}).startswith(
        "Malformed input request: extraneous key [temperature] is not permitted at '#'")
    assert "maxTokens" in refused({"messages": HI, "inferenceConfig": {"maxTokens": 0}})
    assert "expected an integer" in refused({"messages": HI, "inferenceConfig": {"maxTokens": "10"}})
    assert "exactly one member" in refused({"messages": [{"role": "user", "content": [{"text": "a", "cachePoint": {
        "type": "default"}}]}]})
    image = {"image": {"format": "png", "source": {"bytes": base64.b64encode(b"\x89PNG...").decode()}}}
    assert converse.validate({"messages": [{"role": "user", "content": [image, {"text": "what is it?"}]}]})
    bad = {"image": {"format": "png", "source": {"bytes": "not base64!"}}}
    assert "#/messages/0/content/0/image/source/bytes: expected valid base64" in refused(
        {"messages": [{"role": "user", "content": [bad]}]})
    bmp = {"image": {"format": "bmp", "source": {"bytes": "AAAA"}}}
    assert "[png, jpeg, gif, webp]" in refused({"messages": [{"role": "user", "content": [bmp]}]})
    assert "pattern" in refused({"messages": HI, "toolConfig": {"tools": [{"toolSpec": {
        "name": "no spaces allowed", "inputSchema": {"json": {}}}}]}})


def tool_turns(results: list[str], config: bool = True) -> dict[str, Any]:
    use = {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}
    req: dict[str, Any] = {"messages": [*HI, {"role": "assistant", "content": [use]}, {"role": "user", "content": [
        {"toolResult": {"toolUseId": tid, "content": [{"json": {"temp": 20}}]}} for tid in results] or [
        {"text": "never mind"}]}]}
    if config:
        req["toolConfig"] = {"tools": [WEATHER]}
    return req


def test_tool_use_and_results_pair_up() -> None:
    assert converse.validate(tool_turns(["t1"]))
    assert refused(tool_turns(["t1"], config=False)) == converse.TOOL_CONFIG_NEEDED
    assert refused(tool_turns([])) == "Expected toolResult blocks at messages.2.content for the following Ids: t1"
    assert refused(tool_turns(["t1", "t2"])).startswith(
        "The number of toolResult blocks at messages.2.content exceeds the number of toolUse blocks")


def test_plans() -> None:
    blocks, stop = converse.plan({"messages": HI}, 3, "stop", "seed")
    assert [b.whole for b in blocks] == [{"text": "tok0 tok1 tok2 "}] and stop == "end_turn"
    assert converse.plan({"messages": HI}, 3, "length", "seed")[1] == "max_tokens"
    blocks, stop = converse.plan({"messages": HI, "inferenceConfig": {"stopSequences": ["tok2"]}}, 5, "stop", "s")
    assert blocks[0].whole == {"text": "tok0 tok1 "} and stop == "stop_sequence"
    ask = {"messages": [{"role": "user", "content": [{"text": "What's the weather in Paris?"}]}],
           "toolConfig": {"tools": [WEATHER]}}
    blocks, stop = converse.plan(ask, 16, "stop", "s")
    assert stop == "tool_use" and blocks[-1].whole["toolUse"]["input"] == {"city": "mock city"}
    assert "".join(d["toolUse"]["input"] for d in blocks[-1].deltas) == '{"city":"mock city"}'
    assert converse.plan({**ask, "messages": HI}, 2, "stop", "s")[1] == "end_turn"  # no reason to call it
    forced = {**ask, "messages": HI,
              "toolConfig": {"tools": [WEATHER], "toolChoice": {"tool": {"name": "get_weather"}}}}
    assert [list(b.whole) for b in converse.plan(forced, 2, "stop", "s")[0]] == [["toolUse"]]
    thinking = {"messages": HI,
                "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2000}}}
    first = converse.plan(thinking, 1, "stop", "s")[0][0]
    assert first.whole["reasoningContent"]["reasoningText"]["text"] == "Mock reasoning step."
    assert first.deltas[-1] == {"reasoningContent": {"signature": first.whole["reasoningContent"]["reasoningText"][
        "signature"]}}


# --- InvokeModel bodies ---------------------------------------------------------------------


def invoke_refusal(check: Any, body: Any, model: str) -> str:
    with pytest.raises(_BadRequest) as info:
        check(body, model)
    assert info.value.kind == "ValidationException"
    return info.value.message


def test_model_families() -> None:
    assert invoke.family(MODEL) == "anthropic"
    assert invoke.family("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0") == "titan-embed"
    assert invoke.family("cohere.embed-english-v3") == "cohere-embed"
    assert invoke.family("meta.llama3-8b-instruct-v1:0") is None
    assert invoke.anthropic_model_name(MODEL) == "claude-3-5-sonnet-20241022"


def test_anthropic_bodies() -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}
    req, budget = invoke.validate_anthropic(body, MODEL)
    assert req["model"] == "claude-3-5-sonnet-20241022" and budget is None
    check = invoke.validate_anthropic
    assert invoke_refusal(check, {k: v for k, v in body.items() if k != "anthropic_version"}, MODEL) == (
        "Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try "
        "again.")
    assert "extraneous key [model]" in invoke_refusal(check, {**body, "model": "claude"}, MODEL)
    assert "extraneous key [stream]" in invoke_refusal(check, {**body, "stream": True}, MODEL)
    assert "anthropic_version" in invoke_refusal(check, {**body, "anthropic_version": "2023-06-01"}, MODEL)
    # The Messages validator's own words for the rest.
    assert invoke_refusal(check, {**body, "messages": [{"role": "assistant", "content": "x"}]}, MODEL) == (
        'messages: first message must use the "user" role')


def test_embedding_bodies() -> None:
    titan = invoke.titan_embedding({"inputText": "hello", "dimensions": 256}, "amazon.titan-embed-text-v2:0")
    assert len(titan["embedding"]) == 256 and titan["inputTextTokenCount"] == 2
    assert abs(sum(v * v for v in titan["embedding"]) - 1) < 1e-6  # normalized by default
    assert titan["embeddingsByType"] == {"float": titan["embedding"]}
    assert len(invoke.titan_embedding({"inputText": "x"}, "amazon.titan-embed-text-v2:0")["embedding"]) == 1024
    t = invoke.titan_embedding
    assert "dimensions" in invoke_refusal(t, {"inputText": "x", "dimensions": 100}, "amazon.titan-embed-text-v2:0")
    assert "required key [inputText]" in invoke_refusal(t, {}, "amazon.titan-embed-text-v2:0")
    cohere, tokens = invoke.cohere_embedding({"texts": ["a", "bb"], "input_type": "search_document"},
                                             "cohere.embed-english-v3")
    assert cohere["response_type"] == "embeddings_floats" and [len(v) for v in cohere["embeddings"]] == [1024, 1024]
    assert cohere["texts"] == ["a", "bb"] and tokens == 2
    typed, _ = invoke.cohere_embedding({"texts": ["a"], "input_type": "search_query",
                                        "embedding_types": ["float", "int8", "binary"]}, "cohere.embed-english-v3")
    assert typed["response_type"] == "embeddings_by_type" and set(typed["embeddings"]) == {"float", "int8", "binary"}
    assert len(typed["embeddings"]["binary"][0]) == 128
    assert all(-128 <= v <= 127 for v in typed["embeddings"]["int8"][0])
    c = invoke.cohere_embedding
    assert "input_type" in invoke_refusal(c, {"texts": ["a"]}, "cohere.embed-english-v3")
    assert "96" in invoke_refusal(c, {"texts": ["a"] * 97, "input_type": "clustering"}, "cohere.embed-english-v3")


# --- the app, in this process ---------------------------------------------------------------

APP = BedrockApp(MockConfig(models=(MODEL, "amazon.titan-embed-text-v2:0")), ProviderConfig(api="bedrock"),
                 CloudConfig(aws_keys={AKID: SECRET}, sts_secret="unit"))


def post(model: str, operation: str, body: Any, key: str = AKID, secret: str = SECRET,
         extra: dict[str, str] | None = None, app: BedrockApp = APP) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = f"/model/{model.replace(':', '%3A').replace('/', '%2F')}/{operation}"
    return call(app, "POST", url, raw, signed_headers("POST", url, raw, key, secret, extra=extra))


def aws_error(answer: Answer) -> tuple[int, str, str]:
    return answer.status, answer.headers["x-amzn-errortype"].split(":")[0], answer.json()["message"]


def test_app_answers_converse_and_its_stream() -> None:
    whole = post(MODEL, "converse", {"messages": HI, "inferenceConfig": {"maxTokens": 4}})
    assert whole.status == 200 and whole.headers["x-amzn-requestid"]
    answer = whole.json()
    assert answer["output"]["message"]["content"] == [{"text": "tok0 tok1 tok2 tok3 "}]
    assert answer["stopReason"] == "max_tokens" and answer["usage"]["outputTokens"] == 4
    stream = post(MODEL, "converse-stream", {"messages": HI, "inferenceConfig": {"maxTokens": 3}})
    assert stream.headers["content-type"] == "application/vnd.amazon.eventstream"
    events = converse_stream_events(stream.body)
    assert [next(iter(e)) for e in events] == ["messageStart", "contentBlockDelta", "contentBlockDelta",
                                               "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"]
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 3


def test_app_stream_ends_with_the_asked_exception() -> None:
    stream = post(MODEL, "converse-stream", {"messages": HI}, extra={"x-mock-error-after": "2",
                                                                      "x-mock-stream-error": "throttlingException"})
    messages = decoded(stream.body)
    assert [m.headers.get(":event-type") for m in messages[:-1]] == ["messageStart", "contentBlockDelta",
                                                                     "contentBlockDelta"]
    assert messages[-1].headers[":exception-type"] == "throttlingException"
    with pytest.raises(botocore.exceptions.EventStreamError) as info:
        converse_stream_events(stream.body)
    assert info.value.response["Error"]["Code"] == "throttlingException"


def test_app_refusals_in_bedrock_shape() -> None:
    assert aws_error(post(MODEL, "converse", {"messages": HI + HI})) == (400, "ValidationException", converse.ALTERNATE)
    assert post(MODEL, "converse", {"messages": HI + HI}).headers["x-amzn-errortype"] == (
        "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/")
    assert aws_error(post(MODEL, "converse", b"{not json"))[:2] == (400, "ValidationException")
    assert aws_error(post("anthropic.claude-v2", "converse", {"messages": HI}))[:2] == (404,
                                                                                        "ResourceNotFoundException")
    assert aws_error(post("bad model!", "converse", {"messages": HI})) == (400, "ValidationException",
                                                                           "The provided model identifier is invalid.")
    signature = post(MODEL, "converse", {"messages": HI}, secret="wrong")
    assert aws_error(signature)[:2] == (403, "InvalidSignatureException")
    assert signature.headers["x-amzn-errortype"].endswith(":http://internal.amazon.com/coral/com.amazon.coral.service/")
    unsigned = call(APP, "POST", "/model/m/converse", b"{}", [("host", "127.0.0.1:8000")])
    assert aws_error(unsigned) == (403, "AccessDeniedException", "Authorization header is missing")
    throttled = post(MODEL, "converse", {"messages": HI}, extra={"x-mock-status": "429"})
    assert aws_error(throttled) == (429, "ThrottlingException", "Too many requests, please wait before trying again.")
    assert aws_error(call(APP, "GET", "/model/m/converse"))[:2] == (404, "UnknownOperationException")


def test_forced_status_and_throttle_rate_answer_in_bedrock_shape() -> None:
    forced = BedrockApp(MockConfig(status=503), ProviderConfig(api="bedrock"), CloudConfig(aws_keys={AKID: SECRET}))
    assert aws_error(post(MODEL, "converse", {"messages": HI}, app=forced))[:2] == (503, "ServiceUnavailableException")
    throttling = BedrockApp(MockConfig(), ProviderConfig(api="bedrock"),
                            CloudConfig(aws_keys={AKID: SECRET}, throttle_rate=1.0))
    assert aws_error(post(MODEL, "converse", {"messages": HI}, app=throttling))[:2] == (429, "ThrottlingException")
    # Signatures are checked first, as on AWS.
    assert aws_error(post(MODEL, "converse", {"messages": HI}, secret="x", app=throttling))[0] == 403


def test_app_invoke_with_response_stream_chunks() -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    whole = post(MODEL, "invoke", body)
    assert whole.json()["content"] == [{"type": "text", "text": "tok0 tok1 "}]
    assert whole.headers["x-amzn-bedrock-output-token-count"] == "2"
    stream = post(MODEL, "invoke-with-response-stream", body)
    chunks = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"])) for m in decoded(stream.body)]
    assert [c["type"] for c in chunks] == ["message_start", "content_block_start", "content_block_delta",
                                           "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] == chunks[0]["message"]["usage"]["input_tokens"]
    assert metrics["outputTokenCount"] == 2 and set(metrics) == {"inputTokenCount", "outputTokenCount",
                                                                 "invocationLatency", "firstByteLatency"}
    assert aws_error(post("amazon.titan-embed-text-v2:0", "invoke-with-response-stream", {"inputText": "x"}))[0] == 400


def test_recorded_requests_hide_the_session_token() -> None:
    app = BedrockApp(MockConfig(), ProviderConfig(api="bedrock"), CloudConfig(aws_keys={AKID: SECRET}))
    post(MODEL, "converse", {"messages": HI}, extra={"x-amz-security-token": "secret-token"}, app=app)
    [record] = call(app, "GET", "/mock/requests").json()
    assert record["headers"]["x-amz-security-token"] == "<not shown>"

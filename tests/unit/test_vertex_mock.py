"""The Vertex AI mock without a server: Gemini body checks, the answers and their stream framing, and
the RSGI app driven in-process (routing, bearer checks, resources, Anthropic on Vertex, controls)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.loadtest.mock.config import MockConfig, ProviderConfig
from modelyard.loadtest.mock.vertex import answers as ans
from modelyard.loadtest.mock.vertex.app import VertexApp
from modelyard.loadtest.mock.vertex.auth import AUDIENCE, CLOUD_PLATFORM, PREFIX
from modelyard.loadtest.mock.vertex.errors import GoogleError
from modelyard.loadtest.mock.vertex.validate import validate_count, validate_generate

HELLO = [{"role": "user", "parts": [{"text": "Hello there"}]}]
WEATHER = {"functionDeclarations": [{
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"},
                                                    "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]},
}]}
TEXT16 = "".join(f"tok{i} " for i in range(16))
PATH = "/v1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.5-flash"
CLAUDE = "/v1/projects/proj/locations/us-central1/publishers/anthropic/models/claude-sonnet-4@20250514"


def _refused(body: Any) -> GoogleError:
    with pytest.raises(GoogleError) as info:
        validate_generate(body)
    assert info.value.status == 400 and info.value.kind == "INVALID_ARGUMENT"
    return info.value


# --- validation ----------------------------------------------------------------------------------


def test_a_full_request_passes_and_is_normalised_to_camel_case() -> None:
    body = {
        "contents": [*HELLO, {"role": "model", "parts": [{"functionCall": {"name": "get_weather",
                                                                          "args": {"city": "Paris"}}}]},
                     {"role": "user", "parts": [{"function_response": {"name": "get_weather",
                                                                     "response": {"t": 20}}}]}],
        "system_instruction": {"parts": [{"text": "Be terse."}]},
        "tools": [WEATHER],
        "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["get_weather"]}},
        "generationConfig": {"temperature": 0.2, "top_p": 0.9, "maxOutputTokens": "64", "stopSequences": ["x"],
                             "thinkingConfig": {"thinkingBudget": 128, "includeThoughts": True},
                             "responseModalities": ["TEXT"]},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
        "labels": {"team": "a"},
        "contents_extra_is_null": None,
    }
    del body["contents_extra_is_null"]
    req = validate_generate(body)
    assert req["systemInstruction"]["parts"][0]["text"] == "Be terse."
    assert req["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == ["get_weather"]
    assert req["generationConfig"]["maxOutputTokens"] == 64 and req["generationConfig"]["topP"] == 0.9
    assert "functionResponse" in req["contents"][2]["parts"][0]


def test_unknown_names_and_bad_values_are_all_reported_with_field_paths() -> None:
    error = _refused({"contents": [{"role": "user", "parts": [{"text": "hi", "img": 1}]}],
                      "generationConfig": {"temperature": "hot", "max_tokens": 5},
                      "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
                          "type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}}}}]}],
                      "stream": True})
    lines = error.message.split("\n")
    assert 'Invalid JSON payload received. Unknown name "img" at \'contents[0].parts[0]\': Cannot find field.' in lines
    assert "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"" in lines
    assert ('Invalid JSON payload received. Unknown name "exclusiveMinimum" at '
            "'tools[0].function_declarations[0].parameters.properties[0].value': Cannot find field.") in lines
    assert 'Invalid JSON payload received. Unknown name "stream": Cannot find field.' in lines
    (detail,) = error.details
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    fields = [v.get("field") for v in detail["fieldViolations"]]
    assert "generation_config.temperature" in fields and "contents[0].parts[0]" in fields
    assert len(detail["fieldViolations"]) == len(lines) == 5


@pytest.mark.parametrize(("body", "needle"), [
    ({"contents": []}, "empty contents field"),
    ({"contents": [{"role": "user", "parts": []}]}, "at least one parts field"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role: user, model"),
    ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, "empty text parameter"),
    ({"contents": [{"parts": [{"text": "a", "inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}]},
     "Oneof field 'data' is already set"),
    ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "***"}}]}]},
     "Base64 decoding failed"),
    ({"contents": [{"parts": [{"inlineData": {"data": "AAAA"}}]}]}, "empty inlineData.mimeType"),
    ({"contents": [*HELLO, {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "function response turn comes immediately after a function call turn"),
    ({"contents": [*HELLO, {"role": "model", "parts": [{"functionCall": {"name": "f"}},
                                                       {"functionCall": {"name": "f"}}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "number of function response parts is equal"),
    ({"contents": HELLO, "generationConfig": {"temperature": 3}},
     "temperature value of 3 but the supported range is from 0 (inclusive) to 2.0001 (exclusive)"),
    ({"contents": HELLO, "generationConfig": {"candidateCount": 9}}, "candidateCount value of 9"),
    ({"contents": HELLO, "generationConfig": {"maxOutputTokens": 0}}, "maxOutputTokens value of 0"),
    ({"contents": HELLO, "generationConfig": {"responseSchema": {"type": "OBJECT"}}},
     "needs response_mime_type application/json"),
    ({"contents": HELLO, "generationConfig": {"responseMimeType": "text/html"}}, "response_mime_type of"),
    ({"contents": HELLO, "generationConfig": {"stopSequences": list("abcdef")}}, "more than 5 stop sequences"),
    ({"contents": HELLO, "generationConfig": {"thinkingConfig": {"thinkingBudget": 10, "thinkingLevel": "LOW"}}},
     "not supported together"),
    ({"contents": HELLO, "tools": [{"functionDeclarations": [{"name": "9bad"}]}]}, "function name `9bad` is invalid"),
    ({"contents": HELLO, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "STRING"}}]}]},
     "should be of type OBJECT"),
    ({"contents": HELLO, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {}, "required": ["x"]}}]}]}, "property is not defined"),
    ({"contents": HELLO, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}, "needs at least one function"),
    ({"contents": HELLO, "tools": [WEATHER],
      "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["get_weather"]}}},
     "allowed_function_names while mode is not ANY"),
    ({"contents": HELLO, "safetySettings": [{"category": "HARM_CATEGORY_NICE", "threshold": "OFF"}]},
     "google.cloud.aiplatform.v1.HarmCategory"),
    ({"contents": "hello"}, "Invalid value at 'contents'"),
])
def test_refusals(body: dict[str, Any], needle: str) -> None:
    assert needle in _refused(body).message


def test_count_tokens_body() -> None:
    assert validate_count({"contents": HELLO})["contents"]
    with pytest.raises(GoogleError):
        validate_count({"contents": HELLO, "generationConfig": {"nope": 1}})


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                         st.sampled_from(["contents", "role", "parts", "text", "generationConfig", "tools",
                                          "temperature", "functionCall", "name", "x"]), inner, max_size=3),
                     max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(_json)
def test_validation_of_arbitrary_json_refuses_only_with_google_errors(body: Any) -> None:
    try:
        validate_generate(body)
    except GoogleError as e:
        assert e.status == 400 and e.message


# --- answers ---------------------------------------------------------------------------------------


def test_plans() -> None:
    text = ans.plan(validate_generate({"contents": HELLO}), 16)
    assert (text.finish, text.output_tokens) == ("STOP", 16)
    assert text.parts() == [{"text": TEXT16}] and len(text.chunks) == 16
    cut = ans.plan(validate_generate({"contents": HELLO, "generationConfig": {"maxOutputTokens": 3}}), 16)
    assert (cut.finish, cut.parts()) == ("MAX_TOKENS", [{"text": "tok0 tok1 tok2 "}])
    stop = ans.plan(validate_generate({"contents": HELLO, "generationConfig": {"stopSequences": ["tok2"]}}), 16)
    assert (stop.finish, stop.parts()) == ("STOP", [{"text": "tok0 tok1 "}])
    weather = {"contents": [{"role": "user", "parts": [{"text": "What's the weather in Paris?"}]}], "tools": [WEATHER]}
    call = ans.plan(validate_generate(weather), 16)
    assert call.parts() == [{"functionCall": {"name": "get_weather", "args": {"city": "mock city"}}}]
    forced = ans.plan(validate_generate({"contents": HELLO, "tools": [WEATHER],
                                         "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}), 16)
    assert "functionCall" in forced.parts()[0]
    assert "functionCall" not in ans.plan(validate_generate({"contents": HELLO, "tools": [WEATHER]}), 16).parts()[0]
    schema = {"type": "OBJECT", "properties": {"name": {"type": "STRING"}, "n": {"type": "INTEGER"}}}
    structured = ans.plan(validate_generate({"contents": HELLO, "generationConfig": {
        "responseMimeType": "application/json", "responseSchema": schema}}), 16)
    assert json.loads(structured.parts()[0]["text"]) == {"name": "mock name", "n": 1}
    thinking = ans.plan(validate_generate({"contents": HELLO, "generationConfig": {
        "thinkingConfig": {"includeThoughts": True}}}), 4)
    parts = thinking.parts()
    assert parts[0]["thought"] is True and parts[1] == {"text": "tok0 tok1 tok2 tok3 "}
    assert thinking.thought_tokens == 3


def test_usage_metadata() -> None:
    usage = ans.usage_metadata(10, 258, 5, 3, 4)
    assert usage["promptTokenCount"] == 268 and usage["candidatesTokenCount"] == 5
    assert usage["totalTokenCount"] == 268 + 5 + 3 and usage["thoughtsTokenCount"] == 3
    assert usage["cachedContentTokenCount"] == 4
    assert "thoughtsTokenCount" not in ans.usage_metadata(1, 0, 1, 0, 0)


def test_sse_frames_end_with_crlf_crlf() -> None:
    frame = ans.sse_frame({"candidates": []})
    assert frame == b'data: {"candidates":[]}\r\n\r\n'


def test_predict_bodies() -> None:
    instances, dim = ans.parse_predict({"instances": [{"content": "hello", "task_type": "RETRIEVAL_QUERY"}],
                                        "parameters": {"outputDimensionality": 4}})
    out = ans.predictions(instances, dim or 8)
    (prediction,) = out["predictions"]
    assert len(prediction["embeddings"]["values"]) == 4
    assert prediction["embeddings"]["statistics"] == {"truncated": False, "token_count": 2}
    long, _ = ans.parse_predict({"instances": [{"content": "x" * 10000}]})
    assert long[0].truncated and long[0].tokens == ans.EMBEDDING_MAX_TOKENS
    for body in ({"instances": []}, {"instances": [{"text": "x"}]}, {"instances": [{"content": "x"}], "foo": 1},
                 {"instances": [{"content": "x", "task_type": "NOPE"}]},
                 {"instances": [{"content": "x" * 10000}], "parameters": {"autoTruncate": False}}):
        with pytest.raises(GoogleError):
            ans.parse_predict(body)


# --- the app, in-process ------------------------------------------------------------------------------


class _Headers(dict):
    def get(self, key: str, default: Any = None) -> Any:  # RSGI headers are case-insensitive
        return super().get(key.lower(), default)


class _Scope:
    def __init__(self, method: str, path: str, headers: dict[str, str], query: str = "") -> None:
        self.method, self.path, self.query_string, self.client = method, path, query, "127.0.0.1:1"
        self.headers = _Headers({k.lower(): v for k, v in headers.items()})


class _Transport:
    def __init__(self, proto: _Proto) -> None:
        self.proto = proto

    async def send_bytes(self, data: bytes) -> None:
        self.proto.body += data


class _Proto:
    def __init__(self, body: bytes) -> None:
        self.request = body
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""

    async def __call__(self) -> bytes:
        return self.request

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, dict(headers), body

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> _Transport:
        self.status, self.headers = status, dict(headers)
        return _Transport(self)


def _app(**provider: Any) -> VertexApp:
    return VertexApp(MockConfig(models=("gemini-2.5-flash", "claude-sonnet-4@20250514")),
                     ProviderConfig(api="vertex", project="proj", location="us-central1", **provider))


def _token(app: VertexApp, scope: str = CLOUD_PLATFORM) -> str:
    return app.identity.mint.issue({"aud": AUDIENCE, "sub": "t", "scope": scope}, 60, PREFIX)[0]


def _call(app: VertexApp, path: str, body: Any, token: str | None = None, query: str = "",
          **headers: str) -> _Proto:
    hdrs = {"content-type": "application/json", **headers}
    if token is not None:
        hdrs["authorization"] = f"Bearer {token}"
    proto = _Proto(json.dumps(body).encode() if not isinstance(body, bytes) else body)
    asyncio.run(app.__rsgi__(_Scope("POST", path, hdrs, query), proto))
    return proto


def test_generate_content_whole_and_streamed() -> None:
    app = _app()
    token = _token(app)
    whole = _call(app, PATH + ":generateContent", {"contents": HELLO}, token, **{"x-mock-cache-read": "1"})
    answer = json.loads(whole.body)
    assert whole.status == 200 and set(answer) == {"candidates", "usageMetadata", "modelVersion", "createTime",
                                                   "responseId"}
    (cand,) = answer["candidates"]
    assert cand["content"] == {"role": "model", "parts": [{"text": TEXT16}]} and cand["finishReason"] == "STOP"
    assert cand["safetyRatings"] and answer["usageMetadata"]["cachedContentTokenCount"] == 1
    assert answer["modelVersion"] == "gemini-2.5-flash"

    sse = _call(app, PATH + ":streamGenerateContent", {"contents": HELLO}, token, "alt=sse",
                **{"x-mock-tokens": "3"})
    assert sse.headers["content-type"] == "text/event-stream"
    frames = sse.body.split(b"\r\n\r\n")
    assert frames[-1] == b"" and len(frames) == 4 and all(f.startswith(b"data: {") for f in frames[:-1])
    chunks = [json.loads(f[len(b"data: "):]) for f in frames[:-1]]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "tok0 tok1 tok2 "
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None, None, "STOP"]
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 3
    assert "candidatesTokenCount" not in chunks[0]["usageMetadata"]
    assert len({c["responseId"] for c in chunks}) == 1

    array = _call(app, PATH + ":streamGenerateContent", {"contents": HELLO}, token, **{"x-mock-tokens": "2"})
    assert array.headers["content-type"].startswith("application/json") and len(json.loads(array.body)) == 2


def test_auth_and_resource_errors_take_googles_shape() -> None:
    app = _app()
    token = _token(app)
    cases = [
        (None, PATH, 401, "UNAUTHENTICATED"),
        ("ya29.forged", PATH, 401, "UNAUTHENTICATED"),
        (_token(app, "https://www.googleapis.com/auth/userinfo.email"), PATH, 403, "PERMISSION_DENIED"),
        (token, PATH.replace("/proj/", "/other/"), 403, "PERMISSION_DENIED"),
        (token, PATH.replace("us-central1", "europe-west4"), 404, "NOT_FOUND"),
        (token, PATH.replace("gemini-2.5-flash", "gemini-0"), 404, "NOT_FOUND"),
    ]
    for auth, path, status, name in cases:
        proto = _call(app, path + ":generateContent", {"contents": HELLO}, auth)
        error = json.loads(proto.body)["error"]
        assert (proto.status, error["code"], error["status"]) == (status, status, name), (path, error)
    bad = _call(app, PATH + ":generateContent", b"{not json", token)
    assert bad.status == 400 and json.loads(bad.body)["error"]["status"] == "INVALID_ARGUMENT"
    limited = _call(app, PATH + ":generateContent", {"contents": HELLO}, token, **{"x-mock-status": "429"})
    error = json.loads(limited.body)["error"]
    assert (limited.status, error["status"]) == (429, "RESOURCE_EXHAUSTED") and "Resource exhausted" in error["message"]


def test_anthropic_on_vertex() -> None:
    app = _app()
    token = _token(app)
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    ok = _call(app, CLAUDE + ":rawPredict", body, token)
    answer = json.loads(ok.body)
    assert ok.status == 200 and answer["type"] == "message" and answer["model"] == "claude-sonnet-4@20250514"
    assert answer["stop_reason"] == "max_tokens" and answer["usage"]["output_tokens"] == 5
    stream = _call(app, CLAUDE + ":streamRawPredict", {**body, "stream": True}, token)
    assert stream.headers["content-type"] == "text/event-stream"
    assert stream.body.startswith(b"event: message_start\n") and b"event: message_stop" in stream.body
    for bad, needle in (({**body, "model": "claude"}, "model: Extra inputs are not permitted"),
                        ({k: v for k, v in body.items() if k != "anthropic_version"}, "anthropic_version: Field"),
                        ({**body, "anthropic_version": "vertex-2024"}, "Input should be 'vertex-2023-10-16'"),
                        ({**body, "max_tokens": 0}, "max_tokens")):
        proto = _call(app, CLAUDE + ":rawPredict", bad, token)
        error = json.loads(proto.body)
        assert proto.status == 400 and error["type"] == "error" and needle in error["error"]["message"]
    count = _call(app, CLAUDE.replace("claude-sonnet-4@20250514", "count-tokens") + ":rawPredict",
                  {"anthropic_version": "vertex-2023-10-16", "model": "claude-sonnet-4@20250514",
                   "messages": [{"role": "user", "content": "Hi"}]}, token)
    assert count.status == 200 and json.loads(count.body)["input_tokens"] >= 1
    overloaded = _call(app, CLAUDE + ":rawPredict", body, token, **{"x-mock-status": "529"})
    assert overloaded.status == 529 and json.loads(overloaded.body)["error"]["type"] == "overloaded_error"
    unauthenticated = _call(app, CLAUDE + ":rawPredict", body)
    assert unauthenticated.status == 401 and json.loads(unauthenticated.body)["error"]["status"] == "UNAUTHENTICATED"


def test_count_tokens_and_predict_routes() -> None:
    app = _app()
    token = _token(app)
    count = _call(app, PATH + ":countTokens", {"contents": HELLO}, token)
    assert count.status == 200 and json.loads(count.body)["totalTokens"] >= 1
    app = VertexApp(MockConfig(embedding_dim=6), ProviderConfig(api="vertex"))
    emb = _call(app, PATH.replace("gemini-2.5-flash", "text-embedding-005") + ":predict",
                {"instances": [{"content": "a"}, {"content": "b"}]}, _token(app))
    predictions = json.loads(emb.body)["predictions"]
    assert emb.status == 200 and [len(p["embeddings"]["values"]) for p in predictions] == [6, 6]


def test_token_endpoint_answers_oauth_errors() -> None:
    app = _app()
    proto = _call(app, "/token", b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=x.y.z",
                  **{"content-type": "application/x-www-form-urlencoded"})
    assert proto.status == 400 and set(json.loads(proto.body)) == {"error", "error_description"}

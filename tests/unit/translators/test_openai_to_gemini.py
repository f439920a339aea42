"""The OpenAI -> Gemini generateContent (Vertex AI) translator: requests, whole answers and errors, as
tables (pure, no processes). Upstream shapes follow Google's Vertex AI reference examples."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.gemini_schema import to_vertex_schema
from modelyard.gateway.translators.openai_gemini import SKIP_SIGNATURE, OpenAIToGemini, build_request
from modelyard.gateway.translators.openai_gemini_answer import FINISH_REASONS, call_id
from tests.unit.translators.gemini_samples import CALL_ANSWER, CREATED, ERRORS, TEXT_ANSWER
from tests.unit.translators.samples import PNG, TOOL_CONVERSATION, WEATHER_TOOL, user
from tests.unit.translators.samples import sdk_clients

O2G = OpenAIToGemini()


def o2g(model: str = "gemini-2.5-flash", **body: Any) -> dict[str, Any]:
    body.setdefault("messages", [user("hi")])
    return build_request(body, model)


def answer(body: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
    out, usage, model = O2G.response(json.dumps(body).encode())
    return json.loads(out), usage, model


# ---------------------------------------------------------------- messages


def test_minimal_request_names_no_model():
    out = o2g(model="gemini-2.0-flash-001", stream=True, stream_options={"include_usage": True}, user="u",
              logit_bias={"1": 2}, parallel_tool_calls=False)
    assert out == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert json.loads(O2G.request({"model": "x", "messages": [user("hi")]}, "gemini-2.0-flash")) == out


def test_system_and_developer_messages_anywhere_become_the_system_instruction():
    out = o2g(messages=[{"role": "system", "content": "Be brief."}, user("hi"),
                        {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                        {"role": "system", "content": ""}])
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_consecutive_turns_of_one_role_are_merged():
    out = o2g(messages=[user("a"), user("b"), {"role": "assistant", "content": "c"},
                        {"role": "assistant", "content": [{"type": "text", "text": "d"}, {"type": "refusal",
                                                                                          "refusal": "e"}]},
                        {"role": "assistant", "content": ""}, user("f")])
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}, {"text": "de"}]},
        {"role": "user", "parts": [{"text": "f"}]},
    ]


def test_tool_conversation():
    out = o2g(messages=TOOL_CONVERSATION, tools=[WEATHER_TOOL])
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {"role": "model", "parts": [
            # Only the first call of a turn carries the placeholder signature Gemini 3 asks for.
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}, "thoughtSignature": SKIP_SIGNATURE},
            {"functionCall": {"name": "get_weather", "args": {"location": "Rome"}}},
        ]},
        # The tool results and the next user message are one user turn; names come from the calls.
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
            {"functionResponse": {"name": "get_weather", "response": {"output": "25C"}}},
            {"text": "Thanks. Which is warmer?"},
        ]},
    ]


def test_assistant_text_goes_before_its_calls_and_arguments_may_be_an_object():
    out = o2g(messages=[user("x"), {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": {"k": [1]}}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "b", "content": '{"temp": 18, "unit": "C"}'}])
    assert out["contents"][1]["parts"] == [
        {"text": "Checking."},
        {"functionCall": {"name": "f", "args": {"k": [1]}}, "thoughtSignature": SKIP_SIGNATURE},
        {"functionCall": {"name": "g", "args": {}}}]
    # A JSON object result is the response itself.
    assert out["contents"][2]["parts"] == [{"functionResponse": {"name": "g", "response": {"temp": 18, "unit": "C"}}}]


@pytest.mark.parametrize("messages, match", [
    ([user("x"), {"role": "tool", "tool_call_id": "nope", "content": "1"}], "answers no tool call"),
    ([{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}]}],
     "must be a JSON object"),
    ([{"role": "assistant", "tool_calls": [{"id": "a", "function": {"arguments": "{}"}}]}], "name is required"),
    ([{"role": "function", "name": "f", "content": "x"}], "role 'function'"),
    ([{"role": "user", "content": [{"type": "video_url", "video_url": "x"}]}], "'video_url'"),
])
def test_messages_the_backend_cannot_take(messages, match):
    with pytest.raises(TranslationError, match=match) as e:
        o2g(messages=messages)
    assert e.value.param == "messages"


# ---------------------------------------------------------------- media


def _parts(*content: dict[str, Any]) -> list[dict[str, Any]]:
    return o2g(messages=[{"role": "user", "content": list(content)}])["contents"][0]["parts"]


def test_images_inline_and_by_uri():
    parts = _parts(
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
        {"type": "image_url", "image_url": "gs://cloud-samples-data/generative-ai/image/scones.jpg"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/b.WEBP?sig=1#frag"}},
        {"type": "image_url", "image_url": {"url": "http://example.com/doc.pdf"}},
    )
    assert parts == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://cloud-samples-data/generative-ai/image/scones.jpg"}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a/b.WEBP?sig=1#frag"}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "http://example.com/doc.pdf"}},
    ]


def test_audio_and_file_parts_are_inline_data():
    parts = _parts({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                   {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}})
    assert parts == [{"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                     {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}]


@pytest.mark.parametrize("part, match", [
    ({"type": "image_url", "image_url": {"url": "https://example.com/image?sig=SECRET"}}, "extension \\(none\\)"),
    ({"type": "image_url", "image_url": {"url": "https://example.com/x.png/"}}, "cannot be told"),
    ({"type": "image_url", "image_url": {"url": "https://example.com/photo.bmp"}}, "extension .bmp"),
    ({"type": "image_url", "image_url": {"url": "ftp://example.com/x.png"}}, "gs:// URI or an http"),
    ({"type": "image_url", "image_url": {"url": "data:image/png,abc"}}, "base64"),
    ({"type": "image_url", "image_url": {"url": "data:;base64,abc"}}, "name a type"),
    ({"type": "image_url", "image_url": {}}, "needs a URL"),
    ({"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}}, "wav or mp3"),
    ({"type": "file", "file": {"file_id": "file-abc"}}, "file_id"),
    ({"type": "file", "file": {"file_data": "JVBERi0="}}, "data: URL"),
])
def test_media_the_backend_cannot_take(part, match):
    with pytest.raises(TranslationError, match=match) as e:
        _parts(part)
    assert "example.com" not in e.value.message  # a URL may be signed: never echoed


# ---------------------------------------------------------------- tools


def test_tools_become_function_declarations():
    no_params = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
    bare = {"type": "function", "function": {"name": "ping", "description": ""}}
    out = o2g(tools=[WEATHER_TOOL, no_params, bare])
    assert out["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Get the current weather",
         "parameters": {"type": "OBJECT", "properties": {"location": {"type": "STRING"}}, "required": ["location"]}},
        {"name": "now"},  # an object without properties is sent without parameters
        {"name": "ping"},
    ]}]
    assert "toolConfig" not in out


@pytest.mark.parametrize("choice, config", [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_tool_choice(choice, config):
    out = o2g(tools=[WEATHER_TOOL], tool_choice=choice)
    assert out["toolConfig"] == {"functionCallingConfig": config}


def test_allowed_tools_declares_only_those():
    other = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
                                                                                 "properties": {"tz": {"type": "string"}}}}}
    for mode, expected in (("auto", "AUTO"), ("required", "ANY")):
        out = o2g(tools=[WEATHER_TOOL, other], tool_choice={"type": "allowed_tools", "allowed_tools": {
            "mode": mode, "tools": [{"type": "function", "function": {"name": "get_time"}}]}})
        assert [d["name"] for d in out["tools"][0]["functionDeclarations"]] == ["get_time"]
        assert out["toolConfig"] == {"functionCallingConfig": {"mode": expected}}


def test_tool_choice_without_tools_sends_neither():
    assert o2g(tool_choice="none") == o2g()


@pytest.mark.parametrize("body, param", [
    ({"tools": [{"type": "web_search"}]}, "tools"),
    ({"tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "string", "not": {"const": "a"}}}}}}]}, "tools"),
])
def test_tools_the_backend_cannot_take(body, param):
    with pytest.raises(TranslationError) as e:
        o2g(**body)
    assert e.value.param == param


# ---------------------------------------------------------------- generation config


def test_generation_config():
    out = o2g(max_completion_tokens=100, max_tokens=5, temperature=0, top_p=0.9, stop="END", n=2,
              presence_penalty=0.5, frequency_penalty=-0.5, seed=7, logprobs=True, top_logprobs=3)
    assert out["generationConfig"] == {
        "maxOutputTokens": 100, "temperature": 0.0, "topP": 0.9, "candidateCount": 2, "presencePenalty": 0.5,
        "frequencyPenalty": -0.5, "seed": 7, "logprobs": 3, "responseLogprobs": True, "stopSequences": ["END"]}
    assert o2g(max_tokens=5, stop=["a", "b"])["generationConfig"] == {"maxOutputTokens": 5, "stopSequences": ["a", "b"]}
    assert "generationConfig" not in o2g(logprobs=False, stop=None, response_format={"type": "text"})


def test_response_formats():
    assert o2g(response_format={"type": "json_object"})["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "properties": {"recipe_name": {"type": "string"},
                                               "rating": {"type": "integer", "enum": [1, 2, 3]}},
              "required": ["recipe_name"], "additionalProperties": False}
    out = o2g(response_format={"type": "json_schema", "json_schema": {"name": "r", "strict": True, "schema": schema}})
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"recipe_name": {"type": "STRING"},
                                         "rating": {"type": "INTEGER", "enum": ["1", "2", "3"]}},
        "required": ["recipe_name"], "additionalProperties": False}}
    for fmt in ({"type": "json_schema", "json_schema": {"name": "r"}}, {"type": "grammar"}):
        with pytest.raises(TranslationError) as e:
            o2g(response_format=fmt)
        assert e.value.param == "response_format"


@pytest.mark.parametrize("model, effort, thinking", [
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("gemini-2.5-flash", "minimal", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("gemini-2.5-pro", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("gemini-2.5-flash-lite", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
    ("gemini-2.5-pro", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("my-tuned-model", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
    ("gemini-3-flash-preview", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
    ("Gemini-3.1-Pro", "high", {"thinkingLevel": "HIGH", "includeThoughts": True}),
    ("gemini-3-flash", "minimal", {"thinkingLevel": "MINIMAL", "includeThoughts": True}),
    ("gemini-3-flash", "none", {"thinkingLevel": "MINIMAL"}),
    ("gemini-10-ultra", "xhigh", {"thinkingLevel": "HIGH", "includeThoughts": True}),
])
def test_reasoning_effort(model, effort, thinking):
    assert o2g(model, reasoning_effort=effort)["generationConfig"] == {"thinkingConfig": thinking}


def test_unknown_reasoning_effort():
    with pytest.raises(TranslationError) as e:
        o2g(reasoning_effort="maximal")
    assert e.value.param == "reasoning_effort"


@pytest.mark.parametrize("body", [{"messages": "hi"}, {"messages": [{"role": "user", "content": [1]}]},
                                  {"messages": [user("x")], "tools": "abc"}, {"messages": ["x"]},
                                  {"messages": [user("x")], "max_tokens": "many"},
                                  {"messages": [user("x")], "response_format": "json"}])
def test_malformed_requests_are_translation_errors(body):
    with pytest.raises(TranslationError):
        O2G.request(body, "gemini-2.5-flash")


# ---------------------------------------------------------------- JSON Schema -> Vertex Schema


@pytest.mark.parametrize("schema, vertex", [
    ({"type": "string", "format": "date-time", "description": "d", "title": "t", "minLength": 1, "maxLength": 9,
      "pattern": "^a", "default": "a", "example": "ab"},
     {"type": "STRING", "format": "date-time", "description": "d", "title": "t", "minLength": 1, "maxLength": 9,
      "pattern": "^a", "default": "a", "example": "ab"}),
    ({"type": ["number", "null"], "minimum": 0, "maximum": 1}, {"type": "NUMBER", "nullable": True, "minimum": 0,
                                                                "maximum": 1}),
    ({"type": ["string", "integer"]}, {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}),
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
     {"type": "ARRAY", "items": {"type": "BOOLEAN"}, "minItems": 1, "maxItems": 3}),
    ({"enum": ["a", None, 2, True]}, {"enum": ["a", "2", "true"], "nullable": True}),
    ({"const": "fixed"}, {"enum": ["fixed"]}),
    ({"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "STRING", "nullable": True}),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}], "description": "x"},
     {"description": "x", "type": "OBJECT", "properties": {"a": {"type": "STRING"}}}),
    ({"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1, "maxProperties": 4,
      "propertyOrdering": ["a"]},
     {"type": "OBJECT", "additionalProperties": {"type": "INTEGER"}, "minProperties": 1, "maxProperties": 4,
      "propertyOrdering": ["a"]}),
    # Annotations are dropped; examples gives its first value as the example.
    ({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "$comment": "c", "type": "string",
      "readOnly": True, "writeOnly": False, "deprecated": False, "examples": ["e1", "e2"]},
     {"type": "STRING", "example": "e1"}),
    # Local references are inlined (pydantic's $defs), with keywords beside them applied on top.
    ({"$defs": {"Step": {"type": "object", "properties": {"output": {"type": "string"}}, "required": ["output"]}},
      "type": "object", "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
                                       "last": {"$ref": "#/definitions/Last", "description": "the end"}},
      "definitions": {"Last": {"type": "string"}}},
     {"type": "OBJECT", "properties": {
         "steps": {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"output": {"type": "STRING"}},
                                              "required": ["output"]}},
         "last": {"type": "STRING", "description": "the end"}}}),
    ({"type": "null"}, {"type": "NULL"}),
])
def test_schema_conversion(schema, vertex):
    original = copy.deepcopy(schema)
    assert to_vertex_schema(schema, "s", "response_format") == vertex
    assert schema == original  # the client's schema is not changed


@pytest.mark.parametrize("schema, where", [
    ({"type": "string", "not": {"const": "a"}}, "s.not: the JSON Schema keyword 'not'"),
    ({"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 0}}},
     "s.properties.n.exclusiveMinimum"),
    ({"type": "array", "items": [{"type": "string"}]}, "s.items: a list of item schemas"),
    ({"type": "array", "uniqueItems": True}, "s.uniqueItems"),
    ({"type": "object", "patternProperties": {"^x": {}}}, "s.patternProperties"),
    ({"type": "float"}, "s.type: unknown type 'float'"),
    ({"type": []}, "s.type: unknown type"),
    ({"allOf": [{"type": "string"}, {"minLength": 1}]}, "s.allOf: only an allOf of exactly one"),
    ({"anyOf": []}, "s.anyOf: must be a non-empty list"),
    ({"enum": []}, "s.enum: must be a non-empty list"),
    ({"properties": []}, "s.properties: must be an object"),
    ({"properties": {"a": "string"}}, "s.properties.a: a schema must be an object"),
    ({"$ref": "https://example.com/s.json"}, "s.$ref: only references into the schema itself"),
    ({"$ref": "#/$defs/Missing"}, "names nothing"),
    ({"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}, "$ref": "#/$defs/Node"},
     "the recursive reference '#/$defs/Node'"),
    ([1], "s must be a JSON Schema object"),
])
def test_schema_keywords_vertex_cannot_take_are_named(schema, where):
    with pytest.raises(TranslationError) as e:
        to_vertex_schema(schema, "s", "response_format")
    assert where in e.value.message and e.value.param == "response_format"


def test_schema_depth_is_bounded():
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        deep = {"type": "array", "items": deep}
    with pytest.raises(TranslationError, match="nested over"):
        to_vertex_schema(deep, "s", "tools")


# ---------------------------------------------------------------- answers


def test_documented_text_answer():
    out, usage, model = answer(TEXT_ANSWER)
    assert out == {
        "id": "3YK3Z5WJCbGg0-kP9JOI8Ag", "object": "chat.completion", "created": CREATED, "model": "gemini-2.0-flash-001",
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": "The sky appears blue because of Rayleigh scattering."},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 6, "completion_tokens": 104, "total_tokens": 110,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
    }
    assert model == "gemini-2.0-flash-001"
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (6, 104, 110)


def test_function_calls_thoughts_and_usage():
    out, usage, _ = answer(CALL_ANSWER)
    [choice] = out["choices"]
    message = choice["message"]
    assert choice["finish_reason"] == "tool_calls"
    assert message["content"] is None and message["reasoning_content"] == "The user wants two cities."
    calls = message["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_current_weather", {"location": "Boston, MA"}),
        ("function", "get_current_weather", {"location": "San Francisco, CA"})]
    # Ids: call_..., distinct, and the same for the same answer (whole or streamed: call_id).
    assert [c["id"] for c in calls] == [call_id("resp-calls", 0, 0), call_id("resp-calls", 0, 1)]
    assert all(c["id"].startswith("call_") for c in calls) and calls[0]["id"] != calls[1]["id"]
    assert answer(CALL_ANSWER)[0] == out
    # completion_tokens counts the thoughts; cached tokens are part of the prompt's.
    assert out["usage"] == {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200,
                            "prompt_tokens_details": {"cached_tokens": 100},
                            "completion_tokens_details": {"reasoning_tokens": 50}}
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens, usage.reasoning_tokens) == (120, 80, 100, 50)


@pytest.mark.parametrize("reason, expected", [*FINISH_REASONS.items(), ("MALFORMED_FUNCTION_CALL", "stop"),
                                              ("OTHER", "stop"), ("SOMETHING_NEW", "stop"), (None, "stop")])
def test_every_finish_reason(reason, expected):
    body = copy.deepcopy(TEXT_ANSWER)
    body["candidates"][0]["finishReason"] = reason
    assert answer(body)[0]["choices"][0]["finish_reason"] == expected
    # With a function call, a clean stop is "tool_calls"; the others keep their meaning.
    body["candidates"][0]["content"]["parts"].append({"functionCall": {"name": "f", "args": {}}})
    assert answer(body)[0]["choices"][0]["finish_reason"] == ("tool_calls" if expected == "stop" else expected)


def test_blocked_prompt_is_content_filter_with_empty_content():
    body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "blockReasonMessage": "blocked"},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "modelVersion": "gemini-2.5-pro",
            "responseId": "r"}
    out, usage, _ = answer(body)
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": None,
                               "finish_reason": "content_filter"}]
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (7, 0, 7)


def test_several_candidates_keep_their_index():
    body = {"candidates": [{"index": 1, "content": {"parts": [{"text": "B"}]}, "finishReason": "MAX_TOKENS"},
                           {"index": 0, "content": {"parts": [{"text": "A"}]}, "finishReason": "STOP"},
                           {"content": {"role": "model"}, "finishReason": "SAFETY"}]}
    out, usage, model = answer(body)
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (1, "B", "length"), (0, "A", "stop"), (2, "", "content_filter")]
    assert usage is None and model is None and "usage" not in out and out["id"].startswith("chatcmpl-")


def test_logprobs():
    body = copy.deepcopy(TEXT_ANSWER)
    body["candidates"][0]["logprobsResult"] = {
        "topCandidates": [{"candidates": [{"token": "The", "logProbability": -0.01, "tokenId": 1},
                                          {"token": "A", "logProbability": -4.5}]},
                          {"candidates": []}],
        "chosenCandidates": [{"token": "The", "logProbability": -0.01}, {"token": " é", "logProbability": -0.2}]}
    assert answer(body)[0]["choices"][0]["logprobs"] == {"refusal": None, "content": [
        {"token": "The", "logprob": -0.01, "bytes": [84, 104, 101],
         "top_logprobs": [{"token": "The", "logprob": -0.01, "bytes": [84, 104, 101]},
                          {"token": "A", "logprob": -4.5, "bytes": [65]}]},
        {"token": " é", "logprob": -0.2, "bytes": [32, 195, 169], "top_logprobs": []}]}


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1, 2]", b'{"predictions": []}',
                                  b'{"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": '
                                  b'{"a": 1}}}]}, "index": "zero"}], "usageMetadata": "x"}'])
def test_what_is_not_an_answer_is_relayed(body):
    out, usage, _ = O2G.response(body)
    assert usage is None and (out == body or json.loads(out))


def test_malformed_candidates_do_not_break_the_answer():
    body = {"candidates": [1, {"content": {"parts": ["x", {"text": 5}, {"text": "ok"}]}}, {"content": "parts"}],
            "usageMetadata": {"promptTokenCount": "3", "candidatesTokenCount": -1, "totalTokenCount": True}}
    out, usage, _ = answer(body)
    assert [c["message"]["content"] for c in out["choices"]] == ["ok", ""]
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (0, 0, 0)


def test_openai_sdk_reads_the_answer():
    oai, _ = sdk_clients(O2G.response(json.dumps(CALL_ANSWER).encode())[0], ctype="application/json")
    done = oai.chat.completions.create(model="m", messages=[user("hi")])
    assert done.choices[0].finish_reason == "tool_calls" and done.usage.completion_tokens_details.reasoning_tokens == 50
    assert json.loads(done.choices[0].message.tool_calls[1].function.arguments) == {"location": "San Francisco, CA"}


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("status, etype, code", [
    (400, "invalid_request_error", "INVALID_ARGUMENT"),
    (401, "authentication_error", "UNAUTHENTICATED"),
    (403, "permission_error", "PERMISSION_DENIED"),
    (404, "invalid_request_error", "NOT_FOUND"),
    (429, "rate_limit_error", "rate_limit_exceeded"),
    (500, "server_error", "INTERNAL"),
    (503, "server_error", "UNAVAILABLE"),
])
def test_google_errors_become_openai_errors(status, etype, code):
    for body in (ERRORS[status], [ERRORS[status]]):  # Vertex sometimes wraps the error in a list
        got, out = O2G.error(status, json.dumps(body).encode())
        assert got == status
        assert json.loads(out) == {"error": {"message": ERRORS[status]["error"]["message"], "type": etype,
                                             "param": None, "code": code}}


@pytest.mark.parametrize("status, body, message, code", [
    (502, b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>", None),
    (429, b"", "upstream answered 429", "rate_limit_exceeded"),
    (400, b'{"error": {"code": 400}}', '{"error": {"code": 400}}', None),
    (404, b'{"error": "not found"}', '{"error": "not found"}', None),
])
def test_errors_that_are_not_googles_shape(status, body, message, code):
    got, out = O2G.error(status, body)
    err = json.loads(out)["error"]
    assert got == status and err["message"] == message and err["code"] == code


def test_openai_sdk_raises_the_translated_error():
    import openai

    status, body = O2G.error(429, json.dumps([ERRORS[429]]).encode())
    oai, _ = sdk_clients(body, status=status, ctype="application/json")
    with pytest.raises(openai.RateLimitError, match="Resource exhausted"):
        oai.chat.completions.create(model="m", messages=[user("hi")])

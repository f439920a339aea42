"""The OpenAI embeddings -> Bedrock InvokeModel translator (OpenAIToBedrockEmbeddings): Titan Text
Embeddings and Cohere Embed bodies picked by the model ID, their answers read back as OpenAI's list,
in the encoding the client asked for (pure, no processes). Samples follow Bedrock's documented Titan
and Cohere Embed request and response bodies."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.openai_bedrock_embeddings import OpenAIToBedrockEmbeddings, build_request
from tests.unit.translators.samples import sdk_clients

E = OpenAIToBedrockEmbeddings()
TITAN_V2 = "amazon.titan-embed-text-v2:0"
VECTOR = [0.5, -0.25, 0.125]
TITAN_ANSWER = {"embedding": VECTOR, "inputTextTokenCount": 6}
COHERE_ANSWER = {"embeddings": [VECTOR, [1.0, 2.0, 3.0]], "id": "6f2b7e8e-8d8f-4c5e-9c3f-3d0f8f1a2b3c",
                 "response_type": "embeddings_floats", "texts": ["first text", "second text"]}


def request(model: str, **body: Any) -> dict[str, Any]:
    body.setdefault("input", "Hello world")
    return build_request({"model": "alias", **body}, model)


# ---------------------------------------------------------------- requests


@pytest.mark.parametrize("model, body, expected", [
    (TITAN_V2, {}, {"inputText": "Hello world", "normalize": True}),
    (TITAN_V2, {"dimensions": 512, "input": ["Hello world"]}, {"inputText": "Hello world", "dimensions": 512,
                                                               "normalize": True}),
    ("us.amazon.titan-embed-text-v2:0", {}, {"inputText": "Hello world", "normalize": True}),
    ("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0", {},
     {"inputText": "Hello world", "normalize": True}),
    ("amazon.titan-embed-text-v1", {}, {"inputText": "Hello world"}),
    ("amazon.titan-embed-g1-text-02", {"encoding_format": "base64", "user": "u"}, {"inputText": "Hello world"}),
    ("amazon.titan-embed-image-v1", {"dimensions": 256}, {"inputText": "Hello world",
                                                          "embeddingConfig": {"outputEmbeddingLength": 256}}),
    ("cohere.embed-english-v3", {"input": ["first text", "second text"]},
     {"texts": ["first text", "second text"], "input_type": "search_document"}),
    ("us.cohere.embed-multilingual-v3", {"input_type": "search_query"},
     {"texts": ["Hello world"], "input_type": "search_query"}),
    ("cohere.embed-v4:0", {"dimensions": 1024}, {"texts": ["Hello world"], "input_type": "search_document",
                                                 "output_dimension": 1024}),
])
def test_body_by_model(model, body, expected):
    assert request(model, **body) == expected
    assert json.loads(E.request({"model": "alias", "input": "Hello world", **body}, model)) == expected


@pytest.mark.parametrize("model, body, words", [
    (TITAN_V2, {"input": ["a", "b"]}, "one text per request, and this one has 2"),
    (TITAN_V2, {"input": [1, 2, 3]}, "token IDs"),
    (TITAN_V2, {"input": [[1, 2], [3]]}, "token IDs"),
    (TITAN_V2, {"input": []}, "non-empty list"),
    (TITAN_V2, {"input": None}, "a string or"),
    (TITAN_V2, {"encoding_format": "int8"}, "encoding_format"),
    ("amazon.titan-embed-text-v1", {"dimensions": 256}, "dimensions"),
    ("cohere.embed-english-v3", {"dimensions": 256}, "dimensions"),
    ("cohere.embed-english-v3", {"input_type": "other"}, "input_type"),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", {}, "cannot embed"),
    ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3", {}, "cannot embed"),
    (TITAN_V2, {"dimensions": "wide"}, "malformed"),
])
def test_requests_bedrock_cannot_take(model, body, words):
    with pytest.raises(TranslationError, match=words):
        E.request({"model": "m", "input": "Hello world", **body}, model)


# ---------------------------------------------------------------- answers


def test_titan_answer_with_usage():
    out, usage, model = E.response_to({"model": "embed", "input": "Hello world"}, json.dumps(TITAN_ANSWER).encode())
    assert json.loads(out) == {"object": "list", "model": "embed",
                               "data": [{"object": "embedding", "index": 0, "embedding": VECTOR}],
                               "usage": {"prompt_tokens": 6, "total_tokens": 6}}
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens, model) == (6, 0, 6, "embed")


@pytest.mark.parametrize("embeddings", [COHERE_ANSWER["embeddings"], {"float": COHERE_ANSWER["embeddings"]}])
def test_cohere_answer_reports_no_tokens(embeddings):
    out, usage, _ = E.response(json.dumps({**COHERE_ANSWER, "embeddings": embeddings}).encode())
    answer = json.loads(out)
    assert [d["embedding"] for d in answer["data"]] == COHERE_ANSWER["embeddings"]
    assert [d["index"] for d in answer["data"]] == [0, 1] and answer["model"] is None
    # No counts in the answer: the client's usage says 0, and the gateway estimates (no Usage here).
    assert answer["usage"] == {"prompt_tokens": 0, "total_tokens": 0} and usage is None
    billed = {**COHERE_ANSWER, "meta": {"billed_units": {"input_tokens": 4}}}
    assert E.response(json.dumps(billed).encode())[1].input_tokens == 4


def test_base64_when_asked():
    out, _, _ = E.response_to({"model": "m", "encoding_format": "base64"}, json.dumps(COHERE_ANSWER).encode())
    data = json.loads(out)["data"]
    assert [list(struct.unpack(f"<{len(v)}f", base64.b64decode(d["embedding"])))
            for d, v in zip(data, COHERE_ANSWER["embeddings"])] == COHERE_ANSWER["embeddings"]


@pytest.mark.parametrize("body", [b"not json", b'{"embedding": "x"}', b'{"embeddings": {"int8": []}}',
                                  b'{"embedding": ["a"]}'])
def test_answers_not_understood_are_relayed(body):
    assert E.response_to({"encoding_format": "base64"}, body) == (body, None, None)


def test_errors_and_whole_answer_streams():
    status, out = E.error(400, b'{"message": "Malformed input request: expected maxLength: 50000"}')
    assert status == 400 and json.loads(out)["error"] == {
        "message": "Malformed input request: expected maxLength: 50000", "type": "invalid_request_error",
        "param": None, "code": None}
    st = E.stream(False)  # an answer without a length is gathered and translated at its end
    raw = json.dumps(TITAN_ANSWER).encode()
    assert st.feed(raw[:5]) == b"" and st.feed(raw[5:]) == b""
    assert json.loads(st.flush())["data"][0]["embedding"] == VECTOR and st.usage.input_tokens == 6


def test_openai_sdk_reads_both_encodings():
    raw = json.dumps(COHERE_ANSWER).encode()
    # The SDK asks for base64 unless told otherwise, and decodes it.
    oai, _ = sdk_clients(E.response_to({"encoding_format": "base64"}, raw)[0], ctype="application/json")
    assert [d.embedding for d in oai.embeddings.create(model="m", input=["a", "b"]).data] == COHERE_ANSWER["embeddings"]
    oai, _ = sdk_clients(E.response_to({"encoding_format": "float"}, raw)[0], ctype="application/json")
    got = oai.embeddings.create(model="m", input=["a", "b"], encoding_format="float")
    assert got.data[1].embedding == [1.0, 2.0, 3.0]

"""The OpenAI embeddings -> Vertex AI text embeddings (:predict) translator, as tables after Google's
text-embeddings-api examples (pure, no processes)."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from modelyard.gateway.translators import TranslationError
from modelyard.gateway.translators.openai_gemini_embeddings import OpenAIToGeminiEmbeddings, build_request
from tests.unit.translators.gemini_samples import ERRORS
from tests.unit.translators.samples import sdk_clients

E = OpenAIToGeminiEmbeddings()

# The documented :predict answer for two instances.
PREDICT_ANSWER: dict[str, Any] = {
    "predictions": [
        {"embeddings": {"statistics": {"truncated": False, "token_count": 6},
                        "values": [0.0123, -0.5, 1.0, 0.25]}},
        {"embeddings": {"statistics": {"truncated": True, "token_count": 9}, "values": [-1, 0.75, 3.5e-05, 0]}},
    ],
    "metadata": {"billableCharacterCount": 40},
}


def respond(request: dict[str, Any] | None, body: Any = PREDICT_ANSWER) -> tuple[dict[str, Any], Any, Any]:
    out, usage, model = E.response_to(request, json.dumps(body).encode())
    return json.loads(out), usage, model


# ---------------------------------------------------------------- requests


@pytest.mark.parametrize("body, upstream", [
    ({"input": "What is life?"}, {"instances": [{"content": "What is life?"}]}),
    ({"input": ["a", "b"], "dimensions": 256, "encoding_format": "base64", "user": "u"},
     {"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 256}}),
    ({"input": [""], "encoding_format": "float"}, {"instances": [{"content": ""}]}),
])
def test_requests(body, upstream):
    assert json.loads(E.request({"model": "text-embedding-005", **body}, "text-embedding-005")) == upstream


@pytest.mark.parametrize("body, param, match", [
    ({"input": [1, 2, 3]}, "input", "token-id"),
    ({"input": [[1, 2], [3]]}, "input", "token-id"),
    ({"input": []}, "input", "non-empty list"),
    ({"input": ["a", 1]}, "input", "list of strings"),
    ({}, "input", "must be a string"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format", "float or base64"),
])
def test_requests_the_backend_cannot_take(body, param, match):
    with pytest.raises(TranslationError, match=match) as e:
        build_request(body, "m")
    assert e.value.param == param


def test_malformed_dimensions_is_a_translation_error():
    with pytest.raises(TranslationError):
        E.request({"input": "a", "dimensions": "wide"}, "m")


# ---------------------------------------------------------------- answers


def test_float_answer():
    out, usage, model = respond({"model": "text-embedding-005", "input": ["a", "b"]})
    assert out == {"object": "list", "model": "text-embedding-005",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.0123, -0.5, 1.0, 0.25]},
                            {"object": "embedding", "index": 1, "embedding": [-1, 0.75, 3.5e-05, 0]}],
                   "usage": {"prompt_tokens": 15, "total_tokens": 15}}
    assert model == "text-embedding-005" and (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (15, 0, 15)


def test_base64_answer_is_little_endian_float32():
    out, _, _ = respond({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})
    first = out["data"][0]["embedding"]
    assert isinstance(first, str)
    raw = base64.b64decode(first)
    assert len(raw) == 16 and struct.unpack("<4f", raw) == pytest.approx((0.0123, -0.5, 1.0, 0.25), rel=1e-6)
    assert raw[4:8] == b"\x00\x00\x00\xbf"  # -0.5, little-endian


def test_plain_response_without_the_request_gives_floats():
    out, usage, model = E.response(json.dumps(PREDICT_ANSWER).encode())
    body = json.loads(out)
    assert body["data"][1]["embedding"] == [-1, 0.75, 3.5e-05, 0] and body["model"] is None and model is None
    assert usage.input_tokens == 15


def test_missing_statistics_count_nothing():
    out, usage, _ = respond({"model": "m"}, {"predictions": [{"embeddings": {"values": [0.5]}}]})
    assert out["usage"] == {"prompt_tokens": 0, "total_tokens": 0} and usage.total_tokens == 0


@pytest.mark.parametrize("body", [b"<html/>", b'{"candidates": []}', b'{"predictions": [1]}',
                                  b'{"predictions": [{"embeddings": {"values": ["x"]}}]}',
                                  b'{"predictions": [{"embeddings": {"values": [1e300]}}]}'])
def test_what_is_not_an_answer_is_relayed(body):
    out = E.response_to({"model": "m", "encoding_format": "base64"}, body)
    assert out == (body, None, None)


def test_errors_are_googles_translated():
    status, body = E.error(400, json.dumps([ERRORS[400]]).encode())
    assert status == 400 and json.loads(body)["error"] == {
        "message": "Request contains an invalid argument.", "type": "invalid_request_error", "param": None,
        "code": "INVALID_ARGUMENT"}


# ---------------------------------------------------------------- the OpenAI SDK reads what we write


def test_openai_sdk_default_base64_request_decodes():
    """The SDK asks for base64 unless told otherwise, and decodes it itself."""
    out, _, _ = E.response_to({"model": "m", "input": "a", "encoding_format": "base64"},
                              json.dumps(PREDICT_ANSWER).encode())
    oai, _ = sdk_clients(out, ctype="application/json")
    got = oai.embeddings.create(model="m", input=["a", "b"])
    assert got.data[0].embedding == pytest.approx([0.0123, -0.5, 1.0, 0.25], rel=1e-6)
    assert got.usage.prompt_tokens == 15

"""InvokeModel bodies the Bedrock mock models: Anthropic Messages, Titan text embeddings, Cohere embed.

The model family comes from the model ID (its base model: an ARN's last part, a cross-region
profile's ``us.``/``eu.``/... prefix dropped):

- ``anthropic.*``: the Messages request without ``model`` and ``stream`` and with
  ``anthropic_version: "bedrock-2023-05-31"`` (required), checked by the Anthropic mock's
  validator; the answer is the Messages answer (``msg_bdrk_`` ids). Streams are the Messages events.
- ``amazon.titan-embed-text-v2:0`` (and v1): ``{"inputText", "dimensions"?: 256|512|1024,
  "normalize"?: bool, "embeddingTypes"?: ["float", "binary"]}`` answered ``{"embedding": [...],
  "embeddingsByType": {...}, "inputTextTokenCount": N}``.
- ``cohere.embed-*``: ``{"texts": [...], "input_type", "truncate"?, "embedding_types"?,
  "output_dimension"? (v4)}`` answered ``{"embeddings": [[...]] | {"float": [[...]], ...},
  "id", "response_type": "embeddings_floats" | "embeddings_by_type", "texts"}``.

Bodies are refused as Bedrock refuses them: ValidationException "Malformed input request: #: ...,
please reformat your input and try again." for a schema error (an extraneous or missing key, a
value of the wrong type or outside its set), the Anthropic validator's own message otherwise.
Vectors are the OpenAI mock's (a hash of the input, stable across runs).
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from modelyard.loadtest.mock.anthropic.validate import validate_request
from modelyard.loadtest.mock.bedrock.shapes import fail, malformed
from modelyard.loadtest.mock.openai.wire import _vector_floats
from modelyard.loadtest.mock.wire import _BadRequest

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
ANTHROPIC_FIELDS = frozenset({
    "anthropic_version", "anthropic_beta", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
    "stop_sequences", "tools", "tool_choice", "thinking", "output_config",
})
_REGION_PREFIX = re.compile(r"^(us|eu|apac|us-gov|ca|jp|au|global)\.")
_COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
_COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary")


def base_model(model_id: str) -> str:
    """The foundation model an ID names: an ARN's resource part, a profile's region prefix dropped."""
    model = model_id.rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id
    return _REGION_PREFIX.sub("", model)


def family(model_id: str) -> str | None:
    """"anthropic", "titan-embed", "cohere-embed" or None (a model whose InvokeModel body the mock does not model)."""
    model = base_model(model_id)
    if model.startswith("anthropic."):
        return "anthropic"
    if model.startswith("amazon.titan-embed-text-"):
        return "titan-embed"
    if model.startswith("cohere.embed-"):
        return "cohere-embed"
    return None


def anthropic_model_name(model_id: str) -> str:
    """The Messages answer's ``model``: ``claude-3-5-sonnet-20241022`` for
    ``us.anthropic.claude-3-5-sonnet-20241022-v2:0``."""
    model = base_model(model_id)[len("anthropic."):]
    return re.sub(r"-v\d+(:\d+)?$", "", model)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        malformed("#: expected type: JSONObject")
    return body


def _extraneous(body: dict[str, Any], allowed: frozenset[str] | tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            malformed(f"#: extraneous key [{key}] is not permitted")


def _required(body: dict[str, Any], key: str) -> Any:
    if key not in body:
        malformed(f"#: required key [{key}] not found")
    return body[key]


def validate_anthropic(body: Any, model_id: str) -> tuple[dict[str, Any], int | None]:
    """The Messages request (``model`` filled in for the answer) and its thinking budget."""
    body = _object(body)
    _extraneous(body, ANTHROPIC_FIELDS)
    version = _required(body, "anthropic_version")
    if version != BEDROCK_ANTHROPIC_VERSION:
        malformed(f"#/anthropic_version: {str(version)[:40]} is not a valid enum value")
    beta = body.get("anthropic_beta")
    if beta is not None and (not isinstance(beta, list) or not all(isinstance(b, str) for b in beta)):
        malformed("#/anthropic_beta: expected type: JSONArray of strings")
    req = {k: v for k, v in body.items() if k not in ("anthropic_version", "anthropic_beta")}
    req["model"] = anthropic_model_name(model_id)
    try:
        budget = validate_request(req)
    except _BadRequest as e:
        fail(e.message)
    return req, budget


def _tokens(text: str) -> int:
    return max(1, -(-len(text) // 4))


def _normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _binary(vector: list[float], signed: bool) -> list[int]:
    """Bits (1 for a positive value) packed 8 to a byte, as int8 (binary) or uint8 (ubinary)."""
    out = []
    for i in range(0, len(vector), 8):
        byte = 0
        for v in vector[i:i + 8]:
            byte = (byte << 1) | (v > 0)
        out.append(byte - 128 if signed else byte)
    return out


def titan_embedding(body: Any, model_id: str) -> dict[str, Any]:
    body = _object(body)
    v2 = "v2" in base_model(model_id)
    _extraneous(body, ("inputText", "dimensions", "normalize", "embeddingTypes") if v2 else ("inputText",))
    text = _required(body, "inputText")
    if not isinstance(text, str):
        malformed("#/inputText: expected type: String, found: " + type(text).__name__)
    if not text:
        malformed("#/inputText: expected minLength: 1, actual: 0")
    dims = body.get("dimensions", 1024 if v2 else 1536)
    if v2 and dims not in (256, 512, 1024):
        malformed(f"#/dimensions: {str(dims)[:20]} is not a valid enum value")
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        malformed("#/normalize: expected type: Boolean")
    kinds = body.get("embeddingTypes", ["float"])
    if not isinstance(kinds, list) or not kinds or any(k not in ("float", "binary") for k in kinds):
        malformed("#/embeddingTypes: expected a non-empty array of \"float\" or \"binary\"")
    vector = _vector_floats(text.encode(), dims)
    if normalize:
        vector = _normalized(vector)
    answer: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": _tokens(text)}
    if v2:
        answer["embeddingsByType"] = {k: (vector if k == "float" else [int(v > 0) for v in vector]) for k in kinds}
    return answer


def cohere_embedding(body: Any, model_id: str) -> tuple[dict[str, Any], int]:
    """The embed answer and its input token count (Bedrock reports it in a header)."""
    body = _object(body)
    model = base_model(model_id)
    v4 = model.startswith("cohere.embed-v4")
    allowed = ("texts", "images", "input_type", "truncate", "embedding_types")
    _extraneous(body, (*allowed, "output_dimension", "max_tokens", "inputs") if v4 else allowed)
    input_type = _required(body, "input_type")
    if input_type not in _COHERE_INPUT_TYPES:
        malformed(f"#/input_type: {str(input_type)[:40]} is not a valid enum value")
    texts = body.get("texts")
    if texts is None and "images" not in body and "inputs" not in body:
        malformed("#: required key [texts] not found")
    texts = texts or []
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        malformed("#/texts: expected type: JSONArray of strings")
    if len(texts) > 96:
        malformed(f"#/texts: expected maximum item count: 96, found: {len(texts)}")
    if body.get("truncate", "NONE") not in ("NONE", "START", "END"):
        malformed(f"#/truncate: {str(body['truncate'])[:20]} is not a valid enum value")
    kinds = body.get("embedding_types")
    if kinds is not None and (not isinstance(kinds, list) or not kinds or any(k not in _COHERE_TYPES for k in kinds)):
        malformed("#/embedding_types: expected a non-empty array of float, int8, uint8, binary or ubinary")
    dims = 384 if "light" in model else 1024
    if v4:
        dims = body.get("output_dimension", 1536)
        if dims not in (256, 512, 1024, 1536):
            malformed(f"#/output_dimension: {str(dims)[:20]} is not a valid enum value")
    vectors = [_vector_floats(t.encode(), dims) for t in texts]
    answer: dict[str, Any] = {"id": str(uuid.uuid4()), "texts": texts}
    if kinds is None:
        answer["embeddings"], answer["response_type"] = vectors, "embeddings_floats"
    else:
        answer["embeddings"] = {k: [_typed(v, k) for v in vectors] for k in kinds}
        answer["response_type"] = "embeddings_by_type"
    return answer, sum(_tokens(t) for t in texts) or 1


def _typed(vector: list[float], kind: str) -> list[Any]:
    if kind == "float":
        return vector
    if kind == "int8":
        return [max(-128, min(127, round(v * 127))) for v in vector]
    if kind == "uint8":
        return [max(0, min(255, round((v + 1) * 127.5))) for v in vector]
    return _binary(vector, signed=kind == "binary")

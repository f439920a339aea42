"""OpenAI embeddings client -> AWS Bedrock InvokeModel embedding models (schema AWSBedrock).

The AWSBedrock provider sends it to POST /model/{modelId}/invoke. InvokeModel's body is the model's
own, so the model ID (after modelNameOverride; an inference profile's geography prefix such as
`us.` and an ARN's path are looked past: openai_bedrock.model_base) says which body to write:

- Titan Text Embeddings (amazon.titan-embed-text-v2:0, amazon.titan-embed-text-v1, and the older
  amazon.titan-embed-g1-text-02, amazon.titan-embed-image-v1 for its text): {"inputText"}, plus for
  v2 "dimensions" (from the client's, 256/512/1024 as Bedrock checks) and "normalize": true (OpenAI's
  embeddings are unit length); the multimodal model takes dimensions as
  embeddingConfig.outputEmbeddingLength; v1 has no dimensions (a 400). Titan embeds one text per
  call: an input list of several strings is a 400 that says so (the gateway makes one upstream
  request per client request). Answer: {"embedding", "inputTextTokenCount"}: usage is that count.
- Cohere Embed (cohere.embed-english-v3, cohere.embed-multilingual-v3, cohere.embed-v4:0):
  {"texts": [...], "input_type"}; input_type is the client's own `input_type` field where it sends
  one (Cohere's search_query, classification, clustering), else "search_document"; dimensions go as
  output_dimension to embed-v4 and are a 400 for the others. Answer: {"embeddings": [[...]]} or,
  by type, {"embeddings": {"float": [[...]]}}, with "id" and "texts". Cohere on Bedrock reports no
  token counts: the client's usage then says 0, and the gateway's accounting, which gets no usage,
  estimates the input tokens from the request with its tokenizer.

Inputs: a string or a list of strings; token-ID inputs (lists of integers) are a 400 (these models
take text). encoding_format "float" (the default) or "base64" (little-endian float32s, as OpenAI
sends them; the OpenAI SDK asks for it unless told otherwise): the answer follows the request's, so
the proxy calls `response_to(request, body)`; `response(body)` alone answers floats. `user` is not
expressible and ignored. Other models are a 400 naming the two families.

Errors are Bedrock's ({"message"}), in OpenAI's shape as for Converse
(openai_bedrock_answer.error_from_bedrock).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from modelyard.core.usage import Usage

from .common import TranslationError, dumps, guarded, loads_object
from .openai_bedrock import model_base
from .openai_bedrock_answer import error_from_bedrock

COHERE_INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering"})

__all__ = ["OpenAIToBedrockEmbeddings", "build_request", "build_response"]


# ---------------------------------------------------------------- request


def _family(model: str) -> str:
    base = model_base(model).lower()
    if base.startswith("amazon.titan-embed"):
        return base
    if base.startswith("cohere.embed"):
        return base
    raise TranslationError(f"model {model!r} cannot embed on this backend: embeddings go to Titan Text Embeddings "
                           "(amazon.titan-embed-...) and Cohere Embed (cohere.embed-...) models", "model")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, list) and value:
        raise TranslationError("input must be text on this backend: token IDs cannot be embedded by Bedrock's models",
                               "input")
    raise TranslationError("input must be a string or a non-empty list of strings", "input")


def _titan(base: str, texts: list[str], dimensions: Any) -> dict[str, Any]:
    if len(texts) != 1:
        raise TranslationError(f"Titan embedding models take one text per request, and this one has {len(texts)}: "
                               "send each text in a request of its own", "input")
    out: dict[str, Any] = {"inputText": texts[0]}
    if base.startswith("amazon.titan-embed-text-v2"):
        if dimensions is not None:
            out["dimensions"] = int(dimensions)
        out["normalize"] = True
    elif base.startswith("amazon.titan-embed-image"):
        if dimensions is not None:
            out["embeddingConfig"] = {"outputEmbeddingLength": int(dimensions)}
    elif dimensions is not None:
        raise TranslationError(f"dimensions is not supported by {base} (Titan Text Embeddings v2 takes it)",
                               "dimensions")
    return out


def _cohere(base: str, texts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    input_type = body.get("input_type") or "search_document"
    if input_type not in COHERE_INPUT_TYPES:
        raise TranslationError(f"input_type {input_type!r} is not one Cohere Embed takes", "input_type")
    out: dict[str, Any] = {"texts": texts, "input_type": input_type}
    if body.get("dimensions") is not None:
        if not base.startswith("cohere.embed-v4"):
            raise TranslationError(f"dimensions is not supported by {base} (Cohere Embed v4 takes it)", "dimensions")
        out["output_dimension"] = int(body["dimensions"])
    return out


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise TranslationError(f"encoding_format {body['encoding_format']!r} is not supported (float, base64)",
                               "encoding_format")
    base = _family(model)
    texts = _texts(body.get("input"))
    if base.startswith("amazon."):
        return _titan(base, texts, body.get("dimensions"))
    return _cohere(base, texts, body)


# ---------------------------------------------------------------- response


def _vectors(answer: dict[str, Any]) -> list[Any] | None:
    if isinstance(answer.get("embedding"), list):  # Titan
        return [answer["embedding"]]
    embeddings = answer.get("embeddings")  # Cohere: a list, or by type
    if isinstance(embeddings, dict):
        embeddings = embeddings.get("float")
    return embeddings if isinstance(embeddings, list) else None


def _tokens(answer: dict[str, Any]) -> int | None:
    count = answer.get("inputTextTokenCount")  # Titan
    if count is None:  # Cohere's billed units, where an answer carries them
        count = ((answer.get("meta") or {}).get("billed_units") or {}).get("input_tokens")
    return count if isinstance(count, int) else None


def _encoded(vector: list[Any]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def build_response(answer: dict[str, Any], encoding: str = "float",
                   model: str | None = None) -> tuple[dict[str, Any], Usage | None] | None:
    """OpenAI's embeddings list from a Titan or Cohere answer; None for an answer of neither shape."""
    vectors = _vectors(answer)
    if vectors is None:
        return None
    tokens = _tokens(answer)
    data = [{"object": "embedding", "index": i, "embedding": _encoded(v) if encoding == "base64" else v}
            for i, v in enumerate(vectors)]
    out = {"object": "list", "data": data, "model": model,
           "usage": {"prompt_tokens": tokens or 0, "total_tokens": tokens or 0}}
    usage = None if tokens is None else Usage(input_tokens=tokens, total_tokens=tokens)
    return out, usage


# ---------------------------------------------------------------- the translator


class OpenAIToBedrockEmbeddings:
    def request(self, body: dict[str, Any], model: str) -> bytes:
        return dumps(guarded(build_request, body, model))

    def response(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        return self.response_to({}, body)

    def response_to(self, request: dict[str, Any], body: bytes) -> tuple[bytes, Usage | None, str | None]:
        """The answer in the encoding the client asked for, naming the model it asked for."""
        answer = loads_object(body)
        model = request.get("model") if isinstance(request.get("model"), str) else None
        try:
            built = None if answer is None else build_response(
                answer, "base64" if request.get("encoding_format") == "base64" else "float", model)
        except (struct.error, TypeError):  # vectors that are not numbers: relay the answer as it came
            built = None
        if built is None:
            return body, None, None
        return dumps(built[0]), built[1], model

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_from_bedrock(status, body)

    def stream(self, include_usage: bool) -> WholeAnswer:
        return WholeAnswer(self)


class WholeAnswer:
    """InvokeModel answers embeddings whole; should one come without a length (and so be relayed as
    a stream), its bytes are gathered and translated at its end, as a whole answer is."""

    def __init__(self, translator: OpenAIToBedrockEmbeddings) -> None:
        self.translator = translator
        self.usage: Usage | None = None
        self.model: str | None = None
        self._parts: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        self._parts.append(chunk)
        return b""

    def flush(self) -> bytes:
        out, self.usage, self.model = self.translator.response(b"".join(self._parts))
        return out

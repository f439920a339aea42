"""The OpenAI wire format as the mock backend speaks it.

Request fields it reads, prompt token estimates, embeddings, usage blocks, error types and
pre-encoded SSE pieces. Names keep their leading underscore: they are internal to the mock package.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from array import array
from functools import lru_cache
from typing import Any

import msgspec

from modelyard.loadtest.mock.wire import _BadRequest, _encode

# --- request bodies: only the fields the mock looks at are decoded ----------


class _ChatRequest(msgspec.Struct):
    model: Any = None
    messages: Any = None
    stream: Any = False
    stream_options: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None


class _CompletionRequest(msgspec.Struct):
    model: Any = None
    prompt: Any = None
    stream: Any = False
    stream_options: Any = None
    max_tokens: Any = None


class _EmbeddingRequest(msgspec.Struct):
    model: Any = None
    input: Any = None
    encoding_format: Any = None
    dimensions: Any = None


_decode_chat = msgspec.json.Decoder(_ChatRequest).decode
_decode_completion = msgspec.json.Decoder(_CompletionRequest).decode
_decode_embedding = msgspec.json.Decoder(_EmbeddingRequest).decode

_INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_exceeded",
}
_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def _error_type(status: int) -> str:
    if status >= 500:
        return "server_error"
    return _ERROR_TYPES.get(status, "invalid_request_error")


def _text_tokens(text: str) -> int:
    return -(-len(text) // 4)  # ceil(chars / 4): the usual rough estimate


def _chat_prompt_tokens(messages: list[Any]) -> int:
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    chars += len(text)
    return max(1, -(-chars // 4))


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int for t in value)


def _completion_prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, str):
        return max(1, _text_tokens(prompt))
    if _is_token_list(prompt):
        return len(prompt)
    if isinstance(prompt, list) and prompt:
        total = 0
        for item in prompt:
            if isinstance(item, str):
                total += _text_tokens(item)
            elif _is_token_list(item):
                total += len(item)
            else:
                raise _BadRequest(400, "Invalid value for 'prompt'.", "prompt")
        return max(1, total)
    raise _BadRequest(400, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")


def _embedding_inputs(value: Any) -> list[tuple[bytes, int]]:
    """Each input as (cache key, token estimate)."""
    if isinstance(value, str):
        return [(value.encode(), max(1, _text_tokens(value)))]
    if _is_token_list(value):
        return [(_encode(value), len(value))]
    if isinstance(value, list) and value:
        out: list[tuple[bytes, int]] = []
        for item in value:
            if isinstance(item, str):
                out.append((item.encode(), max(1, _text_tokens(item))))
            elif _is_token_list(item):
                out.append((_encode(item), len(item)))
            else:
                raise _BadRequest(400, "'$.input' is invalid. Please check the API reference.", "input")
        return out
    raise _BadRequest(400, "Missing required parameter: 'input'.", "input", "missing_required_parameter")


@lru_cache(maxsize=4096)
def _vector(key: bytes, dim: int) -> array:
    """A float32 vector in [-1, 1) derived from a hash of the input: stable across runs and hosts."""
    raw = array("h", hashlib.shake_128(key).digest(2 * dim))
    if sys.byteorder == "big":
        raw.byteswap()
    return array("f", [v / 32768.0 for v in raw])


@lru_cache(maxsize=4096)
def _vector_b64(key: bytes, dim: int) -> str:
    vec = _vector(key, dim)
    if sys.byteorder == "big":  # the wire format is little-endian float32
        vec = array("f", vec)
        vec.byteswap()
    return base64.b64encode(vec.tobytes()).decode("ascii")


@lru_cache(maxsize=4096)
def _vector_floats(key: bytes, dim: int) -> list[float]:
    return _vector(key, dim).tolist()


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _legacy_usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _include_usage(stream_options: Any) -> bool:
    return isinstance(stream_options, dict) and stream_options.get("include_usage") is True


class _Stream(msgspec.Struct):
    """The pre-encoded pieces of one SSE response; every chunk is ``head + choice + tail``."""

    head: bytes  # b'data: {"id":...,"choices":['
    tail: bytes  # b'],"usage":null}\n\n' or b']}\n\n'
    first: bytes | None  # chat's role chunk choice
    token_open: bytes
    token_close: bytes
    finish: bytes
    usage: bytes | None

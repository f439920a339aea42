"""Token-count endpoints answered by the gateway itself: request bytes in, (status, body bytes) out, no I/O.

- vLLM's `POST /tokenize`: `{"model"?, "prompt", "add_special_tokens"?=true}` or
  `{"model"?, "messages", "add_generation_prompt"?=true, "continue_final_message"?=false,
  "add_special_tokens"?=false, "tools"?}`, plus `"return_token_strs"?`; answers
  `{"count", "max_model_len", "tokens"}` and `"token_strs"` when asked, as vLLM's TokenizeResponse.
  `model` is optional as in vLLM (the default tokenizer then). `max_model_len` is the
  caller's figure, else null: the gateway does not know a backend's context length.
  Messages are rendered as ChatML (Qwen's template, tools as a leading system turn
  of JSON lines): exact framing for ChatML models, close for others.
- Anthropic's `POST /v1/messages/count_tokens`: a Messages request without max_tokens;
  answers `{"input_tokens": N}` (TokenCounter.count_request).

Errors: OpenAI's shape on /tokenize (what vLLM answers), Anthropic's on count_tokens.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from modelyard.core.errors import anthropic_error, openai_error
from modelyard.core.tokenizer import TokenCounter, TokenizerError, message_texts

_decode = msgspec.json.decode
_encode = msgspec.json.encode

class _BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = _decode(body)
    except msgspec.DecodeError as e:
        raise _BadRequest(f"The request body is not valid JSON: {e}.") from None
    except RecursionError:
        raise _BadRequest("The request body is nested too deeply.") from None
    if not isinstance(value, dict):
        raise _BadRequest("The request body must be a JSON object.")
    return value


def _flag(req: Mapping[str, Any], name: str, default: bool) -> bool:
    value = req.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _BadRequest(f"'{name}' must be a boolean.", name)
    return value


# --- vLLM /tokenize ------------------------------------------------------------------------------------------

def chatml(messages: list[Mapping[str, Any]], tools: list[Any] | None = None, add_generation_prompt: bool = True,
           continue_final_message: bool = False) -> str:
    """The conversation as ChatML text, special markers included (they encode to their special ids)."""
    turns: list[tuple[str, str]] = []
    if tools:
        turns.append(("system", "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)))
    turns.extend((str(m.get("role", "user")), "\n".join(message_texts(m))) for m in messages)
    out = [f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns]
    if continue_final_message and out:
        out[-1] = out[-1].removesuffix("<|im_end|>\n")  # the model goes on writing that message
    elif add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def tokenize(counter: TokenCounter, body: bytes, max_model_len: int | None = None) -> tuple[int, bytes]:
    """vLLM's POST /tokenize."""
    try:
        req = _json_object(body)
        model = req.get("model")
        if model is not None and not isinstance(model, str):
            raise _BadRequest("'model' must be a string.", "model")
        want_strs = _flag(req, "return_token_strs", False)
        messages = req.get("messages")
        if messages is not None:
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise _BadRequest("'messages' must be a list of message objects.", "messages")
            tools = req.get("tools")
            if tools is not None and not isinstance(tools, list):
                raise _BadRequest("'tools' must be a list.", "tools")
            add_generation_prompt = _flag(req, "add_generation_prompt", True)
            continue_final = _flag(req, "continue_final_message", False)
            if add_generation_prompt and continue_final:
                raise _BadRequest("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
            text = chatml(messages, tools, add_generation_prompt, continue_final)
            add_special = _flag(req, "add_special_tokens", False)
        else:
            text = req.get("prompt")
            if not isinstance(text, str):
                raise _BadRequest("Either 'prompt' (a string) or 'messages' (a list) is required.", "prompt")
            add_special = _flag(req, "add_special_tokens", True)
    except _BadRequest as e:
        return 400, openai_error(400, str(e), "invalid_request", e.param)
    try:
        ids = counter.token_ids(model, text, add_special_tokens=add_special)
        tok = counter.tokenizer_for(model)
    except TokenizerError as e:
        return 500, openai_error(500, f"The tokenizer for this model is unavailable: {e}", "tokenizer_unavailable")
    head = _encode({"count": len(ids), "max_model_len": max_model_len})[:-1]
    parts = [head, b',"tokens":', _json_list(ids, None)]
    if want_strs:
        parts += [b',"token_strs":', _json_list(ids, tok.id_to_token)]
    parts.append(b"}")
    return 200, b"".join(parts)


_LIST_CHUNK = 1 << 16  # ids turned into Python objects at a time


def _json_list(ids: array, convert: Callable[[int], Any] | None) -> bytes:
    """A JSON array of the ids (or of convert(id)), built in chunks: a list of 2 million Python ints
    or strings at once would cost ten times the answer."""
    out = []
    for i in range(0, len(ids), _LIST_CHUNK):
        chunk = ids[i:i + _LIST_CHUNK].tolist()
        out.append(_encode(chunk if convert is None else [convert(t) for t in chunk])[1:-1])
    return b"[" + b",".join(out) + b"]"


# --- Anthropic /v1/messages/count_tokens ---------------------------------------------------------------------

def _check_messages_request(req: Mapping[str, Any]) -> None:
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model: Field required" if model is None else "model: Input should be a valid string")
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest("messages: Field required" if messages is None else "messages: Input should be a valid list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _BadRequest(f"messages.{i}: Input should be a valid dictionary")
        if m.get("role") not in ("user", "assistant"):
            raise _BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if not isinstance(m.get("content"), (str, list)):
            raise _BadRequest(f"messages.{i}.content: Field required" if m.get("content") is None
                              else f"messages.{i}.content: Input should be a valid string or list")
    system = req.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise _BadRequest("system: Input should be a valid string or list")
    tools = req.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _BadRequest("tools: Input should be a valid list")


def count_tokens(counter: TokenCounter, body: bytes) -> tuple[int, bytes]:
    """Anthropic's POST /v1/messages/count_tokens."""
    try:
        req = _json_object(body)
        _check_messages_request(req)
    except _BadRequest as e:
        return 400, anthropic_error(400, str(e))
    try:
        n = counter.count_request(req["model"], req)
    except TokenizerError as e:
        return 500, anthropic_error(500, f"The tokenizer for this model is unavailable: {e}")
    return 200, _encode({"input_tokens": n})

"""Token usage estimated by counting, for backends that report none: the answer's text is
extracted from the body (or the SSE events) and counted with the model's tokenizer."""

from __future__ import annotations

from typing import Any

import msgspec

from modelyard.core.usage import Usage


class _Delta(msgspec.Struct):
    content: object = None


class _Message(msgspec.Struct):
    content: object = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    message: _Message | None = None
    text: object = None


class _Choices(msgspec.Struct):
    choices: list[_Choice] = []


_choices = msgspec.json.Decoder(_Choices)


def answer_text(data: bytes, stream: bool) -> str:
    """The generated text of an OpenAI answer: a whole body, or the events of a stream."""
    parts: list[str] = []
    payloads = [data] if not stream else [
        line[5:].strip() for line in data.splitlines() if line.startswith(b"data:") and line[5:].strip() != b"[DONE]"
    ]
    for payload in payloads:
        try:
            answer = _choices.decode(payload)
        except msgspec.DecodeError:
            continue
        for c in answer.choices:
            for value in (c.delta.content if c.delta else None, c.message.content if c.message else None, c.text):
                if isinstance(value, str):
                    parts.append(value)
    return "".join(parts)


def count_usage(counter: Any, model: str, request_body: bytes, answer: bytes, stream: bool,
                operation: str, budget: int | None = None) -> Usage:
    """Tokens counted with the model's tokenizer when the backend reported none; past `budget`
    characters of the request (of the answer), the rest is extrapolated from those counted."""
    try:
        request = msgspec.json.decode(request_body)
    except (msgspec.DecodeError, RecursionError):
        request = {}
    inp = counter.count_request(model, request, budget) if isinstance(request, dict) else 0
    del request
    out = counter.count_text(model, answer_text(answer, stream), budget) if answer and operation != "embeddings" else 0
    return Usage(input_tokens=inp, output_tokens=out, total_tokens=inp + out, estimated=True)

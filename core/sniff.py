"""Read only what routing needs from a JSON request body."""

from __future__ import annotations

from typing import Any

import msgspec


class _Seen:
    """The type of `Sniffed.model` while decoding: each `model` key the decoder meets goes through
    `_seen_model`, so a body that names the model twice is caught at the cost of one call, whatever
    the body's size, and whatever escapes spell the key."""


_SEEN = _Seen()
_models: list[object] = []  # the `model` values of the body being sniffed (sniff runs on the event loop only)


def _seen_model(_type: type, value: object) -> _Seen:
    _models.append(value)
    return _SEEN


class Sniffed(msgspec.Struct):
    # Everything else in the body is skipped by the decoder without building Python objects.
    model: _Seen = None  # type: ignore[assignment]  # the decoder's view; sniff() puts the value there
    stream: Any = False  # Any, not object: with a dec_hook, msgspec hands `object` fields to the hook too
    stream_options: Any = None


def wants_usage(sniffed: Sniffed) -> bool:
    """Whether a streaming client asked for the usage chunk itself."""
    opts = sniffed.stream_options
    return isinstance(opts, dict) and opts.get("include_usage") is True


_INCLUDE_USAGE = b'{"stream_options":{"include_usage":true},'


def with_usage_requested(body: bytes, sniffed: Sniffed) -> bytes:
    """The body with `stream_options.include_usage` set, so the backend reports usage in the stream."""
    opts = sniffed.stream_options
    if opts is None:
        # A field spliced in at the front: the rest of the body stays as the client sent it.
        return _INCLUDE_USAGE + body[body.index(b"{") + 1:]
    merged = {**opts, "include_usage": True} if isinstance(opts, dict) else {"include_usage": True}
    return rewrite_body(body, None, (("stream_options", msgspec.json.encode(merged)),), ())


class SniffError(ValueError):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


# Real model names (`accounts/fireworks/models/llama-v3p1-405b-instruct`, Hugging Face repo ids,
# Bedrock inference-profile ARNs) are under 200 characters. A longer one would go upstream as an
# oversized x-ai-eg-model header (a backend answers 431); this bound is also the metric label and
# access-log bound (gateway.accounting.MAX_LABEL_LEN), so every accepted name is labelled as it is.
MAX_MODEL_NAME = 256


def check_model_name(model: str) -> None:
    """SniffError (`invalid_model`) for a model name no backend can be asked for."""
    if len(model) > MAX_MODEL_NAME:
        raise SniffError(f"The model name is {len(model)} characters long; the limit is {MAX_MODEL_NAME}.",
                         "invalid_model")


_decoder = msgspec.json.Decoder(Sniffed, dec_hook=_seen_model)


def sniff(body: bytes) -> Sniffed:
    """The body's `model` and `stream`; SniffError when the body is not a JSON object, is nested
    deeper than the interpreter's recursion limit, has two `model` keys (the gateway would
    route on one and a backend might read the other), or a model name over MAX_MODEL_NAME."""
    _models.clear()
    try:
        found = _decoder.decode(body)
    except msgspec.ValidationError as e:
        raise SniffError(f"The request body must be a JSON object ({e}).", "invalid_json") from None
    except msgspec.DecodeError as e:
        raise SniffError(f"The request body is not valid JSON: {e}.", "invalid_json") from None
    except RecursionError:
        raise SniffError("The request body is nested too deeply.", "invalid_json") from None
    if _models:
        if len(_models) > 1:
            raise SniffError("The request body has more than one 'model' field.", "duplicate_model")
        found.model = model = _models[0]
        if isinstance(model, str):
            check_model_name(model)
    return found


_raw_object = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encode = msgspec.json.encode


def rewrite_body(body: bytes, model: str | None, set_fields: tuple[tuple[str, bytes], ...],
                 remove_fields: tuple[str, ...]) -> bytes:
    """The body with its top-level fields changed; nested values are copied verbatim, never decoded."""
    fields = _raw_object.decode(body)
    for name in remove_fields:
        fields.pop(name, None)
    for name, raw in set_fields:
        fields[name] = msgspec.Raw(raw)
    if model is not None:
        fields["model"] = msgspec.Raw(_encode(model))
    return _encode(fields)

"""Token usage read from upstream answers, without decoding more than usage needs.

A whole answer is decoded into a struct that names only `model` and `usage`
(msgspec skips the rest in C). A stream is scanned chunk by chunk with one
bytes search for `"usage"`; only the event that holds a non-null usage block
is decoded. With `stream_options.include_usage` that is the last event before
[DONE], whose `choices` is empty, which is why it can be cut out cleanly when
the gateway asked for it and the client did not.
"""

from __future__ import annotations

import msgspec


class Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False  # counted with a tokenizer, not reported by the backend


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _OpenAIUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None
    # Some OpenAI-compatible servers in front of Anthropic-style caches report these too.
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Answer(msgspec.Struct):
    model: object = None
    usage: _OpenAIUsage | None = None


_answer = msgspec.json.Decoder(_Answer)


def _from_openai(u: _OpenAIUsage) -> Usage:
    inp = u.prompt_tokens or 0
    out = u.completion_tokens or 0
    cached = (u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else None) or u.cache_read_input_tokens
    reasoning = u.completion_tokens_details.reasoning_tokens if u.completion_tokens_details else None
    return Usage(inp, out, u.total_tokens if u.total_tokens is not None else inp + out, cached or 0,
                 u.cache_creation_input_tokens or 0, reasoning or 0)


def from_body(body: bytes) -> tuple[Usage | None, str | None]:
    """Usage and model of a whole OpenAI answer; (None, None) when it is not one."""
    try:
        answer = _answer.decode(body)
    except msgspec.DecodeError:  # includes validation errors: not an answer we understand
        return None, None
    model = answer.model if isinstance(answer.model, str) else None
    return (_from_openai(answer.usage) if answer.usage is not None else None), model


def first_event_model(data: bytes) -> str | None:
    """The `model` of the first event of a stream."""
    start = data.find(b"data:")
    end = data.find(b"\n", start)
    if start == -1:
        return None
    return from_body(data[start + 5:end if end != -1 else len(data)].strip())[1]


_USAGE = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')


_MAX_REST = 1 << 20  # an "event" longer than this is not SSE framing: stop following the stream


def _boundary(data: bytes) -> int:
    """Where the last complete event ends (after its blank line), or 0."""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf != -1 else 0, crlf + 4 if crlf != -1 else 0)


class StreamUsage:
    """Follows an OpenAI event stream as it is relayed and reads its usage event.

    Only whole events are scanned: an unfinished one at the end of a chunk waits
    for the next chunk. `feed` returns the bytes to pass on: the chunk itself, or,
    when `strip` is set, the whole events so far without the usage event (which
    the gateway asked for and the client did not).
    """

    __slots__ = ("strip", "usage", "model", "_rest", "_off")

    def __init__(self, strip: bool):
        self.strip = strip
        self.usage: Usage | None = None
        self.model: str | None = None
        self._rest = b""
        self._off = False

    def feed(self, chunk: bytes) -> bytes:
        if self._off:
            return chunk
        data = self._rest + chunk if self._rest else chunk
        if data.endswith(b"\n\n"):  # the common case: the chunk ends on an event boundary
            whole, self._rest = data, b""
        else:
            cut = _boundary(data)
            whole, self._rest = data[:cut], data[cut:]
            if len(self._rest) > _MAX_REST:
                self._off = True
                whole, self._rest = data, b""
        at = whole.find(_USAGE)
        # Streams that asked for usage carry `"usage":null` in every event but the last: one
        # more search tells those apart without the loop.
        if at != -1 and not (whole.startswith(_NULL_USAGE[0], at) and whole.find(_USAGE, at + 7) == -1):
            whole = self._scan(whole)
        return whole if self.strip else chunk

    def flush(self) -> bytes:
        """What was held back when the stream ended inside an event."""
        rest, self._rest = self._rest, b""
        return rest if self.strip else b""

    def _scan(self, data: bytes) -> bytes:
        """Read every non-null usage block in these whole events; drop their events when stripping."""
        kept: list[bytes] = []
        pos = 0
        at = data.find(_USAGE)
        while at != -1:
            if data.startswith(_NULL_USAGE[0], at) or data.startswith(_NULL_USAGE[1], at):
                at = data.find(_USAGE, at + len(_USAGE))
                continue
            start = data.rfind(b"data:", pos, at)
            end = min((e for e in (data.find(b"\n\n", at), data.find(b"\r\n\r\n", at)) if e != -1), default=-1)
            if start == -1 or end == -1:
                break
            self._read(data[start + 5:end])
            kept.append(data[pos:start])
            pos = end + (2 if data.startswith(b"\n\n", end) else 4)
            at = data.find(_USAGE, pos)
        if not kept:
            return data
        kept.append(data[pos:])
        return b"".join(kept)

    def _read(self, data: bytes) -> None:
        usage, model = from_body(data.strip())
        if usage is not None:
            self.usage = usage
        if model is not None:
            self.model = model

"""Pieces shared by every translator: SSE framing, JSON helpers, the request error.

Nothing here does I/O; the proxy feeds bytes in and writes what comes out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from modelyard.core.usage import Usage

_encoder = msgspec.json.Encoder()
_decode = msgspec.json.decode


class TranslationError(ValueError):
    """A client request that cannot be expressed in the backend's API.

    The caller answers it with a 400 in the client API's shape, naming `param`.
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


def guarded(build: Callable[[dict[str, Any], str], Any], body: dict[str, Any], model: str) -> Any:
    """build(body, model), with a wrongly typed field (a string where a list belongs...) as a 400."""
    try:
        return build(body, model)
    except TranslationError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError) as e:
        raise TranslationError(f"malformed request: {e}") from None


def dumps(value: Any) -> bytes:
    return _encoder.encode(value)


def dumps_str(value: Any) -> str:
    return _encoder.encode(value).decode()


def loads(data: bytes | str) -> Any:
    """Decoded JSON, or None when it is not JSON (upstream bodies are not trusted)."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def loads_object(data: bytes | str) -> dict[str, Any] | None:
    value = loads(data)
    return value if isinstance(value, dict) else None


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE event; Anthropic names each event, OpenAI sends data lines only."""
    payload = dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


class SSEParser:
    """Splits a byte stream, cut anywhere, into whole (event, data) pairs.

    Line ends may be LF, CRLF or CR (the SSE spec allows all three); they are
    normalised to LF as bytes arrive. A CR that ends a chunk is a line end at once;
    an LF starting the next chunk is then its CRLF partner and is skipped.
    """

    __slots__ = ("_pending", "_skip_lf")

    def __init__(self) -> None:
        self._pending = b""  # normalised bytes of the unfinished event
        self._skip_lf = False  # the previous chunk ended with a CR

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        if not chunk:
            return []
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        data = self._pending + chunk if self._pending else chunk
        if b"\n\n" not in data:
            self._pending = data
            return []
        *whole, self._pending = data.split(b"\n\n")
        return [ev for ev in map(_parse_event, whole) if ev is not None]

    def flush(self) -> list[tuple[str | None, str]]:
        """The last event when the stream ended without its blank line."""
        rest, self._pending, self._skip_lf = self._pending, b"", False
        ev = _parse_event(rest) if rest.strip() else None
        return [ev] if ev is not None else []


class SSETranslator:
    """What both stream translators do with the bytes: parse them as SSE, turn the events into the
    client's (`_events`), add what the stream's end calls for (`_end`), and send nothing once closed."""

    _sse: SSEParser
    _closed: bool

    def feed(self, chunk: bytes) -> bytes:
        if self._closed:
            return b""
        return self._events(self._sse.feed(chunk))

    def feed_events(self, events: list[tuple[str | None, str]]) -> bytes:
        """Events already cut out of their framing (Bedrock wraps each of Anthropic's in an
        event-stream message: aws_eventstream.py), in place of SSE bytes."""
        if self._closed:
            return b""
        return self._events(events)

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self) -> bytes:
        if self._closed:
            return b""
        out = self._events(self._sse.flush())
        return out if self._closed else out + self._end()

    def _events(self, events: list[tuple[str | None, str]]) -> bytes:
        raise NotImplementedError

    def _end(self) -> bytes:
        """The client's end of the stream, when the backend's ended without an error that closed it."""
        raise NotImplementedError


def _parse_event(raw: bytes) -> tuple[str | None, str] | None:
    event: str | None = None
    data: list[str] = []
    for line in raw.decode("utf-8", "replace").split("\n"):
        if not line or line.startswith(":"):  # blank or comment (keep-alive)
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if not data:
        return None
    return event, "\n".join(data)


Block = dict[str, Any]


def image_url_of(part: dict[str, Any]) -> Any:
    """The URL of an image_url content part ({"url": ...}, or the bare string some clients send)."""
    image = part.get("image_url") or {}
    return image if isinstance(image, str) else image.get("url")


def user_blocks(content: Any, text: Callable[[str], Block], parts: dict[str, Callable[[Block], Block]]) -> list[Block]:
    """A user message's content as the backend's blocks: text (the whole string, or each non-empty
    text part) through `text`, every other part through the handler its type has in `parts`;
    a type without one is a 400."""
    if isinstance(content, str):
        return [text(content)] if content else []
    blocks: list[Block] = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append(text(part["text"]))
            continue
        handler = parts.get(kind)  # type: ignore[arg-type]
        if handler is None:
            raise TranslationError(f"content part type {kind!r} is not supported by this backend", "messages")
        blocks.append(handler(part))
    return blocks


def merged_turns(messages: list[Any], roles: dict[str, tuple[str, Callable[[Block], list[Block]]]],
                 key: str = "content") -> tuple[list[str], list[Block]]:
    """(system texts, turns) of an OpenAI conversation, for a backend whose turns alternate
    (Anthropic, Converse, Gemini): system and developer messages, wherever they are, give their text;
    every other message goes through `roles[its role]` = (the backend's role, its blocks), and
    consecutive messages that land on one role are merged into one turn ({"role", key: blocks}).
    A role `roles` lacks is a 400."""
    system: list[str] = []
    turns: list[Block] = []
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            if text := text_of(msg.get("content")):
                system.append(text)
            continue
        if role not in roles:
            raise TranslationError(f"message role {role!r} is not supported by this backend", "messages")
        out_role, convert = roles[role]
        blocks = convert(msg)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == out_role:
            turns[-1][key].extend(blocks)
        else:
            turns.append({"role": out_role, key: blocks})
    return system, turns


def functions_of(tools: list[Any]) -> list[dict[str, Any]]:
    """The function objects of OpenAI tools, in order; a tool of another type is a 400."""
    out = []
    for tool in tools:
        if tool.get("type", "function") != "function":
            raise TranslationError(f"tool type {tool.get('type')!r} is not supported by this backend", "tools")
        out.append(tool.get("function") or {})
    return out


def assistant_text(content: Any) -> str:
    """An OpenAI assistant message's text: a string, or its text and refusal parts joined."""
    if isinstance(content, list):
        return "".join(p.get("text") or p.get("refusal") or "" for p in content if isinstance(p, dict))
    return content or ""


def tool_arguments(arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call's arguments (JSON text, or already an object) as an object; else a 400."""
    if isinstance(arguments, dict):
        return arguments
    parsed = loads(arguments or "{}")
    if not isinstance(parsed, dict):
        raise TranslationError("tool_calls[].function.arguments must be a JSON object", "messages")
    return parsed


def text_of(content: Any) -> str:
    """The text of a string or of a list of text parts/blocks (others are skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


class JSONTranslator:
    """A translator whose upstream bodies and answers are JSON objects (Vertex AI's). Subclasses give
    `build_request(body, model)` (the upstream body), `is_answer(answer)` (an answer they understand;
    anything else is relayed as it came) and `build_answer(answer, request)` -> (client body, usage,
    model). `response_to` gets the client's request from the relay (see base.py), `response` none."""

    def build_request(self, body: dict[str, Any], model: str) -> Any:
        raise NotImplementedError

    def is_answer(self, answer: dict[str, Any]) -> bool:
        raise NotImplementedError

    def build_answer(self, answer: dict[str, Any], request: dict[str, Any]) -> tuple[Any, Any, str | None]:
        raise NotImplementedError

    def request(self, body: dict[str, Any], model: str) -> bytes:
        return dumps(guarded(self.build_request, body, model))

    def response(self, body: bytes) -> tuple[bytes, Any, str | None]:
        return self.response_to({}, body)

    def response_to(self, request: dict[str, Any], body: bytes) -> tuple[bytes, Any, str | None]:
        answer = loads_object(body)
        if answer is None or not self.is_answer(answer):
            return body, None, None  # not an answer we understand: relay it unchanged
        try:
            out, usage, model = self.build_answer(answer, request or {})
        except (AttributeError, TypeError, ValueError, KeyError, OverflowError):  # malformed: relay it as it came
            return body, None, None
        return dumps(out), usage, model


def cache_usage(uncached: int, read: int, written: int, output: int) -> Usage:
    """The gateway's Usage from an API that counts the prompt cache apart from the input (Anthropic's
    input_tokens, Converse's inputTokens): input is all three parts."""
    inp = uncached + read + written
    return Usage(input_tokens=inp, output_tokens=output, total_tokens=inp + output,
                 cached_input_tokens=read, cache_creation_input_tokens=written)


def openai_usage(u: Usage) -> dict[str, Any]:
    """OpenAI's usage object (prompt_tokens counts cached tokens, as OpenAI's does)."""
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_input_tokens}}


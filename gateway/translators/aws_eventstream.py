"""AWS event-stream framing, the binary answer of Bedrock's streaming operations (ConverseStream and
InvokeModelWithResponseStream), read by every translator of such a stream.

application/vnd.amazon.eventstream: binary messages, each a prelude (total length, headers length,
CRC32), headers, a payload and a CRC32 of the whole message. botocore's EventStreamBuffer cuts the
bytes, split anywhere, into messages and checks both CRCs. A message's `:message-type` header is
"event" (its `:event-type` names it: ConverseStream's messageStart..., InvokeModel's "chunk"),
"exception" (`:exception-type`, a JSON payload {"message"}) or "error" (`:error-code`,
`:error-message`): the last two end the stream.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, NamedTuple

from .common import loads_object

if TYPE_CHECKING:
    from botocore.eventstream import EventStreamMessage

# Exception event of a Bedrock stream -> the HTTP status its API reference gives it; others are 500s.
STREAM_EXCEPTIONS = {
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "modelTimeoutException": 408,
    "serviceUnavailableException": 503,
    "throttlingException": 429,
    "validationException": 400,
}
# ... and the Anthropic error type an Anthropic client gets for it (others: api_error).
ANTHROPIC_STREAM_ERRORS = {
    "throttlingException": "rate_limit_error",
    "validationException": "invalid_request_error",
    "serviceUnavailableException": "overloaded_error",
    "modelTimeoutException": "timeout_error",
}
_MIN_MESSAGE = 16  # prelude (12 bytes) + message CRC (4): a message with no headers nor payload

__all__ = ["ANTHROPIC_STREAM_ERRORS", "STREAM_EXCEPTIONS", "EventStreamTranslator", "Failure", "anthropic_error_type",
           "failure_of"]


class Failure(NamedTuple):
    """An exception or error message: what ended the stream."""

    name: str  # the exception type (throttlingException...) or the error code
    message: str
    status: int  # the HTTP status the same failure has as a whole answer
    exception: bool  # an exception message (else an error message)


def failure_of(message: EventStreamMessage) -> Failure | None:
    """The failure an exception or error message reports; None for an event."""
    headers = message.headers
    kind = headers.get(":message-type")
    if kind == "exception":
        name = headers.get(":exception-type")
        name = name if isinstance(name, str) and name else "internalServerException"
        text = (loads_object(message.payload) or {}).get("message")
        return Failure(name, text if isinstance(text, str) and text else name, STREAM_EXCEPTIONS.get(name, 500), True)
    if kind == "error":
        code = headers.get(":error-code")
        text = headers.get(":error-message") or code or "the backend's stream failed"
        return Failure(str(code or "upstream_error"), str(text), 500, False)
    return None


class EventStreamTranslator:
    """What a translator of a Bedrock event stream does with the bytes: cut them into messages, hand
    each to `_message`, and at the first bytes that are not a valid event stream (a CRC that does not
    match, a malformed header, a prelude whose lengths describe no message) end the client's stream
    with `_invalid`'s event. Once `_closed`, nothing more is sent."""

    _closed: bool

    def __init__(self) -> None:
        # botocore is imported by the first Bedrock stream, not with the worker: a gateway without
        # AWS backends never loads it (a fifth of a worker's start-up, and its memory).
        from botocore.eventstream import EventStreamBuffer, ParserError

        self._buffer = EventStreamBuffer()
        self._parser_error = ParserError
        self._closed = False

    def feed(self, chunk: bytes) -> bytes:
        if self._closed or not chunk:
            return b""
        self._buffer.add_data(chunk)
        out: list[bytes] = []
        try:
            for message in self._buffer:
                _check_lengths(message)
                out.append(self._message(message))
                if self._closed:
                    break
        except (self._parser_error, struct.error, ValueError, KeyError, IndexError) as e:
            self._closed = True
            out.append(self._invalid(f"the backend's event stream is not valid ({type(e).__name__})"))
        return b"".join(out)

    def _message(self, message: EventStreamMessage) -> bytes:
        """An exception or error message to `_failure` (the stream is closed), an event whose payload
        is a JSON object to `_event`; other messages, and events too malformed to read, are skipped."""
        failure = failure_of(message)
        if failure is not None:
            self._closed = True
            return self._failure(failure, message.payload)
        if message.headers.get(":message-type") != "event":
            return b""
        payload = loads_object(message.payload)
        if payload is None:
            return b""
        try:
            return self._event(message.headers.get(":event-type"), payload)
        except (AttributeError, TypeError):  # a malformed event is skipped, not fatal
            return b""

    def _event(self, kind: Any, payload: dict[str, Any]) -> bytes:
        """One event (its :event-type, its payload) -> the client's bytes."""
        raise NotImplementedError

    def _failure(self, failure: Failure, payload: bytes) -> bytes:
        """The client's error event for an exception or error message (the stream is closed)."""
        raise NotImplementedError

    def _invalid(self, reason: str) -> bytes:
        """The client's error event for bytes that are not an event stream (the stream is closed)."""
        raise NotImplementedError


def anthropic_error_type(failure: Failure) -> str:
    """The Anthropic error type of a stream's failure."""
    return ANTHROPIC_STREAM_ERRORS.get(failure.name, "api_error") if failure.exception else "api_error"


def _check_lengths(message: EventStreamMessage) -> None:
    """A prelude whose lengths cannot describe a message (its CRC matched all the same) is refused:
    the buffer would otherwise not move past it."""
    prelude = message.prelude
    if prelude.total_length < _MIN_MESSAGE or prelude.headers_length > prelude.total_length - _MIN_MESSAGE:
        raise ValueError("event stream message lengths out of range")

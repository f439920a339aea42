"""Claude on AWS Bedrock's InvokeModelWithResponseStream (schema AWSAnthropic): a streamed answer,
unwrapped for Anthropic and OpenAI clients alike.

The answer is an event stream (aws_eventstream.py) whose event messages (`:event-type` "chunk") each
carry one of Anthropic's stream events: a JSON payload {"bytes": "<base64 of the event's JSON>"}.
Bedrock adds "amazon-bedrock-invocationMetrics" (token counts, latencies) to the last event,
message_stop; it is relayed as it is. InvokeModelStream decodes the wrapping and hands each event, as
an (event name, JSON text) pair, to the translator of the client's API (an SSETranslator that takes
events already cut out of their framing): anthropic_hosted.AnthropicEvents for Anthropic clients
(the events relayed as SSE), openai_anthropic_stream.AnthropicStreamToOpenAI for OpenAI clients.

An exception message ends the stream with Anthropic's error event (its type from the exception:
aws_eventstream.ANTHROPIC_STREAM_ERRORS), as does an error message (api_error) and bytes that are not
a valid event stream; the client's translator turns it into its own error. A chunk whose payload
does not decode is skipped.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from modelyard.core.usage import Usage

from .aws_eventstream import EventStreamTranslator, Failure, anthropic_error_type
from .common import SSETranslator, dumps_str

__all__ = ["InvokeModelStream"]


def _error(message: str, etype: str) -> tuple[str, str]:
    return "error", dumps_str({"type": "error", "error": {"type": etype, "message": message}})


class InvokeModelStream(EventStreamTranslator):
    """InvokeModelWithResponseStream bytes -> Anthropic's events, given to `sink` (the client's
    stream translator), whose output is the client's stream."""

    def __init__(self, sink: SSETranslator) -> None:
        super().__init__()
        self.sink = sink

    @property
    def usage(self) -> Usage | None:
        return self.sink.usage  # type: ignore[attr-defined, no-any-return]

    @property
    def model(self) -> str | None:
        return self.sink.model  # type: ignore[attr-defined, no-any-return]

    def flush(self) -> bytes:
        return self.sink.flush()  # the sink ends the stream its own way (nothing once closed)

    def _invalid(self, reason: str) -> bytes:
        return self.sink.feed_events([_error(reason, "api_error")])

    def _failure(self, failure: Failure, payload: bytes) -> bytes:
        return self.sink.feed_events([_error(failure.message, anthropic_error_type(failure))])

    def _event(self, kind: Any, payload: dict[str, Any]) -> bytes:
        if kind != "chunk" or not isinstance(payload.get("bytes"), str):
            return b""
        try:
            data = base64.b64decode(payload["bytes"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return b""
        out = self.sink.feed_events([(None, data)])
        self._closed = self.sink.closed
        return out

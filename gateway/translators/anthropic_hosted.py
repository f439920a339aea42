"""Anthropic's Messages API on the clouds that host Claude: Bedrock's InvokeModel (schema AWSAnthropic)
and Vertex AI's rawPredict (GCPAnthropic). What the translators to both share.

Both take Anthropic's request body with two differences: the model is in the URL, not the body,
and `anthropic_version` is in the body (the cloud's own value: "bedrock-2023-05-31",
"vertex-2023-10-16"), not in a header. Beta flags travel in the body's `anthropic_beta` list
(Bedrock reads them nowhere else; Vertex reads some there and some in the header). Bedrock's
InvokeModel also takes no `stream` field: streaming is its own operation (a path).

Both answer Anthropic's message JSON, and stream Anthropic's events: Vertex as SSE, Bedrock each
wrapped in an event-stream message (anthropic_awsanthropic_stream.py). An Anthropic client gets
them as they are (AnthropicEvents below re-frames whole events and reads usage on the way); an
OpenAI client gets them through openai_anthropic's answer and stream halves.
"""

from __future__ import annotations

from typing import Any

from modelyard.core.usage import Usage

from .anthropic_openai_answer import anthropic_error_event
from .common import SSEParser, SSETranslator, loads_object
from .openai_anthropic_answer import usage_of

__all__ = ["AnthropicEvents", "AnthropicToHosted", "answer_usage", "beta_flags", "hosted_body"]


def beta_flags(header: str | None) -> list[str]:
    """The flags of an anthropic-beta header ("a,b, c"), in order, once each."""
    flags: list[str] = []
    for flag in (header or "").split(","):
        if (flag := flag.strip()) and flag not in flags:
            flags.append(flag)
    return flags


def hosted_body(body: dict[str, Any], version: str, keep_stream: bool, betas: list[str]) -> dict[str, Any]:
    """The client's Anthropic body as a cloud takes it: without `model` (and `stream` unless kept),
    with the cloud's anthropic_version, and the header's beta flags added to the body's own list."""
    out = {k: v for k, v in body.items() if k != "model" and (keep_stream or k != "stream")}
    out["anthropic_version"] = version
    if betas:
        own = out.get("anthropic_beta")
        own = [own] if isinstance(own, str) else list(own) if isinstance(own, list) else []
        out["anthropic_beta"] = own + [b for b in betas if b not in own]
    return out


def answer_usage(body: bytes) -> tuple[bytes, Usage | None, str | None]:
    """An Anthropic answer relayed as it came, with its usage and model read for accounting."""
    msg = loads_object(body)
    if msg is None or not isinstance(msg.get("usage"), dict):
        return body, None, None
    try:
        usage = usage_of(msg["usage"])
    except TypeError:  # counts that are not numbers
        return body, None, None
    model = msg.get("model")
    return body, usage, model if isinstance(model, str) else None


class AnthropicToHosted:
    """An Anthropic client's translator to a cloud hosting Claude: the body as the cloud takes it
    (`_body`, given the anthropic-beta header's flags the cloud takes: `_betas`), the answer as it came
    with its usage read. Subclasses add `_body`, `error` and `stream`."""

    def request(self, body: dict[str, Any], model: str) -> bytes:
        return self._body(body, [])

    def request_with_headers(self, body: dict[str, Any], model: str, headers: Any) -> bytes:
        return self._body(body, self._betas(headers.get("anthropic-beta")))

    def response(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        return answer_usage(body)

    def _body(self, body: dict[str, Any], betas: list[str]) -> bytes:
        raise NotImplementedError

    def _betas(self, header: str | None) -> list[str]:
        return beta_flags(header)


class AnthropicEvents(SSETranslator):
    """Anthropic's stream events relayed to an Anthropic client as they came, whole events only,
    with usage and model read on the way: input and cache counts from message_start, output from
    message_delta (later counts replace earlier ones, as openai_anthropic_stream reads them).

    The stream ends with message_stop or an error event; one that ends after message_delta gets its
    message_stop, one that ends before is cut short: an error event says so."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.model: str | None = None
        self._sse = SSEParser()
        self._raw_usage: dict[str, Any] = {}
        self._delta = False  # message_delta came
        self._closed = False  # message_stop or an error went out

    def _events(self, events: list[tuple[str | None, str]]) -> bytes:
        out: list[bytes] = []
        for name, data in events:
            ev = loads_object(data)
            kind = ev.get("type") if ev is not None and isinstance(ev.get("type"), str) else name
            label = name or kind  # the event's own name, as it came
            head = b"event: " + label.encode() + b"\n" if label else b""
            out.append(head + b"".join(b"data: " + line.encode() + b"\n" for line in data.split("\n")) + b"\n")
            if ev is not None:
                self._read(kind, ev)
            if self._closed:
                break
        return b"".join(out)

    def _read(self, kind: str | None, ev: dict[str, Any]) -> None:
        if kind == "message_start":
            msg = ev.get("message") if isinstance(ev.get("message"), dict) else {}
            self.model = msg.get("model") if isinstance(msg.get("model"), str) else self.model
            self._take_usage(msg.get("usage"))
        elif kind == "message_delta":
            self._delta = True
            self._take_usage(ev.get("usage"))
            self.usage = usage_of(self._raw_usage)
        elif kind in ("message_stop", "error"):
            self._closed = True

    def _take_usage(self, u: Any) -> None:
        if isinstance(u, dict):
            self._raw_usage.update({k: v for k, v in u.items() if isinstance(v, int)})

    def _end(self) -> bytes:
        self._closed = True
        if self._delta:
            return b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        return anthropic_error_event("the backend's stream ended before the message did")

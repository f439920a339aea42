"""What the OpenAI-compatible mock answers: chat completions, legacy completions, embeddings and
vLLM's /tokenize, whole or streamed as server-sent events.

``OpenAIAnswers`` is a mixin of ``MockApp`` (``loadtest.mock.openai.app``), which routes requests
here after its controls; the Anthropic and Azure mocks inherit it through ``MockApp``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from granian.rsgi import ProtocolClosed

from modelyard.loadtest.mock.abort import _abort_connection
from modelyard.loadtest.mock.config import MockConfig
from modelyard.loadtest.mock.openai.wire import (
    _Stream,
    _chat_prompt_tokens,
    _completion_prompt_tokens,
    _decode_chat,
    _decode_completion,
    _decode_embedding,
    _embedding_inputs,
    _include_usage,
    _legacy_usage,
    _usage,
    _vector_b64,
    _vector_floats,
)
from modelyard.loadtest.mock.wire import _BadRequest, _content, _encode, _int_header, _token

PAD_CHUNK = 16384  # content bytes per streamed chunk of an x-mock-bytes answer
MAX_PAD = 1 << 30  # x-mock-bytes is capped at 1 GiB
FINGERPRINT = "fp_mock"


def _pad_bytes(headers: Any) -> int | None:
    """x-mock-bytes: answer with about N bytes of content (chat) or vector (embeddings)."""
    n = _int_header(headers, "x-mock-bytes")
    return None if n is None or n < 0 else min(n, MAX_PAD)


class OpenAIAnswers:
    """The endpoints and the streaming; the request plumbing they call is ``MockApp``'s."""

    config: MockConfig
    _json_headers: list[tuple[str, str]]
    _sse_headers: list[tuple[str, str]]

    async def _chat(self, scope: Any, body: bytes, proto: Any) -> None:
        headers = scope.headers
        req = self._decode(_decode_chat, body)
        model = self._require_model(req.model)
        messages = req.messages
        if messages is None:
            raise _BadRequest(400, "Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(
                400, "Invalid 'messages': expected a non-empty array of message objects.", "messages", "empty_array"
            )
        limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        n, finish = self._token_count(headers, limit)
        prompt = _chat_prompt_tokens(messages)
        rid = self._new_id("chatcmpl-")
        pad = _pad_bytes(headers)
        if req.stream is True:
            stream = self._chat_stream(rid, model, finish, prompt, n, self._wants_usage(req.stream_options))
            if pad is not None:  # N content bytes, in chunks of PAD_CHUNK
                n = -(-pad // PAD_CHUNK)
            return await self._send_stream(scope, proto, stream, n, pad)
        await self._latency()
        answer = {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": _content(n) if pad is None else "x" * pad,
                            "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": _usage(prompt, n),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        if self.config.no_usage:
            del answer["usage"]
        proto.response_bytes(200, self._json_headers, _encode(answer))
        return None

    def _tokenize(self, body: bytes, proto: Any) -> None:
        # vLLM's answer shape; one "token" per whitespace-separated word is all a mock needs.
        req = msgspec.json.decode(body)
        words = str(req.get("prompt") or "").split()
        proto.response_bytes(200, self._json_headers, _encode(
            {"count": len(words), "max_model_len": 4096, "tokens": list(range(len(words)))}))

    def _wants_usage(self, stream_options: Any) -> bool:
        return _include_usage(stream_options) and not self.config.no_usage

    async def _completions(self, scope: Any, body: bytes, proto: Any) -> None:
        headers = scope.headers
        req = self._decode(_decode_completion, body)
        model = self._require_model(req.model)
        prompt = _completion_prompt_tokens(req.prompt)
        n, finish = self._token_count(headers, req.max_tokens)
        rid = self._new_id("cmpl-")
        if req.stream is True:
            stream = self._completion_stream(rid, model, finish, prompt, n, self._wants_usage(req.stream_options))
            return await self._send_stream(scope, proto, stream, n)
        await self._latency()
        answer = {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"text": _content(n), "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": _legacy_usage(prompt, n),
            "system_fingerprint": FINGERPRINT,
        }
        if self.config.no_usage:
            del answer["usage"]
        proto.response_bytes(200, self._json_headers, _encode(answer))
        return None

    async def _embeddings(self, headers: Any, body: bytes, proto: Any) -> None:
        req = self._decode(_decode_embedding, body)
        model = self._require_model(req.model)
        inputs = _embedding_inputs(req.input)
        pad = _pad_bytes(headers)
        if pad is not None:  # one vector of about N bytes, encoded directly: 4 bytes per float
            tokens = sum(t for _, t in inputs)
            vector = b",".join([b"0.5"] * max(1, pad // 4))
            await self._latency()
            proto.response_bytes(200, self._json_headers, b"".join((
                b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[', vector,
                b']}],"model":', _encode(model), b',"usage":',
                _encode({"prompt_tokens": tokens, "total_tokens": tokens}), b"}")))
            return
        dim = req.dimensions if type(req.dimensions) is int and req.dimensions > 0 else self.config.embedding_dim
        fmt = req.encoding_format
        if fmt == "base64":
            vector = _vector_b64
        elif fmt is None or fmt == "float":
            vector = _vector_floats
        else:
            raise _BadRequest(400, f"Invalid value for 'encoding_format': {fmt!r}.", "encoding_format")
        data = [{"object": "embedding", "index": i, "embedding": vector(key, dim)} for i, (key, _) in enumerate(inputs)]
        tokens = sum(t for _, t in inputs)
        await self._latency()
        proto.response_bytes(200, self._json_headers, _encode({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }))

    # --- streaming ---

    def _chunk_head(self, rid: str, obj: bytes, model: str) -> bytes:
        return b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"system_fingerprint":"%s","choices":[' % (
            rid.encode(), obj, int(time.time()), _encode(model), FINGERPRINT.encode()
        )

    def _chat_stream(self, rid: str, model: str, finish: str, prompt: int, n: int, usage: bool) -> _Stream:
        return _Stream(
            head=self._chunk_head(rid, b"chat.completion.chunk", model),
            tail=b'],"usage":null}\n\n' if usage else b"]}\n\n",
            first=b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
                  b'"logprobs":null,"finish_reason":null}',
            token_open=b'{"index":0,"delta":{"content":"',
            token_close=b'"},"logprobs":null,"finish_reason":null}',
            finish=b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%s"}' % finish.encode(),
            usage=_encode(_usage(prompt, n)) if usage else None,
        )

    def _completion_stream(self, rid: str, model: str, finish: str, prompt: int, n: int, usage: bool) -> _Stream:
        return _Stream(
            head=self._chunk_head(rid, b"text_completion", model),
            tail=b'],"usage":null}\n\n' if usage else b"]}\n\n",
            first=None,
            token_open=b'{"text":"',
            token_close=b'","index":0,"logprobs":null,"finish_reason":null}',
            finish=b'{"text":"","index":0,"logprobs":null,"finish_reason":"%s"}' % finish.encode(),
            usage=_encode(_legacy_usage(prompt, n)) if usage else None,
        )

    async def _send_stream(self, scope: Any, proto: Any, s: _Stream, n: int, pad: int | None = None) -> None:
        transport = proto.response_stream(200, self._sse_headers)
        try:
            await self._write_stream(scope, transport, s, n, pad)
        except ProtocolClosed:
            pass  # the client left mid-stream: normal under load tests, not worth a traceback

    async def _write_stream(self, scope: Any, transport: Any, s: _Stream, n: int, pad: int | None) -> None:
        die_after = _int_header(scope.headers, "x-mock-die-after")
        cfg = self.config
        if die_after is None:
            die_after = cfg.die_after
        # The 200 head is already out (see _send_stream): a long TTFT reads as "head, then silence".
        if cfg.ttft_ms:
            await asyncio.sleep(cfg.ttft_ms / 1000)
        send = transport.send_bytes
        head, tail, itl = s.head, s.tail, cfg.itl_ms / 1000
        if s.first is not None:
            await send(head + s.first + tail)
        sent = n if die_after is None else min(n, max(die_after, 0))
        if pad is not None:
            filler = b"x" * PAD_CHUNK
            for i in range(sent):
                last = pad - i * PAD_CHUNK
                await send(head + s.token_open + (filler if last >= PAD_CHUNK else filler[:last]) + s.token_close + tail)
                if i % 64 == 63:
                    await asyncio.sleep(0)  # let the loop breathe: a fast stream, not a blocked worker
        for i in range(sent if pad is None else 0):
            if i and itl:
                await asyncio.sleep(itl)
            await send(head + s.token_open + _token(i) + s.token_close + tail)
        if die_after is not None:
            await _abort_connection(scope.client)
            return
        await send(head + s.finish + tail)
        if s.usage is not None:
            await send(head + b'],"usage":' + s.usage + b"}\n\n")
        await send(b"data: [DONE]\n\n")

"""A fast mock of an OpenAI-compatible LLM server, for tests and benchmarks.

Serves chat completions, legacy completions, embeddings and the model list in
OpenAI's wire format (SSE framing included) from Granian RSGI workers. Latency,
token counts, failures and stalls are configurable per process (CLI flags) and
per request (``x-mock-*`` headers), and the last requests each worker received
can be read back from ``GET /mock/requests``.

Run it with ``python -m modelyard.loadtest.mock.backend --port 8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import time
from collections import deque
from typing import Any

import msgspec
from granian.rsgi import ProtocolClosed

from modelyard.loadtest.mock import providers as mock_providers
from modelyard.loadtest.mock.abort import _abort_connection
from modelyard.loadtest.mock.openai_wire import (
    _encode,
    _decode_any,
    _decode_chat,
    _decode_completion,
    _decode_embedding,
    _INVALID_JSON,
    _ERROR_CODES,
    _error_type,
    _BadRequest,
    _token,
    _content,
    _chat_prompt_tokens,
    _completion_prompt_tokens,
    _embedding_inputs,
    _vector_b64,
    _vector_floats,
    _usage,
    _legacy_usage,
    _include_usage,
    _Stream,
)

ENV_VAR = "MODELYARD_MOCK_CONFIG"
APP_TARGET = "modelyard.loadtest.mock.backend:app"
RECORD_LIMIT = 1000
HANG_SECONDS = 3600.0
PAD_CHUNK = 16384  # content bytes per streamed chunk of an x-mock-bytes answer
MAX_PAD = 1 << 30  # x-mock-bytes is capped at 1 GiB
DEFAULT_MODEL = "mock-model"
FINGERPRINT = "fp_mock"


class MockConfig(msgspec.Struct, frozen=True):
    """Per-process settings, handed to Granian workers as JSON in ``ENV_VAR``."""

    models: tuple[str, ...] = ()
    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    tokens: int = 16
    error_rate: float = 0.0
    stall_rate: float = 0.0
    name: str = "mock"
    embedding_dim: int = 8
    # Deterministic misbehaviour of every model POST, so one mock of several can play the broken backend.
    status: int | None = None
    retry_after: int | None = None
    hang: bool = False
    die_after: int | None = None
    no_usage: bool = False  # like servers that report no token usage
    tokenize: bool = False  # serve vLLM's POST /tokenize


def config_from_env() -> MockConfig:
    raw = os.environ.get(ENV_VAR)
    return msgspec.json.decode(raw, type=MockConfig) if raw else MockConfig()


def _int_header(headers: Any, name: str) -> int | None:
    value = headers.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _pad_bytes(headers: Any) -> int | None:
    """x-mock-bytes: answer with about N bytes of content (chat) or vector (embeddings)."""
    n = _int_header(headers, "x-mock-bytes")
    return None if n is None or n < 0 else min(n, MAX_PAD)


def _is_model_post(method: str, path: str) -> bool:
    """A POST to an inference endpoint; /completions also covers /chat/completions."""
    if method != "POST":
        return False
    path = path.rstrip("/")
    return path.endswith("/completions") or path.endswith("/embeddings")


# --- the RSGI application -----------------------------------------------------


class MockApp:
    """The RSGI app; one instance per worker process, configured from ``ENV_VAR``."""

    def __init__(self, config: MockConfig | None = None) -> None:
        self._requests: deque[tuple[str, str, str, Any, bytes]] = deque(maxlen=RECORD_LIMIT)
        self._ids = itertools.count(1)
        self.configure(config or MockConfig())

    def configure(self, config: MockConfig) -> None:
        """Precompute everything that does not depend on the request."""
        self.config = config
        self._models = frozenset(config.models)
        self._id_prefix = os.urandom(4).hex()
        name = ("x-mock-name", config.name)
        self._json_headers = [("content-type", "application/json"), name]
        self._text_headers = [("content-type", "text/plain; charset=utf-8"), name]
        self._sse_headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache"), name]
        # Without --retry-after only 429 carries a hint (1 s); with it, 503 and every --status answer too.
        retry_after = "1" if config.retry_after is None else str(config.retry_after)
        self._retry_headers = [*self._json_headers, ("retry-after", retry_after)]
        self._retry_statuses = frozenset((429,) if config.retry_after is None else (429, 503))
        self._forced = config.hang or config.status is not None
        self._forced_answer: tuple[int, list[tuple[str, str]], bytes] | None = None  # None: --hang
        if config.status is not None and not config.hang:
            status = config.status
            retry = config.retry_after is not None or status in self._retry_statuses
            headers = self._retry_headers if retry else self._json_headers
            self._forced_answer = (status, headers, self._error_body(
                status, f"Mock error (--status {status})", None, _ERROR_CODES.get(status)))
        created = int(time.time())
        self._models_body = _encode({
            "object": "list",
            "data": [self._model_object(m, created) for m in (config.models or (DEFAULT_MODEL,))],
        })
        self._created = created

    def __rsgi_init__(self, loop: Any) -> None:
        # The app may have been imported before the supervisor set the variable.
        self.configure(config_from_env())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path: str = scope.path
        method: str = scope.method
        if path == "/health":
            proto.response_bytes(200, self._text_headers, b"ok")
            return
        if path == "/mock/requests":
            self._serve_requests(method, proto)
            return
        body: bytes = await proto()
        headers = scope.headers
        # Keep the headers object itself: turning it into a dict is deferred to GET /mock/requests.
        self._requests.append((method, path, scope.query_string, headers, body))
        try:
            if await self._apply_controls(method, path, headers, proto):
                return
            await self._dispatch(scope, method, path, body, proto)
        except _BadRequest as e:
            self._error(proto, e.status, e.message, e.param, e.code, e.kind)

    async def _apply_controls(self, method: str, path: str, headers: Any, proto: Any) -> bool:
        """Header-, flag- and rate-driven misbehaviour; True when the request is already answered.

        Per-request headers win over the process flags, which win over the rates.
        """
        delay = _int_header(headers, "x-mock-delay-ms")
        if delay:
            await asyncio.sleep(delay / 1000)
        hang = headers.get("x-mock-hang")
        if hang and hang != "0":
            await self._hang(proto)
            return True
        fat = _int_header(headers, "x-mock-header-bytes")
        many = _int_header(headers, "x-mock-headers")
        if fat or many:  # an oversized response head, for the gateway's bounds
            extra = [("x-mock-fat", "h" * min(fat or 0, MAX_PAD))]
            extra += [(f"x-mock-h{i}", "1") for i in range(min(many or 0, 100_000))]
            proto.response_bytes(200, [*self._json_headers, *extra], b"{}")
            return True
        status = _int_header(headers, "x-mock-status")
        if status is not None and 400 <= status <= 599:
            self._error(proto, status, f"Mock error (x-mock-status: {status})", None, _ERROR_CODES.get(status))
            return True
        cfg = self.config
        if self._forced and _is_model_post(method, path):
            answer = self._forced_answer
            if answer is None:
                await self._hang(proto)
            else:
                proto.response_bytes(*answer)
            return True
        if cfg.stall_rate and random.random() < cfg.stall_rate:
            await self._hang(proto)
            return True
        if cfg.error_rate and random.random() < cfg.error_rate:
            self._error(proto, 500, "The server had an error while processing your request. Sorry about that!")
            return True
        return False

    async def _hang(self, proto: Any) -> None:
        # Wait for the client to leave rather than a bare sleep, so abandoned hangs do not pile up.
        try:
            await asyncio.wait_for(proto.client_disconnect(), HANG_SECONDS)
        except TimeoutError:
            self._error(proto, 504, "Mock hang timed out")

    async def _dispatch(self, scope: Any, method: str, path: str, body: bytes, proto: Any) -> None:
        if path.endswith("/") and len(path) > 1:
            path = path.rstrip("/")
        if method == "POST":
            if path.endswith("/chat/completions"):
                return await self._chat(scope, body, proto)
            if path.endswith("/completions"):
                return await self._completions(scope, body, proto)
            if path.endswith("/embeddings"):
                return await self._embeddings(scope.headers, body, proto)
            if path == "/tokenize" and self.config.tokenize:
                return self._tokenize(body, proto)
        elif method == "GET":
            if path.endswith("/models"):
                proto.response_bytes(200, self._json_headers, self._models_body)
                return None
            _, sep, model = path.rpartition("/models/")
            if sep and model:
                self._check_model(model)
                proto.response_bytes(200, self._json_headers, _encode(self._model_object(model, self._created)))
                return None
        self._error(proto, 404, f"Invalid URL ({method} {path})", kind="invalid_request_error")
        return None

    # --- endpoints ---

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

    # --- helpers ---

    @staticmethod
    def _decode(decoder: Any, body: bytes) -> Any:
        try:
            return decoder(body)
        except msgspec.ValidationError as e:
            raise _BadRequest(400, f"Invalid request body: {e}") from None
        except msgspec.DecodeError:
            raise _BadRequest(400, _INVALID_JSON) from None

    def _require_model(self, model: Any) -> str:
        if not isinstance(model, str) or not model:
            raise _BadRequest(400, "you must provide a model parameter")
        self._check_model(model)
        return model

    def _check_model(self, model: str) -> None:
        if self._models and model not in self._models:
            raise _BadRequest(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                None,
                "model_not_found",
                "invalid_request_error",  # what OpenAI sends for an unknown model
            )

    def _token_count(self, headers: Any, limit: Any) -> tuple[int, str]:
        n = _int_header(headers, "x-mock-tokens")
        if n is None or n < 0:
            n = self.config.tokens
        if type(limit) is int and 0 <= limit < n:
            return limit, "length"
        return n, "stop"

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{self._id_prefix}{next(self._ids):08x}"

    async def _latency(self) -> None:
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)

    @staticmethod
    def _model_object(model: str, created: int) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": created, "owned_by": "mock"}

    def _error(
        self, proto: Any, status: int, message: str, param: str | None = None, code: str | None = None,
        kind: str | None = None,
    ) -> None:
        headers = self._retry_headers if status in self._retry_statuses else self._json_headers
        proto.response_bytes(status, headers, self._error_body(status, message, param, code, kind))

    @staticmethod
    def _error_body(
        status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None,
    ) -> bytes:
        error = {"message": message, "type": kind or _error_type(status), "param": param, "code": code}
        return _encode({"error": error})

    def _serve_requests(self, method: str, proto: Any) -> None:
        if method == "GET":
            proto.response_bytes(200, self._json_headers, _encode([self._describe(r) for r in self._requests]))
        elif method == "DELETE":
            count = len(self._requests)
            self._requests.clear()
            proto.response_bytes(200, self._json_headers, _encode({"cleared": count}))
        else:
            self._error(proto, 405, f"Method {method} not allowed on /mock/requests")

    @staticmethod
    def _describe(record: tuple[str, str, str, Any, bytes]) -> dict[str, Any]:
        method, path, query, headers, body = record
        parsed: Any = None
        if body:
            try:
                parsed = _decode_any(body)
            except msgspec.DecodeError:
                parsed = None
        return {
            "method": method,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in headers.items()},
            "body": parsed,
            "raw_len": len(body),
        }


app = MockApp(config_from_env())


# --- CLI --------------------------------------------------------------------------


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text}")
    return value


def _error_status(text: str) -> int:
    value = int(text)
    if not 400 <= value <= 599:
        raise argparse.ArgumentTypeError(f"expected an HTTP error status 400..599, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="model to serve (repeatable); others get 404 model_not_found. Default: any model")
    parser.add_argument("--latency-ms", type=_non_negative, default=0.0, metavar="N",
                        help="delay before a non-streaming response (default 0)")
    parser.add_argument("--ttft-ms", type=_non_negative, default=0.0, metavar="N",
                        help="delay before the first streamed chunk (default 0)")
    parser.add_argument("--itl-ms", type=_non_negative, default=0.0, metavar="N",
                        help="delay between streamed token chunks (default 0)")
    parser.add_argument("--tokens", type=int, default=16, metavar="N",
                        help="completion tokens per response (default 16)")
    parser.add_argument("--error-rate", type=_fraction, default=0.0, metavar="F",
                        help="fraction of requests answered 500 server_error (default 0)")
    parser.add_argument("--stall-rate", type=_fraction, default=0.0, metavar="F",
                        help="fraction of requests never answered (default 0)")
    parser.add_argument("--name", default="mock", help="value of the x-mock-name response header (default mock)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="Granian worker processes (default 1)")
    parser.add_argument("--tls-cert", default=None, metavar="PATH",
                        help="serve HTTPS with this certificate (default: plain HTTP)")
    parser.add_argument("--tls-key", default=None, metavar="PATH", help="private key for --tls-cert")
    parser.add_argument("--embedding-dim", type=int, default=8, metavar="N", help="embedding vector length (default 8)")
    parser.add_argument("--status", type=_error_status, default=None, metavar="N",
                        help="answer every chat/completions/embeddings POST with this error status (400..599; "
                             "default: answer normally)")
    parser.add_argument("--retry-after", type=_count, default=None, metavar="SECONDS",
                        help="retry-after header on --status answers and on every 429/503 (default: 1 on 429 only)")
    parser.add_argument("--hang", action="store_true",
                        help="never answer a chat/completions/embeddings POST (default: off)")
    parser.add_argument("--die-after", type=_count, default=None, metavar="N",
                        help="cut streamed responses after N token chunks (default: never; x-mock-die-after wins)")
    parser.add_argument("--tokenize", action="store_true", help="serve vLLM's POST /tokenize (at the root)")
    parser.add_argument("--no-usage", action="store_true",
                        help="report no token usage, in answers or streams (as some self-hosted servers do)")
    mock_providers.add_arguments(parser)  # --api openai|anthropic|azure and its flags


def config_from_args(args: argparse.Namespace) -> MockConfig:
    return MockConfig(
        models=tuple(args.model or ()),
        latency_ms=args.latency_ms,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        tokens=max(0, args.tokens),
        error_rate=args.error_rate,
        stall_rate=args.stall_rate,
        name=args.name,
        embedding_dim=max(1, args.embedding_dim),
        status=args.status,
        retry_after=args.retry_after,
        hang=args.hang,
        die_after=args.die_after,
        no_usage=args.no_usage,
        tokenize=args.tokenize,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; Granian's supervisor handles SIGINT/SIGTERM."""
    from pathlib import Path

    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    if bool(args.tls_cert) != bool(args.tls_key):
        print("mock: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    os.environ[ENV_VAR] = _encode(config_from_args(args)).decode()
    target = mock_providers.export(args, APP_TARGET)
    tls = bool(args.tls_cert)
    server = Server(
        target,
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        workers=max(1, args.workers),
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,
        backlog=4096,
        log_level=LogLevels.warning,
        ssl_cert=Path(args.tls_cert) if tls else None,
        ssl_key=Path(args.tls_key) if tls else None,
    )
    print(f"mock listening on {'https' if tls else 'http'}://{args.host}:{args.port}", flush=True)
    server.serve()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelyard.loadtest.mock.backend", description="Mock OpenAI-compatible LLM backend"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

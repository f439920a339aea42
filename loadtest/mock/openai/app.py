"""The OpenAI-compatible mock backend's RSGI app: controls, routing, recording and errors.

Serves chat completions, legacy completions, embeddings and the model list in OpenAI's wire
format (SSE framing included) from Granian RSGI workers. Latency, token counts, failures and
stalls are configurable per process (CLI flags, ``loadtest.mock.cli``) and per request
(``x-mock-*`` headers), and the last requests each worker received can be read back from
``GET /mock/requests``. The answers themselves are ``OpenAIAnswers``'.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import deque
from typing import Any

import msgspec

from modelyard.loadtest.mock.config import (
    DEFAULT_MODEL,
    MockConfig,
    ProviderConfig,
    config_from_env,
    provider_config_from_env,
)
from modelyard.loadtest.mock.openai.answers import MAX_PAD, OpenAIAnswers
from modelyard.loadtest.mock.openai.wire import _ERROR_CODES, _INVALID_JSON, _error_type
from modelyard.loadtest.mock.wire import _BadRequest, _decode_any, _encode, _int_header

RECORD_LIMIT = 1000
HANG_SECONDS = 3600.0


def _is_model_post(method: str, path: str) -> bool:
    """A POST to an inference endpoint; /completions also covers /chat/completions."""
    if method != "POST":
        return False
    path = path.rstrip("/")
    return path.endswith("/completions") or path.endswith("/embeddings")


class MockApp(OpenAIAnswers):
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
        if self._oversized_head(headers, proto):
            return True
        status = _int_header(headers, "x-mock-status")
        if status is not None and 400 <= status <= 599:
            self._status_error(proto, status)
            return True
        cfg = self.config
        if self._forced and self._forced_applies(method, path):
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
            self._error(proto, 500, self._RATE_ERROR_MESSAGE)
            return True
        return False

    # What the controls do in each API's terms (the Anthropic mock overrides them).

    _RATE_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"

    def _oversized_head(self, headers: Any, proto: Any) -> bool:
        """Answer with an oversized response head (for the gateway's bounds) when the headers ask for one."""
        fat = _int_header(headers, "x-mock-header-bytes")
        many = _int_header(headers, "x-mock-headers")
        if not (fat or many):
            return False
        extra = [("x-mock-fat", "h" * min(fat or 0, MAX_PAD))]
        extra += [(f"x-mock-h{i}", "1") for i in range(min(many or 0, 100_000))]
        proto.response_bytes(200, [*self._json_headers, *extra], b"{}")
        return True

    def _status_error(self, proto: Any, status: int) -> None:
        """The answer to x-mock-status."""
        self._error(proto, status, f"Mock error (x-mock-status: {status})", None, _ERROR_CODES.get(status))

    def _forced_applies(self, method: str, path: str) -> bool:
        """Whether --status/--hang answer this request."""
        return _is_model_post(method, path)

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


class ProviderMockApp(MockApp):
    """A MockApp that checks a provider's credentials and versions (the Anthropic and Azure mocks):
    its `provider` settings are the ones given, else read from the environment at each configure."""

    def __init__(self, config: MockConfig | None = None, provider: ProviderConfig | None = None) -> None:
        self._fixed_provider = provider
        super().__init__(config)

    def configure(self, config: MockConfig) -> None:
        self.provider = self._fixed_provider or provider_config_from_env()
        super().configure(config)

    def _input_usage(self, headers: Any, estimate: int) -> tuple[int, int, int]:
        """(input, cache read, cache creation) tokens: x-mock-input-tokens, else ``estimate``; the
        x-mock-cache-read / x-mock-cache-creation headers, else --cache-read / --cache-creation."""
        prompt = _int_header(headers, "x-mock-input-tokens")
        read = _int_header(headers, "x-mock-cache-read")
        created = _int_header(headers, "x-mock-cache-creation")
        return (
            prompt if prompt is not None and prompt >= 0 else estimate,
            read if read is not None and read >= 0 else self.provider.cache_read,
            created if created is not None and created >= 0 else self.provider.cache_creation,
        )


app = MockApp(config_from_env())

"""The Anthropic Messages API as the mock backend speaks it (``modelyard mock --api anthropic``).

Endpoints: ``POST /v1/messages`` (whole answers and the SSE event sequence),
``POST /v1/messages/count_tokens``, ``GET /v1/models`` and ``GET /v1/models/{id}``. Requests are
checked against the documented request schema and refused the way the API refuses them:
``{"type": "error", "error": {"type": "invalid_request_error", "message": ...}, "request_id": ...}``.

Answers are deterministic: the text is ``tok0 tok1 ...`` (as in the OpenAI mock), a request with
tools whose last user turn mentions "weather" or a tool's name (or whose ``tool_choice`` forces a
tool) is answered with a ``tool_use`` block, and enabled extended thinking adds a ``thinking``
block. Token counts are rough estimates (a token per 4 characters); cache usage comes from
``--cache-read``/``--cache-creation`` or the ``x-mock-cache-read``/``x-mock-cache-creation``
headers. ``x-mock-error-after: N`` (or ``--error-after``) ends a stream with an
``overloaded_error`` event after N deltas. The shared ``x-mock-*`` controls, flags and
``/mock/requests`` recording come from the OpenAI mock's ``MockApp``; the checks are in
``validate`` and the answers in ``answers``.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
from granian.rsgi import ProtocolClosed

from modelyard.loadtest.mock.anthropic.answers import (
    _Block,
    _display_name,
    _new_id,
    _usage,
    estimate_input_tokens,
    plan,
    write_events,
)
from modelyard.loadtest.mock.anthropic.validate import validate_request
from modelyard.loadtest.mock.config import DEFAULT_MODEL, MockConfig, config_from_env
from modelyard.loadtest.mock.openai.app import ProviderMockApp
from modelyard.loadtest.mock.wire import _BadRequest, _decode_any, _encode, _event, _int_header

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_KNOWN_ERROR_TYPES = frozenset(_ERROR_TYPES.values())

_OVERLOADED_EVENT = (
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
)

_MODEL_CONTEXT = 200_000
_MODEL_MAX_TOKENS = 64_000

_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def _error_json(status: int, message: str, kind: str | None, request_id: str) -> bytes:
    kind = kind if kind in _KNOWN_ERROR_TYPES else _error_type(status)
    return _encode({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})


class AnthropicApp(ProviderMockApp):
    """The mock backend speaking Anthropic's Messages API; shares the OpenAI mock's controls and recording."""

    def configure(self, config: MockConfig) -> None:
        super().configure(config)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._created))
        self._model_list = [self._model_info(m, created) for m in (config.models or (DEFAULT_MODEL,))]

    @staticmethod
    def _model_info(model: str, created_at: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model,
            "display_name": _display_name(model),
            "created_at": created_at,
            "lifecycle": "active",
            "max_input_tokens": _MODEL_CONTEXT,
            "max_tokens": _MODEL_MAX_TOKENS,
        }

    # --- controls and errors ---

    # The OpenAI mock's controls (MockApp._apply_controls), with Anthropic's error shapes and messages;
    # --status/--hang act on POST /v1/messages, and response heads are never padded.

    _RATE_ERROR_MESSAGE = "Internal server error"

    def _oversized_head(self, headers: Any, proto: Any) -> bool:
        return False

    def _status_error(self, proto: Any, status: int) -> None:
        self._error(proto, status, "Overloaded" if status == 529 else f"Mock error (x-mock-status: {status})")

    def _forced_applies(self, method: str, path: str) -> bool:
        return method == "POST" and path.rstrip("/") == "/v1/messages"

    def _error(
        self, proto: Any, status: int, message: str, param: str | None = None, code: str | None = None,
        kind: str | None = None,
    ) -> None:
        request_id = _new_id("req_")
        base = self._retry_headers if status in self._retry_statuses else self._json_headers
        proto.response_bytes(status, [*base, ("request-id", request_id)],
                             _error_json(status, message, kind, request_id))

    def _error_body(  # type: ignore[override]
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None,
    ) -> bytes:
        return _error_json(status, "Overloaded" if status == 529 else message, kind, _new_id("req_"))

    def _check_model(self, model: str) -> None:
        if self._models and model not in self._models:
            raise _BadRequest(404, f"model: {model}", kind="not_found_error")

    def _authorize(self, headers: Any) -> None:
        """x-api-key, or an Authorization bearer token (what OAuth clients and newer SDKs send)."""
        key = headers.get("x-api-key")
        source = "x-api-key"
        if not key:
            scheme, _, token = (headers.get("authorization") or "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key, source = token.strip(), "Authorization"
        if not key:
            raise _BadRequest(401, "x-api-key header is required", kind="authentication_error")
        if self.provider.api_key is not None and key != self.provider.api_key:
            raise _BadRequest(401, f"invalid {source}", kind="authentication_error")
        version = headers.get("anthropic-version")
        if not version:
            raise _BadRequest(400, "anthropic-version: header is required", kind="invalid_request_error")
        if not _VERSION.match(version):
            raise _BadRequest(400, f'anthropic-version: "{version}" is not a valid version',
                              kind="invalid_request_error")

    # --- routing ---

    async def _dispatch(self, scope: Any, method: str, path: str, body: bytes, proto: Any) -> None:
        if len(path) > 1:
            path = path.rstrip("/")
        headers = scope.headers
        if method == "POST" and path in ("/v1/messages", "/v1/messages/count_tokens"):
            self._authorize(headers)
            req = self._json_body(headers, body)
            if path == "/v1/messages":
                return await self._messages(scope, req, proto)
            return self._count_tokens(headers, req, proto)
        if method == "GET" and path == "/v1/models":
            self._authorize(headers)
            return self._list_models(scope.query_string or "", proto)
        if method == "GET" and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            self._authorize(headers)
            model = unquote(path[len("/v1/models/"):])
            self._check_model(model)
            created = self._model_list[0]["created_at"]
            return self._reply(proto, self._model_info(model, created))
        raise _BadRequest(404, "Not Found", kind="not_found_error")

    @staticmethod
    def _json_body(headers: Any, body: bytes) -> Any:
        ctype = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _BadRequest(400, "Content-Type must be application/json", kind="invalid_request_error")
        try:
            return _decode_any(body)
        except msgspec.DecodeError:
            raise _BadRequest(400, "There was an error parsing the body: invalid JSON",
                              kind="invalid_request_error") from None

    def _reply(self, proto: Any, answer: Any) -> None:
        proto.response_bytes(200, [*self._json_headers, ("request-id", _new_id("req_"))], _encode(answer))

    # --- endpoints ---

    def _count_tokens(self, headers: Any, req: Any, proto: Any) -> None:
        validate_request(req, count=True)
        self._check_model(req["model"])
        self._reply(proto, {"input_tokens": self._input_usage(headers, estimate_input_tokens(req))[0]})

    def _list_models(self, query: str, proto: Any) -> None:
        params = parse_qs(query)
        raw_limit = params.get("limit", ["20"])[0]
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = -1
        if not 1 <= limit <= 1000:
            raise _BadRequest(400, "limit: Input should be between 1 and 1000", kind="invalid_request_error")
        models = self._model_list
        ids = [m["id"] for m in models]
        after, before = params.get("after_id", [None])[0], params.get("before_id", [None])[0]
        if after is not None:
            start = ids.index(after) + 1 if after in ids else len(ids)
            page, has_more = models[start:start + limit], start + limit < len(models)
        elif before is not None:
            end = ids.index(before) if before in ids else 0
            page, has_more = models[max(0, end - limit):end], end - limit > 0
        else:
            page, has_more = models[:limit], limit < len(models)
        self._reply(proto, {
            "data": page,
            "has_more": has_more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        })

    async def _messages(self, scope: Any, req: Any, proto: Any) -> None:
        headers = scope.headers
        budget = validate_request(req)
        model = req["model"]
        self._check_model(model)
        prompt, cache_read, cache_creation = self._input_usage(headers, estimate_input_tokens(req))
        message_id = _new_id("msg_")
        tokens, finish = self._token_count(headers, req["max_tokens"])
        blocks, stop_reason, stop_sequence = plan(req, budget, message_id, tokens, finish)
        output = sum(b.tokens for b in blocks)
        if req.get("stream") is True:
            start = {
                "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": _usage(prompt, 1, cache_read, cache_creation),
            }
            final = {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": {"input_tokens": prompt, "cache_creation_input_tokens": cache_creation,
                          "cache_read_input_tokens": cache_read, "output_tokens": output},
            }
            transport = proto.response_stream(200, [*self._sse_headers, ("request-id", _new_id("req_"))])
            try:
                await self._write_stream(scope, transport, start, blocks, final)
            except ProtocolClosed:
                pass  # the client left mid-stream
            return
        await self._latency()
        self._reply(proto, {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [b.whole for b in blocks],
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": _usage(prompt, output, cache_read, cache_creation),
        })
        return

    async def _write_stream(
        self, scope: Any, transport: Any, start: dict[str, Any], blocks: list[_Block], final: dict[str, Any],
    ) -> None:
        """The SSE event sequence (``answers.write_events``), ended by an overloaded_error event after
        x-mock-error-after (or --error-after) deltas."""
        error_after = _int_header(scope.headers, "x-mock-error-after")
        if error_after is None:
            error_after = self.provider.error_after
        send = transport.send_bytes

        async def emit(name: bytes, data: dict[str, Any]) -> None:
            await send(_event(name, data))

        async def error() -> None:
            await send(_OVERLOADED_EVENT)

        await write_events(scope, self.config, error_after, emit, error, start, blocks, final)


app = AnthropicApp(config_from_env())

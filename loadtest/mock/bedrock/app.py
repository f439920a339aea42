"""AWS Bedrock Runtime, and STS beside it, as the mock backend speaks them (``modelyard mock --api bedrock``).

Endpoints (model IDs percent-encoded in the path, ':' as %3A, an ARN's '/' as %2F):

- ``POST /model/{modelId}/converse`` and ``/converse-stream``: the Converse API (``converse``),
  streams framed as AWS event-stream messages (``eventstream``, content-type
  ``application/vnd.amazon.eventstream``).
- ``POST /model/{modelId}/invoke`` and ``/invoke-with-response-stream``: InvokeModel with the
  bodies of ``invoke`` (Anthropic Messages, Titan and Cohere embeddings); streams are ``chunk``
  events whose payload is ``{"bytes": base64(one Anthropic stream event)}``, the last
  (message_stop) carrying ``amazon-bedrock-invocationMetrics``.
- ``POST /``: STS AssumeRoleWithWebIdentity (``sts``), unsigned, so ``AWS_ENDPOINT_URL_STS`` can
  point at this port; the temporary credentials it issues sign the model calls.
- ``GET /health`` and ``GET|DELETE /mock/requests`` as on every mock (x-amz-security-token not shown).

Every model call must carry a SigV4 signature (service ``bedrock``, region ``--region``) by an
accepted key (``sigv4``, ``keys``): ``--aws-access-key-id``/``--aws-secret-access-key`` pairs,
``--aws-keys FILE`` or ``$MODELYARD_MOCK_AWS_KEYS``, else AWS's documented example pair
(AKIAIOSFODNN7EXAMPLE), and the STS-issued ones with their session token. Refusals are 403s with
AWS's codes (AccessDeniedException, IncompleteSignatureException, InvalidSignatureException,
UnrecognizedClientException, ExpiredTokenException).

Errors are Bedrock's: status, ``x-amzn-ErrorType: <Code>:<namespace>``, ``x-amzn-RequestId`` and
body ``{"message": ...}``. ValidationException (400) for a body the service model or Bedrock's rules
refuse, or a malformed model ID; ResourceNotFoundException (404) for a model not among ``--model``
(when given); ThrottlingException (429) on ``--throttle-rate``, ``--status 429`` or
``x-mock-status: 429`` (any other status gets its Bedrock code the same way). ``--error-after N``
(or ``x-mock-error-after``) ends a stream after N deltas with the ``--stream-error`` exception
(``x-mock-stream-error`` wins): an event-stream message with ``:message-type: exception``.
The shared controls (``--latency-ms``, ``--ttft-ms``, ``--itl-ms``, ``--tokens``/``x-mock-tokens``,
``--die-after``, ``--hang``, ``x-mock-input-tokens``, ``--cache-read``/``--cache-creation``) work as
on the other mocks.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from typing import Any

import msgspec
from granian.rsgi import ProtocolClosed

from modelyard.loadtest.mock.anthropic.answers import _new_id, _usage, write_events
from modelyard.loadtest.mock.anthropic.answers import estimate_input_tokens as anthropic_estimate
from modelyard.loadtest.mock.anthropic.answers import plan as anthropic_plan
from modelyard.loadtest.mock.bedrock import converse, eventstream, invoke
from modelyard.loadtest.mock.bedrock.keys import EXAMPLE_KEYS, KeyStore
from modelyard.loadtest.mock.bedrock.shapes import fail, malformed, service_model
from modelyard.loadtest.mock.bedrock.sigv4 import CORAL, AuthError, verify
from modelyard.loadtest.mock.bedrock.sts import STSError, WebIdentityTrust, assume_role_with_web_identity, error_xml
from modelyard.loadtest.mock.config import (
    CloudConfig,
    MockConfig,
    ProviderConfig,
    cloud_config_from_env,
    config_from_env,
)
from modelyard.loadtest.mock.jwt import load_jwks
from modelyard.loadtest.mock.openai.app import ProviderMockApp
from modelyard.loadtest.mock.tokens import key_from_env
from modelyard.loadtest.mock.wire import _BadRequest, _decode_any, _encode, _int_header, _Pacer

EVENT_STREAM = "application/vnd.amazon.eventstream"
BEDROCK = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_ROUTE = re.compile(r"^/model/(.+)/(converse|converse-stream|invoke|invoke-with-response-stream)$", re.DOTALL)
# The error code of each status Bedrock answers (x-mock-status and --status pick one by status).
_CODES = {
    400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
    408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
    500: "InternalServerException", 503: "ServiceUnavailableException",
}
_AUTH_CODES = frozenset({"AccessDeniedException", "IncompleteSignatureException", "InvalidSignatureException",
                         "UnrecognizedClientException", "ExpiredTokenException", "UnknownOperationException"})
INTERNAL = "The system encountered an unexpected error during processing. Try your request again."
THROTTLED = "Too many requests, please wait before trying again."
_MESSAGES = {
    403: "You don't have access to the model with the specified model ID.",
    408: "Model has timed out in processing the request. Try your request again.",
    424: "The model returned an error (mock: x-mock-status).",
    429: THROTTLED,
    500: INTERNAL,
    503: "Bedrock is unable to process your request.",
}
# What each stream exception says (the member names of ConverseStreamOutput and ResponseStream).
_STREAM_ERRORS = {
    "modelStreamErrorException": {"message": "The model's response stream was interrupted (mock: error after the "
                                             "set number of deltas).",
                                  "originalStatusCode": 500, "originalMessage": "Internal server error"},
    "internalServerException": {"message": INTERNAL},
    "throttlingException": {"message": THROTTLED},
    "validationException": {"message": "The model stream was refused (mock: x-mock-stream-error)."},
    "serviceUnavailableException": {"message": "Bedrock is unable to process your request."},
    "modelTimeoutException": {"message": "Model has timed out in processing the request. Try your request again."},
}
INVALID_MODEL = "The provided model identifier is invalid."
MODEL_NOT_FOUND = "Could not resolve the foundation model from the provided model identifier."


def _code(status: int) -> str:
    return _CODES.get(status) or ("InternalServerException" if status >= 500 else "ValidationException")


class BedrockApp(ProviderMockApp):
    """Bedrock Runtime (Converse, InvokeModel) behind SigV4, with STS on ``POST /``."""

    def __init__(self, config: MockConfig | None = None, provider: ProviderConfig | None = None,
                 cloud: CloudConfig | None = None) -> None:
        self._fixed_cloud = cloud
        super().__init__(config, provider)

    def configure(self, config: MockConfig) -> None:
        self.cloud = cloud = self._fixed_cloud or cloud_config_from_env()
        super().configure(config)
        self._store = KeyStore(cloud.aws_keys or EXAMPLE_KEYS, cloud.sts_secret.encode() or key_from_env())
        provider = self.provider
        keys = load_jwks(provider.oidc_jwks) if provider.oidc_jwks else {}
        self._trust = WebIdentityTrust(keys, provider.oidc_issuer, provider.oidc_audiences, cloud.sts_roles)
        self._pads = 0
        if self._forced_answer is not None:
            status = self._forced_answer[0]
            self._forced_answer = (status, self._error_headers(status, _code(status), BEDROCK),
                                   _encode({"message": _MESSAGES.get(status, f"Mock error (--status {status})")}))
        service_model()  # load botocore's model now, not on the first request

    # --- answers and errors in Bedrock's shapes ---

    def _headers(self, content_type: str = "application/json") -> list[tuple[str, str]]:
        return [("content-type", content_type), ("x-amzn-RequestId", str(uuid.uuid4())),
                ("x-mock-name", self.config.name)]

    def _error_headers(self, status: int, code: str, namespace: str) -> list[tuple[str, str]]:
        headers = [*self._headers(), ("x-amzn-ErrorType", f"{code}:{namespace}")]
        retry_after = self.config.retry_after  # Bedrock sends none; --retry-after adds one to 429, 503 and --status
        if retry_after is not None and (status in (429, 503) or status == self.config.status):
            headers.append(("retry-after", str(retry_after)))
        return headers

    def _error(
        self, proto: Any, status: int, message: str, param: str | None = None, code: str | None = None,
        kind: str | None = None,
    ) -> None:
        aws_code = kind if kind and kind[0].isupper() else _code(status)
        namespace = code or (CORAL if aws_code in _AUTH_CODES else BEDROCK)
        proto.response_bytes(status, self._error_headers(status, aws_code, namespace), _encode({"message": message}))

    def _error_body(  # type: ignore[override]
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None,
    ) -> bytes:
        return _encode({"message": message})

    _RATE_ERROR_MESSAGE = INTERNAL

    def _status_error(self, proto: Any, status: int) -> None:
        self._error(proto, status, _MESSAGES.get(status, f"Mock error (x-mock-status: {status})"))

    def _forced_applies(self, method: str, path: str) -> bool:
        return method == "POST" and path.startswith("/model/")

    async def _apply_controls(self, method: str, path: str, headers: Any, proto: Any) -> bool:
        if not path.startswith("/model/"):
            return False  # STS and unknown paths: no injected failures
        return await super()._apply_controls(method, path, headers, proto)

    @staticmethod
    def _describe(record: tuple[str, str, str, Any, bytes]) -> dict[str, Any]:
        described = ProviderMockApp._describe(record)
        if "x-amz-security-token" in described["headers"]:
            described["headers"]["x-amz-security-token"] = "<not shown>"
        return described

    def _reply(self, proto: Any, answer: Any, extra: list[tuple[str, str]] | None = None) -> None:
        proto.response_bytes(200, [*self._headers(), *(extra or ())], _encode(answer))

    def _pad(self) -> int:
        """The length of Bedrock's "p" padding, varying from event to event."""
        self._pads += 1
        return 1 + (self._pads * 7) % 48

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        return eventstream.event(kind, payload, pad=self._pad())

    def _stream_exception(self, headers: Any) -> bytes:
        kind = headers.get("x-mock-stream-error") or self.cloud.stream_error
        return eventstream.exception(kind, _STREAM_ERRORS.get(kind, {"message": "Mock stream error"}))

    def _error_after(self, headers: Any) -> int | None:
        value = _int_header(headers, "x-mock-error-after")
        return self.provider.error_after if value is None else value

    # --- routing ---

    async def _dispatch(self, scope: Any, method: str, path: str, body: bytes, proto: Any) -> None:
        if path == "/" and method in ("POST", "GET"):
            return self._sts(scope, body if method == "POST" else (scope.query_string or "").encode(), proto)
        match = _ROUTE.match(path)
        if match is None or method != "POST":
            raise _BadRequest(404, "Unknown operation", code=CORAL, kind="UnknownOperationException")
        model_id, operation = match.groups()
        self._authenticate(scope, method, path, body)
        if self.cloud.throttle_rate and random.random() < self.cloud.throttle_rate:
            raise _BadRequest(429, THROTTLED, kind="ThrottlingException")
        self._check_model_id(model_id, "ConversationalModelId" if operation.startswith("converse")
                             else "InvokeModelIdentifier")
        started = time.monotonic()
        stream = operation.endswith("stream")
        try:
            if operation.startswith("converse"):
                await self._converse(scope, model_id, body, proto, stream, started)
            else:
                await self._invoke(scope, model_id, body, proto, stream, started)
        except ProtocolClosed:
            pass  # the client left mid-stream

    def _authenticate(self, scope: Any, method: str, path: str, body: bytes) -> None:
        try:
            verify(method, path, scope.query_string or "", scope.headers.items(), body, self._store.secret_for,
                   self.cloud.region)
        except AuthError as e:
            raise _BadRequest(e.status, e.message, code=CORAL, kind=e.code) from None

    def _check_model_id(self, model_id: str, shape: str) -> None:
        pattern = service_model().shape_for(shape).metadata.get("pattern")
        if len(model_id) > 2048 or (pattern and not re.fullmatch(pattern, model_id)):
            fail(INVALID_MODEL)
        if self._models and model_id not in self._models:
            raise _BadRequest(404, MODEL_NOT_FOUND, kind="ResourceNotFoundException")

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return _decode_any(body)
        except msgspec.DecodeError:
            malformed("#: expected type: JSONObject, found: malformed JSON")

    # --- STS ---

    def _sts(self, scope: Any, form: bytes, proto: Any) -> None:
        rid = str(uuid.uuid4())
        headers = [("content-type", "text/xml"), ("x-amzn-RequestId", rid), ("x-mock-name", self.config.name)]
        try:
            answer = assume_role_with_web_identity(form, self._store, self._trust, self.cloud.sts_duration, rid=rid)
        except STSError as e:
            proto.response_bytes(e.status, headers, error_xml(e.code, e.message, rid))
            return
        proto.response_bytes(200, headers, answer)

    # --- Converse ---

    async def _converse(self, scope: Any, model_id: str, body: bytes, proto: Any, stream: bool,
                        started: float) -> None:
        headers = scope.headers
        req = converse.validate(self._json(body))
        tokens, finish = self._token_count(headers, (req.get("inferenceConfig") or {}).get("maxTokens"))
        prompt, cache_read, cache_write = self._input_usage(headers, converse.estimate_input_tokens(req))
        blocks, stop_reason = converse.plan(req, tokens, finish, seed=model_id + str(started))
        usage = converse.usage(prompt, sum(b.tokens for b in blocks), cache_read, cache_write)
        if not stream:
            await self._latency()
            self._reply(proto, converse.answer(blocks, stop_reason, usage, _elapsed_ms(started)))
            return
        transport = proto.response_stream(200, self._headers(EVENT_STREAM))
        send = transport.send_bytes

        async def error() -> None:
            await send(self._stream_exception(headers))

        pacer = _Pacer(scope, self.config, self._error_after(headers), error)
        await send(self._event("messageStart", {"role": "assistant"}))
        for index, block in enumerate(blocks):
            if block.start is not None:
                await send(self._event("contentBlockStart", {"contentBlockIndex": index, "start": block.start}))
            for delta in block.deltas:
                if not await pacer.delta():
                    return
                await send(self._event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
            await send(self._event("contentBlockStop", {"contentBlockIndex": index}))
        if await pacer.cut():
            return
        await send(self._event("messageStop", {"stopReason": stop_reason}))
        await send(self._event("metadata", {"usage": usage, "metrics": {"latencyMs": _elapsed_ms(started)}}))

    # --- InvokeModel ---

    async def _invoke(self, scope: Any, model_id: str, body: bytes, proto: Any, stream: bool,
                      started: float) -> None:
        kind = invoke.family(model_id)
        if kind is None:
            fail(f"The mock models no InvokeModel body for {model_id[:200]}: use Converse, or an anthropic.*, "
                 "amazon.titan-embed-text-* or cohere.embed-* model.")
        if kind == "anthropic":
            return await self._invoke_anthropic(scope, model_id, self._json(body), proto, stream, started)
        if stream:
            fail("The model is unsupported for streaming.")
        await self._latency()
        if kind == "titan-embed":
            answer = invoke.titan_embedding(self._json(body), model_id)
            input_tokens = answer["inputTextTokenCount"]
        else:
            answer, input_tokens = invoke.cohere_embedding(self._json(body), model_id)
        self._reply(proto, answer, _invocation_headers(input_tokens, 0, started))

    async def _invoke_anthropic(self, scope: Any, model_id: str, body: Any, proto: Any, stream: bool,
                                started: float) -> None:
        headers = scope.headers
        req, budget = invoke.validate_anthropic(body, model_id)
        prompt, cache_read, cache_creation = self._input_usage(headers, anthropic_estimate(req))
        message_id = _new_id("msg_bdrk_")
        tokens, finish = self._token_count(headers, req["max_tokens"])
        blocks, stop_reason, stop_sequence = anthropic_plan(req, budget, message_id, tokens, finish)
        output = sum(b.tokens for b in blocks)
        usage = {"input_tokens": prompt, "cache_creation_input_tokens": cache_creation,
                 "cache_read_input_tokens": cache_read, "output_tokens": output}
        if not stream:
            await self._latency()
            self._reply(proto, {
                "id": message_id, "type": "message", "role": "assistant", "model": req["model"],
                "content": [b.whole for b in blocks], "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                "usage": usage,
            }, _invocation_headers(prompt, output, started))
            return
        start = {"id": message_id, "type": "message", "role": "assistant", "model": req["model"], "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": _usage(prompt, 1, cache_read, cache_creation)}
        final = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                 "usage": {"output_tokens": output}}
        transport = proto.response_stream(200, [*self._headers(EVENT_STREAM),
                                                ("x-amzn-bedrock-content-type", "application/json")])
        send = transport.send_bytes
        first: list[float] = []

        async def emit(name: bytes, data: dict[str, Any]) -> None:
            if not first:
                first.append(time.monotonic())
            if name == b"message_stop":
                data = {**data, "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": prompt, "outputTokenCount": output,
                    "invocationLatency": _elapsed_ms(started), "firstByteLatency": int((first[0] - started) * 1000)}}
            await send(eventstream.chunk(data, pad=self._pad()))

        async def error() -> None:
            await send(self._stream_exception(headers))

        await write_events(scope, self.config, self._error_after(headers), emit, error, start, blocks, final,
                           pings=False)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _invocation_headers(input_tokens: int, output_tokens: int, started: float) -> list[tuple[str, str]]:
    """The token counts and latency InvokeModel reports in its answer's headers."""
    return [("x-amzn-bedrock-input-token-count", str(input_tokens)),
            ("x-amzn-bedrock-output-token-count", str(output_tokens)),
            ("x-amzn-bedrock-invocation-latency", str(_elapsed_ms(started)))]


app = BedrockApp(config_from_env())

"""Google Cloud Vertex AI as the mock backend speaks it (``modelyard mock --api vertex``).

Token endpoints, on the same port (see ``vertex.auth``):

- ``POST /token``: a service account's JWT bearer grant (point the key file's ``token_uri`` here;
  ``--service-account FILE`` or ``--service-account-public-key PEM`` says whose keys to trust).
- ``POST /v1/token``: the STS exchange of workload identity federation (``--oidc-jwks URL``).
- ``POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken``: IAM Credentials.

Model routes, ``/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{model}:{method}``
(``v1beta1`` too), each needing ``Authorization: Bearer`` with an unexpired token from one of the
endpoints above (401 ``UNAUTHENTICATED`` otherwise, 403 without the cloud-platform scope):

- ``google`` models: ``:generateContent``, ``:streamGenerateContent`` (``?alt=sse``: ``data: {...}``
  events ended by CRLF CRLF; without it a JSON array streamed piece by piece), ``:countTokens``
  and ``:predict`` (text embeddings). Bodies are checked as Vertex checks them (``vertex.validate``);
  the answers are ``vertex.answers``'.
- ``anthropic`` models: ``:rawPredict`` and ``:streamRawPredict`` take the Messages API body with
  ``anthropic_version`` (``"vertex-2023-10-16"``, or the dated API version that newer Anthropic SDKs
  put there) and no ``model`` (the model is the path's), and
  ``count-tokens:rawPredict`` the count_tokens body; they are answered exactly as the Anthropic mock
  answers ``/v1/messages`` (its validation, answers, SSE events and errors, whose shape is Anthropic's).

A project other than ``--project`` is refused 403 ``PERMISSION_DENIED``; a location other than
``--location``, or a model not among ``--model``, 404 ``NOT_FOUND`` ("Publisher Model ... was not
found"). Errors take Google's shape, ``{"error": {"code", "message", "status", "details"?}}``.

The shared controls act as in the other mocks: ``x-mock-status``/``--status`` (429 answers
``RESOURCE_EXHAUSTED``, 500 ``INTERNAL``, 503 ``UNAVAILABLE``), ``x-mock-hang``/``--hang``,
``--error-rate``, ``--stall-rate``, and ``x-mock-die-after``/``--die-after``, which cuts a stream's
connection after N content chunks. ``x-mock-tokens``, ``x-mock-input-tokens`` and
``x-mock-cache-read`` (or ``--cache-read``: ``cachedContentTokenCount``) set the counts.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
from granian.rsgi import ProtocolClosed

from modelyard.loadtest.mock.anthropic.app import AnthropicApp
from modelyard.loadtest.mock.config import MockConfig, config_from_env
from modelyard.loadtest.mock.openai.app import ProviderMockApp
from modelyard.loadtest.mock.tokens import TokenMint, key_from_env
from modelyard.loadtest.mock.vertex import answers as ans
from modelyard.loadtest.mock.vertex.auth import GoogleIdentity
from modelyard.loadtest.mock.vertex.errors import (
    _OAUTH,
    STATUS_MESSAGES,
    STATUS_NAMES,
    GoogleError,
    error_body,
    oauth_body,
)
from modelyard.loadtest.mock.vertex.validate import validate_count, validate_generate
from modelyard.loadtest.mock.wire import _BadRequest, _decode_any, _form_fields, _int_header, _Pacer

_MODEL_PATH = re.compile(
    r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/publishers/([^/]+)/models/([^/]+):([A-Za-z]+)$")
_IAM_PATH = re.compile(r"^/v1/projects/-/serviceAccounts/([^/]+):generateAccessToken$")
_GOOGLE_METHODS = {
    "generateContent": "google.cloud.aiplatform.v1.PredictionService.GenerateContent",
    "streamGenerateContent": "google.cloud.aiplatform.v1.PredictionService.StreamGenerateContent",
    "countTokens": "google.cloud.aiplatform.v1.LlmUtilityService.CountTokens",
    "predict": "google.cloud.aiplatform.v1.PredictionService.Predict",
}
_ANTHROPIC_METHODS = {
    "rawPredict": "google.cloud.aiplatform.v1.PredictionService.RawPredict",
    "streamRawPredict": "google.cloud.aiplatform.v1.PredictionService.StreamRawPredict",
}
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
_DATED = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # newer Anthropic SDKs send their API version date here
COUNT_TOKENS_MODEL = "count-tokens"
_KNOWN_STATUSES = frozenset(STATUS_NAMES.values()) | {"FAILED_PRECONDITION"}
_INVALID_JSON = "Invalid JSON payload received. Unexpected token."


class VertexClaude(AnthropicApp):
    """The Anthropic mock behind Vertex's rawPredict routes: the Messages API's checks, answers and
    errors, with ``anthropic_version`` in the body instead of the model."""

    def _forced_applies(self, method: str, path: str) -> bool:
        return method == "POST"

    def _status_error(self, proto: Any, status: int) -> None:
        if status == 429:  # Vertex's own quota, in Google's shape, comes before the model
            proto.response_bytes(429, self._json_headers, error_body(429, STATUS_MESSAGES[429]))
            return
        super()._status_error(proto, status)

    async def raw_predict(self, scope: Any, model: str, body: bytes, proto: Any) -> None:
        try:
            req = self._json_body(scope.headers, body)
            if not isinstance(req, dict):
                raise _BadRequest(400, "Input should be a valid dictionary", kind="invalid_request_error")
            version = req.pop("anthropic_version", None)
            if version is None:
                raise _BadRequest(400, "anthropic_version: Field required", kind="invalid_request_error")
            if version != VERTEX_ANTHROPIC_VERSION and not (isinstance(version, str) and _DATED.match(version)):
                raise _BadRequest(400, f"anthropic_version: Input should be '{VERTEX_ANTHROPIC_VERSION}' or a "
                                       "dated API version (YYYY-MM-DD)", kind="invalid_request_error")
            if model == COUNT_TOKENS_MODEL:
                return self._count_tokens(scope.headers, req, proto)
            if "model" in req:
                raise _BadRequest(400, "model: Extra inputs are not permitted", kind="invalid_request_error")
            req["model"] = model
            await self._messages(scope, req, proto)
        except _BadRequest as e:
            self._error(proto, e.status, e.message, e.param, e.code, e.kind)


class VertexApp(ProviderMockApp):
    """Vertex AI's Gemini, embedding and Anthropic routes behind Google's token endpoints."""

    _RATE_ERROR_MESSAGE = STATUS_MESSAGES[500]

    def configure(self, config: MockConfig) -> None:
        super().configure(config)
        name = ("x-mock-name", config.name)
        self._json_headers = [("content-type", "application/json; charset=UTF-8"), name]
        self._retry_headers = [*self._json_headers, ("retry-after", str(config.retry_after))] \
            if config.retry_after is not None else self._json_headers
        self._token_headers = [("content-type", "application/json; charset=utf-8"),
                               ("cache-control", "no-cache, no-store, max-age=0, must-revalidate"),
                               ("pragma", "no-cache"), name]
        self._vertex_sse_headers = [("content-type", "text/event-stream"), ("content-disposition", "attachment"),
                                    name]
        self._claude = VertexClaude(config, self.provider)
        self.identity = GoogleIdentity(self.provider, TokenMint(key_from_env()))

    # --- controls and errors ---

    async def _apply_controls(self, method: str, path: str, headers: Any, proto: Any) -> bool:
        if "/publishers/anthropic/" in path:
            return await self._claude._apply_controls(method, path, headers, proto)
        return await super()._apply_controls(method, path, headers, proto)

    def _status_error(self, proto: Any, status: int) -> None:
        self._error(proto, status, STATUS_MESSAGES.get(status, f"Mock error (x-mock-status: {status})"))

    def _forced_applies(self, method: str, path: str) -> bool:
        return method == "POST" and "/models/" in path

    def _error_body(  # type: ignore[override]
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None,
    ) -> bytes:
        if kind == _OAUTH:
            return oauth_body(code or "invalid_request", message)
        if message.startswith("Mock error (") and status in STATUS_MESSAGES:
            message = STATUS_MESSAGES[status]
        return error_body(status, message, kind if kind in _KNOWN_STATUSES else None)

    # --- routing ---

    async def _dispatch(self, scope: Any, method: str, path: str, body: bytes, proto: Any) -> None:
        try:
            await self._route(scope, method, path, body, proto)
        except GoogleError as e:
            headers = self._retry_headers if e.status in self._retry_statuses else self._json_headers
            proto.response_bytes(e.status, headers, error_body(e.status, e.message, e.kind, e.details))

    async def _route(self, scope: Any, method: str, path: str, body: bytes, proto: Any) -> None:
        headers = scope.headers
        if method == "POST" and path == "/token":
            host = headers.get("host") or ""
            answer = self.identity.oauth_token(self._form(headers, body), {f"http://{host}/token",
                                                                           f"https://{host}/token"})
            return self._reply(proto, answer, self._token_headers)
        if method == "POST" and path == "/v1/token":
            return self._reply(proto, self.identity.sts_token(self._form(headers, body)), self._token_headers)
        match = _IAM_PATH.match(path)
        if match is not None and method == "POST":
            answer = self.identity.generate_access_token(
                unquote(match.group(1)), headers.get("authorization"), self._google_json(body))
            return self._reply(proto, answer)
        match = _MODEL_PATH.match(path)
        if match is None or method != "POST":
            raise GoogleError(404, f"Method not found: {method} {path}")
        _, project, location, publisher, raw_model, verb = match.groups()
        model = unquote(raw_model)
        methods = _ANTHROPIC_METHODS if publisher == "anthropic" else _GOOGLE_METHODS
        if publisher not in ("google", "anthropic") or verb not in methods:
            raise GoogleError(404, f"Method not found: {verb} for publisher {publisher}")
        self.identity.bearer(headers.get("authorization"), methods[verb])
        self._check_resource(project, location, publisher, model, verb)
        if publisher == "anthropic":
            return await self._claude.raw_predict(scope, model, body, proto)
        req = self._google_json(body)
        if verb == "predict":
            return await self._predict(req, proto)
        if verb == "countTokens":
            return self._reply(proto, ans.count_tokens(validate_count(req)))
        stream = verb == "streamGenerateContent"
        sse = stream and parse_qs(scope.query_string or "").get("alt", [""])[0] == "sse"
        return await self._generate(scope, model, validate_generate(req), proto, stream, sse)

    def _check_resource(self, project: str, location: str, publisher: str, model: str, verb: str) -> None:
        name = f"projects/{project}/locations/{location}/publishers/{publisher}/models/{model}"
        cfg = self.provider
        if cfg.project is not None and project != cfg.project:
            permission = "aiplatform.endpoints.predict"
            raise GoogleError(403, f"Permission '{permission}' denied on resource '//aiplatform.googleapis.com/{name}' "
                                   "(or it may not exist).", "PERMISSION_DENIED", [{
                                       "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                       "reason": "IAM_PERMISSION_DENIED", "domain": "aiplatform.googleapis.com",
                                       "metadata": {"permission": permission,
                                                    "resource": f"projects/{project}/locations/{location}"}}])
        known = not self._models or model in self._models or (publisher == "anthropic" and model == COUNT_TOKENS_MODEL)
        if (cfg.location is not None and location != cfg.location) or not known:
            raise GoogleError(404, f"Publisher Model `{name}` was not found or your project does not have access to "
                                   "it. Please ensure you are using a valid model version. For more information, see: "
                                   "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions")

    @staticmethod
    def _form(headers: Any, body: bytes) -> dict[str, str]:
        """A token request's fields: form-encoded, as OAuth clients send them (JSON accepted too, as Google does)."""
        ctype = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data = _decode_any(body)
            except msgspec.DecodeError:
                data = None
            return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}
        return _form_fields(body)

    @staticmethod
    def _google_json(body: bytes) -> Any:
        try:
            return _decode_any(body)
        except msgspec.DecodeError:
            raise GoogleError(400, _INVALID_JSON) from None

    def _reply(self, proto: Any, answer: Any, headers: list[tuple[str, str]] | None = None) -> None:
        proto.response_bytes(200, headers or self._json_headers, msgspec.json.encode(answer))

    # --- Gemini ---

    def _counts(self, headers: Any, req: dict[str, Any]) -> tuple[int, int, int]:
        """(text prompt tokens, media tokens, cached tokens); headers win over flags and estimates."""
        prompt, media, _ = ans.prompt_usage(req)
        forced = _int_header(headers, "x-mock-input-tokens")
        if forced is not None and forced >= 0:
            prompt, media = forced, 0
        cached = _int_header(headers, "x-mock-cache-read")
        if cached is None or cached < 0:
            cached = self.provider.cache_read
        return prompt, media, min(cached, prompt + media)

    async def _generate(self, scope: Any, model: str, req: dict[str, Any], proto: Any, stream: bool,
                        sse: bool) -> None:
        headers = scope.headers
        n, _ = self._token_count(headers, None)
        plan = ans.plan(req, n)
        count = int((req.get("generationConfig") or {}).get("candidateCount") or 1)
        prompt, media, cached = self._counts(headers, req)
        usage = None if self.config.no_usage else ans.usage_metadata(
            prompt, media, plan.output_tokens * count, plan.thought_tokens, cached)
        rid, created = ans.response_id(), ans.create_time()
        if not stream:
            await self._latency()
            candidates = [ans.candidate(i, plan.parts(), plan.finish, True) for i in range(count)]
            return self._reply(proto, ans.response(candidates, usage, model, rid, created))
        chunks = plan.chunks or [[{"text": ""}]]
        bodies = []
        for i, parts in enumerate(chunks):
            last = i == len(chunks) - 1
            candidates = [ans.candidate(c, parts, plan.finish if last else None, False) for c in range(count)]
            bodies.append(ans.response(candidates, usage if last else (None if usage is None else ans.TRAFFIC),
                                       model, rid, created))
        transport = proto.response_stream(200, self._vertex_sse_headers if sse else self._json_headers)
        try:
            await self._write_chunks(scope, transport, bodies, sse)
        except ProtocolClosed:
            pass  # the client left mid-stream

    async def _write_chunks(self, scope: Any, transport: Any, bodies: list[dict[str, Any]], sse: bool) -> None:
        """Each chunk as an SSE event (alt=sse) or an element of a JSON array, paced and cut (die-after)
        as every mock's streams are (``wire._Pacer``)."""
        pacer = _Pacer(scope, self.config)
        send = transport.send_bytes
        for i, body in enumerate(bodies):
            if not await pacer.delta():
                return
            if sse:
                await send(ans.sse_frame(body))
            else:
                await send((b"[" if i == 0 else b"\r\n,") + msgspec.json.encode(body))
        if not sse:
            await send(b"]")

    async def _predict(self, req: Any, proto: Any) -> None:
        instances, dim = ans.parse_predict(req)
        await self._latency()
        self._reply(proto, ans.predictions(instances, dim or self.config.embedding_dim))


app = VertexApp(config_from_env())

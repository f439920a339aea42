"""Azure OpenAI as the mock backend speaks it (``modelyard mock --api azure``).

Deployment-scoped routes, ``POST /openai/deployments/{deployment}/chat/completions``,
``/completions`` and ``/embeddings``, each requiring an ``api-version`` query parameter and an
``api-key`` header (or an Entra ID ``Authorization: Bearer`` token). Bodies are answered by the
OpenAI mock's own logic, with ``model`` set to the deployment name. The newer version-less
``/openai/v1/...`` routes (model in the body, as on OpenAI) are served too.

What Azure answers when something is off, as its documentation and users report it:

- no ``api-version``: 404 ``{"error": {"code": "404", "message": "Resource not found"}}``
- an ``api-version`` that is not a ``YYYY-MM-DD[-preview]`` date: 400
  ``{"error": {"code": "BadRequest", "message": "API version not supported"}}``
- no key, or not the ``--api-key`` one: 401 ``{"error": {"code": "401", "message": "Access denied ..."}}``
- a deployment not among ``--model``: 404 ``{"error": {"code": "DeploymentNotFound", ...}}``
- anything else (a bad body, ``x-mock-status: 5xx``) in the OpenAI error shape, as Azure relays it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec

from modelyard.loadtest.mock.config import config_from_env
from modelyard.loadtest.mock.openai.app import MockApp, ProviderMockApp
from modelyard.loadtest.mock.wire import _BadRequest, _decode_any, _encode

_DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)$")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_AZURE = "azure"  # the error `kind` that selects Azure's {code, message} error shape
_AZURE_SHAPED = frozenset((401, 403, 404, 429))  # x-mock-status / --status answers Azure sends in its own shape

NOT_FOUND = "Resource not found"
VERSION_NOT_SUPPORTED = "API version not supported"
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
    "for an active subscription and use a correct regional API endpoint for your resource."
)
DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again."
)


def _azure_error(status: int, code: str, message: str) -> _BadRequest:
    return _BadRequest(status, message, None, code, _AZURE)


class AzureApp(ProviderMockApp):
    """The OpenAI mock behind Azure's routing, versioning and key checks."""

    async def _dispatch(self, scope: Any, method: str, path: str, body: bytes, proto: Any) -> None:
        if len(path) > 1:
            path = path.rstrip("/")
        headers = scope.headers
        if path.startswith("/openai/v1/"):
            # The v1 API: OpenAI's paths and bodies under /openai/v1, no api-version needed.
            self._authorize(headers)
            return await super()._dispatch(scope, method, path[len("/openai"):], body, proto)
        match = _DEPLOYMENT_PATH.match(path)
        if match is None or method != "POST":
            raise _azure_error(404, "404", NOT_FOUND)
        version = parse_qs(scope.query_string or "").get("api-version", [""])[0]
        if not version:
            raise _azure_error(404, "404", NOT_FOUND)
        if not _API_VERSION.match(version):
            raise _azure_error(400, "BadRequest", VERSION_NOT_SUPPORTED)
        self._authorize(headers)
        deployment = unquote(match.group(1))
        if self._models and deployment not in self._models:
            raise _azure_error(404, "DeploymentNotFound", DEPLOYMENT_NOT_FOUND)
        return await super()._dispatch(scope, method, path, _with_model(body, deployment), proto)

    def _authorize(self, headers: Any) -> None:
        key = headers.get("api-key")
        if not key:
            auth = headers.get("authorization") or ""
            scheme, _, token = auth.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key or (self.provider.api_key is not None and key != self.provider.api_key):
            raise _azure_error(401, "401", ACCESS_DENIED)

    def _error_body(  # type: ignore[override]
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None,
    ) -> bytes:
        if kind == _AZURE:
            return _encode({"error": {"code": code or str(status), "message": message}})
        if kind is None and param is None and status in _AZURE_SHAPED:
            return _encode({"error": {"code": str(status), "message": message}})
        return MockApp._error_body(status, message, param, code, kind)


def _with_model(body: bytes, deployment: str) -> bytes:
    """The body with ``model`` set to the deployment; Azure ignores the body's own ``model``."""
    try:
        req = _decode_any(body)
    except msgspec.DecodeError:
        return body  # the OpenAI logic answers its own invalid-JSON error
    if not isinstance(req, dict):
        return body
    req["model"] = deployment
    return _encode(req)


app = AzureApp(config_from_env())

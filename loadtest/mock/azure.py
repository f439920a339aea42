"""Azure OpenAI as the mock backend speaks it (``modelyard mock --api azure``).

Deployment-scoped routes, ``POST /openai/deployments/{deployment}/chat/completions``,
``/completions`` and ``/embeddings``, each requiring an ``api-version`` query parameter and an
``api-key`` header (or an Entra ID ``Authorization: Bearer`` token). Bodies are answered by the
OpenAI mock's own logic, with ``model`` set to the deployment name. The newer version-less
``/openai/v1/...`` routes (model in the body, as on OpenAI) are served too.

Entra ID: ``POST /{tenant}/oauth2/v2.0/token`` on the same port issues access tokens by the client
credentials grant (``loadtest.mock.entra``; flags ``--azure-tenant-id``, ``--azure-client-id``,
``--azure-client-secret``, ``--oidc-jwks`` for federated credentials, ``--token-lifetime``). Point
a client's authority (``https://login.microsoftonline.com``) at the mock. A bearer token the mock
issued for ``https://cognitiveservices.azure.com`` (or ``https://ai.azure.com``) is accepted until
it expires; once any of those flags is given, any other bearer is refused (401 "Access token is
missing, invalid, audience is incorrect ... or have expired"), except ``--api-key`` itself on the
``/openai/v1`` routes, which take the key as a bearer as Azure does. Without them, a bearer is
taken as a key, as before (``--api-key``, or any non-empty one). An ``api-key`` header is checked
as before.

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

from modelyard.loadtest.mock.config import MockConfig, config_from_env
from modelyard.loadtest.mock.entra import TOKEN_PATH, EntraIdentity
from modelyard.loadtest.mock.openai.app import MockApp, ProviderMockApp
from modelyard.loadtest.mock.tokens import Expired, TokenMint, key_from_env
from modelyard.loadtest.mock.wire import _BadRequest, _decode_any, _encode, _form_fields

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
TOKEN_REFUSED = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), "
    "or have expired."
)
DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again."
)


def _azure_error(status: int, code: str, message: str) -> _BadRequest:
    return _BadRequest(status, message, None, code, _AZURE)


class AzureApp(ProviderMockApp):
    """The OpenAI mock behind Azure's routing, versioning and key checks."""

    def configure(self, config: MockConfig) -> None:
        super().configure(config)
        self.entra = EntraIdentity(self.provider, TokenMint(key_from_env()))
        self._token_headers = [("content-type", "application/json; charset=utf-8"),
                               ("cache-control", "no-store, no-cache"), ("pragma", "no-cache"),
                               ("x-mock-name", config.name)]

    def _forced_applies(self, method: str, path: str) -> bool:
        return TOKEN_PATH.match(path) is None and super()._forced_applies(method, path)

    async def _dispatch(self, scope: Any, method: str, path: str, body: bytes, proto: Any) -> None:
        if len(path) > 1:
            path = path.rstrip("/")
        headers = scope.headers
        token_path = TOKEN_PATH.match(path)
        if token_path is not None and method == "POST":
            status, answer = self.entra.token(unquote(token_path.group(1)), _form_fields(body))
            proto.response_bytes(status, self._token_headers, _encode(answer))
            return None
        if path.startswith("/openai/v1/"):
            # The v1 API: OpenAI's paths and bodies under /openai/v1, no api-version needed.
            self._authorize(headers, key_as_bearer=True)
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

    def _authorize(self, headers: Any, key_as_bearer: bool = False) -> None:
        """An ``api-key``, else a bearer token: one the Entra endpoint issued, or (see the module
        docstring) a key."""
        key = headers.get("api-key")
        if key:
            if self.provider.api_key is not None and key != self.provider.api_key:
                raise _azure_error(401, "401", ACCESS_DENIED)
            return
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not token:
            raise _azure_error(401, "401", ACCESS_DENIED)
        try:
            if self.entra.read(token) is not None:
                return
        except Expired:
            raise _azure_error(401, "401", TOKEN_REFUSED) from None
        configured = self.entra.configured
        if self.provider.api_key is None and not configured:
            return  # no key and no identity configured: any bearer, as before
        if token == self.provider.api_key and (key_as_bearer or not configured):
            return
        raise _azure_error(401, "401", TOKEN_REFUSED if self.entra.configured else ACCESS_DENIED)

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

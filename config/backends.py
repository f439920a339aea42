"""Resolving AIServiceBackends into routing-table backends: endpoints, TLS and credentials."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec

from modelyard.config.cloud_credentials.sources import Source
from modelyard.config.cloud_policies import (CLOUD_TYPES, SCHEMAS_OF, check_type_fields, compile_cloud_policy,
                                             schema_mismatch)
from modelyard.config.diagnostics import Diagnostics, did_you_mean
from modelyard.config.loader import Resource
from modelyard.core.schemas import API_KEY_HEADERS, DEFAULT_PREFIX, DEFAULT_VERSION, FALLBACK_PREFIX, SERVED_SCHEMAS
from modelyard.core.table import TLS, Backend, CloudAuth, CredentialOverride, Endpoint, ErrorReply
from modelyard.core.wire import (
    header_name_problem, header_value_problem, host_problem, is_ip, path_problem, port_problem, token_problem,
)

# credentialOverride.fromRequestHeaders without `header`: where clients put their own key.
_OVERRIDE_HEADERS = {"APIKey": "x-aigw-api-key", "AzureAPIKey": "x-aigw-azure-api-key",
                     "AnthropicAPIKey": "x-aigw-anthropic-api-key"}
_POLICY_FIELD = {"APIKey": "apiKey", "AzureAPIKey": "azureAPIKey", "AnthropicAPIKey": "anthropicAPIKey"}


@dataclass
class Objects:
    """Resources indexed by kind and (namespace, name)."""

    by_kind: dict[str, dict[tuple[str, str], Resource]]

    @classmethod
    def index(cls, resources: list[Resource]) -> Objects:
        by_kind: dict[str, dict[tuple[str, str], Resource]] = {}
        for r in resources:
            by_kind.setdefault(r.kind, {})[(r.namespace, r.name)] = r
        return cls(by_kind)

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        return self.by_kind.get(kind, {}).get((namespace, name))

    def hint(self, kind: str, namespace: str, name: str) -> str:
        """' (did you mean X?)' naming a like-named object of this kind in the namespace."""
        return did_you_mean(name, [n for ns, n in self.by_kind.get(kind, {}) if ns == namespace])

    def all(self, kind: str) -> list[Resource]:
        return sorted(self.by_kind.get(kind, {}).values(), key=lambda r: r.order)


def _error(status: int, code: str, message: str) -> ErrorReply:
    return ErrorReply(status, code, message)


class SecretError(ValueError):
    """A Secret key that exists but cannot be used; the message names the Secret and the key."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field  # data.KEY or stringData.KEY


def secret_value(objs: Objects, namespace: str, name: str, key: str) -> str | None:
    """The key's value with surrounding whitespace trimmed, as the Envoy AI Gateway reads it (a
    `|` block keeps a trailing newline); None when the Secret or the key does not exist."""
    secret = objs.get("Secret", namespace, name)
    if secret is None:
        return None
    string_data = secret.body.get("stringData") or {}
    if key in string_data:
        return str(string_data[key]).strip()
    data = secret.body.get("data") or {}
    return _decode(secret, key, data[key]).strip() if key in data else None


def _decode(secret: Resource, key: str, text: object) -> str:
    where = f"Secret {secret.namespace}/{secret.name} key {key}"
    try:
        return base64.b64decode(str(text), validate=True).decode()
    except binascii.Error:
        raise SecretError(f"{where}: data is not valid base64", f"data.{key}") from None
    except UnicodeDecodeError:
        raise SecretError(f"{where}: data does not decode to UTF-8 text", f"data.{key}") from None


def check_secrets(objs: Objects, diags: Diagnostics) -> None:
    """Every Secret's `data` must be base64, as the Kubernetes API server requires, used or not."""
    for secret in objs.all("Secret"):
        for key, text in (secret.body.get("data") or {}).items():
            try:
                _decode(secret, key, text)
            except SecretError as e:
                diags.error(str(e), file=secret.file, obj=secret.ref, field=e.field)


class BackendResolver:
    """Builds each AIServiceBackend into a table Backend once, reporting what is missing."""

    def __init__(self, objs: Objects, diags: Diagnostics):
        self.objs = objs
        self.diags = diags
        self.backends: list[Backend] = []
        self.index: dict[str, int] = {}
        self.timeouts: dict[int, float] = {}  # deprecated AIServiceBackend timeouts, by backend index
        # Cloud credentials to fetch, by CloudAuth.key (the policy): the refresher's input, never in the table.
        self.cloud_sources: dict[str, Source] = {}
        self._cloud: dict[tuple[str, str], Any] = {}
        check_secrets(objs, diags)
        check_type_fields(objs.all("BackendSecurityPolicy"), diags)
        self._policies = self._policies_by_target()
        self._tls = self._tls_by_target()
        # Every Backend once, referenced or not: each problem is reported once, and `check` sees them all.
        self._eg_backends = {(b.namespace, b.name): self._eg_backend(b) for b in objs.all("Backend")}

    def add(self, key: str, backend: Backend) -> int:
        if key not in self.index:
            self.index[key] = len(self.backends)
            self.backends.append(backend)
        return self.index[key]

    def placeholder(self, key: str, status: int, code: str, message: str) -> int:
        return self.add(key, Backend(key, "", None, "", (), None, (), ErrorReply(status, code, message)))

    def resolve(self, namespace: str, name: str) -> int:
        key = f"{namespace}/{name}"
        if key in self.index:
            return self.index[key]
        res = self.objs.get("AIServiceBackend", namespace, name)
        if res is None:
            return self.placeholder(key, 503, "backend_not_found",
                                    f"AIServiceBackend {key} does not exist (yet); add it to the configuration"
                                    + self.objs.hint("AIServiceBackend", namespace, name))
        return self.add(key, self._build(res))

    def _build(self, res: Resource) -> Backend:
        spec = res.spec
        key = f"{res.namespace}/{res.name}"
        schema = spec["schema"]["name"]
        version = spec["schema"].get("version")
        prefix = (spec["schema"].get("prefix") or DEFAULT_PREFIX.get(schema, FALLBACK_PREFIX)).rstrip("/")
        error = None
        # The prefix starts the request line; the version becomes a query parameter or a header value.
        for field, problem in (("prefix", path_problem(prefix)),
                               ("version", token_problem(version) if version is not None else None)):
            if problem:
                self.diags.error(problem, file=res.file, obj=res.ref, field=f"spec.schema.{field}")
                error = _error(503, "invalid_backend", f"AIServiceBackend {key} has an invalid schema.{field}")
        endpoints, tls, where = self._endpoints(res)
        if isinstance(where, ErrorReply):
            error, endpoints = where, ()
        auth, auth_error, override = self._credentials(res)
        cloud = None
        if isinstance(override, CloudAuth):  # a cloud policy: its credential is fetched and refreshed
            cloud, override = override, None
        error = error or auth_error
        if schema not in SERVED_SCHEMAS:  # core/schemas.py: NOT_SERVED_SCHEMAS
            msg = f"AIServiceBackend {key} uses schema {schema}, which this gateway cannot translate to yet"
            self.diags.warning(msg, file=res.file, obj=res.ref, field="spec.schema.name")
            error = error or _error(501, "schema_not_supported", msg)
        needs = next((t for t, schemas in SCHEMAS_OF.items() if schema in schemas and t != "AzureCredentials"), None)
        if needs is not None and cloud is None and error is None:  # AWS signs, GCP's path names the project
            msg = f"AIServiceBackend {key} uses schema {schema} but no {needs} BackendSecurityPolicy targets it"
            self.diags.warning(msg, file=res.file, obj=res.ref, field="spec.schema.name")
            error = _error(401, "missing_credentials", msg)
        timeout = (spec.get("timeouts") or {}).get("request")
        if not version:
            version = DEFAULT_VERSION.get(schema, version)
        backend = Backend(key, schema, version, prefix, endpoints, tls, auth, error, override, cloud)
        if timeout is not None:
            from modelyard.core.units import parse_duration
            try:
                self.timeouts[len(self.backends)] = parse_duration(timeout)
            except ValueError as e:
                self.diags.error(str(e), file=res.file, obj=res.ref, field="spec.timeouts.request")
        return backend

    def _endpoints(self, res: Resource) -> tuple[tuple[Endpoint, ...], TLS | None, Any]:
        ref = res.spec["backendRef"]
        ns = ref.get("namespace") or res.namespace
        kind = ref.get("kind") or "Service"
        name = ref["name"]
        if kind == "Backend":
            backend = self.objs.get("Backend", ns, name)
            if backend is None:
                msg = f"Backend {ns}/{name} (referenced by AIServiceBackend {res.namespace}/{res.name}) does not exist (yet)" + self.objs.hint("Backend", ns, name)
                self.diags.warning(msg, file=res.file, obj=res.ref, field="spec.backendRef")
                return (), None, _error(503, "backend_not_found", msg)
            return self._eg_backends[(ns, name)]
        if kind == "Service":
            port = ref.get("port")
            if port is None:
                self.diags.error("a Service backendRef needs a port", file=res.file, obj=res.ref, field="spec.backendRef.port")
                return (), None, None
            host = f"{name}.{ns}.svc.cluster.local"
            problem = host_problem(host) or port_problem(int(port))
            if problem:
                self.diags.error(problem, file=res.file, obj=res.ref, field="spec.backendRef")
                return (), None, _error(503, "invalid_backend", problem)
            return (Endpoint(host, int(port)),), self._tls.get(("Service", ns, name)), None
        msg = f"backendRef kind {kind} is not supported (use Backend or Service)"
        self.diags.warning(msg, file=res.file, obj=res.ref, field="spec.backendRef.kind")
        return (), None, _error(501, "backend_kind_not_supported", msg)

    def _eg_backend(self, backend: Resource) -> tuple[tuple[Endpoint, ...], TLS | None, Any]:
        spec = backend.spec
        endpoints: list[Endpoint] = []
        for i, ep in enumerate(spec.get("endpoints") or []):
            if ep.get("fqdn") or ep.get("ip"):
                kind, host_field = ("fqdn", "hostname") if ep.get("fqdn") else ("ip", "address")
                host, port = ep[kind][host_field], int(ep[kind]["port"])
                host_error = host_problem(host) if kind == "fqdn" else (
                    None if is_ip(host) else f"{host!r} is not an IP address")
                problems = [(f, p) for f, p in ((host_field, host_error), ("port", port_problem(port))) if p]
                for field, problem in problems:
                    self.diags.error(problem, file=backend.file, obj=backend.ref,
                                     field=f"spec.endpoints[{i}].{kind}.{field}")
                if not problems:
                    endpoints.append(Endpoint(host, port))
            else:
                self.diags.warning("only fqdn and ip endpoints are supported; endpoint skipped",
                                   file=backend.file, obj=backend.ref, field=f"spec.endpoints[{i}]")
        tls = self._tls.get(("Backend", backend.namespace, backend.name)) or self._inline_tls(backend)
        if not endpoints:
            msg = f"Backend {backend.namespace}/{backend.name} has no usable endpoint"
            return (), None, _error(503, "backend_no_endpoints", msg)
        return tuple(endpoints), tls, None

    def _secret(self, namespace: str, name: str, key: str, header: bool = False) -> str | None:
        """A Secret key's value (None when missing), or SecretError when it cannot be used: data that
        is not base64 (check_secrets reports it) or, with `header`, a value no header can carry."""
        value = secret_value(self.objs, namespace, name, key)
        problem = header_value_problem(value, None) if header and value is not None else None
        if problem:
            secret = self.objs.by_kind["Secret"][(namespace, name)]
            field = f"{'stringData' if key in (secret.body.get('stringData') or {}) else 'data'}.{key}"
            self.diags.error(f"Secret {namespace}/{name} key {key}: {problem}", file=secret.file, obj=secret.ref,
                             field=field)
            raise SecretError(f"Secret {namespace}/{name} key {key}: {problem}", field)
        return value

    def _cloud_secret(self, namespace: str, name: str, key: str) -> str | None:
        try:
            return self._secret(namespace, name, key)
        except SecretError:  # not base64 (check_secrets reported it): as good as missing
            return None

    def _ca_bundle(self, owner: Resource, refs: list[dict[str, Any]], field: str) -> str | None:
        pems = []
        for i, ref in enumerate(refs):
            kind = ref.get("kind") or "ConfigMap"
            obj = self.objs.get(kind, owner.namespace, ref["name"])
            pem = None
            if obj is not None and kind == "ConfigMap":
                pem = (obj.body.get("data") or {}).get("ca.crt")
            elif obj is not None and kind == "Secret":
                try:
                    pem = self._secret(owner.namespace, ref["name"], "ca.crt")
                except SecretError:
                    continue
            if pem is None:
                self.diags.warning(f"{kind} {owner.namespace}/{ref['name']} with key ca.crt does not exist (yet)",
                                   file=owner.file, obj=owner.ref, field=f"{field}[{i}]")
                continue
            pems.append(pem)
        return "\n".join(pems) if pems else None

    def _inline_tls(self, backend: Resource) -> TLS | None:
        tls = backend.spec.get("tls")
        if not tls:
            return None
        ca = self._ca_bundle(backend, tls.get("caCertificateRefs") or [], "spec.tls.caCertificateRefs")
        sni = self._tls_name(backend, tls.get("sni"), "spec.tls.sni")
        return TLS(ca, sni, not tls.get("insecureSkipVerify", False))

    def _tls_name(self, owner: Resource, name: str | None, field: str) -> str | None:
        """A TLS server name (SNI): a host name, or None (the endpoint's) when it is not one."""
        problem = host_problem(name) if name else None
        if problem:
            self.diags.error(problem, file=owner.file, obj=owner.ref, field=field)
            return None
        return name

    def _tls_by_target(self) -> dict[tuple[str, str, str], TLS]:
        out: dict[tuple[str, str, str], TLS] = {}
        for pol in self.objs.all("BackendTLSPolicy"):
            validation = pol.spec["validation"]
            ca = self._ca_bundle(pol, validation.get("caCertificateRefs") or [], "spec.validation.caCertificateRefs")
            tls = TLS(ca, self._tls_name(pol, validation.get("hostname"), "spec.validation.hostname"), True)
            for ref in pol.spec["targetRefs"]:
                out[(ref.get("kind") or "Service", pol.namespace, ref["name"])] = tls
        return out

    def _policies_by_target(self) -> dict[tuple[str, str], Resource]:
        out: dict[tuple[str, str], Resource] = {}
        for pol in self.objs.all("BackendSecurityPolicy"):
            for ref in pol.spec.get("targetRefs") or []:
                if (ref.get("kind") or "AIServiceBackend") == "AIServiceBackend":
                    out[(pol.namespace, ref["name"])] = pol
        for sb in self.objs.all("AIServiceBackend"):
            old = sb.spec.get("backendSecurityPolicyRef")
            if old:
                pol = self.objs.get("BackendSecurityPolicy", sb.namespace, old["name"])
                if pol is not None:
                    out[(sb.namespace, sb.name)] = pol
                else:
                    self.diags.warning(f"BackendSecurityPolicy {sb.namespace}/{old['name']} does not exist (yet)"
                                       + self.objs.hint("BackendSecurityPolicy", sb.namespace, old["name"]),
                                       file=sb.file, obj=sb.ref, field="spec.backendSecurityPolicyRef")
        return out

    def _credentials(self, res: Resource) -> tuple[tuple[tuple[str, str], ...], Any,
                                                     CredentialOverride | CloudAuth | None]:
        """(configured credential headers, an error, the per-request override or the cloud credential)
        for a backend."""
        pol = self._policies.get((res.namespace, res.name))
        if pol is None:
            return (), None, None
        ptype = pol.spec["type"]
        if ptype in CLOUD_TYPES:
            mismatch = schema_mismatch(pol, res.spec["schema"]["name"], self.diags)
            if mismatch is not None:
                return (), mismatch, None
            compiled = self._cloud.get((pol.namespace, pol.name))
            if compiled is None:  # once per policy, however many backends it covers: each problem reported once
                compiled = self._cloud[(pol.namespace, pol.name)] = compile_cloud_policy(pol, self._cloud_secret,
                                                                                          self.diags)
            cloud, error, source = compiled
            if cloud is not None and source is not None:
                self.cloud_sources[cloud.key] = source
            return (), error, cloud
        if ptype not in API_KEY_HEADERS:
            msg = f"BackendSecurityPolicy {pol.namespace}/{pol.name} of type {ptype} is not supported yet"
            self.diags.warning(msg, file=pol.file, obj=pol.ref, field="spec.type")
            return (), _error(501, "credentials_not_supported", msg), None
        header, template = API_KEY_HEADERS[ptype]
        override = None
        from_headers = (pol.spec.get("credentialOverride") or {}).get("fromRequestHeaders")
        if from_headers is not None:
            client_header = (from_headers.get("header") or _OVERRIDE_HEADERS[ptype]).lower()
            problem = header_name_problem(client_header)
            if problem:
                self.diags.error(problem, file=pol.file, obj=pol.ref,
                                 field="spec.credentialOverride.fromRequestHeaders.header")
            override = CredentialOverride(client_header, header, template,
                                          from_headers.get("fallbackToConfigured", True))
        holder = pol.spec.get(_POLICY_FIELD[ptype])
        if not holder:
            if override is not None:
                return (), None, msgspec.structs.replace(override, fallback=False)  # nothing configured to fall back to
            self.diags.error(f"type {ptype} needs spec.{_POLICY_FIELD[ptype]}", file=pol.file, obj=pol.ref,
                             field=f"spec.{_POLICY_FIELD[ptype]}")
            return (), None, None
        ref = holder["secretRef"]
        ns = ref.get("namespace") or pol.namespace
        try:
            key = self._secret(ns, ref["name"], "apiKey", header=True)
        except SecretError as e:
            return (), _error(503, "credentials_invalid", str(e)), None
        if key is None:
            msg = f"Secret {ns}/{ref['name']} with key apiKey (used by BackendSecurityPolicy {pol.namespace}/{pol.name}) does not exist (yet)" + self.objs.hint("Secret", ns, ref["name"])
            self.diags.warning(msg, file=pol.file, obj=pol.ref, field=f"spec.{_POLICY_FIELD[ptype]}.secretRef")
            if override is not None:  # clients can still bring their own key
                return (), None, msgspec.structs.replace(override, fallback=False)
            return (), _error(503, "credentials_not_found", msg), None
        return ((header, template.format(key)),), None, override


def backend_from_url(url: str, api_key: str | None, name: str = "modelyard/default") -> Backend:
    """A backend for zero-config use: an OpenAI-compatible base URL such as http://127.0.0.1:11434/v1."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid backend URL {url!r} (expected e.g. http://127.0.0.1:11434/v1)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    prefix = parts.path.rstrip("/") or "/v1"
    problem = path_problem(prefix) or host_problem(parts.hostname)
    if problem:
        raise ValueError(f"invalid backend URL {url!r}: {problem}")
    api_key = api_key.strip() if api_key else None
    problem = header_value_problem(api_key, None) if api_key else None
    if problem:
        raise ValueError(f"the backend's API key cannot be sent: {problem}")
    tls = TLS(None, None, True) if parts.scheme == "https" else None
    auth = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    return Backend(name, "OpenAI", None, prefix, (Endpoint(parts.hostname, port),), tls, auth)

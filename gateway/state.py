"""Per-generation runtime state of a worker, built once when a new table is published.

Everything a request would otherwise compute is prepared here: compiled
matchers, upstream URLs per endpoint and API operation, TLS contexts, the
header edits of each backendRef (credentials included), per-rule timeouts and
the pre-encoded /v1/models answer.
"""

from __future__ import annotations

import ipaddress
import ssl
from itertools import count

import aiohttp
import msgspec
from yarl import URL

from core.router import Router, RuleRuntime
from core.table import Backend, BackendRef, Table

# The OpenAI-style operations the data plane forwards, by client path.
OPERATIONS = {
    "/v1/chat/completions": "/chat/completions",
    "/v1/completions": "/completions",
    "/v1/embeddings": "/embeddings",
}


def _ssl_context(backend: Backend) -> ssl.SSLContext | bool:
    tls = backend.tls
    if tls is None:
        return False
    ctx = ssl.create_default_context(cadata=tls.ca_pem) if tls.ca_pem else ssl.create_default_context()
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class BackendRuntime:
    __slots__ = ("backend", "name", "targets", "ssl", "server_hostname", "_next", "error")

    def __init__(self, backend: Backend, resolve: dict[str, str]):
        self.backend = backend
        self.name = backend.name
        self.error = backend.error
        scheme = "https" if backend.tls is not None else "http"
        # (address in the URL, Host header to send instead or None) per endpoint. IP
        # endpoints never reach a resolver, so --resolve applies to them here and the
        # original address stays the Host header, as with curl; hostnames keep their
        # name in the URL (Host header, SNI) and the resolver maps them.
        hosts: list[tuple[str, str | None]] = []
        for ep in backend.endpoints:
            address = f"{_host(ep.host)}:{ep.port}"
            mapped = resolve.get(f"{ep.host}:{ep.port}") if _is_ip(ep.host) else None
            hosts.append((mapped, address) if mapped else (address, None))
        # One target per (operation, endpoint), with the description error messages use;
        # endpoints share load round-robin.
        self.targets = {
            suffix: [(URL(f"{scheme}://{addr}{backend.prefix}{suffix}", encoded=True), host,
                      f"backend {backend.name} ({addr})") for addr, host in hosts]
            for suffix in OPERATIONS.values()
        }
        self.ssl = _ssl_context(backend) if backend.error is None else False
        self.server_hostname = backend.tls.server_name if backend.tls is not None else None
        self._next = count()

    def target(self, suffix: str) -> tuple[URL, str | None, str]:
        """The URL to send an operation to, the Host header to override it with (or None), and
        how error messages name it."""
        targets = self.targets[suffix]
        return targets[0] if len(targets) == 1 else targets[next(self._next) % len(targets)]


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class RefRuntime:
    """A backendRef with its backend, header edits and timeout resolved."""

    __slots__ = ("ref", "backend", "remove", "set", "timeout", "rewrite")

    def __init__(self, ref: BackendRef, backend: BackendRuntime):
        self.ref = ref
        self.backend = backend
        auth = backend.backend.auth_headers
        # Credentials go last so that neither clients nor mutations can replace them.
        self.set = tuple(ref.header_set) + tuple(auth)
        self.remove = frozenset(ref.header_remove) | {name for name, _ in self.set}
        self.timeout = aiohttp.ClientTimeout(total=ref.timeout or None)
        self.rewrite = bool(ref.model_override is not None or ref.body_set or ref.body_remove)


class GenerationState:
    __slots__ = ("generation", "table", "router", "backends", "refs", "models_body", "body_limit", "model_list")

    def __init__(self, table: Table):
        self.generation = table.generation
        self.table = table
        self.router = Router(table)
        self.backends = [BackendRuntime(b, table.resolve) for b in table.backends]
        # Keyed by the BackendRef object the router picks: identity lookups, no hashing of fields.
        self.refs: dict[int, RefRuntime] = {}
        for rule in self.router.rules:
            for ref in rule.rule.refs:
                self.refs[id(ref)] = RefRuntime(ref, self.backends[ref.backend])
        self.body_limit = table.body_limit
        self.model_list = [m.id for m in table.models]
        self.models_body = msgspec.json.encode({
            "object": "list",
            "data": [{"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by} for m in table.models],
        })

    def pick(self, rule: RuleRuntime) -> RefRuntime:
        return self.refs[id(rule.pick())]

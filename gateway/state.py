"""Per-generation runtime state of a worker, built once when a new table is published.

Everything a request would otherwise compute is prepared here: compiled
matchers, upstream URLs per endpoint and API operation, TLS contexts, the
header edits of each backendRef (credentials included), per-rule timeouts and
the pre-encoded /v1/models answer.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Iterator
from itertools import count
from typing import Union

import msgspec

from modelyard.core.costs import CostCompileError, CostProgram
from modelyard.core.health import HealthBoard
from modelyard.core.router import SLICE, Router, RuleRuntime
from modelyard.core.table import Backend, BackendRef, RouteInfo, Table, credential_headers
from modelyard.core.wire import (
    HEADER_ENCODING, header_name_problem, header_value_problem, host_problem, is_ip, owned_header_problem, path_problem,
    text_problem,
)
from modelyard.gateway.http1 import Pool
from modelyard.gateway.providers import AuthHook, Provider, provider_for
from modelyard.gateway.translators import Translator

log = logging.getLogger("modelyard.worker")

# The operations the data plane forwards, by client path: OpenAI's, and Anthropic's Messages API
# (served at /v1/messages and, as the Envoy AI Gateway serves it, /anthropic/v1/messages).
OPERATIONS = {
    "/v1/chat/completions": "/chat/completions",
    "/v1/completions": "/completions",
    "/v1/embeddings": "/embeddings",
}
ANTHROPIC_OPERATIONS = {"/v1/messages": "/messages", "/anthropic/v1/messages": "/messages"}
ALL_OPERATIONS = (*OPERATIONS.values(), "/messages")


def _ssl_context(backend: Backend) -> ssl.SSLContext | None:
    tls = backend.tls
    if tls is None:
        return None
    ctx = ssl.create_default_context(cadata=tls.ca_pem) if tls.ca_pem else ssl.create_default_context()
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Target:
    """One (operation, endpoint) of a backend: its connection pool, the request head up to the
    query, and the endpoint's slot on the health board."""

    __slots__ = ("pool", "path", "head", "where", "health", "tail", "stream_tail", "query_joint",
                 "stream_query_joint", "stream_types")

    def __init__(self, pool: Pool, path: bytes, host: str, where: str, health: int, tail: bytes | None = None,
                 stream_tail: bytes | None = None, stream_types: tuple[bytes, ...] = (b"text/event-stream",)):
        self.pool = pool
        self.path = b"POST " + path
        self.head = f" HTTP/1.1\r\nhost: {host}\r\n".encode("latin-1")
        self.where = where
        self.health = health
        # Azure OpenAI, AWS Bedrock: the path continues with the model and then this tail, or for a
        # streaming request stream_tail where the provider has one (Bedrock's /converse-stream).
        self.tail = tail
        self.stream_tail = tail if stream_tail is None else stream_tail
        # Before the client's query: '&' after a tail that has a query of its own (Azure's api-version,
        # Vertex AI's streaming alt=sse), else '?'.
        self.query_joint = b"&" if tail is not None and b"?" in tail else b"?"
        self.stream_query_joint = b"&" if self.stream_tail is not None and b"?" in self.stream_tail else b"?"
        self.stream_types = stream_types  # the provider's stream_content_types: one startswith per answer


class _NoBoard:
    """Health tracking off (no shared board): every endpoint is always eligible."""

    def ejected(self, slot: int, now: float) -> bool:
        return False

    def success(self, slot: int) -> None:
        pass

    def failure(self, slot: int, status: int, outlier: object, now: float, eject_for: float | None = None) -> bool:
        return False


Board = Union[HealthBoard, _NoBoard]


def attach_board(path: str) -> Board:
    return HealthBoard.attach(path) if path else _NoBoard()


class Pools:
    """The worker's connection pools, by address and TLS settings, kept across table generations."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[object, ...], Pool] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def get(self, host: str, port: int, backend: Backend) -> Pool:
        tls = backend.tls
        tls_key = (tls.ca_pem, tls.verify, tls.server_name) if tls is not None else None
        key = (host, port, tls_key)
        pool = self.by_key.get(key)
        if pool is None or pool.closed:
            assert self.loop is not None
            server_name = (tls.server_name or None) if tls is not None else None
            pool = self.by_key[key] = Pool(host, port, _ssl_context(backend), server_name, self.loop)
        return pool

    def keep_only(self, used: set[int]) -> None:
        """Close the pools no backend of the new generation uses (their in-flight requests finish)."""
        for key, pool in list(self.by_key.items()):
            if id(pool) not in used:
                pool.close()
                del self.by_key[key]


class BackendRuntime:
    __slots__ = ("backend", "name", "provider", "provider_name", "targets", "_next", "error", "tokenize_unserved",
                 "translators", "passthrough")

    def __init__(self, backend: Backend, resolve: dict[str, str], pools: Pools):
        self.backend = backend
        self.name = backend.name
        # What its schema brings (paths, translators, auth), and its name in metrics.
        provider: Provider = provider_for(backend.schema)
        self.provider = provider
        self.provider_name = provider.metric_name
        self.tokenize_unserved = False  # learned: its server has no /tokenize
        self.error = backend.error
        tls = backend.tls
        default_port = 443 if tls is not None else 80
        # Each endpoint is reached at its address, or where --resolve maps it; the Host
        # header (and SNI, unless the TLS policy names another) keep the configured name.
        endpoints: list[tuple[Pool, str, str, int]] = []
        _require(header_value_problem(backend.name, None), "backend name")  # clients get it as a header
        if backend.error is None:
            _require(path_problem(backend.prefix), f"backend {backend.name} prefix")
            for ep in backend.endpoints:
                _require(host_problem(ep.host), f"backend {backend.name} endpoint")
                address = f"{_host(ep.host)}:{ep.port}"
                mapped = resolve.get(f"{ep.host}:{ep.port}")
                if mapped:
                    addr, _, port = mapped.rpartition(":")
                    connect_host, connect_port = addr.strip("[]"), int(port)
                else:
                    connect_host, connect_port = ep.host, ep.port
                host_header = _host(ep.host) if ep.port == default_port else address
                if tls is not None and not tls.server_name and not is_ip(ep.host):
                    tls = msgspec.structs.replace(tls, server_name=ep.host)
                pool = pools.get(connect_host, connect_port, msgspec.structs.replace(backend, tls=tls))
                endpoints.append((pool, host_header, f"backend {backend.name} ({address})", ep.health))
        # One target per (operation, endpoint); endpoints share load round-robin.
        self.targets: dict[str, list[Target]] = {}
        stream_types = tuple(t.encode("latin-1") for t in provider.stream_content_types)
        for operation in ALL_OPERATIONS:
            route = provider.upstream_path(backend, operation)
            stream_tail = provider.stream_tail(backend, operation) if route is not None else None
            self.targets[operation] = [] if route is None else [
                Target(pool, route[0], host, where, health, route[1], stream_tail, stream_types)
                for pool, host, where, health in endpoints]
        # What each (client API, operation) needs to reach this backend: None (it speaks it) or a
        # translator; a pair missing here cannot reach it (501).
        self.translators: dict[tuple[str, str], Translator | None] = provider.translator_table(ALL_OPERATIONS)
        self.passthrough = provider.passthrough_paths(backend)  # endpoint -> upstream path
        self._next = count()

    def target(self, operation: str, tried: list[Target], now: float, board: Board, healthy_only: bool) -> Target | None:
        """The next endpoint in turn that this request has not tried (and, if asked, is not ejected)."""
        targets = self.targets[operation]
        n = len(targets)
        start = next(self._next) if n > 1 else 0
        for k in range(n):
            t = targets[(start + k) % n]
            if t in tried or (healthy_only and board.ejected(t.health, now)):
                continue
            return t
        return None


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class InvalidTable(ValueError):
    """A table value that must not reach the wire; the watcher rejects such configs, so this
    only guards against a table built some other way. The worker keeps its previous table."""


def valid_header(name: str, value: str) -> bool:
    """A header the data plane may write: config validation's name and value checks. Checked once per table."""
    return header_name_problem(name) is None and header_value_problem(value, None) is None


def _require(problem: str | None, what: str) -> None:
    if problem:
        raise InvalidTable(f"{what}: {problem}")


def _header_lines(headers: tuple[tuple[str, str], ...], what: str) -> bytes:
    for name, value in headers:
        problem = header_name_problem(name) or owned_header_problem(name) or header_value_problem(value, None)
        _require(problem, f"{what}, header {name!r}")
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode(HEADER_ENCODING)


class RefRuntime:
    """A backendRef with its backend, header edits and timeout resolved."""

    __slots__ = ("ref", "backend", "remove", "set_lines", "mutation_lines", "auth_lines", "override", "timeout",
                 "rewrite", "auth")

    def __init__(self, ref: BackendRef, backend: BackendRuntime, override_headers: frozenset[str] = frozenset()):
        self.ref = ref
        self.backend = backend
        auth = backend.backend.auth_headers
        # Credentials go last so that neither clients nor mutations can replace them.
        header_set = tuple(ref.header_set) + backend.provider.static_headers(backend.backend)
        what = f"backend {backend.name}"
        if ref.model_override is not None:
            _require(text_problem(ref.model_override), f"{what} modelNameOverride")
        self.mutation_lines = _header_lines(header_set, what)
        self.auth_lines = _header_lines(tuple(auth), f"{what} credentials")
        self.set_lines = self.mutation_lines + self.auth_lines
        self.override = override = backend.backend.credential_override
        if override is not None and not valid_header(override.upstream_header, override.template.replace("{}", "")):
            log.error("credentialOverride of %s names an invalid upstream header; client keys are not sent",
                      backend.name)
            self.override = None
        # Every header that carries a client's key to a credentialOverride backend, in the whole
        # table, is removed on every attempt to every backend: the key goes only where it belongs.
        remove = {name.lower() for name, _ in (*header_set, *auth)} | override_headers | backend.provider.owned_headers
        if override is not None:
            remove |= {override.client_header, override.upstream_header}
        if backend.backend.cloud is not None:  # a refreshed token or a signature: the client's never passes
            remove.add("authorization")
        self.remove = frozenset(ref.header_remove) | remove
        # Called per attempt: the header edits, then the credentials (for API keys, set_lines).
        self.auth: AuthHook = backend.provider.auth(backend.backend, self.mutation_lines, self.auth_lines,
                                                    self.override)
        self.timeout = ref.timeout or None
        self.rewrite = bool(ref.model_override is not None or ref.body_set or ref.body_remove)


class RouteRuntime:
    """A route's retry and health policies, its costs, and the backends its clients may pick by header."""

    __slots__ = ("name", "retry", "outlier", "by_header", "allowed", "costs")

    def __init__(self, info: RouteInfo, refs: list[RefRuntime]):
        self.name = info.name
        self.retry = info.retry
        self.outlier = info.outlier
        self.costs = _cost_program(info)
        namespace = info.name.partition("/")[0]
        # "namespace/name" always; the bare name for the route's own namespace.
        self.by_header: dict[str, RefRuntime] = {}
        for ref in refs:
            full = ref.backend.name
            self.by_header[full] = ref
            ns, _, name = full.partition("/")
            if ns == namespace:
                self.by_header[name] = ref
        self.allowed = ", ".join(ref.backend.name for ref in refs)


def _cost_program(info: RouteInfo) -> CostProgram | None:
    if not info.costs:
        return None
    try:
        return CostProgram.compile(tuple((c.metadata_key, c.type, c.cel) for c in info.costs), info.name)
    except CostCompileError:  # the watcher rejects such a table; never take a worker down for it
        log.exception("llmRequestCosts of %s do not compile; its requests cost nothing", info.name)
        return None


class GenerationState:
    __slots__ = ("generation", "table", "router", "backends", "refs", "routes", "models_body", "anthropic_models_body",
                 "body_limit",
                 "model_list", "board", "header_routes")

    def __init__(self, table: Table, pools: Pools, board: Board | None = None):
        for _ in self.build(table, pools, board):
            pass
        self.keep_pools(pools)

    def build(self, table: Table, pools: Pools, board: Board | None = None) -> Iterator[None]:
        """Build the state, yielding every few milliseconds of work so that a worker can go on
        serving the previous generation meanwhile (a 10,000-rule table takes over 100 ms)."""
        self.generation = table.generation
        self.table = table
        self.board = board if board is not None else _NoBoard()
        self.router = Router.__new__(Router)
        yield from self.router.build(table)
        self.backends = [BackendRuntime(b, table.resolve, pools) for b in table.backends]
        yield
        # Keyed by the BackendRef object the router picks: identity lookups, no hashing of fields.
        overrides = credential_headers(table)
        self.refs = {}
        for k, rule in enumerate(self.router.rules):
            for ref in rule.rule.refs:
                self.refs[id(ref)] = RefRuntime(ref, self.backends[ref.backend], overrides)
            if k % SLICE == SLICE - 1:
                yield
        self.routes = [RouteRuntime(info, [RefRuntime(r, self.backends[r.backend], overrides)
                                           for r in info.header_refs])
                       for info in table.routes]
        # Routes that take the backend header, in precedence order, for requests no rule matches.
        self.header_routes = [r for r in self.routes if r.by_header]
        self.body_limit = table.body_limit
        self.model_list = [m.id for m in table.models]
        yield
        # GET /v1/models and, in Anthropic's list shape, GET /anthropic/v1/models.
        models = list(table.models)
        openai_list, anthropic_list = [], []
        created_at: dict[int, str] = {}  # models mostly share a few timestamps; strftime is slow
        for k, m in enumerate(models):
            openai_list.append({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by})
            stamp = created_at.get(m.created)
            if stamp is None:
                stamp = created_at[m.created] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(m.created))
            anthropic_list.append({"type": "model", "id": m.id, "display_name": m.id, "created_at": stamp})
            if k % SLICE == SLICE - 1:
                yield
        self.models_body = msgspec.json.encode({"object": "list", "data": openai_list})
        yield
        self.anthropic_models_body = msgspec.json.encode({
            "data": anthropic_list, "has_more": False, "first_id": models[0].id if models else None,
            "last_id": models[-1].id if models else None,
        })

    def keep_pools(self, pools: Pools) -> None:
        """Close the pools this generation does not use; call once it serves (the last one's are done with)."""
        pools.keep_only({id(t.pool) for b in self.backends for ts in b.targets.values() for t in ts})

    def pick(self, rule: RuleRuntime) -> RefRuntime:
        return self.refs[id(rule.pick())]

    def choose(self, rule: RuleRuntime, operation: str, tried: list[Target], now: float,
               skip: frozenset[int] = frozenset()) -> tuple[RefRuntime, Target] | None:
        """The backend and endpoint for the next attempt, or None when nothing is left to try.

        By weight within the most preferred priority that has an endpoint which is
        neither ejected nor already tried by this request; when every such endpoint
        is ejected, the ejected ones are tried anyway, in the same order, rather than
        failing without trying (Envoy's panic mode).
        """
        board = self.board
        if not tried and not skip:  # the common case: one weighted pick, one health read
            ref = self.refs[id(rule.pick())]
            target = ref.backend.target(operation, tried, now, board, True)
            if target is not None:
                return ref, target
        for healthy_only in (True, False):
            for group in rule.groups:
                if group.priority in skip:
                    continue
                options: list[tuple[RefRuntime, Target]] = []
                weights: list[int] = []
                for r in group.refs:
                    ref = self.refs[id(r)]
                    target = ref.backend.target(operation, tried, now, board, healthy_only)
                    if target is not None:
                        options.append((ref, target))
                        weights.append(r.weight)
                if options:
                    return options[0] if len(options) == 1 else random.choices(options, weights)[0]
        return None

    def choose_fixed(self, ref: RefRuntime, operation: str, tried: list[Target],
                     now: float) -> tuple[RefRuntime, Target] | None:
        """The next endpoint of a backend the client picked by header: no other backend is tried."""
        backend = ref.backend
        target = backend.target(operation, tried, now, self.board, True) or backend.target(
            operation, tried, now, self.board, False)
        return (ref, target) if target is not None else None

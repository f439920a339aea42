"""Compiling validated resources into one immutable routing table.

All AIGatewayRoutes merge into one ordered list of match entries with Gateway
API precedence: more header conditions first, then the older route (by
creationTimestamp, else by order of appearance in the files), then rule and
match order. The rank of an entry is its index; a model index and a generic
list, each cut after the first entry that needs no further condition, make
matching cost independent of how many rules and models there are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Callable
from typing import Any

import msgspec

from modelyard.config.backends import BackendResolver, Objects, backend_from_url
from modelyard.config.cloud_credentials.sources import Source
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import Resource
from modelyard.config.traffic import backend_header_scope, backend_traffic_policy, outlier_policy, retry_policy
from modelyard.config.wire_checks import check_object_names, checked_mutations, header_name_ok, model_override, valid_hostnames
from modelyard.core.costs import CostCompileError, CostProgram
from modelyard.core.regex import RegexError, compile_full
from modelyard.core.table import (
    MODEL_HEADER, BackendHeader, BackendRef, CondKind, ErrorReply, HeaderCond, ListenerLimits, MatchEntry, ModelInfo,
    RequestCost, RetryPolicy, RouteInfo, Rule, Table,
)
from modelyard.core.sniff import MAX_MODEL_NAME
from modelyard.core.units import parse_duration, parse_quantity

DEFAULT_TIMEOUT = 60.0
DEFAULT_BODY_LIMIT = 50 * 1024 * 1024
DEFAULT_OWNED_BY = "Envoy AI Gateway"  # the AIGatewayRoute API's documented default


@dataclass
class CompileOptions:
    resolve: dict[str, str] = field(default_factory=dict)  # "host:port" -> "addr:port"
    retries: int = 2  # per request, unless a route says otherwise
    allow_backend_header: bool = False  # the x-ai-gateway-backend header, for routes that do not say
    default_backend: str | None = None  # a base URL every unmatched model goes to
    default_api_key: str | None = None
    mtimes: dict[str, float] = field(default_factory=dict)  # file -> mtime, for models' `created`


@dataclass
class _Entry:
    key: tuple[Any, ...]
    rule: int
    model: str | None
    conds: tuple[HeaderCond, ...]


@dataclass
class Compiled:
    table: Table
    summary: list[str]
    # Cloud credentials the control process fetches, by CloudAuth.key: secrets, kept out of the table.
    cloud_sources: dict[str, Source] = field(default_factory=dict)


def compile_table(resources: list[Resource], diags: Diagnostics, options: CompileOptions | None = None) -> Compiled:
    options = options or CompileOptions()
    objs = Objects.index(resources)
    backends = BackendResolver(objs, diags)
    rules: list[Rule] = []
    entries: list[_Entry] = []
    models: dict[str, tuple[tuple[Any, ...], ModelInfo]] = {}
    routes: list[RouteInfo] = []
    summary: list[str] = []

    check_object_names(resources, diags)
    for sb in objs.all("AIServiceBackend"):  # each reported once, however many routes use it
        checked_mutations(sb.spec, "spec", diags, {"file": sb.file, "obj": sb.ref})
    for route in objs.all("AIGatewayRoute"):
        info, lines = _compile_route(route, objs, len(routes), backends, rules, entries, models, diags, options)
        routes.append(info)
        summary.append(lines)

    if options.default_backend:
        _add_default_route(options, backends, rules, entries, routes, summary)

    entries.sort(key=lambda e: e.key)
    exact: dict[str, list[int]] = {}
    generic: list[int] = []
    for rank, e in enumerate(entries):
        bucket = exact.setdefault(e.model, []) if e.model is not None else generic
        bucket.append(rank)
    table = Table(
        generation=0,
        entries=tuple(MatchEntry(e.rule, e.conds) for e in entries),
        exact={m: _cut(ranks, entries) for m, ranks in exact.items()},
        generic=_cut(generic, entries),
        rules=tuple(rules),
        backends=tuple(backends.backends),
        models=tuple(info for _, info in sorted(models.values(), key=lambda kv: kv[0])),
        routes=tuple(routes),
        resolve=dict(options.resolve),
        body_limit=_body_limit(objs, diags),
        listen_port=_listen_port(objs),
        listener=_listener_limits(objs, diags),
    )
    return Compiled(table, summary, backends.cloud_sources)


def health_key(backend_name: str, host: str, port: int) -> str:
    return f"{backend_name}|{host}:{port}"


def with_health_slots(table: Table, assign: Callable[[list[str]], dict[str, int]]) -> Table:
    """The table with each endpoint's slot on the shared health board (stable across reloads)."""
    keys = [health_key(b.name, e.host, e.port) for b in table.backends for e in b.endpoints]
    if not keys:
        return table
    slots = assign(keys)
    backends = tuple(
        msgspec.structs.replace(b, endpoints=tuple(
            msgspec.structs.replace(e, health=slots[health_key(b.name, e.host, e.port)]) for e in b.endpoints))
        for b in table.backends
    )
    return msgspec.structs.replace(table, backends=backends)


def _cut(ranks: list[int], entries: list[_Entry]) -> tuple[int, ...]:
    """Ranks up to and including the first entry with no further condition: nothing after it can win."""
    for i, rank in enumerate(ranks):
        if not entries[rank].conds:
            return tuple(ranks[: i + 1])
    return tuple(ranks)


def _route_age(route: Resource) -> tuple[Any, ...]:
    # Objects with a creationTimestamp sort by it (oldest first); objects from
    # files without one keep their order of appearance.
    return (0, route.created, route.order) if route.created else (1, "", route.order)


def _compile_route(route: Resource, objs: Objects, route_index: int, backends: BackendResolver, rules: list[Rule],
                   entries: list[_Entry], models: dict[str, tuple[tuple[Any, ...], ModelInfo]], diags: Diagnostics,
                   options: CompileOptions) -> tuple[RouteInfo, str]:
    spec = route.spec
    route_name = f"{route.namespace}/{route.name}"
    where = {"file": route.file, "obj": route.ref}
    schema = (spec.get("schema") or {}).get("name")
    if schema not in (None, "OpenAI"):
        diags.error(f"input schema {schema} is not supported; clients speak OpenAI (or Anthropic on its endpoint)",
                    field="spec.schema.name", **where)
    hostnames = spec.get("hostnames") or []
    host_conds = _hostname_conds(valid_hostnames(hostnames, diags, where))
    created_default = _created_default(route, options)
    described: list[str] = []
    for i, rule_spec in enumerate(spec.get("rules") or []):
        path = f"spec.rules[{i}]"
        rule_index = len(rules)
        timeout = _rule_timeout(rule_spec, path, diags, where)
        stream_idle = rule_spec.get("streamIdleTimeout")
        refs = tuple(
            _backend_ref(route, ref, f"{path}.backendRefs[{j}]", timeout, backends, diags)
            for j, ref in enumerate(rule_spec.get("backendRefs") or [])
        )
        error = None if refs else ErrorReply(503, "no_backend", f"rule {path} of route {route_name} has no backendRefs")
        rules.append(Rule(route_name, rule_spec.get("name") or f"rules[{i}]", refs, error, route_index,
                          _checked_duration(stream_idle, f"{path}.streamIdleTimeout", diags, where)
                          if stream_idle is not None else 0.0))
        owned_by = rule_spec.get("modelsOwnedBy") or DEFAULT_OWNED_BY
        created = _parse_created(rule_spec.get("modelsCreatedAt"), f"{path}.modelsCreatedAt", diags, where)
        matches = rule_spec.get("matches") or [{}]
        for m, match in enumerate(matches):
            model, conds = _match_conds(match.get("headers") or [], f"{path}.matches[{m}].headers", diags, where)
            n_headers = len(match.get("headers") or [])
            key = (-n_headers, _route_age(route), i, m)
            entries.append(_Entry(key, rule_index, model, conds + host_conds))
            if model is not None and model not in models:
                models[model] = (key, ModelInfo(model, owned_by, created or created_default))
            described.append(model if model is not None and not conds else _describe(conds, model))
    costs = tuple(RequestCost(c["metadataKey"], c["type"], c.get("cel")) for c in spec.get("llmRequestCosts") or [])
    for k, c in enumerate(spec.get("llmRequestCosts") or []):
        if (c["type"] == "CEL") != bool(c.get("cel")):
            diags.error("cel is required for type CEL and only allowed with it", field=f"spec.llmRequestCosts[{k}]", **where)
        elif c["type"] == "CEL":
            try:
                CostProgram.compile(((c["metadataKey"], "CEL", c["cel"]),), route_name)
            except CostCompileError as e:
                diags.error(f"invalid CEL expression {c['cel']!r}: {e.message}", field=f"spec.llmRequestCosts[{k}].cel",
                            **where)
    n = len(spec.get("rules") or [])
    line = f"AIGatewayRoute {route_name}: {n} rule{'s' if n != 1 else ''} -> {', '.join(described) or 'nothing'}"
    policy = backend_traffic_policy(route, objs)
    scope = backend_header_scope(route, options.allow_backend_header, diags)
    info = RouteInfo(
        route_name, n, costs,
        retry=retry_policy(route, policy, options.retries, diags),
        outlier=outlier_policy(policy, diags),
        backend_header=scope,
        header_refs=_header_refs(route, scope, rules[len(rules) - n:], backends),
    )
    return info, line


def _header_refs(route: Resource, scope: BackendHeader, rules: list[Rule], backends: BackendResolver) -> tuple[BackendRef, ...]:
    """What a client may pick with the backend header: each allowed backend with neutral settings
    (no model override, backend-level mutations only, the default timeout)."""
    if scope == BackendHeader.OFF:
        return ()
    indices = [r.backend for rule in rules for r in rule.refs]
    if scope == BackendHeader.NAMESPACE:
        indices += [backends.resolve(sb.namespace, sb.name) for sb in backends.objs.all("AIServiceBackend")
                    if sb.namespace == route.namespace]
    out = []
    for index in dict.fromkeys(indices):  # unique, in order
        backend = backends.backends[index]
        if backend.error is not None:
            continue
        ns, _, name = backend.name.partition("/")
        sb = backends.objs.get("AIServiceBackend", ns, name)
        h_set, h_remove, b_set, b_remove = checked_mutations(sb.spec if sb else None, "spec", Diagnostics(), {})
        out.append(BackendRef(index, 1, 0, None, backends.timeouts.get(index, DEFAULT_TIMEOUT),
                              tuple(h_set.items()), tuple(sorted(h_remove)), tuple(b_set.items()),
                              tuple(sorted(b_remove))))
    return tuple(out)


def _describe(conds: tuple[HeaderCond, ...], model: str | None) -> str:
    parts = [f"{MODEL_HEADER}={model}"] if model is not None else []
    parts += [f"{c.name}{'=' if c.kind == CondKind.EXACT else '~'}{c.value}" for c in conds]
    return "[" + " & ".join(parts) + "]" if parts else "* (catch-all)"


def _match_conds(headers: list[dict[str, Any]], path: str, diags: Diagnostics,
                 where: dict[str, str]) -> tuple[str | None, tuple[HeaderCond, ...]]:
    model = None
    conds: list[HeaderCond] = []
    for k, h in enumerate(headers):
        name = h["name"].lower()
        kind = CondKind.REGEX if h.get("type") == "RegularExpression" else CondKind.EXACT
        value = h["value"]
        if not header_name_ok(name, f"{path}[{k}].name", diags, where):
            continue
        if kind == CondKind.REGEX:
            try:
                compile_full(value)
            except RegexError as e:
                diags.error(f"invalid regular expression {value!r}: {e}", field=f"{path}[{k}].value", **where)
                continue
        if model is None and kind == CondKind.EXACT and name == MODEL_HEADER:
            model = value
            if len(value) > MAX_MODEL_NAME:
                diags.warning(f"model name is {len(value)} characters long; the gateway refuses requests for "
                              f"models over {MAX_MODEL_NAME}, so this rule never matches", field=f"{path}[{k}].value",
                              **where)
        else:
            conds.append(HeaderCond(name, kind, value))
    return model, tuple(conds)


def _hostname_conds(hostnames: list[str]) -> tuple[HeaderCond, ...]:
    if not hostnames:
        return ()
    alternatives = "|".join(
        r"[^.]+\." + re.escape(h[2:]) if h.startswith("*.") else re.escape(h) for h in hostnames
    )
    return (HeaderCond("host", CondKind.REGEX, f"(?i:{alternatives})(:[0-9]+)?"),)


def _rule_timeout(rule_spec: dict[str, Any], path: str, diags: Diagnostics, where: dict[str, str]) -> float | None:
    text = (rule_spec.get("timeouts") or {}).get("request")
    for extra in ("backendRequest",):
        value = (rule_spec.get("timeouts") or {}).get(extra)
        if value is not None:
            _checked_duration(value, f"{path}.timeouts.{extra}", diags, where)
    return None if text is None else _checked_duration(text, f"{path}.timeouts.request", diags, where)


def _checked_duration(text: str, path: str, diags: Diagnostics, where: dict[str, str]) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        diags.error(str(e), field=path, **where)
        return DEFAULT_TIMEOUT


def _backend_ref(route: Resource, ref: dict[str, Any], path: str, rule_timeout: float | None,
                 backends: BackendResolver, diags: Diagnostics) -> BackendRef:
    where = {"file": route.file, "obj": route.ref}
    ns = ref.get("namespace") or route.namespace
    kind = ref.get("kind") or "AIServiceBackend"
    if kind == "AIServiceBackend":
        index = backends.resolve(ns, ref["name"])
        err = backends.backends[index].error
        if err is not None and backends.objs.get("AIServiceBackend", ns, ref["name"]) is None:
            diags.warning(err.message, field=f"{path}.name", **where)
    else:
        msg = f"{kind} {ns}/{ref['name']} backends are not supported yet"
        diags.warning(msg, field=f"{path}.kind", **where)
        index = backends.placeholder(f"{kind}:{ns}/{ref['name']}", 501, "backend_kind_not_supported", msg)
    sb = backends.objs.get("AIServiceBackend", ns, ref["name"]) if kind == "AIServiceBackend" else None
    # The AIServiceBackend's own edits were reported once already (compile_table).
    bh_set, bh_remove, bb_set, bb_remove = checked_mutations(sb.spec if sb else None, "spec", Diagnostics(), {})
    rh_set, rh_remove, rb_set, rb_remove = checked_mutations(ref, path, diags, where)
    timeout = rule_timeout if rule_timeout is not None else backends.timeouts.get(index, DEFAULT_TIMEOUT)
    weight = ref.get("weight", 1)
    priority = ref.get("priority", 0)
    if weight < 0 or priority < 0:
        diags.error("weight and priority must not be negative", field=path, **where)
    override = model_override(ref, path, diags, where)
    return BackendRef(
        backend=index,
        weight=weight,
        priority=priority,
        model_override=override,
        timeout=timeout,
        header_set=tuple({**bh_set, **rh_set}.items()),  # the route's value wins over the backend's
        header_remove=tuple(sorted(bh_remove | rh_remove)),
        body_set=tuple({**bb_set, **rb_set}.items()),
        body_remove=tuple(sorted(bb_remove | rb_remove)),
    )


def _add_default_route(options: CompileOptions, backends: BackendResolver, rules: list[Rule],
                       entries: list[_Entry], routes: list[RouteInfo], summary: list[str]) -> None:
    backend = backend_from_url(options.default_backend or "", options.default_api_key)
    index = backends.add(backend.name, backend)
    rules.append(Rule("modelyard/default", "default-backend", (BackendRef(index, 1, 0, None, DEFAULT_TIMEOUT),),
                      route_index=len(routes)))
    # Sorts after every configured entry: the default backend only takes what nothing else matched.
    entries.append(_Entry((1, (2, "", 0), 0, 0), len(rules) - 1, None, ()))
    routes.append(RouteInfo("modelyard/default", 1, retry=RetryPolicy(retries=options.retries)))
    summary.append(f"default backend {options.default_backend} -> * (every model no rule matches)")


def _parse_created(text: str | None, path: str, diags: Diagnostics, where: dict[str, str]) -> int | None:
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        diags.error(f"invalid RFC 3339 time {text!r}", field=path, **where)
        return None


def _created_default(route: Resource, options: CompileOptions) -> int:
    if route.created:
        try:
            return int(datetime.fromisoformat(route.created.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return int(options.mtimes.get(route.file, 0))


def _body_limit(objs: Objects, diags: Diagnostics) -> int:
    limits = []
    for pol in objs.all("ClientTrafficPolicy"):
        value = (pol.spec.get("connection") or {}).get("bufferLimit")
        if value is not None:
            try:
                limits.append(parse_quantity(value))
            except ValueError as e:
                diags.error(str(e), file=pol.file, obj=pol.ref, field="spec.connection.bufferLimit")
    return min(limits) if limits else DEFAULT_BODY_LIMIT


def _listener_limits(objs: Objects, diags: Diagnostics) -> ListenerLimits:
    """The strictest connection limit and HTTP timeouts of all ClientTrafficPolicies (one listener here)."""
    limits: list[int] = []
    received: list[float] = []
    idle: list[float] = []
    for pol in objs.all("ClientTrafficPolicy"):
        where = {"file": pol.file, "obj": pol.ref}
        value = ((pol.spec.get("connection") or {}).get("connectionLimit") or {}).get("value")
        if value is not None:
            if value < 1:
                diags.error("must be at least 1", field="spec.connection.connectionLimit.value", **where)
            else:
                limits.append(value)
        http = (pol.spec.get("timeout") or {}).get("http") or {}
        for key, found in (("requestReceivedTimeout", received), ("idleTimeout", idle)):
            if http.get(key) is not None:
                found.append(_checked_duration(http[key], f"spec.timeout.http.{key}", diags, where))
    return ListenerLimits(min(limits, default=None), min(received, default=None), min(idle, default=None))


def _listen_port(objs: Objects) -> int | None:
    for gw in objs.all("Gateway"):
        for listener in gw.spec.get("listeners") or []:
            if str(listener.get("protocol", "")).upper() in ("HTTP", "HTTPS"):
                return int(listener["port"])
    return None

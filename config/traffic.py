"""Per-route traffic policy: retries, passive health and the backend-selection header.

Sources, most specific first:
- an Envoy Gateway BackendTrafficPolicy whose targetRefs name the route (kind
  HTTPRoute or AIGatewayRoute; the Envoy AI Gateway names the HTTPRoute it
  generates after the route), else one that names a Gateway the route attaches to;
- the route's annotations, a Modelyard extension:
    modelyard.io/retries: "N"                      retries per request (0 disables)
    modelyard.io/backend-header: rules|namespace|off  the x-ai-gateway-backend header
- the global flags (`--retries`, `--allow-backend-header`), then the defaults:
  2 retries on connection failures, 5xx and 429; ejection after 5 consecutive
  failures for 30 s x recent ejections, at most 300 s.
"""

from __future__ import annotations

from typing import Any

from modelyard.config.backends import Objects
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import Resource
from modelyard.core.table import BackendHeader, OutlierPolicy, RetryPolicy
from modelyard.core.units import parse_duration

RETRIES_ANNOTATION = "modelyard.io/retries"
BACKEND_HEADER_ANNOTATION = "modelyard.io/backend-header"
_HEADER_SCOPES = {"rules": BackendHeader.RULES, "namespace": BackendHeader.NAMESPACE, "off": BackendHeader.OFF}
_ROUTE_KINDS = ("HTTPRoute", "AIGatewayRoute")


def backend_traffic_policy(route: Resource, objs: Objects) -> Resource | None:
    """The BackendTrafficPolicy that applies to `route`: one naming it beats one naming its Gateway."""
    gateways = {(p.get("namespace") or route.namespace, p["name"])
                for p in (route.spec.get("parentRefs") or route.spec.get("targetRefs") or [])
                if (p.get("kind") or "Gateway") == "Gateway"}
    by_gateway = None
    for pol in objs.all("BackendTrafficPolicy"):
        if pol.namespace != route.namespace:
            continue
        refs = list(pol.spec.get("targetRefs") or []) + ([pol.spec["targetRef"]] if pol.spec.get("targetRef") else [])
        for ref in refs:
            kind = ref.get("kind") or ""
            if kind in _ROUTE_KINDS and ref["name"] == route.name:
                return pol
            if kind == "Gateway" and (pol.namespace, ref["name"]) in gateways and by_gateway is None:
                by_gateway = pol
    return by_gateway


def _duration(value: Any, path: str, diags: Diagnostics, where: dict[str, str]) -> float:
    if value is None:
        return 0.0
    try:
        return parse_duration(str(value))
    except ValueError as e:
        diags.error(str(e), field=path, **where)
        return 0.0


def retry_policy(route: Resource, policy: Resource | None, default_retries: int, diags: Diagnostics) -> RetryPolicy:
    retry = RetryPolicy(retries=default_retries)
    text = (route.body.get("metadata") or {}).get("annotations", {}).get(RETRIES_ANNOTATION)
    if text is not None:
        if not str(text).strip().isdigit():
            diags.error(f"expected a number of retries, got {text!r}", file=route.file, obj=route.ref,
                        field=f"metadata.annotations[{RETRIES_ANNOTATION}]")
        else:
            retry = RetryPolicy(retries=int(text))
    spec = (policy.spec.get("retry") if policy is not None else None)
    if spec is None:
        return retry
    assert policy is not None
    where = {"file": policy.file, "obj": policy.ref}
    per_retry = spec.get("perRetry") or {}
    backoff = per_retry.get("backOff") or {}
    base = _duration(backoff.get("baseInterval"), "spec.retry.perRetry.backOff.baseInterval", diags, where)
    fields: dict[str, Any] = {
        "retries": spec.get("numRetries", 2),
        "per_priority": spec.get("numAttemptsPerPriority") or 0,
        "per_try": _duration(per_retry.get("timeout"), "spec.retry.perRetry.timeout", diags, where),
        "backoff": base,
        "backoff_max": _duration(backoff.get("maxInterval"), "spec.retry.perRetry.backOff.maxInterval", diags,
                                 where) or 10 * base,
    }
    retry_on = spec.get("retryOn")
    if retry_on is not None:
        triggers = set(retry_on.get("triggers") or [])
        codes = [int(c) for c in retry_on.get("httpStatusCodes") or []]
        if codes and "retriable-status-codes" not in triggers:
            triggers.add("retriable-status-codes")  # codes alone say what to retry
        fields.update(
            transport=bool(triggers & {"5xx", "gateway-error", "reset", "connect-failure", "refused-stream"}),
            any_5xx="5xx" in triggers,
            gateway_errors="gateway-error" in triggers,
            statuses=tuple(sorted(set(codes if "retriable-status-codes" in triggers else [])
                                  | ({409} if "retriable-4xx" in triggers else set()))),
        )
    if fields["retries"] < 0:
        diags.error("numRetries must not be negative", field="spec.retry.numRetries", **where)
    return RetryPolicy(**fields)


def outlier_policy(policy: Resource | None, diags: Diagnostics) -> OutlierPolicy:
    passive = ((policy.spec.get("healthCheck") or {}).get("passive") if policy is not None else None)
    if not passive:
        return OutlierPolicy()
    assert policy is not None
    where = {"file": policy.file, "obj": policy.ref}
    default = OutlierPolicy()
    # Every failure we see is a 5xx, a 429 or a failure to connect: the smallest threshold given decides.
    thresholds = [passive[k] for k in ("consecutive5XxErrors", "consecutiveGatewayErrors",
                                      "consecutiveLocalOriginFailures") if passive.get(k)]
    base = _duration(passive.get("baseEjectionTime"), "spec.healthCheck.passive.baseEjectionTime", diags, where)
    return OutlierPolicy(consecutive=max(1, min(thresholds)) if thresholds else default.consecutive,
                         base=base or default.base, max=max(default.max, base or 0.0))


def backend_header_scope(route: Resource, allow_globally: bool, diags: Diagnostics) -> BackendHeader:
    text = (route.body.get("metadata") or {}).get("annotations", {}).get(BACKEND_HEADER_ANNOTATION)
    if text is None:
        return BackendHeader.RULES if allow_globally else BackendHeader.OFF
    scope = _HEADER_SCOPES.get(str(text).strip().lower())
    if scope is None:
        diags.error(f"expected one of {', '.join(_HEADER_SCOPES)}, got {text!r}", file=route.file, obj=route.ref,
                    field=f"metadata.annotations[{BACKEND_HEADER_ANNOTATION}]")
        return BackendHeader.OFF
    return scope

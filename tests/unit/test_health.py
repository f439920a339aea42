"""The shared health board and the traffic policies compiled for each route (no processes)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from modelyard.config.compiler import CompileOptions, compile_table, with_health_slots
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import load_paths
from modelyard.core.health import HealthBoard
from modelyard.core.table import BackendHeader, OutlierPolicy
from tests.conftest import openai_backend, route


def board(tmp_path: Path) -> HealthBoard:
    return HealthBoard.create(str(tmp_path), slots=64)


def test_ejected_after_consecutive_failures_for_base_times_ejections(tmp_path: Path) -> None:
    b = board(tmp_path)
    slot = b.assign(["default/a|10.0.0.1:80"])["default/a|10.0.0.1:80"]
    policy = OutlierPolicy(consecutive=3, base=10.0, max=25.0)
    assert not b.failure(slot, 500, policy, now=100.0)
    b.success(slot)  # a success in between starts the count again
    assert not b.failure(slot, 500, policy, now=100.0)
    assert not b.failure(slot, 500, policy, now=100.0)
    assert b.failure(slot, 502, policy, now=100.0)
    assert b.ejected(slot, 109.9) and not b.ejected(slot, 110.1)
    # Failing again right after coming back doubles the ejection, up to the maximum.
    for _ in range(3):
        b.failure(slot, 0, policy, now=111.0)
    assert b.ejected(slot, 130.9) and not b.ejected(slot, 131.1)
    for _ in range(3):
        b.failure(slot, 0, policy, now=132.0)
    assert b.ejected(slot, 156.9) and not b.ejected(slot, 157.1)  # 3 x 10 s, capped at 25 s
    assert b.state(slot, now=140.0).total_ejections == 3


def test_healthy_for_long_enough_the_multiplier_starts_over(tmp_path: Path) -> None:
    b = board(tmp_path)
    slot = b.assign(["k"])["k"]
    policy = OutlierPolicy(consecutive=1, base=10.0)
    b.failure(slot, 500, policy, now=0.0)  # out until 10
    b.failure(slot, 500, policy, now=11.0)  # out until 31 (2 x 10)
    b.failure(slot, 500, policy, now=100.0)  # well after: 1 x 10 again
    assert not b.ejected(slot, 110.5)


def test_retry_after_ejects_at_once_for_that_long(tmp_path: Path) -> None:
    b = board(tmp_path)
    slot = b.assign(["k"])["k"]
    assert b.failure(slot, 429, OutlierPolicy(), now=0.0, eject_for=7.0)
    assert b.ejected(slot, 6.9) and not b.ejected(slot, 7.1)
    assert b.state(slot, now=1.0).last_status == 429


def test_slots_are_stable_across_assignments_and_attachments(tmp_path: Path) -> None:
    b = board(tmp_path)
    first = b.assign(["a", "b", "c"])
    assert len(set(first.values())) == 3
    again = HealthBoard.attach(b.path).assign(["c", "d", "a"])
    assert again["a"] == first["a"] and again["c"] == first["c"] and again["d"] not in first.values()
    # A full board leaves the rest untracked instead of sharing slots.
    small = HealthBoard.create(str(tmp_path), slots=2)
    assert sorted(small.assign(["x", "y", "z"]).values()) == [-1, 0, 1]


def _compile(tmp_path: Path, text: str, **options) -> tuple:
    (tmp_path / "c.yaml").write_text(text)
    diags = Diagnostics()
    loaded = load_paths([str(tmp_path)], diags, set())
    compiled = compile_table(loaded.resources, diags, CompileOptions(**options))
    return compiled.table, diags


def test_backend_traffic_policy_retry_and_passive_health(tmp_path: Path) -> None:
    table, diags = _compile(tmp_path, openai_backend("a", "a.internal", 80) + route("chat", "m", backend="a") + textwrap.dedent("""\
        ---
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: BackendTrafficPolicy
        metadata: {name: chat-retry, namespace: default}
        spec:
          targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: chat}]
          retry:
            numRetries: 4
            numAttemptsPerPriority: 1
            retryOn:
              triggers: [connect-failure, retriable-status-codes]
              httpStatusCodes: [503, 429]
            perRetry:
              timeout: 2s
              backOff: {baseInterval: 100ms, maxInterval: 1s}
          healthCheck:
            passive: {consecutive5XxErrors: 3, baseEjectionTime: 45s, interval: 2s, maxEjectionPercent: 100}
        """))
    assert not diags.errors, diags.errors
    retry, outlier = table.routes[0].retry, table.routes[0].outlier
    assert (retry.retries, retry.per_priority, retry.per_try, retry.backoff, retry.backoff_max) == (4, 1, 2.0, 0.1, 1.0)
    assert retry.transport and not retry.any_5xx and not retry.gateway_errors and retry.statuses == (429, 503)
    assert (outlier.consecutive, outlier.base) == (3, 45.0)


def test_defaults_annotations_and_the_global_flags(tmp_path: Path) -> None:
    text = (openai_backend("a", "a.internal", 80) + openai_backend("b", "b.internal", 80)
            + openai_backend("c", "c.internal", 80) + route("plain", "m1", backend="a") + "---\n"
            + route("scoped", "m2", backend="a").replace(
                "metadata: {name: scoped, namespace: default}",
                "metadata:\n  name: scoped\n  namespace: default\n  annotations:\n"
                "    modelyard.io/backend-header: namespace\n    modelyard.io/retries: '0'"))
    table, diags = _compile(tmp_path, text)
    assert not diags.errors, diags.errors
    plain, scoped = table.routes
    assert plain.retry.retries == 2 and plain.retry.any_5xx and 429 in plain.retry.statuses
    assert plain.backend_header == BackendHeader.OFF and plain.header_refs == ()
    assert scoped.retry.retries == 0 and scoped.backend_header == BackendHeader.NAMESPACE
    names = {table.backends[r.backend].name for r in scoped.header_refs}
    assert names == {"default/a", "default/b", "default/c"}

    table, _ = _compile(tmp_path, text, allow_backend_header=True, retries=5)
    plain = table.routes[0]
    assert plain.backend_header == BackendHeader.RULES and plain.retry.retries == 5
    assert {table.backends[r.backend].name for r in plain.header_refs} == {"default/a"}


def test_bad_policy_values_are_errors_naming_the_field(tmp_path: Path) -> None:
    _, diags = _compile(tmp_path, openai_backend("a", "a.internal", 80) + route("chat", "m", backend="a").replace(
        "metadata: {name: chat, namespace: default}",
        "metadata:\n  name: chat\n  namespace: default\n  annotations: {modelyard.io/backend-header: maybe}")
        + textwrap.dedent("""\
        ---
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: BackendTrafficPolicy
        metadata: {name: p, namespace: default}
        spec:
          targetRefs: [{kind: HTTPRoute, name: chat}]
          retry: {perRetry: {timeout: soon}}
        ---
        apiVersion: gateway.envoyproxy.io/v1alpha1
        kind: BackendTrafficPolicy
        metadata: {name: q, namespace: default}
        spec:
          targetRefs: [{kind: HTTPRoute, name: other}]
          retry: {retryOn: {triggers: [sometimes]}}
        """))
    fields = {d.field for d in diags.errors}
    assert "metadata.annotations[modelyard.io/backend-header]" in fields
    assert "spec.retry.perRetry.timeout" in fields
    assert any(f.startswith("spec.retry.retryOn.triggers") for f in fields), fields


def test_endpoints_get_health_slots(tmp_path: Path) -> None:
    table, _ = _compile(tmp_path, openai_backend("a", "a.internal", 80) + route("chat", "m", backend="a"))
    b = board(tmp_path)
    slotted = with_health_slots(table, b.assign)
    assert slotted.backends[0].endpoints[0].health >= 0
    assert with_health_slots(table, b.assign) == slotted

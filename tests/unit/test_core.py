"""Pure building blocks: matching, backend choice, the shared segment, sniffing, units."""

from __future__ import annotations

import random
import threading
from collections import Counter

import msgspec
import pytest

from modelyard.config.compiler import compile_table
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import Resource
from modelyard.core.router import PriorityGroup, Router
from modelyard.core.shm import TableSegment
from modelyard.core.sniff import SniffError, rewrite_body, sniff
from modelyard.core.table import BackendRef, decode_table, encode_table
from modelyard.core.units import parse_duration, parse_quantity


def _route(name: str, rules: list[dict], order: int = 0, created: str = "") -> Resource:
    body = {"apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "AIGatewayRoute",
            "metadata": {"name": name, "namespace": "default"}, "spec": {"rules": rules}}
    return Resource("AIGatewayRoute", body["apiVersion"], "default", name, body, "mem.yaml", order, created)


def _backend(name: str) -> list[Resource]:
    sb = {"apiVersion": "aigateway.envoyproxy.io/v1alpha1", "kind": "AIServiceBackend",
          "metadata": {"name": name}, "spec": {"schema": {"name": "OpenAI"},
                                               "backendRef": {"name": name, "kind": "Backend"}}}
    be = {"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "Backend", "metadata": {"name": name},
          "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": 9}}]}}
    return [Resource("AIServiceBackend", "", "default", name, sb, "mem.yaml", 100),
            Resource("Backend", "", "default", name, be, "mem.yaml", 101)]


def _model(value: str, kind: str = "Exact") -> dict:
    return {"type": kind, "name": "x-ai-eg-model", "value": value}


def _rule(backend: str, *headers: dict) -> dict:
    rule: dict = {"backendRefs": [{"name": backend}]}
    if headers:
        rule["matches"] = [{"headers": list(headers)}]
    return rule


def _router(routes: list[Resource], backends: tuple[str, ...] = ("a", "b", "c", "d")) -> Router:
    resources = list(routes)
    for b in backends:
        resources += _backend(b)
    diags = Diagnostics()
    table = compile_table(resources, diags).table
    assert not diags.errors, diags.errors
    return Router(decode_table(encode_table(table)))


def _served(router: Router, model: str, headers: dict[str, str] | None = None) -> str | None:
    rule = router.match(model, headers or {})
    if rule is None:
        return None
    return router.backends[rule.pick().backend].name


def test_header_matches_beat_catch_all_and_ties_keep_rule_order() -> None:
    router = _router([_route("r", [
        _rule("c"),  # catch-all first in the file, still last in precedence
        _rule("a", _model("gpt-4o")),
        _rule("b", _model("gpt-.*", "RegularExpression")),
        _rule("d", _model("gpt-4o-mini")),  # one header, like the regex: the earlier rule wins (Gateway API)
    ])])
    assert _served(router, "gpt-4o") == "default/a"
    assert _served(router, "gpt-3.5") == "default/b"
    assert _served(router, "gpt-4o-mini") == "default/b"
    assert _served(router, "llama") == "default/c"


def test_more_header_matches_win_then_older_route() -> None:
    tenant = {"type": "Exact", "name": "x-tenant", "value": "blue"}
    router = _router([
        _route("newer", [_rule("b", _model("m"))], order=2, created="2025-02-01T00:00:00Z"),
        _route("older", [_rule("a", _model("m"))], order=1, created="2025-01-01T00:00:00Z"),
        _route("tenant", [_rule("c", _model("m"), tenant)], order=3),
    ])
    assert _served(router, "m", {"x-tenant": "blue"}) == "default/c"
    assert _served(router, "m", {"x-tenant": "red"}) == "default/a"


def test_regex_is_a_full_match_and_header_names_are_case_insensitive() -> None:
    router = _router([_route("r", [
        _rule("a", {"type": "RegularExpression", "name": "X-Team", "value": "ml|infra"}),
    ])])
    assert _served(router, "any", {"x-team": "ml"}) == "default/a"
    assert _served(router, "any", {"x-team": "ml-ops"}) is None
    assert _served(router, "any", {}) is None


def test_no_limit_on_rules_and_matching_cost_does_not_scan_them() -> None:
    rules = [_rule("a", _model(f"model-{i}")) for i in range(5000)] + [_rule("b")]
    router = _router([_route("big", rules)])
    assert _served(router, "model-4999") == "default/a"
    assert _served(router, "other") == "default/b"
    # Each model's candidate list is cut after its unconditional entry: one entry each.
    assert all(len(v) == 1 for v in router.exact.values())
    assert len(router.generic) == 1


def test_weighted_pick_follows_weights_and_skips_zero() -> None:
    refs = [BackendRef(0, 80, 0, None, 60), BackendRef(1, 20, 0, None, 60)]
    group = PriorityGroup(0, refs)
    rng = random.Random(7)
    counts = Counter(group.pick(rng.random).backend for _ in range(10_000))
    assert abs(counts[0] / 10_000 - 0.8) < 0.02
    router = _router([_route("r", [{"backendRefs": [{"name": "a", "weight": 0}, {"name": "b", "weight": 1}]}])])
    assert {_served(router, "m") for _ in range(50)} == {"default/b"}


def test_lowest_priority_number_is_preferred() -> None:
    router = _router([_route("r", [{"backendRefs": [{"name": "a", "priority": 1}, {"name": "b", "priority": 0}]}])])
    assert {_served(router, "m") for _ in range(20)} == {"default/b"}


def test_segment_publish_and_read(tmp_path) -> None:
    seg = TableSegment.create(str(tmp_path / "seg"), capacity=1 << 16)
    reader = TableSegment.attach(seg.path)
    assert reader.generation() == 0
    seg.publish(b"first", 1)
    assert reader.read() == (1, b"first")
    seg.publish(b"second table", 2)
    assert reader.generation() == 2
    assert reader.read() == (2, b"second table")
    with pytest.raises(Exception, match="exceeds"):
        seg.publish(b"x" * (1 << 17), 3)
    assert reader.read() == (2, b"second table")


def test_segment_readers_never_see_a_torn_table(tmp_path) -> None:
    seg = TableSegment.create(str(tmp_path / "seg"), capacity=1 << 20)
    reader = TableSegment.attach(seg.path)
    payloads = [bytes([i]) * (1000 + 37 * i) for i in range(50)]
    seg.publish(payloads[0], 1)
    done = threading.Event()
    bad: list[int] = []

    def read_loop() -> None:
        while not done.is_set():
            gen, data = reader.read()
            if data != payloads[gen - 1]:
                bad.append(gen)

    t = threading.Thread(target=read_loop)
    t.start()
    for i in range(1, 50):
        for _ in range(20):
            seg.publish(payloads[i], i + 1)
    done.set()
    t.join()
    assert not bad


def test_sniff_reads_model_and_stream_only() -> None:
    s = sniff(b'{"messages": [{"role": "user", "content": "x"}], "model": "m", "stream": true, "n": 2}')
    assert (s.model, s.stream) == ("m", True)
    assert sniff(b'{"messages": []}').model is None
    for bad, code in ((b"{bad", "invalid_json"), (b"[1, 2]", "invalid_json"), (b"", "invalid_json")):
        with pytest.raises(SniffError) as e:
            sniff(bad)
        assert e.value.code == code


def test_rewrite_body_changes_top_level_fields_only() -> None:
    body = b'{"model": "a", "messages": [{"content": "k\\u00e9y"}], "service_tier": "default", "drop": 1}'
    out = msgspec.json.decode(rewrite_body(body, "b", (("service_tier", b'"scale"'),), ("drop",)))
    assert out == {"model": "b", "messages": [{"content": "kéy"}], "service_tier": "scale"}


def test_units() -> None:
    assert parse_duration("60s") == 60
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_quantity("50Mi") == 50 * 1024 * 1024
    assert parse_quantity("1k") == 1000
    assert parse_quantity(2048) == 2048
    for bad in ("10", "5x", ""):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_quantity("lots")

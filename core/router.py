"""Matching a request to a rule and picking a backend, on a decoded routing table.

A worker builds one Router per table generation (RE2 regexes compiled, weights
accumulated) and every request reads it without allocating much: an exact-model
dict lookup, then a merge of two short precedence-ordered lists.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any, Protocol

from modelyard.core.regex import compile_full
from modelyard.core.table import MODEL_HEADER, Backend, BackendRef, CondKind, ErrorReply, Rule, Table

_END = 1 << 62
SLICE = 200  # items built between pauses: a few milliseconds of work


class HeaderSource(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...


# A compiled condition: (header name, test on the header value).
Cond = tuple[str, Callable[[str], Any]]


def _compile_cond(name: str, kind: CondKind, value: str) -> Cond:
    if kind == CondKind.EXACT:
        return name, value.__eq__
    # RE2, linear in the value's length; the watcher has checked the pattern and its size.
    return name, compile_full(value, None)


class PriorityGroup:
    __slots__ = ("priority", "refs", "cumulative", "total")

    def __init__(self, priority: int, refs: list[BackendRef]):
        self.priority = priority
        self.refs = refs
        self.cumulative = list(accumulate(r.weight for r in refs))
        self.total = self.cumulative[-1]

    def pick(self, rand: Callable[[], float] = random.random) -> BackendRef:
        if len(self.refs) == 1:
            return self.refs[0]
        return self.refs[bisect_right(self.cumulative, rand() * self.total)]


class RuleRuntime:
    __slots__ = ("rule", "index", "groups", "error")

    def __init__(self, index: int, rule: Rule, backends: tuple[Backend, ...]):
        self.rule = rule
        self.index = index
        self.error = rule.error
        usable = [r for r in rule.refs if r.weight > 0 and backends[r.backend].error is None]
        by_priority: dict[int, list[BackendRef]] = {}
        for ref in usable:
            by_priority.setdefault(ref.priority, []).append(ref)
        self.groups = [PriorityGroup(p, by_priority[p]) for p in sorted(by_priority)]
        if not self.groups and self.error is None:
            self.error = _unusable_error(rule, backends)

    def pick(self) -> BackendRef:
        """A backend by weight within the most preferred priority (failover comes with health)."""
        return self.groups[0].pick()


def _unusable_error(rule: Rule, backends: tuple[Backend, ...]) -> ErrorReply:
    # Report the most specific reason: a backend's own error (missing object,
    # unsupported schema) beats a generic "nothing to route to".
    for ref in rule.refs:
        err = backends[ref.backend].error
        if err is not None:
            return err
    return ErrorReply(503, "no_backend", f"rule {rule.name} of route {rule.route} has no backend with a weight above 0")


class Router:
    __slots__ = ("table", "entries", "exact", "generic", "rules", "backends")

    def __init__(self, table: Table):
        for _ in self.build(table):
            pass

    def build(self, table: Table) -> Iterator[None]:
        """Fill the router, pausing (yielding) every SLICE items so that a worker can build
        a big table between requests instead of stopping them all for its whole length."""
        self.table = table
        self.backends = table.backends
        self.rules = []
        for i, r in enumerate(table.rules):
            self.rules.append(RuleRuntime(i, r, table.backends))
            if i % SLICE == SLICE - 1:
                yield
        self.entries = []
        for k, e in enumerate(table.entries):
            self.entries.append((self.rules[e.rule], tuple(_compile_cond(c.name, c.kind, c.value) for c in e.conds)))
            if k % SLICE == SLICE - 1:
                yield
        self.exact = table.exact
        self.generic = table.generic

    def match(self, model: str, headers: HeaderSource) -> RuleRuntime | None:
        """The highest-precedence rule whose conditions all hold, or None."""
        exact = self.exact.get(model, ())
        generic = self.generic
        i = j = 0
        n_exact, n_generic = len(exact), len(generic)
        entries = self.entries
        while i < n_exact or j < n_generic:
            a = exact[i] if i < n_exact else _END
            b = generic[j] if j < n_generic else _END
            if a < b:
                idx = a
                i += 1
            else:
                idx = b
                j += 1
            rule, conds = entries[idx]
            for name, test in conds:
                value = model if name == MODEL_HEADER else headers.get(name)
                if value is None or not test(value):
                    break
            else:
                return rule
        return None

    def model_names(self) -> list[str]:
        return [m.id for m in self.table.models]

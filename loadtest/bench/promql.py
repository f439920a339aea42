"""A small PromQL evaluator over scraped samples, for rendering the Grafana dashboard without Prometheus.

It covers the subset that `k8s/grafana/modelyard-dashboard.json` uses, evaluated
the way Prometheus does it:

- selectors `name{label="v", label!="v", label=~"re", label!~"re"}` (regexes fully
  anchored), instant (the latest sample at most 5 minutes old) or ranged `[10s]`;
- `rate` and `increase` with Prometheus's extrapolation to the window's edges and
  counter-reset handling;
- `histogram_quantile` with linear interpolation inside the bucket that holds the
  rank, the lowest bucket starting at 0 and the `+Inf` bucket answering the highest
  finite bound;
- `sum`, `max`, `min`, `avg`, `count` with `by (...)` or `without (...)`, before or
  after the argument;
- `+ - * /` between numbers and vectors, one-to-one or with `on`/`ignoring` and
  `group_left`/`group_right`.

Functions, aggregations and arithmetic drop the metric name, as in Prometheus.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs, __name__ included while it is kept
Vector = dict[Labels, float]

LOOKBACK = 300.0
AGGREGATIONS = {"sum", "max", "min", "avg", "count"}
FUNCTIONS = {"rate", "increase", "histogram_quantile", "abs", "clamp_min", "clamp_max"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class PromQLError(ValueError):
    pass


def parse_duration(text: str) -> float:
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise PromQLError(f"bad duration {text!r}")
    return total


# --- syntax ------------------------------------------------------------------


@dataclass
class Num:
    value: float


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # (label, op, value)
    range: float | None = None


@dataclass
class Call:
    func: str
    args: list


@dataclass
class Agg:
    op: str
    expr: object
    by: list[str] | None = None
    without: list[str] | None = None


@dataclass
class Binary:
    op: str
    left: object
    right: object
    on: list[str] | None = None
    ignoring: list[str] | None = None
    group: str | None = None  # "left" or "right"


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<num>\d+\.\d*|\.\d+|\d+(?:[eE][-+]?\d+)?)(?![a-zA-Z_])
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<range>\[[^\]]*\])
    | (?P<op>=~|!~|!=|==|=|[-+*/(){},])
    )""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise PromQLError(f"cannot parse {text[pos:pos + 30]!r} in {text!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class _Parser:

    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        k, v = self.peek()
        if (value is not None and v != value) or (kind is not None and k != kind):
            raise PromQLError(f"expected {value or kind}, got {v or 'end'!r} in {self.text!r}")
        self.i += 1
        return v

    def parse(self) -> object:
        node = self.expr(0)
        if self.peek()[0] != "eof":
            raise PromQLError(f"unexpected {self.peek()[1]!r} in {self.text!r}")
        return node

    def labels(self) -> list[str]:
        self.take("(")
        names: list[str] = []
        while self.peek()[1] != ")":
            names.append(self.take(kind="ident"))
            if self.peek()[1] == ",":
                self.take(",")
        self.take(")")
        return names

    def expr(self, min_prec: int) -> object:
        left = self.unary()
        while True:
            k, v = self.peek()
            prec = _PRECEDENCE.get(v) if k == "op" else None
            if prec is None or prec < min_prec:
                return left
            self.take()
            node = Binary(v, left, None)
            if self.peek()[1] in ("on", "ignoring"):
                kind = self.take()
                setattr(node, kind, self.labels())
            if self.peek()[1] in ("group_left", "group_right"):
                node.group = self.take()[6:]
                if self.peek()[1] == "(":
                    self.labels()  # extra labels to copy: not needed by the dashboard
            node.right = self.expr(prec + 1)
            left = node

    def unary(self) -> object:
        k, v = self.peek()
        if k == "num":
            self.take()
            return Num(float(v))
        if v == "-":
            self.take()
            return Binary("*", Num(-1.0), self.unary())
        if v == "(":
            self.take()
            node = self.expr(0)
            self.take(")")
            return node
        if k != "ident":
            raise PromQLError(f"unexpected {v or 'end'!r} in {self.text!r}")
        if v in AGGREGATIONS and self.peek(1)[1] in ("(", "by", "without"):
            return self.aggregation()
        if v in FUNCTIONS and self.peek(1)[1] == "(":
            self.take()
            self.take("(")
            args = [self.expr(0)]
            while self.peek()[1] == ",":
                self.take(",")
                args.append(self.expr(0))
            self.take(")")
            return Call(v, args)
        return self.selector()

    def aggregation(self) -> Agg:
        node = Agg(self.take(), None)
        if self.peek()[1] in ("by", "without"):
            setattr(node, self.take(), self.labels())
        self.take("(")
        node.expr = self.expr(0)
        self.take(")")
        if self.peek()[1] in ("by", "without"):
            setattr(node, self.take(), self.labels())
        return node

    def selector(self) -> Selector:
        node = Selector(self.take(kind="ident"), [])
        if self.peek()[1] == "{":
            self.take("{")
            while self.peek()[1] != "}":
                label = self.take(kind="ident")
                op = self.take(kind="op")
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"bad matcher operator {op!r} in {self.text!r}")
                raw = self.take(kind="str")
                node.matchers.append((label, op, bytes(raw[1:-1], "utf-8").decode("unicode_escape")))
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("}")
        if self.peek()[0] == "range":
            node.range = parse_duration(self.take()[1:-1].strip())
        return node


def parse(text: str) -> object:
    return _Parser(text).parse()


def metric_names(node: object) -> set[str]:
    """Every metric name a parsed expression selects."""
    if isinstance(node, Selector):
        return {node.name}
    if isinstance(node, Call):
        return set().union(*(metric_names(a) for a in node.args))
    if isinstance(node, Agg):
        return metric_names(node.expr)
    if isinstance(node, Binary):
        return metric_names(node.left) | metric_names(node.right)
    return set()


# --- samples -----------------------------------------------------------------


@dataclass
class Series:
    labels: Labels
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


class Store:
    """Samples from successive scrapes, indexed by metric name."""

    def __init__(self) -> None:
        self.by_name: dict[str, dict[Labels, Series]] = {}
        self.scrape_times: list[float] = []

    def add(self, t: float, samples: Iterable[tuple[str, dict[str, str], float]]) -> None:
        self.scrape_times.append(t)
        for name, labels, value in samples:
            key = tuple(sorted({**labels, "__name__": name}.items()))
            family = self.by_name.setdefault(name, {})
            s = family.get(key)
            if s is None:
                s = family[key] = Series(key)
            s.times.append(t)
            s.values.append(value)

    def add_text(self, t: float, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.add(t, ((s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples))

    def select(self, sel: Selector) -> list[Series]:
        tests = []
        for label, op, value in sel.matchers:
            if op in ("=~", "!~"):
                rx = re.compile(value)
                tests.append((label, op == "=~", lambda v, rx=rx: rx.fullmatch(v) is not None))
            else:
                tests.append((label, op == "=", lambda v, value=value: v == value))
        out = []
        for s in self.by_name.get(sel.name, {}).values():
            d = dict(s.labels)
            if all(fn(d.get(label, "")) == want for label, want, fn in tests):
                out.append(s)
        return out


# --- evaluation --------------------------------------------------------------


def _drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != "__name__")


def extrapolated_rate(times: list[float], values: list[float], start: float, end: float, is_rate: bool) -> float | None:
    """Prometheus's extrapolatedRate for a counter, over the samples in (start, end]."""
    if len(times) < 2:
        return None
    delta, prev = 0.0, values[0]
    for v in values[1:]:
        if v < prev:  # a counter reset: the counter started again from 0
            delta += prev
        prev = v
    delta += values[-1] - values[0]
    sampled = times[-1] - times[0]
    if sampled <= 0:
        return None
    average = sampled / (len(times) - 1)
    to_start, to_end = times[0] - start, end - times[-1]
    if delta > 0 and values[0] >= 0:
        to_zero = sampled * (values[0] / delta)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    result = delta * (interval / sampled)
    return result / (end - start) if is_rate else result


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over (upper bound, cumulative count) pairs."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if not buckets or buckets[-1][0] != math.inf or len(buckets) < 2:
        return math.nan
    counts = []
    for _, c in buckets:  # force monotonic counts, as Prometheus does
        counts.append(max(c, counts[-1]) if counts else c)
    total = counts[-1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end = (0.0, buckets[0][0]) if b == 0 else (buckets[b - 1][0], buckets[b][0])
    count = counts[b] - (counts[b - 1] if b > 0 else 0.0)
    rank -= counts[b - 1] if b > 0 else 0.0
    return start + (end - start) * (rank / count)


class Evaluator:
    def __init__(self, store: Store):
        self.store = store

    def instant(self, node: object, t: float) -> Vector | float:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Selector):
            if node.range is not None:
                raise PromQLError("a range vector outside a function")
            out: Vector = {}
            for s in self.store.select(node):
                i = bisect_right(s.times, t) - 1
                if i >= 0 and t - s.times[i] <= LOOKBACK:
                    out[s.labels] = s.values[i]
            return out
        if isinstance(node, Call):
            return self.call(node, t)
        if isinstance(node, Agg):
            return self.aggregate(node, t)
        if isinstance(node, Binary):
            return self.binary(node, t)
        raise PromQLError(f"cannot evaluate {node!r}")

    def _vector(self, node: object, t: float) -> Vector:
        v = self.instant(node, t)
        if not isinstance(v, dict):
            raise PromQLError("expected an instant vector")
        return v

    def call(self, node: Call, t: float) -> Vector:
        f = node.func
        if f in ("rate", "increase"):
            sel = node.args[0]
            if not isinstance(sel, Selector) or sel.range is None:
                raise PromQLError(f"{f} needs a range selector")
            start = t - sel.range
            out: Vector = {}
            for s in self.store.select(sel):
                lo, hi = bisect_right(s.times, start), bisect_right(s.times, t)
                r = extrapolated_rate(s.times[lo:hi], s.values[lo:hi], start, t, f == "rate")
                if r is not None:
                    out[_drop_name(s.labels)] = r
            return out
        if f == "histogram_quantile":
            q = self.instant(node.args[0], t)
            if isinstance(q, dict):
                raise PromQLError("histogram_quantile's first argument must be a number")
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for labels, value in self._vector(node.args[1], t).items():
                le = dict(labels).get("le")
                if le is None:
                    continue
                key = tuple(p for p in labels if p[0] not in ("le", "__name__"))
                groups.setdefault(key, []).append((float(le), value))
            return {key: bucket_quantile(q, b) for key, b in groups.items()}
        vec = self._vector(node.args[0], t)
        if f == "abs":
            return {_drop_name(k): abs(v) for k, v in vec.items()}
        bound = self.instant(node.args[1], t)
        assert isinstance(bound, float)
        pick = max if f == "clamp_min" else min
        return {_drop_name(k): pick(v, bound) for k, v in vec.items()}

    def aggregate(self, node: Agg, t: float) -> Vector:
        vec = self._vector(node.expr, t)
        groups: dict[Labels, list[float]] = {}
        for labels, value in vec.items():
            if node.by is not None:
                key = tuple(p for p in labels if p[0] in node.by)
            elif node.without is not None:
                drop = set(node.without) | {"__name__"}
                key = tuple(p for p in labels if p[0] not in drop)
            else:
                key = ()
            groups.setdefault(key, []).append(value)
        fn = {"sum": sum, "max": max, "min": min, "count": len, "avg": lambda xs: sum(xs) / len(xs)}[node.op]
        return {k: float(fn(vs)) for k, vs in groups.items()}

    @staticmethod
    def _apply(op: str, a: float, b: float) -> float:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
        return a / b

    def binary(self, node: Binary, t: float) -> Vector | float:
        left, right = self.instant(node.left, t), self.instant(node.right, t)
        op = node.op
        if not isinstance(left, dict) and not isinstance(right, dict):
            return self._apply(op, left, right)
        if not isinstance(left, dict):
            assert isinstance(right, dict)
            return {_drop_name(k): self._apply(op, left, v) for k, v in right.items()}
        if not isinstance(right, dict):
            return {_drop_name(k): self._apply(op, v, right) for k, v in left.items()}

        def key(labels: Labels) -> Labels:
            if node.on is not None:
                return tuple(p for p in labels if p[0] in node.on)
            drop = set(node.ignoring or ()) | {"__name__"}
            return tuple(p for p in labels if p[0] not in drop)

        if node.group == "right":  # many on the right, one on the left
            ones = {key(k): v for k, v in left.items()}
            return {_drop_name(k): self._apply(op, ones[key(k)], v) for k, v in right.items() if key(k) in ones}
        ones = {}
        for k, v in right.items():
            if key(k) in ones:
                raise PromQLError("many-to-many matching: the right side has duplicate series")
            ones[key(k)] = v
        out: Vector = {}
        for k, v in left.items():
            if key(k) in ones:
                # one-to-one: the matching labels (on) or all but the ignored ones; group_left: the left's
                out[_drop_name(k) if node.group == "left" else key(k)] = self._apply(op, v, ones[key(k)])
        return out


def legend(fmt: str, labels: Labels) -> str:
    """Grafana's legendFormat: {{label}} replaced by the series' value of it."""
    d = dict(labels)
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels if k != "__name__") + "}"
    return re.sub(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", lambda m: d.get(m.group(1), ""), fmt)

"""What each request used and cost: GenAI metrics, costs and the access log, after the answer is out.

The proxy fills an Exchange as the request goes; `Accountant.record` runs when
the response is complete. Usage the backend reported is used as it is. When it
reported none, the tokens are counted with the tokenizer in a thread, off the
event loop, and the result comes back to the loop to be recorded, marked as
estimated. Nothing here can fail a request: an accounting error is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from modelyard.core.usage import Usage
from modelyard.core import metrics, token_endpoints, token_estimate
from modelyard.core.settings import Settings, credential_labels

log = logging.getLogger("modelyard.accounting")

# The OpenTelemetry GenAI names for what the client asked for (each backend schema's is its provider's).
OPERATION_NAMES = {"/chat/completions": "chat", "/completions": "text_completion", "/embeddings": "embeddings",
                   "/messages": "chat"}
GENAI_OPERATIONS = frozenset(OPERATION_NAMES.values())  # what the GenAI metrics count; other lines are logged only
MAX_LABEL_VALUES = 100  # per label, per worker: then "_other", so clients cannot grow the series count
MAX_SERIES_CACHE = 10_000  # label tuples kept for reuse
MAX_LABEL_LEN = 256  # characters of a label value: longer ones (a 1 MB model name) become "_invalid"
MAX_KEPT = 1 << 20  # bytes of a usage-less answer kept for counting its tokens
MAX_LOGGED = 256  # characters of a client-sent method, path or model name logged (the app bounds method and path)


class Exchange:
    """One request and its answer, filled in as it goes (by the router, the proxy, the relay) and
    recorded by the accountant when it ends; its field names are the access log's."""

    __slots__ = ("client", "started", "method", "path", "route", "rule", "backend", "provider", "operation", "model",
                 "request_model", "response_model", "status", "stream", "first_byte", "ended", "usage", "retries", "error",
                 "request_body", "answer", "labels", "costs")

    def __init__(self, started: float, operation: str, client: str = "openai"):
        self.client = client  # the API the client speaks: "openai" or "anthropic"
        self.started = started
        self.method = self.path = ""
        self.operation = operation
        self.route = self.rule = self.backend = self.model = ""
        self.provider = ""
        self.request_model: str | None = None
        self.response_model: str | None = None
        self.status = 0
        self.stream = False
        self.first_byte: float | None = None  # when the first streamed chunk went to the client
        self.ended = 0.0
        self.usage: Usage | None = None
        self.retries = 0
        self.error: str | None = None  # the gateway's error code, when it answered an error itself
        self.request_body = b""
        self.answer: list[bytes] | None = None  # the answer's bytes, kept only while no usage was seen
        self.labels: tuple[str, ...] = ()  # values of the operator's header labels
        self.costs: Any = None  # the route's CostProgram, if it has llmRequestCosts


class _Bounded:
    """Label values as given while there are few; past the limit, new ones become `_other`."""

    def __init__(self, known: set[str]):
        self.known = known
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        if value in self.known or value in self.seen:
            return value
        if len(value) > MAX_LABEL_LEN or not value.isprintable():
            return "_invalid"  # never stored, and no control byte (CR, NUL) reaches the exposition
        if len(self.seen) < MAX_LABEL_VALUES:
            self.seen.add(value)
            return value
        return "_other"


class AccessLog:
    """JSON lines, written by a thread in batches so that a slow stdout never stalls the loop."""

    def __init__(self, target: str):
        self.fd = 1 if target == "-" else os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lines: deque[bytes] = deque()
        self.wake = threading.Event()
        threading.Thread(target=self._write, daemon=True, name="access-log").start()

    def add(self, line: bytes) -> None:
        self.lines.append(line)

    def _write(self) -> None:
        while True:
            self.wake.wait(0.1)
            self.flush()

    def flush(self) -> None:
        lines = self.lines
        if not lines:
            return
        batch = []
        while lines:
            batch.append(lines.popleft())
        data = b"".join(batch)
        while data:
            try:
                data = data[os.write(self.fd, data):]
            except InterruptedError:
                continue
            except OSError:
                return  # stdout went away: the lines are lost, the gateway goes on


_encode = msgspec.json.Encoder().encode


def _long(key: tuple[Any, ...]) -> bool:
    return any(isinstance(v, str) and len(v) > MAX_LABEL_LEN for v in (*key[:5], *key[5]))


class Accountant:
    def __init__(self, access_log: str, header_labels: list[tuple[str, str]], counting: Any = None):
        self.log = AccessLog(access_log) if access_log != "off" else None
        self.header_labels = header_labels  # (request header, label name)
        self.genai = metrics.genai([label for _, label in header_labels])
        self.counting = counting  # a RemoteCounter (the control process's token service) or LocalCounting
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.models = _Bounded(set())
        self._series: dict[tuple[Any, ...], tuple[tuple[str, ...], ...]] = {}
        self.header_values = [_Bounded(set()) for _ in header_labels]
        self.withheld: frozenset[str] = frozenset()  # header labels that carry client keys: left empty

    def withhold(self, carrying: frozenset[str]) -> None:
        """Leave empty the labels of headers that carry client keys in this table (the control process
        logs which)."""
        self.withheld = frozenset(credential_labels(self.header_labels, carrying))

    def known_models(self, models: set[str]) -> None:
        self.models = _Bounded(models)
        self._series = {}

    def header_label_values(self, headers: Any) -> tuple[str, ...]:
        if not self.header_labels:
            return ()
        withheld = self.withheld
        return tuple("" if name in withheld else bound(headers.get(name) or "")
                     for (name, _), bound in zip(self.header_labels, self.header_values))

    def record(self, o: Exchange) -> None:
        o.ended = time.perf_counter()
        metrics.observe(o.route, o.backend, o.status, o.ended - o.started)
        if not o.backend or o.operation not in GENAI_OPERATIONS:
            # Answered by the gateway before any backend, or not a generation: nothing to count.
            if self.log is not None:
                self.log.add(access_line(o, {}) + b"\n")
            return
        if o.usage is None and o.status < 400 and self.counting is not None and self.loop is not None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="token-count")
            future = self._pool.submit(self._estimate, o)
            future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._finish, o))  # type: ignore[union-attr]
            return
        self._finish(o)

    def _estimate(self, o: Exchange) -> None:
        try:
            o.usage = self.counting.estimate(o.request_model or o.model, o.request_body, b"".join(o.answer or ()),
                                             o.stream, o.operation)
        except Exception:
            log.exception("could not count the tokens of a request to %s", o.backend)

    def _finish(self, o: Exchange) -> None:
        try:
            self._account(o)
        except Exception:
            log.exception("accounting failed for a request to %s", o.backend)

    def _series_for(self, key: tuple[Any, ...]) -> tuple[tuple[str, ...], ...]:
        """Label values for one combination of request facts, bounded, built once and reused."""
        operation, provider, original, requested, answered, extra = key
        model = self.models
        labels = (operation, provider, model(original), model(requested), model(answered), *extra)
        if len(self._series) >= MAX_SERIES_CACHE:
            self._series.clear()
        series = self._series[key] = (labels, (*labels, "input"), (*labels, "output"))
        return series

    def _account(self, o: Exchange) -> None:
        usage = o.usage
        costs: dict[str, int] = {}
        if o.costs is not None and usage is not None:
            costs = o.costs.evaluate(usage, o.request_model or o.model, o.backend, o.route)
            for key, value in costs.items():
                metrics.COSTS.inc((o.route, key), value)
        if usage is not None and usage.estimated:
            metrics.ESTIMATED.inc((o.route, o.backend))
        key = (o.operation, o.provider, o.model, o.request_model, o.response_model, o.labels)
        series = self._series.get(key)
        if series is None:
            series = self._series_for(key)
            if _long(key):
                del self._series[key]  # a huge name is not kept as a cache key either
        labels, input_labels, output_labels = series
        g = self.genai
        duration = o.ended - o.started
        g.duration.observe((*labels, _error_type(o)), duration)
        if usage is not None:
            g.tokens.observe(input_labels, usage.input_tokens)
            g.tokens.observe(output_labels, usage.output_tokens)
            for kind, n in (("cached_input", usage.cached_input_tokens),
                            ("cache_creation_input", usage.cache_creation_input_tokens),
                            ("reasoning", usage.reasoning_tokens)):
                if n:
                    g.tokens.observe((*labels, kind), n)
        if o.first_byte is not None:
            g.ttft.observe(labels, o.first_byte - o.started)
            if usage is not None and usage.output_tokens > 1:
                g.tpot.observe(labels, (o.ended - o.first_byte) / (usage.output_tokens - 1))
        if self.log is not None:
            self.log.add(access_line(o, costs) + b"\n")


def _error_type(o: Exchange) -> str:
    if o.status < 400:
        return ""
    return o.error or str(o.status)


class _Tokens(msgspec.Struct):
    input: int
    output: int
    total: int
    cached_input: int
    cache_creation_input: int
    reasoning: int


class _AccessRecord(msgspec.Struct):
    """One access-log line; a struct encodes in about half the time of the equivalent dict."""

    time: str
    method: str
    path: str
    route: str
    rule: str
    backend: str
    operation: str
    model: str
    request_model: str | None
    response_model: str | None
    status: int
    stream: bool
    duration_ms: float
    ttft_ms: float | None
    tokens: _Tokens | None
    usage_estimated: bool
    costs: dict[str, int]
    retries: int
    error: str | None


_second = [-1, ""]  # the last whole second formatted, reused for every line within it


def _timestamp() -> str:
    now = time.time()
    sec = int(now)
    if sec != _second[0]:
        _second[0], _second[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_second[1]}.{int((now - sec) * 1000):03d}Z"


def _clip(name: str | None) -> str | None:
    """A model name as logged: past MAX_LABEL_LEN characters cut and marked, so a 1 MB name is not a 1 MB line."""
    return name if name is None or len(name) <= MAX_LABEL_LEN else f"{name[:MAX_LABEL_LEN]}...(+{len(name) - MAX_LABEL_LEN})"


def access_line(o: Exchange, costs: dict[str, int]) -> bytes:
    """One access-log record: what was asked, where it went, what it used; never a prompt or a key."""
    u = o.usage
    return _encode(_AccessRecord(
        _timestamp(), o.method, o.path, o.route, o.rule, o.backend, o.operation, _clip(o.model),
        _clip(o.request_model), _clip(o.response_model),
        o.status, o.stream, round((o.ended - o.started) * 1000, 3),
        round((o.first_byte - o.started) * 1000, 3) if o.first_byte is not None else None,
        None if u is None else _Tokens(u.input_tokens, u.output_tokens, u.total_tokens, u.cached_input_tokens,
                                       u.cache_creation_input_tokens, u.reasoning_tokens),
        bool(u is not None and u.estimated), costs, o.retries, o.error if o.status >= 400 else None,
    ))


class LocalCounting:
    """Counting in this process (where no token service runs, e.g. a gateway built in a test)."""

    def __init__(self, counter: Any, max_count_bytes: int):
        self.counter = counter
        self.max_count_bytes = max_count_bytes

    def tokenize(self, body: bytes) -> tuple[int, bytes]:
        return token_endpoints.tokenize(self.counter, body)

    def count_tokens(self, body: bytes) -> tuple[int, bytes]:
        return token_endpoints.count_tokens(self.counter, body)

    def estimate(self, model: str, request: bytes, answer: bytes, stream: bool, operation: str) -> Usage:
        return token_estimate.count_usage(self.counter, model, request, answer, stream, operation, self.max_count_bytes)


def accountant_from_settings(loop: asyncio.AbstractEventLoop, settings: Settings) -> Accountant:
    from modelyard.gateway.token_client import RemoteCounter

    if settings.tokens_socket:
        counting: Any = RemoteCounter(settings.tokens_socket)
    else:
        from modelyard.core.tokenizer import TokenCounter
        counting = LocalCounting(TokenCounter(settings.tokenizers), settings.max_count_bytes)
    accountant = Accountant(settings.access_log, list(settings.header_labels), counting)
    accountant.loop = loop
    return accountant

"""Prometheus metrics of the data plane, aggregated across worker processes.

Workers write through prometheus-client's multiprocess mode (one mmap file per
process in PROMETHEUS_MULTIPROC_DIR, set by the supervisor); the admin server
merges them. This module must be imported only where that variable is already
set (prometheus-client picks its value class at import). Label values come only from the configuration (route and backend
names) and the status code, so an unknown model never creates a new series.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from modelyard.core.health import HealthBoard
from modelyard.core.table import Table

_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# As the OpenTelemetry GenAI semantic conventions advise for these instruments.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
GENAI_LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_original_model", "gen_ai_request_model",
                "gen_ai_response_model"]

CONFIG_GENERATION = Gauge(
    "modelyard_config_generation", "Generation of the routing table in use.", multiprocess_mode="max",
)
CONFIG_RELOADS = Counter("modelyard_config_reloads_total", "Configuration loads, by result.", ["result"])


class _Pending:
    """Observations of one metric kept in process memory until the next flush.

    prometheus-client's multiprocess mode writes an mmap'ed file on every
    observation (a few microseconds each); a request makes several, so they are
    summed here per label set and written once per flush, which costs the same
    for one request or ten thousand.
    """

    def __init__(self, metric: Counter | Histogram, buckets: tuple[float, ...] = ()):
        self.metric = metric
        self.bounds = list(buckets)
        self.pending: dict[tuple[str, ...], list[float]] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        entry = self.pending.get(labels)
        if entry is None:
            self.pending[labels] = [amount]
        else:
            entry[0] += amount

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        entry = self.pending.get(labels)
        if entry is None:
            entry = self.pending[labels] = [0.0] * (len(self.bounds) + 2)  # sum, then one count per bucket
        entry[0] += value
        entry[1 + bisect_left(self.bounds, value)] += 1

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for labels, entry in pending.items():
            child = self.metric.labels(*labels)
            if not self.bounds:
                child.inc(entry[0])  # type: ignore[union-attr]
                continue
            # The same writes Histogram.observe makes, n at a time: its sum, and the first
            # bucket whose bound holds the value (buckets are made cumulative when collected).
            child._sum.inc(entry[0])  # type: ignore[union-attr]
            for i, n in enumerate(entry[1:]):
                if n:
                    child._buckets[i].inc(n)  # type: ignore[union-attr]


def _histogram(name: str, doc: str, labels: list[str], buckets: tuple[float, ...]) -> _Pending:
    return _Pending(Histogram(name, doc, labels, buckets=buckets), buckets)


REQUESTS = _Pending(Counter("modelyard_requests_total", "Requests answered, by route, backend and HTTP status.",
                            ["route", "backend", "status"]))
DURATION = _histogram("modelyard_request_duration_seconds", "Time from request to the last byte of the response.",
                      ["route", "backend"], _DURATION_BUCKETS)
RETRIES = _Pending(Counter(
    "modelyard_retries_total", "Attempts that failed and were tried again on the next eligible backend, "
    "by route, the backend that failed and why (a status code, or unreachable, reset, tls or timeout).",
    ["route", "backend", "reason"]))
ATTEMPTS = _Pending(Counter(
    "modelyard_upstream_attempts_total", "Requests sent upstream, retries included, by backend and how each "
    "ended (the status code, or unreachable, reset, tls or timeout before any response byte).",
    ["backend", "outcome"]))
ESTIMATED = _Pending(Counter(
    "modelyard_estimated_usage_total", "Requests whose token usage was counted with a tokenizer because "
    "the backend reported none, by route and backend.", ["route", "backend"]))
COSTS = _Pending(Counter("modelyard_request_cost_total", "Sum of llmRequestCosts, by route and metadataKey.",
                         ["route", "metadata_key"]))


class GenAI:
    """The OpenTelemetry GenAI client and server metrics, named as the Envoy AI Gateway exports
    them; created once the operator's extra header labels are known."""

    def __init__(self, extra_labels: list[str]):
        labels = GENAI_LABELS + extra_labels
        self.tokens = _histogram("gen_ai_client_token_usage", "Tokens used per request, by gen_ai_token_type.",
                                 labels + ["gen_ai_token_type"], _TOKEN_BUCKETS)
        self.duration = _histogram("gen_ai_server_request_duration_seconds",
                                   "Time from request to the last byte of the answer.", labels + ["error_type"],
                                   _DURATION_BUCKETS)
        self.ttft = _histogram("gen_ai_server_time_to_first_token_seconds",
                               "Time to the first streamed chunk of an answer.", labels, _TTFT_BUCKETS)
        self.tpot = _histogram("gen_ai_server_time_per_output_token_seconds",
                               "Time per output token after the first, for streamed answers.", labels,
                               _TPOT_BUCKETS)


_genai: GenAI | None = None


def genai(extra_labels: list[str]) -> GenAI:
    global _genai
    if _genai is None:
        _genai = GenAI(extra_labels)
    return _genai


def flush() -> None:
    """Write every pending observation of this process."""
    for p in (REQUESTS, DURATION, RETRIES, ATTEMPTS, ESTIMATED, COSTS):
        p.flush()
    if _genai is not None:
        for p in (_genai.tokens, _genai.duration, _genai.ttft, _genai.tpot):
            p.flush()


def observe(route: str, backend: str, status: int, seconds: float) -> None:
    REQUESTS.inc((route, backend, str(status)))
    DURATION.observe((route, backend), seconds)


class EndpointHealthCollector:
    """Each upstream endpoint's passive-health state, read from the shared board at scrape time,
    so the data plane pays nothing for it."""

    def __init__(self, table: Table | None, board: HealthBoard | None):
        self.table, self.board = table, board

    def collect(self) -> Iterator[Metric]:
        ejected = GaugeMetricFamily("modelyard_endpoint_ejected",
                                    "1 while an upstream endpoint is ejected by passive health checks.",
                                    labels=["backend", "endpoint"])
        total = CounterMetricFamily("modelyard_endpoint_ejections",
                                    "Times an upstream endpoint was ejected since the gateway started.",
                                    labels=["backend", "endpoint"])
        if self.table is not None and self.board is not None:
            now = time.monotonic()
            for backend in self.table.backends:
                for ep in backend.endpoints:
                    if ep.health < 0:
                        continue
                    state = self.board.state(ep.health, now)
                    labels = [backend.name, f"{ep.host}:{ep.port}"]
                    ejected.add_metric(labels, 1.0 if state.ejected_for > 0 else 0.0)
                    total.add_metric(labels, state.total_ejections)
        yield ejected
        yield total


def render(*collectors: object) -> bytes:
    """All processes' metrics in the Prometheus text format."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for c in collectors:
        registry.register(c)  # type: ignore[arg-type]
    return generate_latest(registry)

"""Prometheus metrics of the data plane, aggregated across worker processes.

Workers write through prometheus-client's multiprocess mode (one mmap file per
process in PROMETHEUS_MULTIPROC_DIR, set by the supervisor); the admin server
merges them. Label values come only from the configuration (route and backend
names) and the status code, so an unknown model never creates a new series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core.health import HealthBoard
from core.table import Table

REQUESTS = Counter(
    "modelyard_requests_total", "Requests answered, by route, backend and HTTP status.",
    ["route", "backend", "status"],
)
DURATION = Histogram(
    "modelyard_request_duration_seconds", "Time from request to the last byte of the response.",
    ["route", "backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
RETRIES = Counter(
    "modelyard_retries_total", "Attempts that failed and were tried again on the next eligible backend, "
    "by route, the backend that failed and why (a status code, or unreachable, reset, tls or timeout).",
    ["route", "backend", "reason"],
)
CONFIG_GENERATION = Gauge(
    "modelyard_config_generation", "Generation of the routing table in use.", multiprocess_mode="max",
)
CONFIG_RELOADS = Counter("modelyard_config_reloads_total", "Configuration loads, by result.", ["result"])

_children: dict[tuple[str, str, int], tuple[object, object]] = {}


def observe(route: str, backend: str, status: int, seconds: float) -> None:
    key = (route, backend, status)
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (REQUESTS.labels(route, backend, str(status)), DURATION.labels(route, backend))
    pair[0].inc()  # type: ignore[attr-defined]
    pair[1].observe(seconds)  # type: ignore[attr-defined]


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

"""Prometheus metrics of the data plane, aggregated across worker processes.

Workers write through prometheus-client's multiprocess mode (one mmap file per
process in PROMETHEUS_MULTIPROC_DIR, set by the supervisor); the admin server
merges them. Label values come only from the configuration (route and backend
names) and the status code, so an unknown model never creates a new series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter(
    "modelyard_requests_total", "Requests answered, by route, backend and HTTP status.",
    ["route", "backend", "status"],
)
DURATION = Histogram(
    "modelyard_request_duration_seconds", "Time from request to the last byte of the response.",
    ["route", "backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
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


def render() -> bytes:
    """All processes' metrics in the Prometheus text format."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)

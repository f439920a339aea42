"""Settings the supervisor hands to worker processes through their environment.

Kept apart from the modules that use them: importing prometheus-client before
PROMETHEUS_MULTIPROC_DIR is set would make every metric process-local, so the
supervisor and the CLI must be able to read these names without importing
modelyard.core.metrics or modelyard.gateway.accounting.
"""

from __future__ import annotations

ACCESS_LOG_ENV = "MODELYARD_ACCESS_LOG"  # "-" (stdout, the default), "off", or a file path
HEADER_LABELS_ENV = "MODELYARD_HEADER_LABELS"  # JSON [[header, label], ...]
BODY_TIMEOUT_ENV = "MODELYARD_BODY_TIMEOUT"  # seconds a request body may take to arrive; 0 = no limit


MAX_COUNT_BYTES_ENV = "MODELYARD_MAX_COUNT_BYTES"  # request bytes the gateway's own token counting accepts
DEFAULT_MAX_COUNT_BYTES = 4 << 20  # about a million tokens of English: the largest context windows


def max_count_bytes() -> int:
    """The --max-count-bytes cap: the largest body /tokenize and count_tokens count here (413 over it),
    and the characters a usage estimate encodes before it extrapolates."""
    import os
    value = int(os.environ.get(MAX_COUNT_BYTES_ENV) or 0)
    return value if value > 0 else DEFAULT_MAX_COUNT_BYTES


def body_timeout() -> float | None:
    import os
    value = float(os.environ.get(BODY_TIMEOUT_ENV) or 0)
    return value if value > 0 else None


# Headers that carry credentials: as a label they would publish a client's key on /metrics.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie",
                                "x-aigw-api-key", "x-aigw-anthropic-api-key", "x-aigw-azure-api-key"})


def credential_labels(header_labels: list[tuple[str, str]], carrying: frozenset[str]) -> list[str]:
    """The --metrics-header headers that carry client keys in the current table (a BackendSecurityPolicy
    credentialOverride names any header): refused as labels, like CREDENTIAL_HEADERS, per reload."""
    return [header for header, _ in header_labels if header in carrying]


def header_label_arg(text: str) -> tuple[str, str]:
    """`--metrics-header x-tenant-id[=tenant]`: a request header and the metric label it becomes."""
    header, _, label = text.partition("=")
    header = header.strip().lower()
    label = (label.strip() or header).replace("-", "_")
    if not header or not label.replace("_", "").isalnum() or label[0].isdigit():
        raise ValueError(f"expected HEADER[=LABEL] with a Prometheus label name, got {text!r}")
    if header in CREDENTIAL_HEADERS:
        raise ValueError(f"{header!r} carries credentials and cannot be a metric label")
    return header, label

"""What the supervisor hands to the control process, the tokens process and the workers: one
Settings Struct, as JSON in one environment variable (MODELYARD_SETTINGS), decoded once per process.

Kept apart from the modules that use it: importing prometheus-client before
PROMETHEUS_MULTIPROC_DIR is set would make every metric process-local, so the
supervisor and the CLI must be able to build Settings without importing
modelyard.core.metrics or modelyard.gateway.accounting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

import msgspec

SETTINGS_ENV = "MODELYARD_SETTINGS"
DEFAULT_MAX_COUNT_BYTES = 4 << 20  # about a million tokens of English: the largest context windows


class SettingsError(ValueError):
    pass


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a process of a running gateway needs from the supervisor. "" for a path: none
    (a gateway built in a test: no segment to follow, counting in this process)."""

    # The shared segments (names in core.segments).
    table: str = ""  # the routing-table segment (core.shm.TableSegment)
    health_board: str = ""  # core.health.HealthBoard
    workers_dir: str = ""  # core.worker_registry's folder
    tokens_socket: str = ""  # the tokens process's Unix socket
    credentials: str = ""  # core.credentials.CredentialsSegment: the control process writes, workers read
    # What the workers account, log and bound (the `modelyard run` flags).
    access_log: str = "-"  # "-" (stdout), "off", or a file path
    header_labels: tuple[tuple[str, str], ...] = ()  # --metrics-header: (request header, metric label)
    tokenizers: tuple[tuple[str, str], ...] = ()  # --tokenizer: (model pattern, tokenizer path)
    # --max-count-bytes: the largest body /tokenize and count_tokens count here (413 over it), and the
    # characters a usage estimate encodes before it extrapolates.
    max_count_bytes: Annotated[int, msgspec.Meta(gt=0)] = DEFAULT_MAX_COUNT_BYTES
    body_timeout: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # seconds a request body may take; 0 = no limit
    log_level: str = "info"  # the tokens process's (the others get theirs at fork)

    def encode(self) -> str:
        return msgspec.json.encode(self).decode()

    def export(self) -> None:
        """Into this process's environment, for the processes it starts from now on."""
        os.environ[SETTINGS_ENV] = self.encode()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings in `environ`; the defaults where it has none. SettingsError for a bad value."""
        raw = environ.get(SETTINGS_ENV)
        if not raw:
            return cls()
        try:
            return _decoder.decode(raw)
        except msgspec.DecodeError as e:  # ValidationError included: it names the field (`$.max_count_bytes`)
            raise SettingsError(f"{SETTINGS_ENV}: {e}") from None


_decoder = msgspec.json.Decoder(Settings)
_current: tuple[str | None, Settings] | None = None


def current() -> Settings:
    """This process's settings, decoded once (again only if the variable changed: tests set it)."""
    global _current
    raw = os.environ.get(SETTINGS_ENV)
    if _current is None or _current[0] != raw:
        _current = (raw, Settings.from_env())
    return _current[1]


# Headers that carry credentials: as a label they would publish a client's key on /metrics.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie",
                                "x-aigw-api-key", "x-aigw-anthropic-api-key", "x-aigw-azure-api-key"})


def credential_labels(header_labels: list[tuple[str, str]] | tuple[tuple[str, str], ...],
                      carrying: frozenset[str]) -> list[str]:
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

"""Kubernetes-style durations and quantities, parsed once at compile time."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)([KMGTPE]i?|[kmgtpe]|)")
_SUFFIX = {
    "": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_duration(text: str) -> float:
    """Seconds in a Gateway API duration such as "60s", "1h30m" or "500ms"."""
    text = text.strip()
    if not _DURATION_FULL.fullmatch(text):
        raise ValueError(f"invalid duration {text!r} (expected e.g. 30s, 5m, 1h30m, 500ms)")
    return sum(float(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(text))


def parse_quantity(value: str | int) -> int:
    """Bytes in a Kubernetes quantity such as "50Mi", "1G" or 1048576."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _QUANTITY.fullmatch(str(value).strip())
    if not m:
        raise ValueError(f"invalid quantity {value!r} (expected e.g. 50Mi, 1Gi, 1048576)")
    return int(float(m.group(1)) * _SUFFIX[m.group(2)])

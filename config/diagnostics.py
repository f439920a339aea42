"""Errors and warnings about a configuration, each naming file, object and field."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error", "warning" or "note" (something skipped on purpose)
    message: str
    file: str = ""
    obj: str = ""  # kind/namespace/name
    field: str = ""  # e.g. spec.rules[0].backendRefs[1].weight

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.file, self.obj, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


class Diagnostics:
    """Collects what a load or compile found; errors make the config unusable."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, message: str, file: str = "", obj: str = "", field: str = "") -> None:
        self.items.append(Diagnostic("error", message, file, obj, field))

    def warning(self, message: str, file: str = "", obj: str = "", field: str = "") -> None:
        self.items.append(Diagnostic("warning", message, file, obj, field))

    def note(self, message: str, file: str = "", obj: str = "", field: str = "") -> None:
        self.items.append(Diagnostic("note", message, file, obj, field))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    @property
    def notes(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "note"]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest candidate, case-insensitively; '' when none is close."""
    by_lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.75)
    return f" (did you mean {by_lower[close[0]]}?)" if close else ""

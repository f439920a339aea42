"""Errors and warnings about a configuration, each naming file, object and field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" or "warning"
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

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

"""Configured values the data plane writes into requests, checked as the compiler reads them.

Each function reports what core/wire.py refuses against the file, object and field, and
returns only what may reach the wire, so the compiler builds the table from clean values.
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import Resource
from modelyard.core.wire import (
    header_name_problem, header_value_problem, host_problem, object_name_problem, owned_header_problem, text_problem,
)


def check_object_names(resources: list[Resource], diags: Diagnostics) -> None:
    """Names and namespaces the Kubernetes API server would refuse (backend names reach clients in a header)."""
    for r in resources:
        for field, value, is_namespace in (("metadata.name", r.name, False), ("metadata.namespace", r.namespace, True)):
            problem = object_name_problem(value, is_namespace) if value or not is_namespace else None
            if problem:  # a cluster-scoped kind has no namespace
                diags.error(problem, file=r.file, obj=r.ref, field=field)


def valid_hostnames(hostnames: list[str], diags: Diagnostics, where: dict[str, str]) -> list[str]:
    """A route's hostnames that are host names; they become a regex, so nothing else may go in."""
    valid = []
    for k, h in enumerate(hostnames):
        problem = host_problem(h.removeprefix("*."))
        if problem:
            diags.error(problem, field=f"spec.hostnames[{k}]", **where)
        else:
            valid.append(h)
    return valid


def header_name_ok(name: str, field: str, diags: Diagnostics, where: dict[str, str]) -> bool:
    """A match condition's header name; one that no request can carry is reported."""
    problem = header_name_problem(name)
    if problem:
        diags.error(problem, field=field, **where)
    return problem is None


def model_override(ref: dict[str, Any], path: str, diags: Diagnostics, where: dict[str, str]) -> str | None:
    """A backendRef's modelNameOverride: it becomes the body's model and, for Azure OpenAI, a path segment."""
    override = ref.get("modelNameOverride") or None
    problem = text_problem(override) if override is not None else None
    if problem:
        diags.error(f"modelNameOverride {problem}", field=f"{path}.modelNameOverride", **where)
        override = None
    return override


MAX_MUTATIONS = 16  # items per set/remove list, as Gateway API's HTTPHeaderFilter and the AI Gateway's CRDs allow


def checked_mutations(spec: dict[str, Any] | None, path: str, diags: Diagnostics,
                      where: dict[str, str]) -> tuple[dict[str, str], set[str], dict[str, bytes], set[str]]:
    """The header and body edits of a backendRef or AIServiceBackend; invalid ones are reported and left out."""
    headers = (spec or {}).get("headerMutation") or {}
    body = (spec or {}).get("bodyMutation") or {}
    for kind in ("headerMutation", "bodyMutation"):
        for op in ("set", "remove"):
            items = ((spec or {}).get(kind) or {}).get(op) or []
            if len(items) > MAX_MUTATIONS:
                diags.error(f"{len(items)} entries, over the limit of {MAX_MUTATIONS}", field=f"{path}.{kind}.{op}",
                            **where)
    h_set: dict[str, str] = {}
    for k, h in enumerate(headers.get("set") or []):
        name = h["name"].lower()
        problem = header_name_problem(h["name"]) or owned_header_problem(name)
        value_problem = header_value_problem(h["value"])
        if problem:
            diags.error(problem, field=f"{path}.headerMutation.set[{k}].name", **where)
        elif value_problem:
            diags.error(f"header {name}: {value_problem}", field=f"{path}.headerMutation.set[{k}].value", **where)
        elif name in h_set:
            diags.error(f"header {name} is set twice", field=f"{path}.headerMutation.set[{k}].name", **where)
        else:
            h_set[name] = h["value"]
    h_remove: set[str] = set()
    for k, name in enumerate(headers.get("remove") or []):
        problem = header_name_problem(name) or owned_header_problem(name)
        if problem:
            diags.error(problem, field=f"{path}.headerMutation.remove[{k}]", **where)
        else:
            h_remove.add(name.lower())
    b_set: dict[str, bytes] = {}
    for k, f in enumerate(body.get("set") or []):
        problem = text_problem(f["path"])
        if problem:
            diags.error(f"body field name {problem}", field=f"{path}.bodyMutation.set[{k}].path", **where)
            continue
        try:
            b_set[f["path"]] = msgspec.json.encode(msgspec.json.decode(f["value"]))
        except msgspec.DecodeError:
            diags.error(f"value {f['value']!r} is not valid JSON (a string needs quotes: '\"text\"')",
                        field=f"{path}.bodyMutation.set[{k}].value", **where)
    b_remove: set[str] = set()
    for k, name in enumerate(body.get("remove") or []):
        problem = text_problem(name)
        if problem:
            diags.error(f"body field name {problem}", field=f"{path}.bodyMutation.remove[{k}]", **where)
        else:
            b_remove.add(name)
    return h_set, h_remove, b_set, b_remove

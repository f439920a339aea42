"""Reading resources from YAML files and directories, validating each document by kind."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from config.diagnostics import Diagnostics
from config.kinds import KINDS
from config.schema import deprecated_fields, is_unknown_field, validate

YAML_SUFFIXES = (".yaml", ".yml", ".json")

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[valid-type, misc]
    """SafeLoader that keeps timestamps as strings, as Kubernetes' JSON round trip does."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in _Base.yaml_implicit_resolvers.items()
}


@dataclass
class Resource:
    kind: str
    api_version: str
    namespace: str
    name: str
    body: dict[str, Any]
    file: str
    order: int  # position across all files: ties in precedence break by it
    created: str = ""  # metadata.creationTimestamp when the object has one

    @property
    def spec(self) -> dict[str, Any]:
        return self.body.get("spec") or {}

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


@dataclass
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def expand_paths(paths: Iterable[str], diags: Diagnostics) -> list[str]:
    """The YAML files named by `paths`: files as given, directories searched recursively.

    Hidden entries are skipped, which also skips the `..data` copies that a
    Kubernetes ConfigMap volume keeps beside its files.
    """
    files: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for root, dirs, names in os.walk(path, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(
                    os.path.join(root, n) for n in sorted(names)
                    if n.endswith(YAML_SUFFIXES) and not n.startswith(".")
                )
        elif path.is_file():
            files.append(str(path))
        else:
            diags.error("no such file or directory", file=str(path))
    return files


def load_paths(paths: Iterable[str], diags: Diagnostics, unknown_kinds: set[str] | None = None) -> LoadResult:
    result = LoadResult(files=expand_paths(paths, diags))
    seen: dict[str, Resource] = {}
    for file in result.files:
        try:
            text = Path(file).read_text(encoding="utf-8")
            docs = list(yaml.load_all(text, Loader=_Loader))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(e, "problem", None) or str(e)
            diags.error(f"invalid YAML{where}: {problem}", file=file)
            continue
        except (OSError, UnicodeDecodeError) as e:
            diags.error(f"cannot read: {e}", file=file)
            continue
        for doc in _flatten(docs):
            res = _read_document(doc, file, len(result.resources), diags, unknown_kinds)
            if res is None:
                continue
            if res.ref in seen:
                # As `kubectl apply` of a folder does, the later definition replaces the earlier.
                earlier = seen[res.ref]
                diags.warning(f"defined again; this definition replaces the one in {earlier.file}", file=file, obj=res.ref)
                result.resources[result.resources.index(earlier)] = res
                res.order = earlier.order
            else:
                result.resources.append(res)
            seen[res.ref] = res
    return result


def _flatten(docs: list[Any]) -> Iterable[Any]:
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            yield from doc["items"]
        elif doc is not None:
            yield doc


def _read_document(doc: Any, file: str, order: int, diags: Diagnostics,
                   unknown_kinds: set[str] | None) -> Resource | None:
    if not isinstance(doc, dict):
        diags.error(f"a document must be a mapping, got {type(doc).__name__}", file=file)
        return None
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else "?"
    namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else "default"
    if not isinstance(kind, str) or not isinstance(api_version, str):
        diags.error("missing kind or apiVersion", file=file, obj=f"?/{namespace}/{name}")
        return None
    spec_kind = KINDS.get(kind)
    group = api_version.rpartition("/")[0]
    if spec_kind is None or group not in spec_kind.groups:
        key = f"{api_version}/{kind}"
        if unknown_kinds is None or key not in unknown_kinds:
            diags.warning(f"kind {kind} ({api_version}) is not one the gateway reads; skipped", file=file,
                          obj=f"{kind}/{namespace}/{name}")
            if unknown_kinds is not None:
                unknown_kinds.add(key)
        return None
    ref = f"{kind}/{namespace}/{name}"
    problems = list(validate(spec_kind.document, doc))
    for path, message in problems:
        diags.error(message, file=file, obj=ref, field=path)
    # Unknown fields leave the rest intact, so compiling it still finds further mistakes;
    # a wrong type or a missing field does not, and the object is left out.
    if not all(is_unknown_field(message) for _, message in problems):
        return None
    for path, advice in deprecated_fields(spec_kind.document, doc):
        diags.warning(advice, file=file, obj=ref, field=path)
    return Resource(kind, api_version, namespace, name, doc, file, order, meta.get("creationTimestamp") or "")

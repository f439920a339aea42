"""Reading resources from YAML files and directories, validating each document by kind."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelyard.config.diagnostics import Diagnostics
from modelyard.config.groups import CLUSTER_SCOPED, GROUPS, api_problem, did_you_mean
from modelyard.config.kinds import KINDS
from modelyard.config.schema import PRUNED, deprecated_fields, is_unknown_field, prune, validate

YAML_SUFFIXES = (".yaml", ".yml", ".json")
MAX_FILE_BYTES = 8 * 1024 * 1024  # per file; 10,000 rules take about 1.2 MB
MAX_NODES = 1_000_000  # values per file with YAML aliases expanded (10,000 rules: about 150,000)
MAX_DEPTH = 100  # nesting; Kubernetes objects stay far below it, and the checks that follow recurse

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
        # Cluster-scoped kinds (GatewayClass) have no namespace, which is kept as "".
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@dataclass
class LoadResult:
    resources: list[Resource] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def expand_paths(paths: Iterable[str], diags: Diagnostics) -> list[str]:
    """The YAML files named by `paths`: files as given, directories searched recursively.

    Hidden entries are skipped, which also skips the `..data` copies that a
    Kubernetes ConfigMap volume keeps beside its files. Symbolic links are
    followed, but each real directory is searched once and each real file read
    once, so links back into the tree (a loop) cost nothing.
    """
    files: list[str] = []
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()

    def add(file: str) -> None:
        try:
            st = os.stat(file)
        except OSError:
            return
        if (st.st_dev, st.st_ino) not in seen_files:
            seen_files.add((st.st_dev, st.st_ino))
            files.append(file)

    for p in paths:
        path = Path(p)
        if path.is_dir():
            for root, dirs, names in os.walk(path, followlinks=True):
                st = os.stat(root)
                if (st.st_dev, st.st_ino) in seen_dirs:
                    # Only a symbolic link (here or above) or a path given twice leads back to a folder.
                    dirs[:] = []
                    diags.warning(f"leads to {os.path.realpath(root)}, which is read already; not followed",
                                  file=root)
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for n in sorted(names):
                    if n.endswith(YAML_SUFFIXES) and not n.startswith("."):
                        add(os.path.join(root, n))
        elif path.is_file():
            add(str(path))
        else:
            diags.error("no such file or directory", file=str(path))
    return files


def load_paths(paths: Iterable[str], diags: Diagnostics, unknown_kinds: set[str] | None = None) -> LoadResult:
    result = LoadResult(files=expand_paths(paths, diags))
    seen: dict[str, Resource] = {}
    for file in result.files:
        docs = _parse(file, diags)
        if docs is None:
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


def _parse(file: str, diags: Diagnostics) -> list[Any] | None:
    """The file's documents, or None (reported) when it is unreadable, too big, not YAML or a YAML bomb."""
    try:
        size = os.stat(file).st_size
        if size > MAX_FILE_BYTES:
            diags.error(f"file is {size} bytes; the limit is {MAX_FILE_BYTES} (split it into several files)", file=file)
            return None
        with open(file, "rb") as f:
            text = f.read(MAX_FILE_BYTES + 1).decode("utf-8")
        if len(text) > MAX_FILE_BYTES:  # it grew since the stat
            diags.error(f"file is over the limit of {MAX_FILE_BYTES} bytes", file=file)
            return None
        docs = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        diags.error(f"invalid YAML{where}: {problem}", file=file)
        return None
    except (OSError, UnicodeDecodeError) as e:
        diags.error(f"cannot read: {e}", file=file)
        return None
    try:
        _count_nodes(docs, MAX_NODES)
    except _TooBig as e:
        diags.error(str(e), file=file)
        return None
    return docs


class _TooBig(Exception):
    pass


def _count_nodes(root: Any, limit: int) -> int:
    """How many values `root` has with every alias expanded, stopping past `limit`.

    The parser shares an aliased value instead of copying it, so a few KB of
    nested aliases ("billion laughs") parse quickly and then blow up whatever
    walks them. Counting each shared value once, times its uses, takes time in
    proportion to the file, not to the expansion.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(value: Any, depth: int) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise _TooBig(f"values nested more than {MAX_DEPTH} levels deep")
        key = id(value)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in active:
            raise _TooBig("an alias refers to a value that contains it (a recursive YAML alias)")
        active.add(key)
        children = value.values() if isinstance(value, dict) else value
        total = 1 + len(value)  # keys count too
        for child in children:
            total += size(child, depth + 1)
            if total > limit:
                raise _TooBig(f"more than {limit} values once YAML aliases are expanded; "
                              "the limit guards against alias bombs")
        active.discard(key)
        sizes[key] = total
        return total

    return size(root, 0)


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
    if kind is None and api_version is None and "metadata" not in doc:
        # A Helm values file, a dashboard: not a Kubernetes object, and not meant as one.
        diags.note("not a Kubernetes object (no apiVersion, kind or metadata); skipped", file=file)
        return None
    name = meta.get("name") if isinstance(meta.get("name"), str) else "?"
    cluster_scoped = kind in CLUSTER_SCOPED
    namespace = "" if cluster_scoped else meta.get("namespace") if isinstance(meta.get("namespace"), str) else "default"
    ref = f"{kind}/{name}" if cluster_scoped else f"{kind if isinstance(kind, str) else '?'}/{namespace}/{name}"
    if not isinstance(kind, str) or not isinstance(api_version, str):
        diags.error("missing kind or apiVersion", file=file, obj=ref)
        return None
    problem = api_problem(kind, api_version)
    if problem is not None:
        diags.error(problem, file=file, obj=ref, field="kind" if problem.startswith("unknown kind") else "apiVersion")
        return None
    spec_kind = KINDS.get(kind)
    group = api_version.rpartition("/")[0]
    if spec_kind is None or group not in spec_kind.groups:
        if spec_kind is not None and (hint := did_you_mean(group, GROUPS)):
            diags.error(f"kind {kind} is not in API group {group or 'core'}{hint}", file=file, obj=ref,
                        field="apiVersion")
            return None
        key = f"{api_version}/{kind}"
        if unknown_kinds is None or key not in unknown_kinds:
            diags.note(f"kind {kind} ({api_version}) is not one the gateway reads; skipped", file=file, obj=ref)
            if unknown_kinds is not None:
                unknown_kinds.add(key)
        return None
    problems = list(validate(spec_kind.document, doc))
    for path, message in problems:
        diags.error(message, file=file, obj=ref, field=path)
    if not all(is_unknown_field(message) for _, message in problems):
        # A wrong type or a missing field: the object is left without the parts that are
        # wrong, so compiling the rest still reports every further mistake in one pass;
        # the errors above keep the configuration from being used.
        doc = prune(spec_kind.document, doc)
        if doc is PRUNED:
            return None
    for path, advice in deprecated_fields(spec_kind.document, doc):
        diags.warning(advice, file=file, obj=ref, field=path)
    return Resource(kind, api_version, namespace, name, doc, file, order, meta.get("creationTimestamp") or "")

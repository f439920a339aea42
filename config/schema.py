"""A small structural schema language and a validator that reports every mistake, not the first.

Kinds are described with Obj/List/Map/Enum and leaf types; `validate` walks a
parsed YAML document against one and yields (field path, message) pairs for
unknown fields, wrong types and missing required fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Leaf:
    name: str  # "string", "integer", "boolean", "number", "int-or-string", "any"


STR = Leaf("string")
INT = Leaf("integer")
BOOL = Leaf("boolean")
NUM = Leaf("number")
INT_OR_STR = Leaf("int-or-string")
ANY = Leaf("any")


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]


@dataclass(frozen=True)
class List:
    item: Schema


@dataclass(frozen=True)
class Map:
    value: Schema


@dataclass(frozen=True)
class Obj:
    fields: dict[str, Schema]
    required: frozenset[str] = field(default_factory=frozenset)
    # Fields accepted for compatibility but deprecated: name -> advice.
    deprecated: dict[str, str] = field(default_factory=dict)


Schema = Union[Leaf, Enum, List, Map, Obj]


def obj(required: tuple[str, ...] = (), deprecated: dict[str, str] | None = None, **fields: Schema) -> Obj:
    return Obj(fields, frozenset(required), deprecated or {})


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _leaf_ok(leaf: Leaf, value: Any) -> bool:
    kind = _type_name(value)
    if leaf.name == "any":
        return True
    if leaf.name == "number":
        return kind in ("integer", "number")
    if leaf.name == "int-or-string":
        return kind in ("integer", "string")
    return kind == leaf.name


UNKNOWN_FIELD = "unknown field"  # the start of the message for a field the kind does not have


def is_unknown_field(message: str) -> bool:
    return message.startswith(UNKNOWN_FIELD)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate(schema: Schema, value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (field path, problem) in `value`; unknown fields and wrong types included."""
    if isinstance(schema, Leaf):
        if not _leaf_ok(schema, value):
            yield path, f"expected {schema.name}, got {_type_name(value)}"
    elif isinstance(schema, Enum):
        if value not in schema.values:
            yield path, f"must be one of {', '.join(schema.values)} (got {value!r})"
    elif isinstance(schema, List):
        if not isinstance(value, list):
            yield path, f"expected a list, got {_type_name(value)}"
            return
        for i, item in enumerate(value):
            yield from validate(schema.item, item, f"{path}[{i}]")
    elif isinstance(schema, Map):
        if not isinstance(value, dict):
            yield path, f"expected a map, got {_type_name(value)}"
            return
        for k, v in value.items():
            yield from validate(schema.value, v, _join(path, str(k)))
    else:
        if not isinstance(value, dict):
            yield path, f"expected an object, got {_type_name(value)}"
            return
        for key in schema.required:
            if key not in value:
                yield _join(path, key), "missing required field"
        for key, item in value.items():
            sub = schema.fields.get(key)
            if sub is None:
                known = ", ".join(sorted(schema.fields)) or "none"
                yield _join(path, str(key)), f"{UNKNOWN_FIELD} {key!r} (known fields: {known})"
            elif item is not None:
                yield from validate(sub, item, _join(path, key))


def deprecated_fields(schema: Schema, value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, advice) for each deprecated field present in `value`."""
    if isinstance(schema, Obj) and isinstance(value, dict):
        for key, item in value.items():
            if key in schema.deprecated:
                yield _join(path, key), schema.deprecated[key]
            sub = schema.fields.get(key)
            if sub is not None:
                yield from deprecated_fields(sub, item, _join(path, key))
    elif isinstance(schema, List) and isinstance(value, list):
        for i, item in enumerate(value):
            yield from deprecated_fields(schema.item, item, f"{path}[{i}]")


PRUNED: Any = object()  # what `prune` returns for a value that is wrong as a whole


def prune(schema: Schema, value: Any) -> Any:
    """`value` without its wrong parts: wrong list items and map values are dropped, a wrong field
    is dropped, and an object missing a required field is wrong as a whole. What remains conforms
    to the schema, so later stages can check it as they would a correct document."""
    if isinstance(schema, (Leaf, Enum)):
        return value if not any(True for _ in validate(schema, value)) else PRUNED
    if isinstance(schema, List):
        if not isinstance(value, list):
            return PRUNED
        return [v for v in (prune(schema.item, item) for item in value) if v is not PRUNED]
    if isinstance(schema, Map):
        if not isinstance(value, dict):
            return PRUNED
        return {k: v for k, v in ((k, prune(schema.value, item)) for k, item in value.items()) if v is not PRUNED}
    if not isinstance(value, dict):
        return PRUNED
    out: dict[Any, Any] = {}
    for key, item in value.items():
        sub = schema.fields.get(key)
        kept = item if sub is None or item is None else prune(sub, item)
        if kept is not PRUNED:
            out[key] = kept
    return PRUNED if any(key not in out for key in schema.required) else out

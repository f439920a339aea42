"""Request bodies checked against the Bedrock Runtime service model that botocore ships.

``check(shape_name, body)`` walks a decoded JSON body along the model's shapes: structures (members
known, required ones present, a union with exactly one member set), lists and maps, strings (enum,
length, pattern), numbers (type and range), booleans, blobs (base64 text that decodes, length) and
documents (any JSON). Members bound to the URI or headers (``modelId``) are not body members. A
refusal is a ValidationException ``_BadRequest`` worded as Bedrock words them: constraint failures
as "1 validation error detected: Value ... at 'messages.1.member.role' failed to satisfy
constraint: Member must ...", keys it does not know and values of the wrong JSON type as
"Malformed input request: ...".
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache
from typing import Any

from botocore.model import ServiceModel, Shape

from modelyard.loadtest.mock.wire import _BadRequest

VALIDATION = "ValidationException"
_INDEX = re.compile(r"\.(\d+)\.member")


def fail(message: str) -> None:
    raise _BadRequest(400, message, kind=VALIDATION)


def constraint(path: str, value: Any, rule: str) -> None:
    shown = "null" if value is None else f"'{_short(value)}'"
    fail(f"1 validation error detected: Value {shown} at '{path}' failed to satisfy constraint: Member must {rule}")


def malformed(message: str) -> None:
    fail(f"Malformed input request: {message}, please reformat your input and try again.")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 64 else text[:61] + "..."


@lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    import botocore.session

    return botocore.session.get_session().get_service_model("bedrock-runtime")


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:  # a Java-only construct: not checked
        return None


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


_JSON_TYPES = {"structure": "an object", "list": "an array", "map": "an object", "string": "a string",
               "integer": "an integer", "long": "an integer", "float": "a number", "double": "a number",
               "boolean": "a boolean", "blob": "a base64 string", "timestamp": "a timestamp"}


def _pointer(path: str) -> str:
    """'messages.1.member.content' (Coral's 1-based path) as a JSON pointer, '#/messages/0/content'."""
    return "#/" + _INDEX.sub(lambda m: f".{int(m.group(1)) - 1}", path).replace(".", "/")


def _wrong_type(path: str, shape: Shape) -> None:
    malformed(f"{_pointer(path)}: expected {_JSON_TYPES.get(shape.type_name, 'a value')}")


def check(shape_name: str, body: Any) -> None:
    """Check a request body against the named input shape; a ValidationException _BadRequest if it fails."""
    shape = service_model().shape_for(shape_name)
    if not isinstance(body, dict):
        malformed("#: expected an object")
    _structure(shape, body, "", top=True)


def _value(shape: Shape, value: Any, path: str) -> None:
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if meta.get("document"):
            return
        if not isinstance(value, dict):
            _wrong_type(path, shape)
        _structure(shape, value, path)
    elif kind == "list":
        if not isinstance(value, list):
            _wrong_type(path, shape)
        _length(path, value, meta)
        for i, item in enumerate(value):
            if item is None:
                constraint(f"{path}.{i + 1}.member", None, "not be null")
            _value(shape.member, item, f"{path}.{i + 1}.member")  # type: ignore[attr-defined]
    elif kind == "map":
        if not isinstance(value, dict):
            _wrong_type(path, shape)
        _length(path, value, meta)
        for key, item in value.items():
            _value(shape.key, key, f"{path}.key")  # type: ignore[attr-defined]
            _value(shape.value, item, f"{path}.{key}")  # type: ignore[attr-defined]
    elif kind == "string":
        if not isinstance(value, str):
            _wrong_type(path, shape)
        if shape.enum and value not in shape.enum:
            constraint(path, value, f"satisfy enum value set: [{', '.join(shape.enum)}]")
        _length(path, value, meta)
        pattern = _pattern(meta["pattern"]) if "pattern" in meta else None
        if pattern is not None and not pattern.fullmatch(value):  # Coral matches the whole value
            constraint(path, value, f"satisfy regular expression pattern: {meta['pattern']}")
    elif kind in ("integer", "long"):
        if not _is_int(value):
            _wrong_type(path, shape)
        _range(path, value, meta)
    elif kind in ("float", "double"):
        if not _is_number(value):
            _wrong_type(path, shape)
        _range(path, value, meta)
    elif kind == "boolean":
        if not isinstance(value, bool):
            _wrong_type(path, shape)
    elif kind == "blob":
        if not isinstance(value, str):
            _wrong_type(path, shape)
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            malformed(f"{_pointer(path)}: expected valid base64-encoded bytes")
        _length(path, raw, meta)


def _structure(shape: Shape, value: dict[str, Any], path: str, top: bool = False) -> None:
    members = shape.members  # type: ignore[attr-defined]
    where = path or "#"
    for key in value:
        member = members.get(key)
        if member is None or member.serialization.get("location"):
            malformed(f"extraneous key [{_short(key)}] is not permitted at '{where}'")
    present = [k for k, v in value.items() if v is not None]
    if shape.metadata.get("union"):
        if len(present) != 1:
            fail(f"Malformed input request: exactly one member of {'the request' if top else repr(where)} must be "
                 f"set (one of [{', '.join(members)}]), found {len(present)}, please reformat your input and try "
                 "again.")
    for name in shape.required_members:  # type: ignore[attr-defined]
        member = members[name]
        if member is not None and not member.serialization.get("location") and value.get(name) is None:
            constraint(f"{path}.{name}" if path else name, None, "not be null")
    for key in present:
        _value(members[key], value[key], f"{path}.{key}" if path else key)


def _length(path: str, value: Any, meta: dict[str, Any]) -> None:
    if "min" in meta and len(value) < meta["min"]:
        constraint(path, value, f"have length greater than or equal to {meta['min']}")
    if "max" in meta and len(value) > meta["max"]:
        constraint(path, value, f"have length less than or equal to {meta['max']}")


def _range(path: str, value: float, meta: dict[str, Any]) -> None:
    if "min" in meta and value < meta["min"]:
        constraint(path, value, f"have value greater than or equal to {_plain(meta['min'])}")
    if "max" in meta and value > meta["max"]:
        constraint(path, value, f"have value less than or equal to {_plain(meta['max'])}")


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)

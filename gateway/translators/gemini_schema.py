"""JSON Schema (what OpenAI clients send in tools[].function.parameters and response_format's
json_schema) -> the Vertex AI `Schema` object (a subset of the OpenAPI 3.0 schema object) that
generateContent takes in functionDeclarations[].parameters and generationConfig.responseSchema.

Why a conversion rather than `parametersJsonSchema` / `responseJsonSchema`: those fields take JSON
Schema as it is, but Google documents them for Gemini 2.5 and later only, and the gateway cannot tell
a model's generation from its name (model names are free text, modelNameOverride rewrites them).
`parameters` and `responseSchema` are accepted by every Gemini model, so the request works the
same whatever model it names, and a keyword Vertex cannot express is our 400 naming it, not a
model-dependent upstream error.

The mapping, keyword by keyword:
- type: a name -> the upper-case Type enum name Vertex documents (STRING, NUMBER, INTEGER, BOOLEAN,
  ARRAY, OBJECT, NULL); a list -> its one non-null type plus `nullable: true` when it holds "null",
  or anyOf one schema per type when it holds several.
- description, title, format, nullable, default, example, pattern, minLength, maxLength, minItems,
  maxItems, minProperties, maxProperties, minimum, maximum, propertyOrdering, required: as they are.
- enum: Vertex's enum is a list of strings: strings as they are, other values as their JSON text,
  and a null member makes the schema nullable. const -> a one-value enum.
- properties, items, additionalProperties (an object), anyOf, oneOf (-> anyOf), allOf with one
  member (-> merged into the schema): converted recursively. additionalProperties true/false as is.
  An anyOf member {"type": "null"} makes the schema nullable instead.
- $ref to the schema's own $defs or definitions ("#/$defs/Name"): inlined; a recursive $ref is a 400
  (Vertex's own ref/defs are not used: the inlined form is accepted by every model).
- annotations that constrain nothing Vertex checks are dropped: $schema, $id, $comment, readOnly,
  writeOnly, deprecated, examples (its first value becomes `example` when there is none), and
  $defs/definitions once their references are inlined.
- any other keyword (not, if/then/else, patternProperties, uniqueItems, multipleOf, exclusiveMinimum,
  prefixItems, ...) is a TranslationError naming where it is: the client gets a 400.
"""

from __future__ import annotations

from typing import Any

from .common import TranslationError, dumps_str

TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN", "array": "ARRAY",
         "object": "OBJECT", "null": "NULL"}
# Copied as they are.
_PLAIN = frozenset({"description", "title", "format", "nullable", "default", "example", "pattern", "minLength",
                    "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "minimum", "maximum",
                    "propertyOrdering", "required"})
# Dropped: they annotate, or were used up by inlining.
_DROPPED = frozenset({"$schema", "$id", "$comment", "readOnly", "writeOnly", "deprecated", "examples", "$defs",
                      "definitions"})
_MAX_DEPTH = 64  # deeper than any real schema; keeps a hostile one from exhausting the stack

__all__ = ["TYPES", "to_vertex_schema"]


def to_vertex_schema(schema: Any, where: str, param: str) -> dict[str, Any]:
    """The Vertex Schema for a JSON Schema; `where` names it in errors ("tools[0].function.parameters"),
    `param` is the request field the 400 names."""
    if not isinstance(schema, dict):
        raise TranslationError(f"{where} must be a JSON Schema object", param)
    return _Converter(schema, param).convert(schema, where, 0, ())


class _Converter:
    __slots__ = ("root", "param")

    def __init__(self, root: dict[str, Any], param: str):
        self.root = root
        self.param = param

    def fail(self, where: str, why: str) -> TranslationError:
        return TranslationError(f"{where}: {why}", self.param)

    def convert(self, schema: Any, where: str, depth: int, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(schema, dict):
            raise self.fail(where, "a schema must be an object")
        if depth > _MAX_DEPTH:
            raise self.fail(where, f"schemas nested over {_MAX_DEPTH} deep are not supported")
        if "$ref" in schema:
            return self._ref(schema, where, depth, refs)
        out: dict[str, Any] = {}
        nullable = False
        for key, value in schema.items():
            at = f"{where}.{key}"
            if key in _PLAIN:
                out[key] = value
            elif key in _DROPPED:
                if key == "examples" and isinstance(value, list) and value and "example" not in schema:
                    out["example"] = value[0]
            elif key == "type":
                nullable |= self._type(value, at, out)
            elif key in ("enum", "const"):
                values = [value] if key == "const" else value
                if not isinstance(values, list) or not values:
                    raise self.fail(at, "must be a non-empty list" if key == "enum" else "is not a value")
                nullable |= None in values
                out["enum"] = [v if isinstance(v, str) else dumps_str(v) for v in values if v is not None]
            elif key == "properties":
                if not isinstance(value, dict):
                    raise self.fail(at, "must be an object")
                out["properties"] = {name: self.convert(sub, f"{at}.{name}", depth + 1, refs)
                                     for name, sub in value.items()}
            elif key == "items":
                if isinstance(value, list):
                    raise self.fail(at, "a list of item schemas (tuple validation) is not supported by Vertex AI")
                out["items"] = self.convert(value, at, depth + 1, refs)
            elif key == "additionalProperties":
                out[key] = value if isinstance(value, bool) else self.convert(value, at, depth + 1, refs)
            elif key in ("anyOf", "oneOf"):
                nullable |= self._any_of(value, at, depth, refs, out)
            elif key == "allOf":
                if not isinstance(value, list) or len(value) != 1:
                    raise self.fail(at, "only an allOf of exactly one schema is supported by Vertex AI")
                merged = self.convert(value[0], f"{at}[0]", depth + 1, refs)
                out.update({k: v for k, v in merged.items() if k not in out})
            else:
                raise self.fail(at, f"the JSON Schema keyword {key!r} is not supported by Vertex AI")
        if nullable:
            out["nullable"] = True
        if out.get("enum") == [] and "type" not in out:  # enum: [null]
            del out["enum"]
            out["type"] = "NULL"
        return out

    def _type(self, value: Any, at: str, out: dict[str, Any]) -> bool:
        """Sets out's type (or anyOf, for several); True when the type admits null."""
        names = value if isinstance(value, list) else [value]
        if not names or not all(isinstance(n, str) and n in TYPES for n in names):
            raise self.fail(at, f"unknown type {value!r}")
        kinds = [TYPES[n] for n in dict.fromkeys(names) if n != "null"]
        nullable = len(kinds) < len(dict.fromkeys(names))
        if not kinds:
            out["type"] = "NULL"
            return False
        if len(kinds) == 1:
            out["type"] = kinds[0]
        else:
            out["anyOf"] = [{"type": k} for k in kinds]
        return nullable

    def _any_of(self, value: Any, at: str, depth: int, refs: tuple[str, ...], out: dict[str, Any]) -> bool:
        if not isinstance(value, list) or not value:
            raise self.fail(at, "must be a non-empty list of schemas")
        members = []
        nullable = False
        for i, sub in enumerate(value):
            if isinstance(sub, dict) and sub.get("type") == "null" and len(sub) == 1:
                nullable = True
                continue
            members.append(self.convert(sub, f"{at}[{i}]", depth + 1, refs))
        if len(members) == 1:  # Optional[X]: X, nullable
            out.update({k: v for k, v in members[0].items() if k not in out})
        elif members:
            out["anyOf"] = members
        else:
            out["type"] = "NULL"
        return nullable

    def _ref(self, schema: dict[str, Any], where: str, depth: int, refs: tuple[str, ...]) -> dict[str, Any]:
        ref = schema["$ref"]
        at = f"{where}.$ref"
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise self.fail(at, f"only references into the schema itself are supported, not {ref!r}")
        if ref in refs:
            raise self.fail(at, f"the recursive reference {ref!r} is not supported by Vertex AI")
        target: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                raise self.fail(at, f"{ref!r} names nothing in the schema")
            target = target[part]
        resolved = self.convert(target, f"{where}<{ref}>", depth + 1, (*refs, ref))
        # Keywords beside the $ref (a description, say) apply on top of the referenced schema.
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        if rest:
            resolved.update(self.convert(rest, where, depth + 1, refs))
        return resolved

"""Vertex AI's checks of a ``generateContent`` body (``GenerateContentRequest``), as its API refuses them.

Two passes, as the service makes them. First the JSON-to-proto parse: each field is known by its
lowerCamelCase JSON name or its proto (snake_case) name, everything else is an unknown name; each
value must fit its proto type (strings, booleans, 32-bit integers, floats, base64 bytes, enum
names, durations); ``null`` means "not set". Every problem is reported at once, Google's way:

    400 INVALID_ARGUMENT  Invalid JSON payload received. Unknown name "foo" at 'generation_config': Cannot find field.

with a ``google.rpc.BadRequest`` detail listing each field path (snake_case, ``[i]`` for list
items and ``[i].value`` for map entries). Then what the model service itself checks, one error at
a time, in Vertex's wording: contents and parts present, roles ``user``/``model``, a part holding
exactly one kind of data, function calls answered in the next turn by as many function responses,
function names and parameter schemas, the function calling mode, generation parameter ranges, and
the structured-output settings. ``validate_generate`` returns the body normalised to camelCase keys
(``None`` fields dropped), which is what the answer builder reads.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

from modelyard.loadtest.mock.vertex.errors import field_violations, invalid_argument
from modelyard.loadtest.mock.wire import _encode

DOCS = "https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"
_PROTO = "type.googleapis.com/google.cloud.aiplatform.v1."

# --- the proto schema, by JSON name ------------------------------------------------
# A field kind is a scalar name, ("enum", Name, values), ("msg", Name), ("rep", kind) or ("map", kind).
# "object" is a message the mock does not look into (any JSON object); "value" is any JSON value.

_TYPE = ("enum", "Type", ("TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"))
_HARM_CATEGORY = ("enum", "HarmCategory", (
    "HARM_CATEGORY_UNSPECIFIED", "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_CIVIC_INTEGRITY",
    "HARM_CATEGORY_IMAGE_HATE", "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT", "HARM_CATEGORY_IMAGE_HARASSMENT",
    "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT", "HARM_CATEGORY_JAILBREAK"))
_THRESHOLD = ("enum", "SafetySetting.HarmBlockThreshold", (
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED", "BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH",
    "BLOCK_NONE", "OFF"))
_SCHEMA = ("msg", "Schema")

MESSAGES: dict[str, dict[str, Any]] = {
    "GenerateContentRequest": {
        "model": "string", "contents": ("rep", ("msg", "Content")), "systemInstruction": ("msg", "Content"),
        "cachedContent": "string", "tools": ("rep", ("msg", "Tool")), "toolConfig": ("msg", "ToolConfig"),
        "labels": ("map", "string"), "safetySettings": ("rep", ("msg", "SafetySetting")),
        "generationConfig": ("msg", "GenerationConfig"), "modelArmorConfig": "object",
    },
    "CountTokensRequest": {
        "model": "string", "instances": ("rep", "value"), "contents": ("rep", ("msg", "Content")),
        "systemInstruction": ("msg", "Content"), "tools": ("rep", ("msg", "Tool")),
        "generationConfig": ("msg", "GenerationConfig"),
    },
    "GenerateAccessTokenRequest": {"name": "string", "delegates": ("rep", "string"), "scope": ("rep", "string"),
                                   "lifetime": "duration"},
    "Content": {"role": "string", "parts": ("rep", ("msg", "Part"))},
    "Part": {
        "text": "string", "inlineData": ("msg", "Blob"), "fileData": ("msg", "FileData"),
        "functionCall": ("msg", "FunctionCall"), "functionResponse": ("msg", "FunctionResponse"),
        "executableCode": ("msg", "ExecutableCode"), "codeExecutionResult": ("msg", "CodeExecutionResult"),
        "thought": "bool", "thoughtSignature": "bytes", "videoMetadata": ("msg", "VideoMetadata"),
        "mediaResolution": "object",
    },
    "Blob": {"mimeType": "string", "data": "bytes", "displayName": "string"},
    "FileData": {"mimeType": "string", "fileUri": "string", "displayName": "string"},
    "FunctionCall": {"id": "string", "name": "string", "args": "struct", "partialArgs": ("rep", "object"),
                     "willContinue": "bool"},
    "FunctionResponse": {"id": "string", "name": "string", "response": "struct", "parts": ("rep", "object")},
    "ExecutableCode": {"language": ("enum", "ExecutableCode.Language", ("LANGUAGE_UNSPECIFIED", "PYTHON")),
                       "code": "string"},
    "CodeExecutionResult": {
        "outcome": ("enum", "CodeExecutionResult.Outcome", (
            "OUTCOME_UNSPECIFIED", "OUTCOME_OK", "OUTCOME_FAILED", "OUTCOME_DEADLINE_EXCEEDED")),
        "output": "string",
    },
    "VideoMetadata": {"startOffset": "duration", "endOffset": "duration", "fps": "double"},
    "Tool": {
        "functionDeclarations": ("rep", ("msg", "FunctionDeclaration")), "retrieval": "object",
        "googleSearch": "object", "googleSearchRetrieval": "object", "codeExecution": "object",
        "urlContext": "object", "enterpriseWebSearch": "object", "googleMaps": "object", "computerUse": "object",
    },
    "FunctionDeclaration": {
        "name": "string", "description": "string", "parameters": _SCHEMA, "parametersJsonSchema": "value",
        "response": _SCHEMA, "responseJsonSchema": "value",
    },
    "Schema": {
        "type": _TYPE, "format": "string", "title": "string", "description": "string", "nullable": "bool",
        "default": "value", "items": _SCHEMA, "minItems": "int64", "maxItems": "int64", "enum": ("rep", "string"),
        "properties": ("map", _SCHEMA), "propertyOrdering": ("rep", "string"), "required": ("rep", "string"),
        "minProperties": "int64", "maxProperties": "int64", "minimum": "double", "maximum": "double",
        "minLength": "int64", "maxLength": "int64", "pattern": "string", "example": "value",
        "anyOf": ("rep", _SCHEMA), "additionalProperties": "value", "$ref": "string", "$defs": ("map", _SCHEMA),
    },
    "ToolConfig": {"functionCallingConfig": ("msg", "FunctionCallingConfig"), "retrievalConfig": "object"},
    "FunctionCallingConfig": {
        "mode": ("enum", "FunctionCallingConfig.Mode", ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")),
        "allowedFunctionNames": ("rep", "string"), "streamFunctionCallArguments": "bool",
    },
    "SafetySetting": {
        "category": _HARM_CATEGORY, "threshold": _THRESHOLD,
        "method": ("enum", "SafetySetting.HarmBlockMethod", (
            "HARM_BLOCK_METHOD_UNSPECIFIED", "SEVERITY", "PROBABILITY")),
    },
    "GenerationConfig": {
        "temperature": "float", "topP": "float", "topK": "float", "candidateCount": "int32",
        "maxOutputTokens": "int32", "stopSequences": ("rep", "string"), "responseLogprobs": "bool",
        "logprobs": "int32", "presencePenalty": "float", "frequencyPenalty": "float", "seed": "int32",
        "responseMimeType": "string", "responseSchema": _SCHEMA, "responseJsonSchema": "value",
        "routingConfig": "object", "audioTimestamp": "bool",
        "responseModalities": ("rep", ("enum", "GenerationConfig.Modality", (
            "MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "AUDIO"))),
        "mediaResolution": ("enum", "GenerationConfig.MediaResolution", (
            "MEDIA_RESOLUTION_UNSPECIFIED", "MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM",
            "MEDIA_RESOLUTION_HIGH")),
        "speechConfig": "object", "thinkingConfig": ("msg", "ThinkingConfig"), "modelConfig": "object",
        "imageConfig": "object", "enableAffectiveDialog": "bool",
    },
    "ThinkingConfig": {
        "includeThoughts": "bool", "thinkingBudget": "int32",
        "thinkingLevel": ("enum", "GenerationConfig.ThinkingConfig.ThinkingLevel", (
            "THINKING_LEVEL_UNSPECIFIED", "LOW", "MEDIUM", "HIGH", "MINIMAL")),
    },
}

_DATA_FIELDS = ("text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
                "codeExecutionResult")
_ONEOFS = {"Part": _DATA_FIELDS}
_CASE_INSENSITIVE_ENUMS = frozenset({"Type"})  # Vertex takes "object" as well as "OBJECT" in schemas
_SCALAR_TYPES = {"string": "TYPE_STRING", "bool": "TYPE_BOOL", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                 "float": "TYPE_FLOAT", "double": "TYPE_DOUBLE", "bytes": "TYPE_BYTES"}
_WELL_KNOWN = {"struct": "google.protobuf.Struct", "duration": "google.protobuf.Duration"}
_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")
_INT_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


_LOOKUP = {message: {**{_snake(f): f for f in fields}, **{f: f for f in fields}}
           for message, fields in MESSAGES.items()}


def _shown(value: Any) -> str:
    text = _encode(value).decode()
    return text if len(text) <= 100 else text[:97] + "..."


class _Parser:
    """The JSON-to-proto pass: normalised values, and every violation found on the way."""

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []

    def bad_value(self, path: str, type_name: str, value: Any, extra: str = "") -> None:
        self.violations.append((path, f"Invalid value at '{path}' ({type_name}), {extra or _shown(value)}"))

    def message(self, name: str, obj: Any, path: str) -> dict[str, Any] | None:
        if not isinstance(obj, dict):
            self.bad_value(path, _PROTO + name, obj)
            return None
        fields, lookup = MESSAGES[name], _LOOKUP[name]
        out: dict[str, Any] = {}
        oneof = _ONEOFS.get(name, ())
        for key, value in obj.items():
            field = lookup.get(key)
            if field is None:
                at = f" at '{path}'" if path else ""
                self.violations.append(
                    (path, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'))
                continue
            if value is None:
                continue
            if field in oneof and any(other in out for other in oneof):
                set_field = next(other for other in oneof if other in out)
                self.violations.append((path, f"Invalid JSON payload received. Oneof field 'data' is already set. "
                                              f"Cannot set '{key}' (already set: '{set_field}')"))
                continue
            sub = f"{path}.{_snake(field).lstrip('$')}" if path else _snake(field).lstrip("$")
            parsed = self.value(fields[field], value, sub)
            if parsed is not None:
                out[field] = parsed
        return out

    def value(self, kind: Any, value: Any, path: str) -> Any:
        if value is None:
            return None
        if isinstance(kind, tuple):
            tag = kind[0]
            if tag == "msg":
                return self.message(kind[1], value, path)
            if tag == "enum":
                return self.enum(kind, value, path)
            if tag == "rep":
                if not isinstance(value, list):
                    self.bad_value(path, _type_name(kind[1]), value)
                    return None
                items = [self.value(kind[1], item, f"{path}[{i}]") for i, item in enumerate(value)]
                return [item for item in items if item is not None]
            if tag == "map":
                if not isinstance(value, dict):
                    self.bad_value(path, "map", value)
                    return None
                out = {}
                for i, (k, v) in enumerate(value.items()):
                    parsed = self.value(kind[1], v, f"{path}[{i}].value")
                    if parsed is not None:
                        out[k] = parsed
                return out
        return self.scalar(kind, value, path)

    def enum(self, kind: tuple[str, str, tuple[str, ...]], value: Any, path: str) -> Any:
        _, name, values = kind
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(values):
            return values[value]
        if isinstance(value, str):
            if value in values:
                return value
            if name in _CASE_INSENSITIVE_ENUMS and value.upper() in values:
                return value.upper()
        self.bad_value(path, _PROTO + name, value)
        return None

    def scalar(self, kind: str, value: Any, path: str) -> Any:
        if kind == "value":
            return value
        if kind in ("object", "struct"):
            if isinstance(value, dict):
                return value
            self.bad_value(path, "type.googleapis.com/" + _WELL_KNOWN.get(kind, "google.protobuf.Struct"), value)
            return None
        if kind == "string":
            if isinstance(value, str):
                return value
        elif kind == "bool":
            if isinstance(value, bool):
                return value
        elif kind in _INT_RANGES:
            number = _as_int(value)
            low, high = _INT_RANGES[kind]
            if number is not None and low <= number <= high:
                return number
        elif kind in ("float", "double"):
            number = _as_float(value)
            if number is not None:
                return number
        elif kind == "bytes":
            if isinstance(value, str):
                if _is_base64(value):
                    return value
                self.bad_value(path, "TYPE_BYTES", value, f"Base64 decoding failed for {_shown(value)}")
                return None
        elif kind == "duration":
            if isinstance(value, str) and _DURATION.match(value):
                return value
            self.bad_value(path, "type.googleapis.com/google.protobuf.Duration", value)
            return None
        self.bad_value(path, _SCALAR_TYPES.get(kind, kind), value)
        return None


def _type_name(kind: Any) -> str:
    """How the parser names a field's type in its messages."""
    if isinstance(kind, tuple) and kind[0] in ("msg", "enum"):
        return _PROTO + kind[1]
    if isinstance(kind, tuple):
        return _type_name(kind[1])
    if kind in _WELL_KNOWN:
        return "type.googleapis.com/" + _WELL_KNOWN[kind]
    return _SCALAR_TYPES.get(kind, "type.googleapis.com/google.protobuf.Value")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        if value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        try:
            return float(value) if re.fullmatch(r"-?[\d.]+([eE][-+]?\d+)?", value) else None
        except ValueError:
            return None
    return None


def _is_base64(text: str) -> bool:
    raw = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def parse_message(name: str, body: Any) -> dict[str, Any]:
    """The first pass alone: ``body`` as proto message ``name``, or a GoogleError listing every violation."""
    parser = _Parser()
    parsed = parser.message(name, body, "")
    if parser.violations or parsed is None:
        raise field_violations(parser.violations or [("", "Invalid JSON payload received. Expected an object.")])
    return parsed


# --- the service's own checks ----------------------------------------------------------

_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_MIME_TYPES = ("text/plain", "application/json", "text/x.enum")


def _range_error(name: str, value: float, low: float, high: float) -> None:
    raise invalid_argument(
        f"Unable to submit request because it has a {name} value of {value:g} but the supported range is from "
        f"{low:g} (inclusive) to {high:g} (exclusive). Update the value and try again.")


def _check_range(config: dict[str, Any], name: str, low: float, high: float) -> None:
    value = config.get(name)
    if value is not None and not (low <= value < high):
        _range_error(name, value, low, high)


def _check_parts(parts: list[dict[str, Any]], where: str) -> None:
    if not parts:
        raise invalid_argument(
            "Unable to submit request because it must include at least one parts field, which describes the "
            f"prompt input. Learn more: {DOCS}")
    for part in parts:
        kinds = [k for k in _DATA_FIELDS if k in part]
        if not kinds:
            raise invalid_argument(f"Unable to submit request because a part of {where} has no data: set one of "
                                   f"{', '.join(_DATA_FIELDS)}. Learn more: {DOCS}")
        if kinds == ["text"] and part["text"] == "" and not part.get("thought"):
            raise invalid_argument("Unable to submit request because it has an empty text parameter. Add a value "
                                   f"to the parameter and try again. Learn more: {DOCS}")
        for blob in ("inlineData", "fileData"):
            if blob in part:
                if not part[blob].get("mimeType"):
                    raise invalid_argument(f"Unable to submit request because it has an empty {blob}.mimeType "
                                           f"parameter. Add a value to the parameter and try again. Learn more: {DOCS}")
                if blob == "fileData" and not part[blob].get("fileUri"):
                    raise invalid_argument("Unable to submit request because it has an empty fileData.fileUri "
                                           "parameter. Add a value to the parameter and try again. "
                                           f"Learn more: {DOCS}")
        for call in ("functionCall", "functionResponse"):
            if call in part and not part[call].get("name"):
                raise invalid_argument(f"Unable to submit request because {call}.name is empty. Learn more: {DOCS}")


def _check_turns(contents: list[dict[str, Any]]) -> None:
    """Roles, and Gemini's function-calling turn order."""
    previous_calls = 0
    previous_role = ""
    for content in contents:
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise invalid_argument("Please use a valid role: user, model.")
        parts = content.get("parts") or []
        _check_parts(parts, "contents")
        calls = sum(1 for p in parts if "functionCall" in p)
        responses = sum(1 for p in parts if "functionResponse" in p)
        if calls and role != "model":
            raise invalid_argument("Please ensure that function call turns come from the model role.")
        if responses and role != "user":
            raise invalid_argument("Please ensure that function response turns come from the user role.")
        if calls and previous_role == "model" and not previous_calls:
            raise invalid_argument("Please ensure that function call turn comes immediately after a user turn or "
                                   "after a function response turn.")
        if responses:
            if not previous_calls:
                raise invalid_argument("Please ensure that function response turn comes immediately after a "
                                       "function call turn.")
            if responses != previous_calls:
                raise invalid_argument("Please ensure that the number of function response parts is equal to the "
                                       "number of function call parts of the function call turn.")
        previous_calls, previous_role = calls, role


def _check_schema(schema: dict[str, Any], where: str) -> None:
    properties = schema.get("properties") or {}
    for i, name in enumerate(schema.get("required") or ()):
        if name not in properties:
            raise invalid_argument(f"Unable to submit request because `{where}.required[{i}]`: property is not "
                                   f"defined. Learn more: {DOCS}")
    for name, sub in properties.items():
        _check_schema(sub, f"{where}.properties[{name}]")
    if "items" in schema:
        _check_schema(schema["items"], f"{where}.items")
    for i, sub in enumerate(schema.get("anyOf") or ()):
        _check_schema(sub, f"{where}.anyOf[{i}]")


def _check_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The function declarations, checked; a list of them."""
    declarations: list[dict[str, Any]] = []
    names: set[str] = set()
    for tool in tools:
        for decl in tool.get("functionDeclarations") or ():
            name = decl.get("name") or ""
            if not _FUNCTION_NAME.match(name):
                raise invalid_argument(
                    f"Unable to submit request because function name `{name}` is invalid. It must start with a "
                    "letter or an underscore and contain only a-z, A-Z, 0-9, underscores, dots, colons and dashes, "
                    f"at most 64 characters. Learn more: {DOCS}")
            if name in names:
                raise invalid_argument(f"Unable to submit request because function name `{name}` is declared more "
                                       "than once.")
            names.add(name)
            if "parameters" in decl and "parametersJsonSchema" in decl:
                raise invalid_argument(f"Unable to submit request because `{name}` functionDeclaration sets both "
                                       "`parameters` and `parametersJsonSchema`; set only one.")
            params = decl.get("parameters")
            if params is not None:
                if params.get("type", "OBJECT") != "OBJECT":
                    raise invalid_argument(f"Unable to submit request because `{name}` functionDeclaration "
                                           f"`parameters` schema should be of type OBJECT. Learn more: {DOCS}")
                _check_schema(params, f"{name}.parameters")
            declarations.append(decl)
    return declarations


def _check_tool_config(config: dict[str, Any], declarations: list[dict[str, Any]]) -> None:
    calling = config.get("functionCallingConfig") or {}
    mode = calling.get("mode", "AUTO")
    allowed = calling.get("allowedFunctionNames") or []
    if allowed and mode not in ("ANY", "VALIDATED"):
        raise invalid_argument("Unable to submit request because function calling config sets "
                               "allowed_function_names while mode is not ANY or VALIDATED.")
    if mode in ("ANY", "VALIDATED") and not declarations:
        raise invalid_argument(f"Unable to submit request because function calling mode {mode} needs at least one "
                               "function declaration in tools.")
    known = {d["name"] for d in declarations}
    for name in allowed:
        if name not in known:
            raise invalid_argument(f"Unable to submit request because allowed function name `{name}` is not "
                                   "declared in tools.")


def _check_generation_config(config: dict[str, Any]) -> None:
    _check_range(config, "temperature", 0, 2.0001)
    _check_range(config, "topP", 0, 1.0001)
    if config.get("topK") is not None and config["topK"] <= 0:
        _range_error("topK", config["topK"], 1, 41)
    _check_range(config, "candidateCount", 1, 9)
    _check_range(config, "maxOutputTokens", 1, 65537)
    _check_range(config, "presencePenalty", -2, 2)
    _check_range(config, "frequencyPenalty", -2, 2)
    _check_range(config, "logprobs", 0, 21)
    if len(config.get("stopSequences") or ()) > 5:
        raise invalid_argument("Unable to submit request because it has more than 5 stop sequences. "
                               f"Remove some and try again. Learn more: {DOCS}")
    mime = config.get("responseMimeType")
    if mime is not None and mime not in _MIME_TYPES:
        raise invalid_argument(f"Unable to submit request because it has a response_mime_type of {mime!r} but the "
                               f"supported values are: {', '.join(_MIME_TYPES)}.")
    if "responseSchema" in config and "responseJsonSchema" in config:
        raise invalid_argument("Unable to submit request because it sets both response_schema and "
                               "response_json_schema; set only one.")
    if ("responseSchema" in config or "responseJsonSchema" in config) and mime not in ("application/json",
                                                                                         "text/x.enum"):
        raise invalid_argument("Unable to submit request because response_schema (or response_json_schema) "
                               "needs response_mime_type application/json or text/x.enum.")
    if "responseSchema" in config:
        _check_schema(config["responseSchema"], "responseSchema")
    thinking = config.get("thinkingConfig") or {}
    budget = thinking.get("thinkingBudget")
    if budget is not None and not (-1 <= budget <= 32768):
        _range_error("thinkingBudget", budget, -1, 32769)
    if budget is not None and "thinkingLevel" in thinking:
        raise invalid_argument("Unable to submit request because thinking_budget and thinking_level are not "
                               "supported together.")


def validate_generate(body: Any) -> dict[str, Any]:
    """A generateContent / streamGenerateContent body checked; normalised (camelCase keys, no nulls)."""
    req = parse_message("GenerateContentRequest", body)
    contents = req.get("contents") or []
    if not contents:
        raise invalid_argument(f"Unable to submit request because it has an empty contents field. Learn more: {DOCS}")
    _check_turns(contents)
    if "systemInstruction" in req:
        _check_parts(req["systemInstruction"].get("parts") or [], "systemInstruction")
    declarations = _check_tools(req.get("tools") or [])
    if "toolConfig" in req:
        _check_tool_config(req["toolConfig"], declarations)
    if "generationConfig" in req:
        _check_generation_config(req["generationConfig"])
    return req


def validate_count(body: Any) -> dict[str, Any]:
    """A countTokens body checked; normalised."""
    req = parse_message("CountTokensRequest", body)
    contents = req.get("contents") or []
    if not contents and not req.get("instances"):
        raise invalid_argument(f"Unable to submit request because it has an empty contents field. Learn more: {DOCS}")
    for content in contents:
        _check_parts(content.get("parts") or [], "contents")
    return req


def function_declarations(req: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for tool in req.get("tools") or () for d in tool.get("functionDeclarations") or ()]

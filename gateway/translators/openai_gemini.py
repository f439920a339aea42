"""OpenAI chat completions client -> Gemini generateContent on Vertex AI (requests, answers whole or streamed).

The GCPVertexAI provider (gateway/providers/gcp_vertex_ai.py) uses it for OpenAI clients. The model is
part of the URL (.../publishers/google/models/{model}:generateContent, or :streamGenerateContent?alt=sse
for `stream: true`: the same body), so the body names no model; `request` reads the model's name only
to pick the thinking control its generation takes.

Request mapping decisions (OpenAI field -> generateContent field):
- system and developer messages, wherever they appear -> `systemInstruction: {parts: [{text}]}`, one
  part per message.
- user -> a "user" turn, assistant -> a "model" turn; consecutive messages that land on the same role
  are merged into one turn. Content parts: text -> {text}; image_url with a base64 data: URL ->
  {inlineData: {mimeType, data}}; with a gs://, https:// or http:// URL -> {fileData: {mimeType,
  fileUri}}, the mime type guessed from the URL path's extension (FILE_TYPES; another is a 400);
  input_audio -> inlineData audio/wav or audio/mp3; file parts with base64 file_data -> inlineData
  (file_id is a 400: there is no OpenAI file store behind Vertex).
- assistant tool_calls -> {functionCall: {name, args}} parts after the text, the arguments parsed to
  an object. Gemini 3 refuses a history whose function calls lack the thought signature it gave
  them, which OpenAI clients never keep: the first call of each assistant message carries the
  placeholder Google documents for such clients ("skip_thought_signature_validator").
- `tool` messages -> {functionResponse: {name, response}} parts in a "user" turn; the name is the
  one the tool_call_id's call had earlier in the conversation (an id no call had is a 400). The
  response is the content when it is a JSON object, else {"output": content}: "output" is the key
  Vertex documents for a function's output.
- tools -> `tools: [{functionDeclarations: [{name, description, parameters}]}]`, the JSON Schema
  converted to Vertex's OpenAPI Schema subset (gemini_schema.py says why and how; a keyword it
  cannot express is a 400 naming it); an object with no properties is sent without `parameters`.
  Other tool types are a 400.
- tool_choice -> toolConfig.functionCallingConfig: auto -> AUTO, none -> NONE, required -> ANY, a
  named function -> ANY with allowedFunctionNames [name]; allowed_tools -> its tools only are
  declared, mode AUTO (Vertex takes allowedFunctionNames with ANY only) or ANY for "required".
- generationConfig: max_completion_tokens or max_tokens -> maxOutputTokens; temperature; top_p ->
  topP; stop -> stopSequences; n -> candidateCount; presence_penalty -> presencePenalty;
  frequency_penalty -> frequencyPenalty; seed; logprobs -> responseLogprobs; top_logprobs -> logprobs.
- response_format json_object -> responseMimeType application/json; json_schema -> the same plus
  responseSchema (converted as tools' parameters are); text -> nothing.
- reasoning_effort -> generationConfig.thinkingConfig, with includeThoughts so that the thought
  summaries come back as reasoning_content (not for "none"). Gemini 3 models (a model name with
  "gemini-3" or later) take thinkingLevel: minimal -> MINIMAL, low -> LOW, medium -> MEDIUM,
  high and xhigh -> HIGH, none -> MINIMAL (Gemini 3 cannot turn thinking off). Others take a
  thinkingBudget in tokens: none -> 0, minimal and low -> 1024, medium -> 8192, high and xhigh ->
  24576, the budgets Google's OpenAI compatibility layer uses. A model that refuses the value (2.5 Pro
  cannot think with 0 tokens) answers its own 400.
- `stream` is accepted (the provider picks the streaming path); stream_options is not sent (usage
  comes with every event). logit_bias, user, parallel_tool_calls, store, metadata, service_tier
  have no counterpart and are ignored, as legacy functions/function_call are.

The answer and error halves are in openai_gemini_answer.py, the streamed answer in openai_gemini_stream.py.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from modelyard.core.usage import Usage

from .common import (JSONTranslator, TranslationError, assistant_text, functions_of, image_url_of,
                     loads_object, merged_turns, text_of, tool_arguments, user_blocks)
from .gemini_schema import to_vertex_schema
from .openai_gemini_answer import build_response, error_from_google
from .openai_gemini_stream import GeminiStreamToOpenAI

# URL path extension -> mime type, for fileData parts (Vertex needs the type; it does not sniff).
FILE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
              "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf"}
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
# Google's documented placeholder for function calls replayed without the signature the model gave them.
SKIP_SIGNATURE = "skip_thought_signature_validator"
THINKING_LEVELS = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
                   "xhigh": "HIGH"}
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}
_GENERATION = re.compile(r"gemini-(\d+)")
_FILE_SCHEMES = ("gs://", "https://", "http://")

__all__ = ["FILE_TYPES", "SKIP_SIGNATURE", "THINKING_BUDGETS", "THINKING_LEVELS", "OpenAIToGemini",
           "build_request"]


# ---------------------------------------------------------------- content parts


def _inline(url: str, what: str) -> dict[str, Any]:
    header, sep, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if not sep or "base64" not in params or not media_type:
        raise TranslationError(f"{what} data URLs must name a type and be base64 encoded", "messages")
    return {"inlineData": {"mimeType": media_type.lower(), "data": data}}


def _media_part(url: Any, what: str) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise TranslationError(f"{what} needs a URL", "messages")
    if url.startswith("data:"):
        return _inline(url, what)
    if not url.lower().startswith(_FILE_SCHEMES):
        raise TranslationError(f"{what} must be a base64 data: URL, a gs:// URI or an http(s) URL", "messages")
    path = urlsplit(url).path
    ext = path.rpartition(".")[2].lower() if "." in path.rpartition("/")[2] else ""
    mime = FILE_TYPES.get(ext)
    if mime is None:
        # The URL itself stays out of the message: a signed URL carries a secret.
        raise TranslationError(f"the type of an {what} cannot be told from its path's extension "
                               f"{('.' + ext) if ext else '(none)'} (known: {', '.join(sorted(FILE_TYPES))}); "
                               "send it as a data: URL", "messages")
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _file_part(file: Any) -> dict[str, Any]:
    if not isinstance(file, dict):
        raise TranslationError("file parts need a file object", "messages")
    data = file.get("file_data")
    if isinstance(data, str) and data.startswith("data:"):
        return _inline(data, "file_data")
    if file.get("file_id"):
        raise TranslationError("file_id is not supported by this backend; send the file as file_data", "messages")
    raise TranslationError("file parts need file_data as a base64 data: URL", "messages")


def _audio_part(part: dict[str, Any]) -> dict[str, Any]:
    audio = part.get("input_audio") or {}
    mime = AUDIO_TYPES.get(audio.get("format"))
    if mime is None or not isinstance(audio.get("data"), str):
        raise TranslationError("input_audio needs base64 data and a format of wav or mp3", "messages")
    return {"inlineData": {"mimeType": mime, "data": audio["data"]}}


_PARTS = {"image_url": lambda p: _media_part(image_url_of(p), "image_url"), "input_audio": _audio_part,
          "file": lambda p: _file_part(p.get("file"))}


def _assistant_parts(msg: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    text = assistant_text(msg.get("content"))
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    for i, call in enumerate(msg.get("tool_calls") or []):
        fn = call.get("function") or {}
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError("tool_calls[].function.name is required", "messages")
        if isinstance(call.get("id"), str):
            names[call["id"]] = name
        part: dict[str, Any] = {"functionCall": {"name": name, "args": tool_arguments(fn.get("arguments"))}}
        if i == 0:
            part["thoughtSignature"] = SKIP_SIGNATURE
        parts.append(part)
    return parts


def _tool_response(msg: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    name = names.get(msg.get("tool_call_id"))  # type: ignore[arg-type]
    if name is None:
        raise TranslationError(f"tool message for tool_call_id {msg.get('tool_call_id')!r} answers no tool call "
                               "of an earlier assistant message", "messages")
    text = text_of(msg.get("content"))
    parsed = loads_object(text)
    return {"functionResponse": {"name": name, "response": parsed if parsed is not None else {"output": text}}}


def _contents(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    names: dict[str, str] = {}  # tool_call_id -> function name, from the assistant messages so far
    return merged_turns(messages, {
        "user": ("user", lambda msg: user_blocks(msg.get("content"), lambda t: {"text": t}, _PARTS)),
        "assistant": ("model", lambda msg: _assistant_parts(msg, names)),
        "tool": ("user", lambda msg: [_tool_response(msg, names)])}, "parts")


# ---------------------------------------------------------------- tools


def _declarations(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, fn in enumerate(functions_of(tools)):
        decl: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            decl["description"] = fn["description"]
        params = fn.get("parameters")
        if params:
            schema = to_vertex_schema(params, f"tools[{i}].function.parameters", "tools")
            if schema.get("properties") or schema.get("type") not in ("OBJECT", None):
                decl["parameters"] = schema
        out.append(decl)
    return out


def _named(choice: dict[str, Any]) -> str:
    name = (choice.get("function") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError("tool_choice names no function", "tool_choice")
    return name


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """(tools, toolConfig) for the request; (None, None) without tools."""
    tools = body.get("tools")
    if not tools:
        return None, None
    declarations = _declarations(tools)
    choice = body.get("tool_choice")
    config: dict[str, Any] | None
    if choice is None:
        config = None
    elif choice in ("auto", "none", "required"):
        config = {"mode": {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        config = {"mode": "ANY", "allowedFunctionNames": [_named(choice)]}
    elif isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        keep = {_named(t) for t in allowed.get("tools") or []}
        declarations = [d for d in declarations if d["name"] in keep]
        config = {"mode": "ANY" if allowed.get("mode") == "required" else "AUTO"}
    else:
        raise TranslationError(f"tool_choice {choice!r} is not supported", "tool_choice")
    out_tools = [{"functionDeclarations": declarations}] if declarations else None
    return out_tools, ({"functionCallingConfig": config} if config is not None and out_tools else None)


# ---------------------------------------------------------------- generation config


def _thinking(effort: Any, model: str) -> dict[str, Any]:
    if effort not in THINKING_BUDGETS:
        raise TranslationError(f"reasoning_effort {effort!r} is not supported "
                               f"({', '.join(THINKING_BUDGETS)})", "reasoning_effort")
    generation = _GENERATION.search(model.lower())
    config: dict[str, Any] = ({"thinkingLevel": THINKING_LEVELS[effort]}
                              if generation is not None and int(generation.group(1)) >= 3
                              else {"thinkingBudget": THINKING_BUDGETS[effort]})
    if effort != "none":
        config["includeThoughts"] = True
    return config


def _response_format(fmt: Any, config: dict[str, Any]) -> None:
    if fmt is None:
        return
    kind = fmt.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        config["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        if "schema" not in spec:
            raise TranslationError("response_format.json_schema needs a schema", "response_format")
        config["responseMimeType"] = "application/json"
        config["responseSchema"] = to_vertex_schema(spec["schema"], "response_format.json_schema.schema",
                                                    "response_format")
    else:
        raise TranslationError(f"response_format type {kind!r} is not supported", "response_format")


def _generation_config(body: dict[str, Any], model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit:
        config["maxOutputTokens"] = int(limit)
    for name, key, kind in (("temperature", "temperature", float), ("top_p", "topP", float),
                            ("n", "candidateCount", int), ("presence_penalty", "presencePenalty", float),
                            ("frequency_penalty", "frequencyPenalty", float), ("seed", "seed", int),
                            ("top_logprobs", "logprobs", int)):
        if body.get(name) is not None:
            config[key] = kind(body[name])
    if body.get("logprobs"):
        config["responseLogprobs"] = True
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    _response_format(body.get("response_format"), config)
    if body.get("reasoning_effort") is not None:
        config["thinkingConfig"] = _thinking(body["reasoning_effort"], model)
    return config


# ---------------------------------------------------------------- the request


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The generateContent body; `model` goes in the URL path, and picks the thinking control here."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list", "messages")
    system, contents = _contents(messages)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": s} for s in system]}
    tools, tool_config = _tools(body)
    if tools is not None:
        out["tools"] = tools
    if tool_config is not None:
        out["toolConfig"] = tool_config
    if config := _generation_config(body, model):
        out["generationConfig"] = config
    return out


# ---------------------------------------------------------------- the translator


class OpenAIToGemini(JSONTranslator):
    def build_request(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return build_request(body, model)

    def is_answer(self, answer: dict[str, Any]) -> bool:
        return any(k in answer for k in ("candidates", "promptFeedback", "usageMetadata"))

    def build_answer(self, answer: dict[str, Any], request: dict[str, Any]) -> tuple[Any, Usage | None, str | None]:
        out, usage = build_response(answer)
        return out, usage, out["model"]

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_from_google(status, body)

    def stream(self, include_usage: bool) -> GeminiStreamToOpenAI:
        return GeminiStreamToOpenAI(include_usage)

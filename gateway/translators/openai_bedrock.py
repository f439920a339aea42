"""OpenAI chat completions client -> AWS Bedrock Converse backend (requests, answers whole or streamed).

The AWSBedrock provider (gateway/providers/aws_bedrock.py) uses it for OpenAI clients. The model is
part of the URL (POST /model/{modelId}/converse, or /converse-stream for `stream: true`: the same
body), so `request` ignores it and the body names no model.

Request mapping decisions (OpenAI field -> Converse field):
- system and developer messages, wherever they appear -> top-level `system: [{text}]`.
- user/assistant content -> `messages[].content` blocks: text -> {text}; base64 data: URL images
  -> {image: {format, source: {bytes}}} (format png|jpeg|gif|webp); http(s) image URLs are a 400
  (Converse takes bytes or an S3 location, never a web URL); file parts are a 400 for now.
- assistant tool_calls -> {toolUse: {toolUseId, name, input}} with the arguments parsed to an object;
  `tool` messages -> {toolResult: {toolUseId, content: [{text}]}} in a user turn.
- consecutive messages that land on the same role are merged into one turn (Converse alternates).
- `max_completion_tokens` or `max_tokens` -> inferenceConfig.maxTokens (left out when absent: the
  model's default applies); temperature -> temperature; top_p -> topP; stop -> stopSequences.
- tools -> toolConfig.tools[].toolSpec {name, description, inputSchema: {json}}; tool_choice auto ->
  {auto: {}}, required -> {any: {}}, a named function -> {tool: {name}}. Converse has no "none":
  the tools are then left out, unless the history holds toolUse/toolResult blocks (Converse then
  requires a toolConfig), in which case the tools are sent without a toolChoice.
- response_format json_object -> a system instruction (as for Anthropic); json_schema is a 400.
- `stream: true` is accepted (the provider picks the converse-stream path); stream_options is not
  sent (Converse streams always end with their usage). `n` > 1 is a 400. reasoning_effort ->
  additionalModelRequestFields.thinking for Claude models, with the budgets of the Anthropic
  translator (openai_anthropic.THINKING_BUDGETS; maxTokens grows to hold it); other models: a 400.
  seed, penalties, logit_bias, logprobs, user, parallel_tool_calls are not expressible and ignored.

The answer and error halves are in openai_bedrock_answer.py, the streamed answer in
openai_bedrock_stream.py.
"""

from __future__ import annotations

from typing import Any

from modelyard.core.usage import Usage

from .common import (TranslationError, assistant_text, dumps, functions_of, guarded, image_url_of,
                     merged_turns, text_of, tool_arguments, user_blocks)
from .openai_anthropic import thinking_for
from .openai_bedrock_answer import build_response, converse_answer, error_from_bedrock
from .openai_bedrock_stream import BedrockStreamToOpenAI

JSON_OBJECT_INSTRUCTION = "Respond with a single valid JSON object and nothing else."
# media type -> Converse ImageBlock format
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                 "image/webp": "webp"}

# The geography that starts a cross-region inference profile's ID (us.anthropic.claude-...).
PROFILE_GEOGRAPHIES = frozenset({"us", "eu", "apac", "global", "us-gov", "ca", "jp", "au", "ap", "uk"})

__all__ = ["IMAGE_FORMATS", "JSON_OBJECT_INSTRUCTION", "OpenAIToBedrock", "build_request", "model_base"]


def model_base(model: str) -> str:
    """The "vendor.model" part of a Bedrock model ID: "amazon.titan-embed-text-v2:0" from itself, from
    "us.amazon.titan-..." (an inference profile) and from an ARN ending ".../amazon.titan-...". An ARN
    that names no model (an application inference profile, a provisioned model) gives its opaque ID."""
    base = model.rpartition("/")[2]
    geography, dot, rest = base.partition(".")
    return rest if dot and "." in rest and geography.lower() in PROFILE_GEOGRAPHIES else base


def is_claude(model: str) -> bool:
    """Whether a model ID may be Claude's: it names Anthropic, or names no vendor at all."""
    base = model_base(model)
    vendor, dot, _ = base.partition(".")
    return not dot or vendor == "anthropic" or "claude" in base.lower()


# ---------------------------------------------------------------- request


def _image_block(url: Any) -> dict[str, Any]:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise TranslationError("image_url must be a base64 data: URL on this backend "
                               "(Bedrock Converse cannot fetch web URLs)", "messages")
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64":
        raise TranslationError("image_url data URLs must be base64 encoded", "messages")
    fmt = IMAGE_FORMATS.get(media_type.lower())
    if fmt is None:
        raise TranslationError(f"image type {media_type!r} is not supported by this backend "
                               "(png, jpeg, gif, webp)", "messages")
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def _assistant_blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    text = assistant_text(msg.get("content"))
    blocks: list[dict[str, Any]] = [{"text": text}] if text else []
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append({"toolUse": {"toolUseId": call.get("id"), "name": fn.get("name"),
                                   "input": tool_arguments(fn.get("arguments"))}})
    return blocks


def _tool_result(msg: dict[str, Any]) -> dict[str, Any]:
    return {"toolResult": {"toolUseId": msg.get("tool_call_id"),
                           "content": [{"text": text_of(msg.get("content"))}]}}


def _messages(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    return merged_turns(messages, {  # Converse turns alternate
        "user": ("user", lambda msg: user_blocks(msg.get("content"), lambda t: {"text": t},
                                                 {"image_url": lambda p: _image_block(image_url_of(p))})),
        "assistant": ("assistant", _assistant_blocks),
        "tool": ("user", lambda msg: [_tool_result(msg)])})


def _tool_specs(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for fn in functions_of(tools):
        spec: dict[str, Any] = {"name": fn.get("name")}
        if fn.get("description"):
            spec["description"] = fn["description"]
        spec["inputSchema"] = {"json": fn.get("parameters") or {"type": "object", "properties": {}}}
        out.append({"toolSpec": spec})
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None or choice == "none":
        return None
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"tool": {"name": (choice.get("function") or {}).get("name")}}
    raise TranslationError(f"tool_choice {choice!r} is not supported", "tool_choice")


def uses_tools(turns: list[dict[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for t in turns for b in t["content"])


def tool_config(specs: list[dict[str, Any]], choice: dict[str, Any] | None, none: bool,
                turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """toolConfig: the tools and the choice. Converse has no choice of none: with it the tools are
    left out, unless the history holds toolUse/toolResult blocks (Converse then wants a toolConfig)."""
    if none and not uses_tools(turns):
        return None
    config: dict[str, Any] = {"tools": specs}
    if choice is not None:
        config["toolChoice"] = choice
    return config


def inference_config(limit: Any, temperature: Any, top_p: Any, stop: Any) -> dict[str, Any] | None:
    """inferenceConfig, from the client's values (None: not sent)."""
    config: dict[str, Any] = {}
    if limit:
        config["maxTokens"] = int(limit)
    if temperature is not None:
        config["temperature"] = float(temperature)
    if top_p is not None:
        config["topP"] = float(top_p)
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    return config or None


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Converse body; `model` belongs in the URL path, so it is not used here."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be a list", "messages")
    if (body.get("n") or 1) != 1:
        raise TranslationError("n > 1 is not supported by this backend", "n")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    effort = body.get("reasoning_effort")
    thinking = None
    if effort not in (None, "none"):
        if not is_claude(model):
            raise TranslationError(f"reasoning_effort is not supported for {model} on this backend (Converse takes "
                                   "it for Claude models, as thinking)", "reasoning_effort")
        thinking, limit = thinking_for(effort, limit)  # as for Anthropic's API: a budget within max_tokens
    system, turns = _messages(messages)
    out: dict[str, Any] = {"messages": turns}

    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        raise TranslationError("response_format json_schema is not supported by this backend", "response_format")
    if fmt.get("type") == "json_object":
        system.append(JSON_OBJECT_INSTRUCTION)
    if system:
        out["system"] = [{"text": s} for s in system]

    config = inference_config(limit, body.get("temperature"), body.get("top_p"), body.get("stop"))
    if config is not None:
        out["inferenceConfig"] = config
    if thinking is not None:
        out["additionalModelRequestFields"] = {"thinking": thinking}
    if body.get("tools"):
        choice = body.get("tool_choice")
        tools = tool_config(_tool_specs(body["tools"]), _tool_choice(choice), choice == "none", turns)
        if tools is not None:
            out["toolConfig"] = tools
    return out


# ---------------------------------------------------------------- the translator


class OpenAIToBedrock:
    def request(self, body: dict[str, Any], model: str) -> bytes:
        return dumps(guarded(build_request, body, model))

    def response(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        return converse_answer(body, build_response)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return error_from_bedrock(status, body)

    def stream(self, include_usage: bool) -> BedrockStreamToOpenAI:
        # ConverseStream answers in AWS event-stream framing (binary, not SSE): see openai_bedrock_stream.
        return BedrockStreamToOpenAI(include_usage)

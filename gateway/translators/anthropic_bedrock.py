"""Anthropic Messages client -> AWS Bedrock Converse backend (requests, answers whole or streamed).

The AWSBedrock provider (gateway/providers/aws_bedrock.py) uses it for Anthropic clients: POST
/model/{modelId}/converse, or /converse-stream for `stream: true` (the same body), so the body
names no model; the model ID is still read, to tell Claude from other vendors' models.

Request mapping decisions (Anthropic field -> Converse field):
- `system` (a string, or text blocks) -> `system: [{text}]`.
- content blocks, in user and assistant turns: text -> {text} (empty ones are left out: Converse
  refuses blank text); image with a base64 source -> {image: {format, source: {bytes}}} (png, jpeg,
  gif, webp); an image URL source is a 400 (Converse takes bytes or an S3 location, never a web
  URL); document with a base64 PDF -> {document: {format: pdf, name, source: {bytes}}} (the name
  from its title, reduced to the characters Converse allows), with a text source -> {text};
  tool_use -> {toolUse: {toolUseId, name, input}}; tool_result -> {toolResult: {toolUseId,
  content: [{text} | {image} | {document}], status: "error" when is_error}}; thinking ->
  {reasoningContent: {reasoningText: {text, signature}}}; redacted_thinking ->
  {reasoningContent: {redactedContent}}. Server tool blocks (web search...) and others are 400s.
- `cache_control` on a system block, a content block or a tool -> a {cachePoint: {type: default}}
  right after it (Converse's prompt caching marker).
- consecutive turns of the same role are merged (Converse alternates).
- max_tokens -> inferenceConfig.maxTokens; temperature -> temperature; top_p -> topP;
  stop_sequences -> stopSequences.
- top_k -> additionalModelRequestFields.top_k, and `thinking` (enabled with its budget_tokens,
  adaptive, disabled) -> additionalModelRequestFields.thinking, as Claude takes them. For a model
  ID that names another vendor (amazon.nova-..., meta.llama...), top_k and a disabled thinking are
  left out and an enabled one is a 400; an ID that names no model (an application inference
  profile's ARN) is taken to be Claude's.
- the anthropic-beta header (request_with_headers) -> additionalModelRequestFields.anthropic_beta
  for Claude, with the flags Bedrock accepts only (anthropic_awsanthropic.bedrock_betas).
- with stop_sequences, a Claude model is asked for `additionalModelResponseFieldPaths:
  ["/stop_sequence"]`, so the answer can say which one ended it (Converse itself does not).
- tools -> toolConfig.tools[].toolSpec {name, description, inputSchema: {json: input_schema}};
  server tools (a `type` other than custom) are 400s. tool_choice auto -> {auto: {}}, any ->
  {any: {}}, tool -> {tool: {name}}; Converse has no "none": the tools are then left out, unless
  the history holds toolUse/toolResult blocks (Converse then requires a toolConfig), and are sent
  without a toolChoice. disable_parallel_tool_use has no Converse counterpart and is ignored.
- output_config.format / output_format (structured outputs) are 400s; metadata, service_tier and
  `stream` (the provider's path says it) are not sent.

The answer and error halves are in anthropic_bedrock_answer.py, the streamed answer in
anthropic_bedrock_stream.py.
"""

from __future__ import annotations

import re
from typing import Any

from modelyard.core.usage import Usage

from .anthropic_awsanthropic import bedrock_betas
from .anthropic_bedrock_answer import anthropic_error_from_bedrock, build_response
from .anthropic_bedrock_stream import BedrockStreamToAnthropic
from .common import TranslationError, dumps, guarded
from .openai_bedrock import IMAGE_FORMATS, inference_config, is_claude, tool_config
from .openai_bedrock_answer import converse_answer

CACHE_POINT = {"cachePoint": {"type": "default"}}
TOOL_RESULT_BLOCKS = frozenset({"text", "image", "document"})  # what a toolResult's content holds
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9\s\-()\[\]]+")

__all__ = ["AnthropicToBedrock", "build_request", "is_claude"]


# ---------------------------------------------------------------- request


def _cached(block: dict[str, Any], out: list[dict[str, Any]]) -> None:
    if isinstance(block.get("cache_control"), dict):
        out.append(CACHE_POINT)


def _image(block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") != "base64":
        raise TranslationError(f"image source type {source.get('type')!r} is not supported by this backend "
                               "(Bedrock Converse takes base64 images, never URLs)")
    fmt = IMAGE_FORMATS.get(str(source.get("media_type")).lower())
    if fmt is None:
        raise TranslationError(f"image type {source.get('media_type')!r} is not supported by this backend "
                               "(png, jpeg, gif, webp)")
    return {"image": {"format": fmt, "source": {"bytes": source.get("data")}}}


def _document(block: dict[str, Any], names: list[str]) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "text":
        return {"text": source.get("data") or ""}
    if source.get("type") != "base64" or source.get("media_type") != "application/pdf":
        raise TranslationError(f"document source {source.get('type')!r} ({source.get('media_type')}) is not "
                               "supported by this backend (base64 PDFs and plain text are)")
    # Converse names each document: letters, digits, single spaces, hyphens, parentheses, brackets.
    name = " ".join(_NAME_UNSAFE.sub(" ", str(block.get("title") or "")).split())[:200] or "document"
    if name in names:
        name = f"{name} ({len(names) + 1})"
    names.append(name)
    return {"document": {"format": "pdf", "name": name, "source": {"bytes": source.get("data")}}}


def _tool_result(block: dict[str, Any], names: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"toolUseId": block.get("tool_use_id"),
                              "content": _blocks(block.get("content"), names, TOOL_RESULT_BLOCKS)}
    if block.get("is_error"):
        result["status"] = "error"
    return {"toolResult": result}


def _block(block: dict[str, Any], names: list[str]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"text": block["text"]} if block.get("text") else None
    if kind == "image":
        return _image(block)
    if kind == "document":
        return _document(block, names)
    if kind == "tool_use":
        tool_input = block.get("input")
        return {"toolUse": {"toolUseId": block.get("id"), "name": block.get("name"),
                            "input": tool_input if isinstance(tool_input, dict) else {}}}
    if kind == "tool_result":
        return _tool_result(block, names)
    if kind == "thinking":
        text: dict[str, Any] = {"text": block.get("thinking") or ""}
        if block.get("signature"):
            text["signature"] = block["signature"]
        return {"reasoningContent": {"reasoningText": text}}
    if kind == "redacted_thinking":
        return {"reasoningContent": {"redactedContent": block.get("data")}}
    raise TranslationError(f"content block type {kind!r} is not supported by this backend")


def _blocks(content: Any, names: list[str], kinds: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """A turn's content (or, with `kinds`, a tool result's, which holds those kinds only)."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out: list[dict[str, Any]] = []
    for block in content or []:
        if kinds is not None and block.get("type") not in kinds:
            raise TranslationError(f"tool_result content type {block.get('type')!r} is not supported by this backend")
        if (converted := _block(block, names)) is not None:
            out.append(converted)
        if kinds is None:  # a cache point ends a turn's block, never a tool result's part
            _cached(block, out)
    return out


def _system(system: Any) -> list[dict[str, Any]]:
    if isinstance(system, str):
        return [{"text": system}] if system else []
    out: list[dict[str, Any]] = []
    for block in system or []:
        if block.get("type") != "text":
            raise TranslationError(f"system block type {block.get('type')!r} is not supported")
        if block.get("text"):
            out.append({"text": block["text"]})
            _cached(block, out)
    return out


def _turns(messages: list[Any]) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    names: list[str] = []  # document names: unique in a request
    for msg in messages:
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise TranslationError(f"messages: role {role!r} is not supported")
        blocks = _blocks(msg.get("content"), names)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:  # Converse turns alternate: merge
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tool in tools:
        if tool.get("type") not in (None, "custom"):
            raise TranslationError(f"server tool {tool.get('type')!r} is not available on this backend")
        spec: dict[str, Any] = {"name": tool.get("name")}
        if tool.get("description"):
            spec["description"] = tool["description"]
        spec["inputSchema"] = {"json": tool.get("input_schema") or {"type": "object", "properties": {}}}
        out.append({"toolSpec": spec})
        _cached(tool, out)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice is None or kind == "none":
        return None
    if kind == "auto":
        return {"auto": {}}
    if kind == "any":
        return {"any": {}}
    if kind == "tool":
        return {"tool": {"name": choice.get("name")}}
    raise TranslationError(f"tool_choice {choice!r} is not supported")


def _model_fields(body: dict[str, Any], model: str, betas: list[str]) -> dict[str, Any]:
    """additionalModelRequestFields: what Claude takes beyond Converse's own fields."""
    claude = is_claude(model)
    fields: dict[str, Any] = {}
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        if claude:
            fields["thinking"] = thinking
        elif thinking.get("type") != "disabled":
            raise TranslationError(f"thinking is not supported by {model} on this backend (only Claude models "
                                   "take it through Converse)")
    if not claude:
        return fields
    if body.get("top_k") is not None:
        fields["top_k"] = int(body["top_k"])
    if betas:
        fields["anthropic_beta"] = betas
    return fields


def build_request(body: dict[str, Any], model: str, beta_header: str | None = None) -> dict[str, Any]:
    """The Converse body; the model goes in the URL path, and says what Claude-only fields may go."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages: must be a list")
    if ((body.get("output_config") or {}).get("format") or body.get("output_format")) is not None:
        raise TranslationError("structured outputs (output_config.format) are not supported by this backend")
    turns = _turns(messages)
    out: dict[str, Any] = {"messages": turns}
    if system := _system(body.get("system")):
        out["system"] = system

    stop = body.get("stop_sequences")
    config = inference_config(body.get("max_tokens"), body.get("temperature"), body.get("top_p"), stop)
    if config is not None:
        out["inferenceConfig"] = config
    if body.get("tools"):
        choice = body.get("tool_choice")
        none = isinstance(choice, dict) and choice.get("type") == "none"
        tools = tool_config(_tools(body["tools"]), _tool_choice(choice), none, turns)
        if tools is not None:
            out["toolConfig"] = tools
    if fields := _model_fields(body, model, bedrock_betas(beta_header)):
        out["additionalModelRequestFields"] = fields
    if stop and is_claude(model):
        out["additionalModelResponseFieldPaths"] = ["/stop_sequence"]
    return out


# ---------------------------------------------------------------- the translator


class AnthropicToBedrock:
    def request(self, body: dict[str, Any], model: str) -> bytes:
        return dumps(guarded(build_request, body, model))

    def request_with_headers(self, body: dict[str, Any], model: str, headers: Any) -> bytes:
        beta = headers.get("anthropic-beta")
        return dumps(guarded(lambda b, m: build_request(b, m, beta), body, model))

    def response(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        return converse_answer(body, build_response)

    def error(self, status: int, body: bytes) -> tuple[int, bytes]:
        return anthropic_error_from_bedrock(status, body)

    def stream(self, include_usage: bool) -> BedrockStreamToAnthropic:
        return BedrockStreamToAnthropic()  # Anthropic streams always carry usage

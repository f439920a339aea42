"""Anthropic Messages API requests checked as the API checks them, and refused with its messages.

``validate_request`` checks a ``POST /v1/messages`` (or ``count_tokens``) body against the
documented request schema: fields, roles and content blocks, tool definitions and tool_use /
tool_result pairing, tool_choice, extended thinking and the sampling parameters. A refusal is a
``_BadRequest`` that the app answers as ``{"type": "error", "error": {"type":
"invalid_request_error", "message": ...}}``.
"""

from __future__ import annotations

import re
from typing import Any

from modelyard.loadtest.mock.wire import _BadRequest

# Top-level fields of each endpoint. Those not checked below are accepted as they come.
_MESSAGE_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "tools", "tool_choice", "stop_sequences", "temperature",
    "top_p", "top_k", "stream", "thinking", "metadata", "service_tier", "cache_control",
    "container", "diagnostics", "inference_geo", "output_config", "output_format", "speed", "user_profile_id",
    "workspace_id", "mcp_servers", "context_management",
})
_COUNT_FIELDS = frozenset({
    "model", "messages", "system", "tools", "tool_choice", "thinking", "cache_control",
    "output_config", "output_format", "speed", "user_profile_id", "workspace_id", "mcp_servers", "context_management",
})
_BLOCK_FIELDS = {
    "text": frozenset({"type", "text", "cache_control", "citations"}),
    "image": frozenset({"type", "source", "cache_control"}),
    "document": frozenset({"type", "source", "title", "context", "citations", "cache_control"}),
    "tool_use": frozenset({"type", "id", "name", "input", "cache_control"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"}),
    "thinking": frozenset({"type", "thinking", "signature"}),
    "redacted_thinking": frozenset({"type", "data"}),
}
_BLOCK_TAGS = ", ".join(f"'{t}'" for t in _BLOCK_FIELDS)
_ASSISTANT_ONLY = frozenset({"tool_use", "thinking", "redacted_thinking"})
_USER_ONLY = frozenset({"tool_result", "image", "document"})
_TOOL_RESULT_BLOCKS = frozenset({"text", "image", "document"})
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "cache_control", "strict"})
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def _fail(message: str) -> None:
    raise _BadRequest(400, message, kind="invalid_request_error")


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _no_extra(path: str, obj: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in obj:
        if key not in allowed:
            _fail(f"{path}{key}: Extra inputs are not permitted")


def _require_str(path: str, obj: dict[str, Any], key: str) -> str:
    if key not in obj:
        _fail(f"{path}.{key}: Field required")
    value = obj[key]
    if not isinstance(value, str):
        _fail(f"{path}.{key}: Input should be a valid string")
    return value


def _check_dict(path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(f"{path}: Input should be a valid dictionary")
    return value


def _check_cache_control(path: str, block: dict[str, Any]) -> None:
    cc = block.get("cache_control")
    if cc is None:
        return
    where = f"{path}.cache_control" if path else "cache_control"
    cc = _check_dict(where, cc)
    _no_extra(where + ".", cc, frozenset({"type", "ttl"}))
    if cc.get("type") != "ephemeral":
        _fail(f"{where}.type: Input should be 'ephemeral'")
    if "ttl" in cc and cc["ttl"] not in ("5m", "1h"):
        _fail(f"{where}.ttl: Input should be '5m' or '1h'")


def _check_source(path: str, kind: str, source: Any) -> None:
    source = _check_dict(f"{path}.source", source)
    stype = source.get("type")
    if kind == "image":
        if stype == "base64":
            if source.get("media_type") not in _IMAGE_TYPES:
                _fail(f"{path}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                      "'image/gif' or 'image/webp'")
            _require_str(f"{path}.source.base64", source, "data")
        elif stype == "url":
            _require_str(f"{path}.source.url", source, "url")
        elif stype == "file":
            _require_str(f"{path}.source.file", source, "file_id")
        else:
            _fail(f"{path}.source: Input tag '{stype}' found using 'type' does not match any of the expected "
                  "tags: 'base64', 'url', 'file'")
    elif stype not in ("base64", "text", "url", "content", "file"):
        _fail(f"{path}.source: Input tag '{stype}' found using 'type' does not match any of the expected "
              "tags: 'base64', 'text', 'content', 'url', 'file'")


def _check_block(path: str, block: Any, role: str, nested: bool = False) -> str:
    """One content block; its type."""
    block = _check_dict(path, block)
    kind = block.get("type")
    allowed = _BLOCK_FIELDS.get(kind) if isinstance(kind, str) else None
    if allowed is None or (nested and kind not in _TOOL_RESULT_BLOCKS):
        tags = "'text', 'image', 'document'" if nested else _BLOCK_TAGS
        _fail(f"{path}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {tags}")
    _no_extra(f"{path}.{kind}.", block, allowed)
    if role == "user" and kind in _ASSISTANT_ONLY:
        _fail(f"{path}.type: `{kind}` blocks are only allowed in assistant messages")
    if role == "assistant" and kind in _USER_ONLY:
        _fail(f"{path}.type: `{kind}` blocks are only allowed in user messages")
    _check_cache_control(path, block)
    if kind == "text":
        if not _require_str(path + ".text", block, "text"):
            _fail("messages: text content blocks must be non-empty")
    elif kind in ("image", "document"):
        if "source" not in block:
            _fail(f"{path}.{kind}.source: Field required")
        _check_source(path, kind, block["source"])
    elif kind == "tool_use":
        tid = _require_str(path + ".tool_use", block, "id")
        if not _TOOL_USE_ID.match(tid):
            _fail(f"{path}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        _require_str(path + ".tool_use", block, "name")
        if "input" not in block:
            _fail(f"{path}.tool_use.input: Field required")
        _check_dict(f"{path}.tool_use.input", block["input"])
    elif kind == "tool_result":
        _require_str(path + ".tool_result", block, "tool_use_id")
        content = block.get("content")
        if isinstance(content, list):
            for j, inner in enumerate(content):
                _check_block(f"{path}.tool_result.content.{j}", inner, "user", nested=True)
        elif content is not None and not isinstance(content, str):
            _fail(f"{path}.tool_result.content: Input should be a valid string or a valid list")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            _fail(f"{path}.tool_result.is_error: Input should be a valid boolean")
    elif kind == "thinking":
        _require_str(path + ".thinking", block, "thinking")
        _require_str(path + ".thinking", block, "signature")
    elif kind == "redacted_thinking":
        _require_str(path + ".redacted_thinking", block, "data")
    return kind


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return content if isinstance(content, list) else []


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        _fail("messages: Input should be a valid list")
    if not messages:
        _fail("messages: at least one message is required")
    last = len(messages) - 1
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        message = _check_dict(path, message)
        _no_extra(path + ".", message, frozenset({"role", "content"}))
        if "role" not in message:
            _fail(f"{path}.role: Field required")
        role = message["role"]
        if role not in ("user", "assistant"):
            _fail(f"{path}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            _fail(f"{path}.content: Field required")
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                _check_block(f"{path}.content.{j}", block, role)
        elif not isinstance(content, str):
            _fail(f"{path}.content: Input should be a valid string or a valid list")
        if not content and not (i == last and role == "assistant"):
            _fail(f"{path}: all messages must have non-empty content except for the optional final "
                  "assistant message")
    if messages[0]["role"] != "user":
        _fail('messages: first message must use the "user" role')
    final = messages[-1]
    if final["role"] == "assistant":
        content = final["content"]
        tail = content if isinstance(content, str) else (
            content[-1].get("text", "") if content and content[-1].get("type") == "text" else "")
        if tail and tail[-1].isspace():
            _fail("messages: final assistant content cannot end with trailing whitespace")
    _check_tool_pairs(messages)
    return messages


def _check_tool_pairs(messages: list[dict[str, Any]]) -> None:
    """Every tool_use answered by a tool_result in the next message, and no tool_result without one."""
    previous_ids: list[str] = []
    for i, message in enumerate(messages):
        blocks = _blocks(message)
        if message["role"] == "user":
            results = []
            for j, block in enumerate(blocks):
                if block["type"] == "tool_result":
                    tid = block["tool_use_id"]
                    if tid not in previous_ids:
                        _fail(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                              f"{tid}. Each `tool_result` block must have a corresponding `tool_use` block in the "
                              "previous message.")
                    results.append(tid)
            missing = [tid for tid in previous_ids if tid not in results]
            if missing:
                _fail(f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                      f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                      "in the next message.")
            previous_ids = []
        else:
            previous_ids = [b["id"] for b in blocks if b["type"] == "tool_use"]


def _check_system(system: Any) -> None:
    if isinstance(system, str):
        return
    if not isinstance(system, list):
        _fail("system: Input should be a valid string or a valid list")
    for i, block in enumerate(system):
        block = _check_dict(f"system.{i}", block)
        if block.get("type") != "text":
            _fail(f"system.{i}.type: Input should be 'text'")
        _no_extra(f"system.{i}.", block, _BLOCK_FIELDS["text"])
        if not _require_str(f"system.{i}", block, "text"):
            _fail("system: text content blocks must be non-empty")
        _check_cache_control(f"system.{i}", block)


def _check_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        _fail("tools: Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        tool = _check_dict(path, tool)
        kind = tool.get("type")
        if kind is None or kind == "custom":
            _no_extra(f"{path}.custom.", tool, _TOOL_FIELDS)
            name = _require_str(path + ".custom", tool, "name")
            if not _TOOL_NAME.match(name):
                _fail(f"{path}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            if "description" in tool and not isinstance(tool["description"], str):
                _fail(f"{path}.custom.description: Input should be a valid string")
            if "input_schema" not in tool:
                _fail(f"{path}.custom.input_schema: Field required")
            schema = _check_dict(f"{path}.custom.input_schema", tool["input_schema"])
            if schema.get("type") != "object":
                _fail(f"{path}.custom.input_schema.type: Input should be 'object'")
            _check_cache_control(path, tool)
        else:  # a server or client tool of Anthropic's (bash_..., web_search_..., ...): name and version only
            if not isinstance(kind, str):
                _fail(f"{path}.type: Input should be a valid string")
            name = _require_str(f"{path}.{kind}", tool, "name")
        if name in names:
            _fail("tools: Tool names must be unique.")
        names.add(name)
    return tools


def _check_tool_choice(choice: Any, tools: list[dict[str, Any]] | None) -> None:
    choice = _check_dict("tool_choice", choice)
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        _fail(f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
              "'auto', 'any', 'tool', 'none'")
    allowed = {"type", "name", "disable_parallel_tool_use"} if kind == "tool" else (
        {"type"} if kind == "none" else {"type", "disable_parallel_tool_use"})
    _no_extra(f"tool_choice.{kind}.", choice, frozenset(allowed))
    if "disable_parallel_tool_use" in choice and not isinstance(choice["disable_parallel_tool_use"], bool):
        _fail(f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean")
    if kind in ("any", "tool") and not tools:
        _fail("tool_choice: tool_choice may only be specified while providing tools.")
    if kind == "tool":
        name = _require_str("tool_choice.tool", choice, "name")
        if name not in {t.get("name") for t in tools or ()}:
            _fail(f"tool_choice.tool.name: Tool '{name}' not found in provided tools")


def _check_thinking(thinking: Any) -> int | None:
    """The thinking budget when extended thinking is enabled."""
    thinking = _check_dict("thinking", thinking)
    kind = thinking.get("type")
    if kind == "enabled":
        _no_extra("thinking.enabled.", thinking, frozenset({"type", "budget_tokens", "display"}))
        if "budget_tokens" not in thinking:
            _fail("thinking.enabled.budget_tokens: Field required")
        budget = thinking["budget_tokens"]
        if not _is_int(budget):
            _fail("thinking.enabled.budget_tokens: Input should be a valid integer")
        if budget < 1024:
            _fail("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        return budget
    if kind == "disabled":
        _no_extra("thinking.disabled.", thinking, frozenset({"type"}))
        return None
    if kind == "adaptive":
        return 0
    _fail(f"thinking: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
          "'enabled', 'disabled', 'adaptive'")
    return None


def _check_unit_interval(req: dict[str, Any], key: str) -> None:
    if key in req:
        value = req[key]
        if not _is_number(value):
            _fail(f"{key}: Input should be a valid number")
        if value < 0:
            _fail(f"{key}: Input should be greater than or equal to 0")
        if value > 1:
            _fail(f"{key}: Input should be less than or equal to 1")


def validate_request(req: Any, count: bool = False) -> int | None:
    """Check a /v1/messages (or, with ``count``, a count_tokens) body; the thinking budget, if enabled."""
    if not isinstance(req, dict):
        _fail("Input should be a valid dictionary")
    _no_extra("", req, _COUNT_FIELDS if count else _MESSAGE_FIELDS)
    if "model" not in req:
        _fail("model: Field required")
    if not isinstance(req["model"], str) or not req["model"]:
        _fail("model: Input should be a valid string")
    if not count:
        if "max_tokens" not in req:
            _fail("max_tokens: Field required")
        if not _is_int(req["max_tokens"]):
            _fail("max_tokens: Input should be a valid integer")
        if req["max_tokens"] < 1:
            _fail("max_tokens: Input should be greater than or equal to 1")
    if "messages" not in req:
        _fail("messages: Field required")
    _check_messages(req["messages"])
    if "system" in req:
        _check_system(req["system"])
    tools = _check_tools(req["tools"]) if "tools" in req else None
    if "tool_choice" in req:
        _check_tool_choice(req["tool_choice"], tools)
    if "stop_sequences" in req:
        seqs = req["stop_sequences"]
        if not isinstance(seqs, list) or not all(isinstance(s, str) for s in seqs):
            _fail("stop_sequences: Input should be a valid list of strings")
        if any(not s.strip() for s in seqs):
            _fail("stop_sequences: each stop sequence must contain non-whitespace")
    _check_unit_interval(req, "temperature")
    _check_unit_interval(req, "top_p")
    if "top_k" in req and (not _is_int(req["top_k"]) or req["top_k"] < 0):
        _fail("top_k: Input should be a non-negative integer")
    if "stream" in req and not isinstance(req["stream"], bool):
        _fail("stream: Input should be a valid boolean")
    if "metadata" in req:
        metadata = _check_dict("metadata", req["metadata"])
        _no_extra("metadata.", metadata, frozenset({"user_id"}))
        user_id = metadata.get("user_id")
        if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 256):
            _fail("metadata.user_id: Input should be a valid string of at most 256 characters")
    _check_cache_control("", req)
    if "speed" in req and req["speed"] not in (None, "standard", "fast"):
        _fail("speed: Input should be 'standard' or 'fast'")
    if "service_tier" in req and req["service_tier"] not in ("auto", "standard_only"):
        _fail("service_tier: Input should be 'auto' or 'standard_only'")
    budget = _check_thinking(req["thinking"]) if "thinking" in req else None
    if budget:
        if not count and req["max_tokens"] <= budget:
            _fail("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
                  "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size")
        if "temperature" in req and req["temperature"] != 1:
            _fail("`temperature` may only be set to 1 when thinking is enabled. Please consult our documentation at "
                  "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#feature-compatibility")
        if "top_k" in req:
            _fail("`top_k` must be unset when thinking is enabled.")
        if "top_p" in req and req["top_p"] < 0.95:
            _fail("`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled.")
        choice = req.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
            _fail("Thinking may not be enabled when tool_choice forces tool use.")
    return budget or None

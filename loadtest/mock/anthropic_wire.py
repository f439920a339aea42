"""The Anthropic Messages API as the mock backend speaks it (``modelyard mock --api anthropic``).

Endpoints: ``POST /v1/messages`` (whole answers and the SSE event sequence),
``POST /v1/messages/count_tokens``, ``GET /v1/models`` and ``GET /v1/models/{id}``. Requests are
checked against the documented request schema and refused the way the API refuses them:
``{"type": "error", "error": {"type": "invalid_request_error", "message": ...}, "request_id": ...}``.

Answers are deterministic: the text is ``tok0 tok1 ...`` (as in the OpenAI mock), a request with
tools whose last user turn mentions "weather" or a tool's name (or whose ``tool_choice`` forces a
tool) is answered with a ``tool_use`` block, and enabled extended thinking adds a ``thinking``
block. Token counts are rough estimates (a token per 4 characters); cache usage comes from
``--cache-read``/``--cache-creation`` or the ``x-mock-cache-read``/``x-mock-cache-creation``
headers. ``x-mock-error-after: N`` (or ``--error-after``) ends a stream with an
``overloaded_error`` event after N deltas. The shared ``x-mock-*`` controls, flags and
``/mock/requests`` recording come from ``loadtest.mock_backend``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import re
import string
import time
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
from granian.rsgi import ProtocolClosed

from modelyard.loadtest.mock.abort import _abort_connection
from modelyard.loadtest.mock.backend import (
    DEFAULT_MODEL,
    MockApp,
    MockConfig,
    _int_header,
    config_from_env,
)
from modelyard.loadtest.mock.providers import ProviderConfig, provider_config_from_env
from modelyard.loadtest.mock.openai_wire import _BadRequest, _content, _decode_any, _encode

# --- wire constants -------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_KNOWN_ERROR_TYPES = frozenset(_ERROR_TYPES.values())

_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_OVERLOADED_EVENT = (
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
)

_ID_ALPHABET = string.ascii_letters + string.digits
_IMAGE_TOKENS = 64  # a flat estimate per image or document
_THINKING_PIECES = ("Mock ", "reasoning ", "step.")
_MODEL_CONTEXT = 200_000
_MODEL_MAX_TOKENS = 64_000

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
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _new_id(prefix: str) -> str:
    """``msg_01...``-style identifiers: the prefix, ``01`` and 22 base62 characters."""
    return prefix + "01" + "".join(random.choices(_ID_ALPHABET, k=22))


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def _error_json(status: int, message: str, kind: str | None, request_id: str) -> bytes:
    kind = kind if kind in _KNOWN_ERROR_TYPES else _error_type(status)
    return _encode({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(data) + b"\n\n"


# --- request validation -----------------------------------------------------------


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


# --- token estimates and answers -----------------------------------------------------


def _block_chars(block: dict[str, Any]) -> tuple[int, int]:
    """(characters, images) in one content block."""
    kind = block.get("type")
    if kind == "text":
        return len(block.get("text") or ""), 0
    if kind in ("image", "document"):
        return 0, 1
    if kind == "tool_use":
        return len(block.get("name") or "") + len(_encode(block.get("input"))), 0
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return len(content), 0
        chars = images = 0
        for inner in content or ():
            c, i = _block_chars(inner)
            chars, images = chars + c, images + i
        return chars, images
    if kind == "thinking":
        return len(block.get("thinking") or ""), 0
    return 0, 0


def estimate_input_tokens(req: dict[str, Any]) -> int:
    """A rough token count of the system prompt, messages and tools: a token per 4 characters."""
    chars = images = 0
    system = req.get("system")
    if isinstance(system, str):
        chars += len(system)
    elif isinstance(system, list):
        chars += sum(len(b.get("text") or "") for b in system)
    for message in req.get("messages") or ():
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        else:
            for block in content or ():
                c, i = _block_chars(block)
                chars, images = chars + c, images + i
    for tool in req.get("tools") or ():
        chars += len(_encode(tool))
    return max(1, -(-chars // 4)) + images * _IMAGE_TOKENS


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the final message when it is the user's (tool results excluded)."""
    last = messages[-1]
    if last["role"] != "user":
        return ""
    content = last["content"]
    if isinstance(content, str):
        return content
    return " ".join(b.get("text") or "" for b in content if b.get("type") == "text")


def _pick_tool(req: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """The custom tool to call, if any, and whether tool_choice forced it."""
    tools = [t for t in req.get("tools") or () if t.get("type") in (None, "custom")]
    if not tools:
        return None, False
    choice = req.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type")
    if kind == "none":
        return None, False
    if kind == "tool":
        return next((t for t in tools if t["name"] == choice["name"]), None), True
    text = _last_user_text(req["messages"]).lower()
    named = next((t for t in tools if t["name"].lower() in text), None) if text else None
    if kind == "any":
        return named or tools[0], True
    if named is not None:
        return named, False
    if "weather" in text:
        return next((t for t in tools if "weather" in t["name"].lower()), tools[0]), False
    return None, False


def example_value(schema: Any, key: str = "", depth: int = 0) -> Any:
    """A value matching a JSON schema well enough for a mock tool call."""
    if not isinstance(schema, dict) or depth > 5:
        return f"mock {key}".strip()
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required")
        keys = [k for k in required if isinstance(k, str)] if isinstance(required, list) and required else list(props)
        return {k: example_value(props.get(k), k, depth + 1) for k in keys}
    if kind == "array":
        return [example_value(schema.get("items"), key, depth + 1)] if isinstance(schema.get("items"), dict) else []
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"mock {key}".strip()


def _split_json(text: str, parts: int = 4) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i:i + size] for i in range(0, len(text), size)]


def _text_pieces(n: int, stop_sequences: Any) -> tuple[list[str], str | None]:
    """The streamed pieces of ``tok0 tok1 ...``, cut before the first stop sequence; the sequence hit."""
    pieces = [f"tok{i} " for i in range(n)]
    if not stop_sequences:
        return pieces, None
    text = _content(n)
    cut, hit = -1, None
    for seq in stop_sequences:
        at = text.find(seq)
        if at >= 0 and (cut < 0 or at < cut):
            cut, hit = at, seq
    if hit is None:
        return pieces, None
    out, pos = [], 0
    for piece in pieces:
        if pos + len(piece) > cut:
            if cut > pos:
                out.append(text[pos:cut])
            break
        out.append(piece)
        pos += len(piece)
    return out, hit


class _Block(msgspec.Struct):
    """One content block of an answer: its whole form, its content_block_start form and its deltas."""

    whole: dict[str, Any]
    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    tokens: int


def _text_block(pieces: list[str]) -> _Block:
    return _Block(
        whole={"type": "text", "text": "".join(pieces)},
        start={"type": "text", "text": ""},
        deltas=[{"type": "text_delta", "text": p} for p in pieces],
        tokens=len(pieces),
    )


def _thinking_block(seed: str) -> _Block:
    signature = base64.b64encode(hashlib.sha256(seed.encode()).digest() * 2).decode("ascii")
    return _Block(
        whole={"type": "thinking", "thinking": "".join(_THINKING_PIECES), "signature": signature},
        start={"type": "thinking", "thinking": "", "signature": ""},
        deltas=[*({"type": "thinking_delta", "thinking": p} for p in _THINKING_PIECES),
                {"type": "signature_delta", "signature": signature}],
        tokens=len(_THINKING_PIECES),
    )


def _tool_block(tool: dict[str, Any]) -> _Block:
    tool_input = example_value(tool.get("input_schema"))
    if not isinstance(tool_input, dict):
        tool_input = {}
    raw = _encode(tool_input).decode()
    tid = _new_id("toolu_")
    return _Block(
        whole={"type": "tool_use", "id": tid, "name": tool["name"], "input": tool_input},
        start={"type": "tool_use", "id": tid, "name": tool["name"], "input": {}},
        deltas=[{"type": "input_json_delta", "partial_json": ""},
                *({"type": "input_json_delta", "partial_json": p} for p in _split_json(raw))],
        tokens=10 + -(-len(raw) // 4),
    )


def _usage(input_tokens: int, output_tokens: int, cache_read: int, cache_creation: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_creation, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _display_name(model: str) -> str:
    return " ".join(part.capitalize() for part in re.split(r"[-_]", model) if part) or model


# --- the RSGI application -------------------------------------------------------------


class AnthropicApp(MockApp):
    """The mock backend speaking Anthropic's Messages API; shares the OpenAI mock's controls and recording."""

    def __init__(self, config: MockConfig | None = None, provider: ProviderConfig | None = None) -> None:
        self._fixed_provider = provider
        super().__init__(config)

    def configure(self, config: MockConfig) -> None:
        self.provider = self._fixed_provider or provider_config_from_env()
        super().configure(config)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._created))
        self._model_list = [self._model_info(m, created) for m in (config.models or (DEFAULT_MODEL,))]

    @staticmethod
    def _model_info(model: str, created_at: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model,
            "display_name": _display_name(model),
            "created_at": created_at,
            "lifecycle": "active",
            "max_input_tokens": _MODEL_CONTEXT,
            "max_tokens": _MODEL_MAX_TOKENS,
        }

    # --- controls and errors ---

    async def _apply_controls(self, method: str, path: str, headers: Any, proto: Any) -> bool:
        """As the OpenAI mock's, with Anthropic's error shapes; --status/--hang act on POST /v1/messages."""
        delay = _int_header(headers, "x-mock-delay-ms")
        if delay:
            await asyncio.sleep(delay / 1000)
        hang = headers.get("x-mock-hang")
        if hang and hang != "0":
            await self._hang(proto)
            return True
        status = _int_header(headers, "x-mock-status")
        if status is not None and 400 <= status <= 599:
            self._error(proto, status, "Overloaded" if status == 529 else f"Mock error (x-mock-status: {status})")
            return True
        cfg = self.config
        if self._forced and method == "POST" and path.rstrip("/") == "/v1/messages":
            answer = self._forced_answer
            if answer is None:
                await self._hang(proto)
            else:
                proto.response_bytes(*answer)
            return True
        if cfg.stall_rate and random.random() < cfg.stall_rate:
            await self._hang(proto)
            return True
        if cfg.error_rate and random.random() < cfg.error_rate:
            self._error(proto, 500, "Internal server error")
            return True
        return False

    def _error(
        self, proto: Any, status: int, message: str, param: str | None = None, code: str | None = None,
        kind: str | None = None,
    ) -> None:
        request_id = _new_id("req_")
        base = self._retry_headers if status in self._retry_statuses else self._json_headers
        proto.response_bytes(status, [*base, ("request-id", request_id)],
                             _error_json(status, message, kind, request_id))

    def _error_body(  # type: ignore[override]
        self, status: int, message: str, param: str | None = None, code: str | None = None, kind: str | None = None,
    ) -> bytes:
        return _error_json(status, "Overloaded" if status == 529 else message, kind, _new_id("req_"))

    def _check_model(self, model: str) -> None:
        if self._models and model not in self._models:
            raise _BadRequest(404, f"model: {model}", kind="not_found_error")

    def _authorize(self, headers: Any) -> None:
        """x-api-key, or an Authorization bearer token (what OAuth clients and newer SDKs send)."""
        key = headers.get("x-api-key")
        source = "x-api-key"
        if not key:
            scheme, _, token = (headers.get("authorization") or "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key, source = token.strip(), "Authorization"
        if not key:
            raise _BadRequest(401, "x-api-key header is required", kind="authentication_error")
        if self.provider.api_key is not None and key != self.provider.api_key:
            raise _BadRequest(401, f"invalid {source}", kind="authentication_error")
        version = headers.get("anthropic-version")
        if not version:
            raise _BadRequest(400, "anthropic-version: header is required", kind="invalid_request_error")
        if not _VERSION.match(version):
            raise _BadRequest(400, f'anthropic-version: "{version}" is not a valid version',
                              kind="invalid_request_error")

    # --- routing ---

    async def _dispatch(self, scope: Any, method: str, path: str, body: bytes, proto: Any) -> None:
        if len(path) > 1:
            path = path.rstrip("/")
        headers = scope.headers
        if method == "POST" and path in ("/v1/messages", "/v1/messages/count_tokens"):
            self._authorize(headers)
            req = self._json_body(headers, body)
            if path == "/v1/messages":
                return await self._messages(scope, req, proto)
            return self._count_tokens(headers, req, proto)
        if method == "GET" and path == "/v1/models":
            self._authorize(headers)
            return self._list_models(scope.query_string or "", proto)
        if method == "GET" and path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            self._authorize(headers)
            model = unquote(path[len("/v1/models/"):])
            self._check_model(model)
            created = self._model_list[0]["created_at"]
            return self._reply(proto, self._model_info(model, created))
        raise _BadRequest(404, "Not Found", kind="not_found_error")

    @staticmethod
    def _json_body(headers: Any, body: bytes) -> Any:
        ctype = (headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _BadRequest(400, "Content-Type must be application/json", kind="invalid_request_error")
        try:
            return _decode_any(body)
        except msgspec.DecodeError:
            raise _BadRequest(400, "There was an error parsing the body: invalid JSON",
                              kind="invalid_request_error") from None

    def _reply(self, proto: Any, answer: Any) -> None:
        proto.response_bytes(200, [*self._json_headers, ("request-id", _new_id("req_"))], _encode(answer))

    # --- endpoints ---

    def _input_usage(self, headers: Any, req: dict[str, Any]) -> tuple[int, int, int]:
        """(input, cache read, cache creation) tokens; headers win over flags, which win over the estimate."""
        prompt = _int_header(headers, "x-mock-input-tokens")
        if prompt is None or prompt < 0:
            prompt = estimate_input_tokens(req)
        read = _int_header(headers, "x-mock-cache-read")
        created = _int_header(headers, "x-mock-cache-creation")
        return (
            prompt,
            read if read is not None and read >= 0 else self.provider.cache_read,
            created if created is not None and created >= 0 else self.provider.cache_creation,
        )

    def _count_tokens(self, headers: Any, req: Any, proto: Any) -> None:
        validate_request(req, count=True)
        self._check_model(req["model"])
        self._reply(proto, {"input_tokens": self._input_usage(headers, req)[0]})

    def _list_models(self, query: str, proto: Any) -> None:
        params = parse_qs(query)
        raw_limit = params.get("limit", ["20"])[0]
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = -1
        if not 1 <= limit <= 1000:
            raise _BadRequest(400, "limit: Input should be between 1 and 1000", kind="invalid_request_error")
        models = self._model_list
        ids = [m["id"] for m in models]
        after, before = params.get("after_id", [None])[0], params.get("before_id", [None])[0]
        if after is not None:
            start = ids.index(after) + 1 if after in ids else len(ids)
            page, has_more = models[start:start + limit], start + limit < len(models)
        elif before is not None:
            end = ids.index(before) if before in ids else 0
            page, has_more = models[max(0, end - limit):end], end - limit > 0
        else:
            page, has_more = models[:limit], limit < len(models)
        self._reply(proto, {
            "data": page,
            "has_more": has_more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        })

    def _plan(self, headers: Any, req: dict[str, Any], budget: int | None, message_id: str) -> tuple[
            list[_Block], str, str | None]:
        """The content blocks of the answer, its stop_reason and stop_sequence."""
        blocks: list[_Block] = []
        if budget:
            blocks.append(_thinking_block(message_id))
        tool, forced = _pick_tool(req)
        if tool is not None:
            if not forced:
                blocks.append(_text_block([f"I'll use the {tool['name']} ", "tool."]))
            blocks.append(_tool_block(tool))
            return blocks, "tool_use", None
        n, finish = self._token_count(headers, req["max_tokens"])
        pieces, hit = _text_pieces(n, req.get("stop_sequences"))
        if pieces:
            blocks.append(_text_block(pieces))
        if hit is not None:
            return blocks, "stop_sequence", hit
        return blocks, ("max_tokens" if finish == "length" else "end_turn"), None

    async def _messages(self, scope: Any, req: Any, proto: Any) -> None:
        headers = scope.headers
        budget = validate_request(req)
        model = req["model"]
        self._check_model(model)
        prompt, cache_read, cache_creation = self._input_usage(headers, req)
        message_id = _new_id("msg_")
        blocks, stop_reason, stop_sequence = self._plan(headers, req, budget, message_id)
        output = sum(b.tokens for b in blocks)
        if req.get("stream") is True:
            start = {
                "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": _usage(prompt, 1, cache_read, cache_creation),
            }
            final = {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": {"input_tokens": prompt, "cache_creation_input_tokens": cache_creation,
                          "cache_read_input_tokens": cache_read, "output_tokens": output},
            }
            transport = proto.response_stream(200, [*self._sse_headers, ("request-id", _new_id("req_"))])
            try:
                await self._write_stream(scope, transport, start, blocks, final)
            except ProtocolClosed:
                pass  # the client left mid-stream
            return
        await self._latency()
        self._reply(proto, {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [b.whole for b in blocks],
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": _usage(prompt, output, cache_read, cache_creation),
        })
        return

    async def _write_stream(
        self, scope: Any, transport: Any, start: dict[str, Any], blocks: list[_Block], final: dict[str, Any],
    ) -> None:
        """message_start, then per block content_block_start (a ping after the first), deltas and
        content_block_stop, then message_delta and message_stop; cut short by error-after / die-after."""
        headers = scope.headers
        cfg = self.config
        error_after = _int_header(headers, "x-mock-error-after")
        if error_after is None:
            error_after = self.provider.error_after
        die_after = _int_header(headers, "x-mock-die-after")
        if die_after is None:
            die_after = cfg.die_after
        send = transport.send_bytes
        itl = cfg.itl_ms / 1000
        sent = 0

        async def cut() -> bool:
            if error_after is not None and sent >= error_after:
                await send(_OVERLOADED_EVENT)
                return True
            if die_after is not None and sent >= die_after:
                await _abort_connection(scope.client)
                return True
            return False

        await send(_event(b"message_start", {"type": "message_start", "message": start}))
        if not blocks:
            await send(_PING)
        for index, block in enumerate(blocks):
            await send(_event(b"content_block_start",
                              {"type": "content_block_start", "index": index, "content_block": block.start}))
            if index == 0:
                await send(_PING)
            for delta in block.deltas:
                if await cut():
                    return
                if sent == 0:
                    if cfg.ttft_ms:
                        await asyncio.sleep(cfg.ttft_ms / 1000)
                elif itl:
                    await asyncio.sleep(itl)
                await send(_event(b"content_block_delta",
                                  {"type": "content_block_delta", "index": index, "delta": delta}))
                sent += 1
            await send(_event(b"content_block_stop", {"type": "content_block_stop", "index": index}))
        if await cut():
            return
        await send(_event(b"message_delta", final))
        await send(_MESSAGE_STOP)


app = AnthropicApp(config_from_env())

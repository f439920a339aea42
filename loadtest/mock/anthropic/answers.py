"""What the Anthropic mock answers: token estimates, the tool it calls, and the content blocks.

Answers are deterministic: the text is ``tok0 tok1 ...`` (as in the OpenAI mock), cut at the first
stop sequence; a request with tools whose last user turn mentions "weather" or a tool's name (or
whose ``tool_choice`` forces a tool) is answered with a ``tool_use`` block whose input follows the
tool's schema; enabled extended thinking adds a ``thinking`` block. Token counts are rough
estimates (a token per 4 characters, a flat count per image or document).
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import string
from typing import Any

import msgspec

from modelyard.loadtest.mock.wire import _choose_tool, _content, _encode

_ID_ALPHABET = string.ascii_letters + string.digits
_IMAGE_TOKENS = 64  # a flat estimate per image or document
_THINKING_PIECES = ("Mock ", "reasoning ", "step.")


def _new_id(prefix: str) -> str:
    """``msg_01...``-style identifiers: the prefix, ``01`` and 22 base62 characters."""
    return prefix + "01" + "".join(random.choices(_ID_ALPHABET, k=22))


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
    chosen = _choose_tool([t["name"] for t in tools], _last_user_text(req["messages"]), kind == "any")
    return (None, False) if chosen is None else (tools[chosen], kind == "any")


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
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if isinstance(kind, str):
        kind = kind.lower()  # Vertex's schemas spell types OBJECT, STRING, ...
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

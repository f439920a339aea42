"""What the Anthropic mock answers: token estimates, the tool it calls, and the content blocks.

Answers are deterministic: the text is ``tok0 tok1 ...`` (as in the OpenAI mock), cut at the first
stop sequence; a request with tools whose last user turn mentions "weather" or a tool's name (or
whose ``tool_choice`` forces a tool) is answered with a ``tool_use`` block whose input follows the
tool's schema; enabled extended thinking adds a ``thinking`` block. Token counts are rough
estimates (a token per 4 characters, a flat count per image or document). ``write_events`` paces
and cuts a stream of them; the Bedrock mock's InvokeModel streams go through it too.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import string
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import msgspec

from modelyard.loadtest.mock.config import MockConfig
from modelyard.loadtest.mock.wire import _choose_tool, _content, _encode, _Pacer

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
    choice = req.get("tool_choice") or {"type": "auto"}
    text = _last_user_text(req["messages"]) if tools else ""
    return choose_tool(tools, choice.get("type") or "auto", choice.get("name"), text)


def choose_tool(tools: list[dict[str, Any]], kind: str, name: Any, text: str) -> tuple[dict[str, Any] | None, bool]:
    """Which of ``tools`` (each with a "name") the mock calls, and whether the choice forced it.

    ``kind`` is the tool choice: "none", "tool" (the one named), "any" (one named in ``text``, the
    last user turn, else the first) or "auto": one named in ``text``, else a weather tool when
    ``text`` mentions the weather, else none: the mocks' shared convention (``wire._choose_tool``)."""
    if not tools or kind == "none":
        return None, False
    if kind == "tool":
        return next((t for t in tools if t["name"] == name), None), True
    chosen = _choose_tool([t["name"] for t in tools], text, kind == "any")
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


def thinking_signature(seed: str) -> str:
    """An opaque, stable signature for the mock's thinking text (base64, as the real ones look)."""
    return base64.b64encode(hashlib.sha256(seed.encode()).digest() * 2).decode("ascii")


def _thinking_block(seed: str) -> _Block:
    signature = thinking_signature(seed)
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


class BlockKinds(NamedTuple):
    """How one API builds each kind of block the mocks answer with (``choose_blocks`` decides which)."""

    thinking: Callable[[str], Any]  # seed -> a reasoning block
    text: Callable[[list[str]], Any]  # streamed pieces -> a text block
    tool: Callable[[dict[str, Any]], Any]  # tool definition -> a tool call block


def choose_blocks(kinds: BlockKinds, thinking_seed: str | None, tool: dict[str, Any] | None, forced: bool,
                  tokens: int, finish: str, stop_sequences: Any) -> tuple[list[Any], str, str | None]:
    """The content blocks of an answer, its stop reason and the stop sequence hit: a thinking block
    when ``thinking_seed`` is given, then a call of ``tool`` (after a line of text unless the call
    was ``forced``; stop reason tool_use), or ``tokens`` of text cut at the first stop sequence
    (stop_sequence), by max tokens (``finish`` "length": max_tokens), else end_turn."""
    blocks: list[Any] = []
    if thinking_seed is not None:
        blocks.append(kinds.thinking(thinking_seed))
    if tool is not None:
        if not forced:
            blocks.append(kinds.text([f"I'll use the {tool['name']} ", "tool."]))
        blocks.append(kinds.tool(tool))
        return blocks, "tool_use", None
    pieces, hit = _text_pieces(tokens, stop_sequences)
    if pieces:
        blocks.append(kinds.text(pieces))
    if hit is not None:
        return blocks, "stop_sequence", hit
    return blocks, ("max_tokens" if finish == "length" else "end_turn"), None


MESSAGES_BLOCKS = BlockKinds(_thinking_block, _text_block, _tool_block)


def plan(req: dict[str, Any], budget: int | None, message_id: str, tokens: int, finish: str) -> tuple[
        list[_Block], str, str | None]:
    """The content blocks of the answer to a valid Messages request, its stop_reason and stop_sequence
    (a thinking block when ``budget``: extended thinking is on)."""
    return choose_blocks(MESSAGES_BLOCKS, message_id if budget else None, *_pick_tool(req), tokens, finish,
                         req.get("stop_sequences"))


Emit = Callable[[bytes, dict[str, Any]], Awaitable[None]]


async def write_events(scope: Any, config: MockConfig, error_after: int | None, emit: Emit,
                       error: Callable[[], Awaitable[None]], start: dict[str, Any], blocks: list[_Block],
                       final: dict[str, Any], pings: bool = True) -> None:
    """Send a Messages stream through ``emit(event name, data)``: message_start, then per block
    content_block_start (a ping after the first, when ``pings``), deltas and content_block_stop, then
    message_delta (``final``) and message_stop; paced and cut short by ``wire._Pacer`` (``error()``
    after ``error_after`` deltas)."""
    pacer = _Pacer(scope, config, error_after, error)
    await emit(b"message_start", {"type": "message_start", "message": start})
    if not blocks and pings:
        await emit(b"ping", {"type": "ping"})
    for index, block in enumerate(blocks):
        await emit(b"content_block_start",
                   {"type": "content_block_start", "index": index, "content_block": block.start})
        if index == 0 and pings:
            await emit(b"ping", {"type": "ping"})
        for delta in block.deltas:
            if not await pacer.delta():
                return
            await emit(b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        await emit(b"content_block_stop", {"type": "content_block_stop", "index": index})
    if await pacer.cut():
        return
    await emit(b"message_delta", final)
    await emit(b"message_stop", {"type": "message_stop"})


def _display_name(model: str) -> str:
    return " ".join(part.capitalize() for part in re.split(r"[-_]", model) if part) or model

"""Bedrock's Converse and ConverseStream: the checks beyond the service model, and the answers.

``validate`` checks a body against botocore's ``ConverseRequest`` shape (``shapes``) and then as
Bedrock does: a conversation starts with a user message and alternates roles, no message is
empty, toolUse/toolResult blocks need a toolConfig and every toolUse of an assistant turn is
answered by a toolResult in the next user turn (and no more of them).

``plan`` decides the answer, deterministically as the other mocks do: a ``reasoningContent`` block
when reasoning is enabled in ``additionalModelRequestFields`` (``thinking`` or
``reasoning_config`` of type "enabled"); a ``toolUse`` block (stopReason ``tool_use``) when the
request has tools and its last user text names one or mentions the weather, or ``toolChoice``
forces one (``anthropic.answers.choose_tool``); else ``tok0 tok1 ...`` text, cut by
``inferenceConfig.maxTokens`` (``max_tokens``) or a stop sequence (``stop_sequence``).
``answer`` is the whole Converse answer; ``stream_events`` the ConverseStream event sequence
(messageStart; per block an optional contentBlockStart (toolUse), contentBlockDeltas and
contentBlockStop; messageStop; metadata with usage and metrics).
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelyard.loadtest.mock.anthropic.answers import (
    _THINKING_PIECES,
    BlockKinds,
    _new_id,
    _split_json,
    choose_blocks,
    choose_tool,
    example_value,
    thinking_signature,
)
from modelyard.loadtest.mock.bedrock.shapes import check, constraint, fail
from modelyard.loadtest.mock.wire import _encode

IMAGE_TOKENS = 64  # a flat estimate per image, document or video

START_WITH_USER = ("A conversation must start with a user message. Try again with a conversation that starts with a "
                   "user message.")
ALTERNATE = ("A conversation must alternate between user and assistant roles. Make sure the conversation alternates "
             "between user and assistant roles and try again.")
TOOL_CONFIG_NEEDED = "The toolConfig field must be defined when using toolUse and toolResult content blocks."


class Block(msgspec.Struct):
    """One content block of an answer: its whole form, its contentBlockStart form (toolUse only),
    its contentBlockDelta deltas and the output tokens it counts for."""

    whole: dict[str, Any]
    start: dict[str, Any] | None
    deltas: list[dict[str, Any]]
    tokens: int


def validate(req: Any) -> dict[str, Any]:
    check("ConverseRequest", req)
    messages = req.get("messages")
    if messages is None:
        constraint("messages", None, "not be null")
    if not messages or messages[0]["role"] != "user":
        fail(START_WITH_USER)
    for i, message in enumerate(messages):
        if not message["content"]:
            fail(f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to "
                 "the content field and try again.")
        if i and message["role"] == messages[i - 1]["role"]:
            fail(ALTERNATE)
    _check_tool_turns(messages, req.get("toolConfig") is not None)
    return req


def _check_tool_turns(messages: list[dict[str, Any]], has_config: bool) -> None:
    pending: list[str] = []
    for i, message in enumerate(messages):
        uses = [b["toolUse"]["toolUseId"] for b in message["content"] if "toolUse" in b]
        results = [b["toolResult"]["toolUseId"] for b in message["content"] if "toolResult" in b]
        if (uses or results) and not has_config:
            fail(TOOL_CONFIG_NEEDED)
        if message["role"] == "user":
            if len(results) > len(pending):
                fail(f"The number of toolResult blocks at messages.{i}.content exceeds the number of toolUse blocks "
                     "of previous turn.")
            missing = [tid for tid in pending if tid not in results]
            if missing:
                fail(f"Expected toolResult blocks at messages.{i}.content for the following Ids: {', '.join(missing)}")
            pending = []
        else:
            pending = uses


# --- token estimates -----------------------------------------------------------------------


def _block_size(block: dict[str, Any]) -> tuple[int, int]:
    """(characters, media items) of one content block."""
    if "text" in block:
        return len(block["text"]), 0
    if any(k in block for k in ("image", "document", "video", "audio")):
        return 0, 1
    if "toolUse" in block:
        return len(block["toolUse"]["name"]) + len(_encode(block["toolUse"].get("input"))), 0
    if "toolResult" in block:
        chars = media = 0
        for inner in block["toolResult"]["content"]:
            c, m = (len(_encode(inner["json"])), 0) if "json" in inner else _block_size(inner)
            chars, media = chars + c, media + m
        return chars, media
    if "reasoningContent" in block:
        return len((block["reasoningContent"].get("reasoningText") or {}).get("text") or ""), 0
    return 0, 0


def estimate_input_tokens(req: dict[str, Any]) -> int:
    """A token per 4 characters of the system prompt, messages and tool specs, and a flat count per image."""
    chars = media = 0
    for block in req.get("system") or ():
        chars += len(block.get("text") or "")
    for message in req["messages"]:
        for block in message["content"]:
            c, m = _block_size(block)
            chars, media = chars + c, media + m
    for tool in (req.get("toolConfig") or {}).get("tools") or ():
        if "toolSpec" in tool:
            chars += len(_encode(tool["toolSpec"]))
    return max(1, -(-chars // 4)) + media * IMAGE_TOKENS


def usage(input_tokens: int, output_tokens: int, cache_read: int, cache_write: int) -> dict[str, int]:
    """TokenUsage; totalTokens counts the cached input too, as Bedrock's does."""
    out = {"inputTokens": input_tokens, "outputTokens": output_tokens,
           "totalTokens": input_tokens + output_tokens + cache_read + cache_write}
    if cache_read:
        out["cacheReadInputTokens"] = cache_read
    if cache_write:
        out["cacheWriteInputTokens"] = cache_write
    return out


# --- answers ----------------------------------------------------------------------------------


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    last = messages[-1]
    if last["role"] != "user":
        return ""
    return " ".join(b["text"] for b in last["content"] if "text" in b)


def pick_tool(req: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """The toolSpec to call, if any, and whether toolChoice forced it."""
    config = req.get("toolConfig") or {}
    tools = [t["toolSpec"] for t in config.get("tools") or () if "toolSpec" in t]
    choice = config.get("toolChoice") or {"auto": {}}
    kind = next(iter(choice))
    text = _last_user_text(req["messages"]) if tools else ""
    return choose_tool(tools, kind, (choice.get("tool") or {}).get("name"), text)


def reasoning_enabled(req: dict[str, Any]) -> bool:
    extra = req.get("additionalModelRequestFields")
    if not isinstance(extra, dict):
        return False
    for key in ("thinking", "reasoning_config"):
        value = extra.get(key)
        if isinstance(value, dict) and value.get("type") == "enabled":
            return True
    return False


def _text_block(pieces: list[str]) -> Block:
    return Block({"text": "".join(pieces)}, None, [{"text": p} for p in pieces], len(pieces))


def _reasoning_block(seed: str) -> Block:
    signature = thinking_signature(seed)
    text = "".join(_THINKING_PIECES)
    return Block(
        {"reasoningContent": {"reasoningText": {"text": text, "signature": signature}}}, None,
        [*({"reasoningContent": {"text": p}} for p in _THINKING_PIECES),
         {"reasoningContent": {"signature": signature}}],
        len(_THINKING_PIECES),
    )


def _tool_block(spec: dict[str, Any]) -> Block:
    schema = (spec.get("inputSchema") or {}).get("json")
    tool_input = example_value(schema)
    if not isinstance(tool_input, dict):
        tool_input = {}
    raw = _encode(tool_input).decode()
    tid = _new_id("tooluse_")
    return Block(
        {"toolUse": {"toolUseId": tid, "name": spec["name"], "input": tool_input}},
        {"toolUse": {"toolUseId": tid, "name": spec["name"]}},
        [{"toolUse": {"input": p}} for p in _split_json(raw)],
        10 + -(-len(raw) // 4),
    )


CONVERSE_BLOCKS = BlockKinds(_reasoning_block, _text_block, _tool_block)


def plan(req: dict[str, Any], tokens: int, finish: str, seed: str) -> tuple[list[Block], str]:
    """The answer's content blocks and stopReason (``finish`` "length" when maxTokens cut the text)."""
    stops = (req.get("inferenceConfig") or {}).get("stopSequences")
    blocks, stop_reason, _ = choose_blocks(CONVERSE_BLOCKS, seed if reasoning_enabled(req) else None, *pick_tool(req),
                                           tokens, finish, stops)
    return blocks, stop_reason


def answer(blocks: list[Block], stop_reason: str, token_usage: dict[str, int], latency_ms: int) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [b.whole for b in blocks]}},
        "stopReason": stop_reason,
        "usage": token_usage,
        "metrics": {"latencyMs": latency_ms},
    }

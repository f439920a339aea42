"""Exact token counts of long texts encoded in slices, and estimates past a budget (in-process; the
same counting under load through a gateway is in tests/integration/test_token_limits.py)."""

from __future__ import annotations

import pytest

from modelyard.core import token_slices
from modelyard.core.tokenizer import MESSAGE_OVERHEAD, REPLY_OVERHEAD, TokenCounter, load_tokenizer
from tests.support import realistic_text


@pytest.mark.parametrize("name", ["builtin:qwen", "builtin:qwen3.6"])
@pytest.mark.parametrize("size", [300, 4096, token_slices.SLICE_CHARS])
def test_sliced_counts_equal_whole_counts_on_realistic_text(name: str, size: int) -> None:
    tok = load_tokenizer(name)
    text = realistic_text(100_000) + "  two spaces\n\n\tand a tab  \n x <|im_start|>user\nhi<|im_end|>\n"
    pieces = list(token_slices.slices(text, size))
    assert "".join(pieces) == text and len(pieces) >= len(text) // (2 * size)
    whole = tok.encode(text, add_special_tokens=False).ids
    assert list(token_slices.ids(tok, text, False, size)) == whole
    assert token_slices.count(tok, [text, "short"], True, size) == len(whole) + len(tok.encode("short").ids)


def test_an_estimate_past_its_budget_is_extrapolated() -> None:
    counter = TokenCounter()
    text = realistic_text(200_000)
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    exact = counter.count_request("m", body)
    assert exact == counter.count_text("m", text) + MESSAGE_OVERHEAD + REPLY_OVERHEAD
    estimate = counter.count_request("m", body, budget=50_000)
    assert estimate != exact and abs(estimate - exact) < exact * 0.05, (estimate, exact)
    assert counter.count_request("m", body, budget=len(text)) == exact

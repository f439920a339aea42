"""Accounting in-process: the bound on metric label values."""

from __future__ import annotations


def test_label_values_are_bounded_in_length_and_characters() -> None:
    from modelyard.gateway.accounting import _Bounded
    bound = _Bounded(set())
    assert bound("m" * (1 << 20)) == "_invalid"
    assert bound("a\r\nb") == bound("a\x00b") == "_invalid"
    assert bound("gpt-4o") == "gpt-4o"
    assert not bound.seen - {"gpt-4o"}  # refused values are not kept

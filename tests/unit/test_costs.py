"""Request costs (`spec.llmRequestCosts`): token types, CEL, and what `modelyard check` says."""

from __future__ import annotations

import logging

import pytest

from modelyard.core.costs import CostCompileError, CostProgram, cel_backend_name
from modelyard.core.usage import Usage

USAGE = Usage(input_tokens=100, output_tokens=50, total_tokens=150, cached_input_tokens=20,
              cache_creation_input_tokens=5, reasoning_tokens=7)


def _cel(expr: str, key: str = "cost") -> CostProgram:
    return CostProgram.compile(((key, "CEL", expr),), "ns/r")


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "modelyard.costs"]


def test_every_token_type_reads_its_usage_field() -> None:
    program = CostProgram.compile((
        ("in", "InputToken", None),
        ("out", "OutputToken", None),
        ("total", "TotalToken", None),
        ("cached", "CachedInputToken", None),
        ("written", "CacheCreationInputToken", None),
        ("reasoning", "ReasoningToken", None),
    ), "ns/r")
    assert program.evaluate(USAGE, "m", "ns/be", "ns/r") == {
        "in": 100, "out": 50, "total": 150, "cached": 20, "written": 5, "reasoning": 7,
    }
    assert program.evaluate(Usage(), "m", "ns/be", "ns/r") == dict.fromkeys(
        ("in", "out", "total", "cached", "written", "reasoning"), 0)


def test_cel_over_model_and_token_counts() -> None:
    # The counts are uint as in Envoy AI Gateway: literals next to them take a `u`.
    program = _cel("model == 'gpt-4o' ? input_tokens * 2u + output_tokens * 8u : total_tokens")
    assert program.evaluate(USAGE, "gpt-4o", "ns/be", "ns/r") == {"cost": 600}
    assert program.evaluate(USAGE, "llama", "ns/be", "ns/r") == {"cost": 150}
    every = _cel("input_tokens + cached_input_tokens + cache_creation_input_tokens + output_tokens"
                 " + total_tokens + reasoning_tokens")
    assert every.evaluate(USAGE, "m", "ns/be", "ns/r") == {"cost": 100 + 20 + 5 + 50 + 150 + 7}
    signed = _cel("int(input_tokens) * 2 - int(cached_input_tokens)")
    assert signed.evaluate(USAGE, "m", "ns/be", "ns/r") == {"cost": 180}


def test_cel_over_backend_and_route_name() -> None:
    # backend is "name.namespace" as Envoy AI Gateway documents it; route_name "namespace/name".
    program = _cel("backend == 'be.ns' && route_name == 'ns/r' ? (input_tokens - cached_input_tokens)"
                   " + cached_input_tokens / 10u + output_tokens * 4u : total_tokens")
    assert program.evaluate(USAGE, "m", "ns/be", "ns/r") == {"cost": 80 + 2 + 200}
    assert program.evaluate(USAGE, "m", "be.ns", "ns/r") == {"cost": 282}  # already in CEL's form
    assert program.evaluate(USAGE, "m", "ns/other", "ns/r") == {"cost": 150}
    assert program.evaluate(USAGE, "m", "ns/be", "ns/other") == {"cost": 150}
    assert cel_backend_name("team-a/openai") == "openai.team-a"


def test_mixed_entries_keep_their_keys() -> None:
    program = CostProgram.compile((
        ("llm_input_token", "InputToken", None),
        ("weighted", "CEL", "input_tokens + output_tokens * 3u // output is dearer"),
    ), "ns/r")
    assert program.evaluate(USAGE, "m", "ns/be", "ns/r") == {"llm_input_token": 100, "weighted": 250}


@pytest.mark.parametrize(("expr", "problem"), [
    ("input_tokens +", "Syntax error"),
    ("input_tokens + output_token", "undeclared reference to 'output_token'"),
    # What cel-go's type checker rejects in Envoy AI Gateway: uint counts times int literals.
    ("model == 'gpt-4o' ? input_tokens * 2 + output_tokens * 8 : total_tokens", "uint * int"),
    ("input_tokens * 0.5", "uint * float"),  # the binding calls CEL double "float"
    # Envoy's own sanity evaluation (counts 0) fails these too.
    ("input_tokens / output_tokens", "division by zero"),
    ("int(output_tokens) - 1", "negative"),
    ("model == 'x' ? 1.5 : 2.5", "not an integer"),
])
def test_cel_compile_errors(expr: str, problem: str) -> None:
    with pytest.raises(CostCompileError) as err:
        CostProgram.compile((("ok", "InputToken", None), ("bad", "CEL", expr)), "ns/r")
    assert err.value.key == "bad"
    assert err.value.expression == expr
    assert problem in err.value.message


def test_a_runtime_error_costs_zero_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # Passes compilation (counts 0 take the first branch), fails on real counts.
    program = CostProgram.compile((
        ("div", "CEL", "output_tokens == 0u ? 0u : input_tokens / reasoning_tokens"),
        ("typed", "CEL", "size(model) > 10 ? input_tokens + 1 : 0u"),
        ("in", "InputToken", None),
    ), "ns/r")
    usage = Usage(input_tokens=100, output_tokens=50, total_tokens=150)
    caplog.set_level(logging.WARNING, logger="modelyard.costs")
    for _ in range(3):
        assert program.evaluate(usage, "a-very-long-model-name", "ns/be", "ns/r") == {"div": 0, "typed": 0, "in": 100}
    records = _records(caplog)
    assert len(records) == 2, [r.getMessage() for r in records]
    messages = sorted(r.getMessage() for r in records)
    assert "division by zero" in messages[0] and "ns/r" in messages[0] and "div" in messages[0]
    assert "uint + int" in messages[1] and "typed" in messages[1]
    # With reasoning tokens the same expression works again.
    assert program.evaluate(Usage(input_tokens=100, output_tokens=50, reasoning_tokens=4), "m", "ns/be",
                            "ns/r")["div"] == 25


def test_a_negative_or_non_integer_result_costs_zero(caplog: pytest.LogCaptureFixture) -> None:
    program = CostProgram.compile((
        ("neg", "CEL", "int(output_tokens) - int(input_tokens)"),
        ("float", "CEL", "output_tokens > 10u ? double(output_tokens) * 1.5 : 0u"),
    ), "ns/r")
    caplog.set_level(logging.WARNING, logger="modelyard.costs")
    for _ in range(2):
        assert program.evaluate(USAGE, "m", "ns/be", "ns/r") == {"neg": 0, "float": 0}
    messages = [r.getMessage() for r in _records(caplog)]
    assert len(messages) == 2, messages
    assert any("negative (-50)" in m for m in messages)
    assert any("not an integer: 75.0" in m for m in messages)
    # Output above input: a positive result is the cost.
    assert program.evaluate(Usage(input_tokens=5, output_tokens=8), "m", "ns/be", "ns/r")["neg"] == 3


def test_no_costs_compile_to_an_empty_program() -> None:
    program = CostProgram.compile((), "ns/r")
    assert not program
    assert program.evaluate(USAGE, "m", "ns/be", "ns/r") == {}

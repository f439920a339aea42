"""Request costs of an AIGatewayRoute (`spec.llmRequestCosts`), as Envoy AI Gateway computes them.

Each entry names a metadata key and a type: one of the token counts of the answer, or
`CEL`, an expression over the documented variables:

    model, backend, route_name                  string
    input_tokens, cached_input_tokens,          uint
    cache_creation_input_tokens, output_tokens,
    total_tokens, reasoning_tokens

`backend` is "name.namespace" and `route_name` "namespace/name". The token counts are
unsigned as in Envoy AI Gateway, so literals mixed with them need a `u` suffix
(`input_tokens * 2u`) or a conversion (`int(input_tokens) * 2`); CEL never coerces. The
expression must give a non-negative integer (int or uint).

CEL runs on the `cel` Rust crate (package common-expression-language), which only parses
at compile time; Envoy AI Gateway's cel-go also type-checks. To reject what Envoy would,
compiling also refuses variables it does not declare, evaluates the expression once with
Envoy's own dummy values (strings "dummy", counts 0: an error, a negative or a
non-integer result there fails compilation in Envoy too), and once per string literal
of the expression used as model, backend and route_name, which reaches the branches a
`model == '...'` test guards and finds type errors in them.

Evaluating never raises: a failing expression, a negative or a non-integer result costs
0 and is logged once per expression and kind of error.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from modelyard.core.usage import Usage

log = logging.getLogger("modelyard.costs")

# Non-CEL types and the Usage field each reads.
TOKEN_TYPES = {
    "InputToken": "input_tokens",
    "OutputToken": "output_tokens",
    "TotalToken": "total_tokens",
    "CachedInputToken": "cached_input_tokens",
    "CacheCreationInputToken": "cache_creation_input_tokens",
    "ReasoningToken": "reasoning_tokens",
}
CEL = "CEL"

# The CEL variables, as Envoy AI Gateway declares them (internal/llmcostcel).
TOKEN_VARIABLES = ("input_tokens", "cached_input_tokens", "cache_creation_input_tokens", "output_tokens",
                   "total_tokens", "reasoning_tokens")  # uint
STRING_VARIABLES = ("model", "backend", "route_name")  # string
VARIABLES = STRING_VARIABLES + TOKEN_VARIABLES

_MAX_PROBES = 16  # string literals tried as model/backend/route_name when compiling
_MAX_LOGGED = 4096  # distinct (expression, error) pairs remembered for log-once
_logged: set[tuple[str, str]] = set()

_STRING_LITERAL = re.compile(r"""'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)\"""")
_COMPREHENSION = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


class CostCompileError(ValueError):
    """A cost entry that cannot be compiled; `message` is CEL's (or our) reason."""

    def __init__(self, key: str, expression: str | None, message: str):
        super().__init__(f"{key}: {message}" + (f" in {expression!r}" if expression is not None else ""))
        self.key = key
        self.expression = expression
        self.message = message


def _cel() -> Any:
    # Imported on first use: the package's __init__ also loads its CLI (typer, rich,
    # prompt_toolkit), about 0.2 s and 25 MB that configs without CEL costs never pay.
    import cel

    return cel


def _first_line(err: Exception) -> str:
    text = str(err)
    # cel's parse errors read "Failed to parse expression '<src>': ERROR: <input>:1:4: ...\n| src\n| ...^"
    if text.startswith("Failed to parse expression '"):
        text = text.split("': ", 1)[-1]
    return text.splitlines()[0] if text else type(err).__name__


@functools.lru_cache(maxsize=1024)
def cel_backend_name(backend: str) -> str:
    """Modelyard's "namespace/name" as Envoy AI Gateway's CEL `backend`, "name.namespace"."""
    ns, sep, name = backend.partition("/")
    return f"{name}.{ns}" if sep else backend


class _BadResult(ValueError):
    """A result that is not a cost; `kind` groups them for log-once."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class _Expr:
    """One compiled CEL cost."""

    __slots__ = ("key", "source", "program", "strings", "tokens")

    def __init__(self, key: str, source: str, program: Any, strings: tuple[str, ...], tokens: tuple[str, ...]):
        self.key = key
        self.source = source
        self.program = program
        self.strings = strings  # the string variables it reads
        self.tokens = tokens  # the token variables it reads

    def run(self, strings: dict[str, str], counts: dict[str, int]) -> int:
        """The cost; raises on a CEL error and _BadResult on a result that is not a cost."""
        env = {n: strings[n] for n in self.strings}
        for n in self.tokens:
            env[n] = counts[n]
        out = self.program.execute(env)
        if type(out) is not int:  # bool is an int to Python, not to CEL
            raise _BadResult("not an integer", f"the result is not an integer: {out!r}")
        if out < 0:
            raise _BadResult("negative", f"the result is negative ({out})")
        return out


def _compile_cel(key: str, source: str) -> _Expr:
    cel = _cel()
    try:
        parsed = cel.compile(source)
    except Exception as e:  # ValueError for syntax errors; anything else is the binding's
        raise CostCompileError(key, source, _first_line(e)) from None
    names = set(parsed.variables())
    bound = set(_COMPREHENSION.findall(source))
    unknown = sorted(names - set(VARIABLES) - bound)
    if unknown:
        raise CostCompileError(key, source, f"undeclared reference to {', '.join(repr(n) for n in unknown)} "
                                            f"(the variables are {', '.join(VARIABLES)})")
    tokens = tuple(n for n in TOKEN_VARIABLES if n in names)
    strings = tuple(n for n in STRING_VARIABLES if n in names)
    # The binding hands Python ints to CEL as int; rebinding each count the expression
    # reads as uint (a one-element comprehension, which shadows the outer name) gives
    # Envoy's types. The newlines keep a trailing // comment from swallowing the rest.
    wrapped = source
    for n in tokens:
        wrapped = f"[uint({n})].map({n},\n{wrapped}\n)[0]"
    try:
        program = cel.compile(wrapped)
    except Exception as e:
        raise CostCompileError(key, source, _first_line(e)) from None
    expr = _Expr(key, source, program, strings, tokens)
    # Envoy AI Gateway's sanity check: dummy strings, every count 0; any failure rejects.
    try:
        expr.run(dict.fromkeys(STRING_VARIABLES, "dummy"), dict.fromkeys(TOKEN_VARIABLES, 0))
    except Exception as e:
        raise CostCompileError(key, source, f"{_first_line(e)} (evaluated with model, backend and route_name "
                                            f"'dummy' and every token count 0)") from None
    # What cel-go's type checker would see in branches the dummy values do not reach:
    # operand types, unknown functions, a branch of another type than the others.
    probes = list(dict.fromkeys(a or b for a, b in _STRING_LITERAL.findall(source) if "\\" not in (a or b)))
    for lit in probes[:_MAX_PROBES]:
        try:
            expr.run(dict.fromkeys(STRING_VARIABLES, lit), dict.fromkeys(TOKEN_VARIABLES, 1))
        except (TypeError, RuntimeError, _BadResult) as e:
            if isinstance(e, RuntimeError) and not str(e).startswith("Undefined variable or function"):
                continue  # a function's error about its argument values
            if isinstance(e, _BadResult) and e.kind == "negative":
                continue
            raise CostCompileError(key, source, f"{_first_line(e)} (evaluated with model, backend and route_name "
                                                f"{lit!r})") from None
        except Exception:
            pass  # values, not types: overflow, division by zero, a negative result
    return expr


class CostProgram:
    """The compiled `llmRequestCosts` of one route."""

    __slots__ = ("where", "direct", "exprs")

    def __init__(self, where: str, direct: tuple[tuple[str, str], ...], exprs: tuple[_Expr, ...]):
        self.where = where  # names the route in log lines
        self.direct = direct  # (metadataKey, Usage field)
        self.exprs = exprs

    @classmethod
    def compile(cls, costs: tuple[tuple[str, str, str | None], ...], where: str) -> CostProgram:
        """Compile (metadataKey, type, cel) entries; raise CostCompileError for the first bad one."""
        direct: list[tuple[str, str]] = []
        exprs: list[_Expr] = []
        for key, kind, source in costs:
            if kind == CEL:
                if not source:
                    raise CostCompileError(key, source, "cel is required for type CEL")
                exprs.append(_compile_cel(key, source))
            elif kind in TOKEN_TYPES:
                direct.append((key, TOKEN_TYPES[kind]))
            else:
                raise CostCompileError(key, source, f"unknown cost type {kind!r}")
        return cls(where, tuple(direct), tuple(exprs))

    def __bool__(self) -> bool:
        return bool(self.direct or self.exprs)

    def evaluate(self, usage: Usage, model: str, backend: str, route_name: str) -> dict[str, int]:
        """metadataKey -> cost. `backend` is "namespace/name" (given to CEL as "name.namespace")
        or already "name.namespace"; `route_name` is "namespace/name". Never raises."""
        out: dict[str, int] = {}
        for key, name in self.direct:
            out[key] = max(0, getattr(usage, name))
        if self.exprs:
            strings = {"model": model, "backend": cel_backend_name(backend), "route_name": route_name}
            counts = {
                "input_tokens": max(0, usage.input_tokens),
                "cached_input_tokens": max(0, usage.cached_input_tokens),
                "cache_creation_input_tokens": max(0, usage.cache_creation_input_tokens),
                "output_tokens": max(0, usage.output_tokens),
                "total_tokens": max(0, usage.total_tokens),
                "reasoning_tokens": max(0, usage.reasoning_tokens),
            }
            for expr in self.exprs:
                try:
                    out[expr.key] = expr.run(strings, counts)
                except Exception as e:
                    out[expr.key] = 0
                    self._log_once(expr, e)
        return out

    def _log_once(self, expr: _Expr, err: Exception) -> None:
        # Keyed by the kind of error, not its text: overflow messages carry the operands.
        mark = (expr.source, err.kind if isinstance(err, _BadResult) else type(err).__name__)
        if mark in _logged:
            return
        if len(_logged) >= _MAX_LOGGED:  # bounded: forget, and log again at most once per pair
            _logged.clear()
        _logged.add(mark)
        log.warning("%s: llmRequestCosts %s: CEL %r failed, cost 0: %s (logged once)",
                    self.where, expr.key, expr.source, _first_line(err))

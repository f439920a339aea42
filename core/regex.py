"""Regular expressions with RE2 semantics: linear-time matching, as Envoy does it.

Python's `re` backtracks (`(a+)+$` against a long model name runs for seconds);
RE2 never does, and it refuses the constructs that would need backtracking.
The watcher checks every configured pattern here; workers compile each once per
table and match with full-match semantics (a header value matches only as a whole).
"""

from __future__ import annotations

from collections.abc import Callable

import re2

# Envoy's default re2.max_program_size.error_level: a pattern whose compiled program is larger
# is rejected there, so it is here too. Patterns the gateway writes itself (route hostnames) are exempt.
MAX_PROGRAM_SIZE = 100

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print each error to stderr; ours name the construct instead

# Constructs RE2 refuses, by the start of the text, and what to call them.
_UNSUPPORTED = (
    ("(?<=", "lookbehind (?<=...)"),
    ("(?<!", "negative lookbehind (?<!...)"),
    ("(?=", "lookahead (?=...)"),
    ("(?!", "negative lookahead (?!...)"),
    ("(?>", "atomic group (?>...)"),
    ("(?P=", "named backreference (?P=name)"),
)


class RegexError(ValueError):
    pass


def _explain(pattern: str, message: str) -> str:
    """RE2's complaint, in terms of the construct the author wrote."""
    if message.startswith("invalid perl operator"):
        for start, name in _UNSUPPORTED:
            if start in pattern:
                return f"{name} is not supported by RE2 (Envoy's regex engine; matching must stay linear-time)"
    if message.startswith("invalid escape sequence: \\") and message[-1:].isdigit():
        return (f"backreference {message.rpartition(': ')[2]} is not supported by RE2 "
                "(Envoy's regex engine; matching must stay linear-time)")
    if message.startswith("bad repetition operator") and message[-1:] == "+":
        return f"possessive quantifier {message.rpartition(': ')[2]} is not supported by RE2"
    return f"{message} (RE2 syntax, as in Envoy)"


def compile_full(pattern: str, max_program_size: int | None = MAX_PROGRAM_SIZE) -> Callable[[str], object]:
    """A full-match test for `pattern`, or RegexError naming what RE2 rejects."""
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        raw = e.args[0] if e.args else b""
        raise RegexError(_explain(pattern, raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)))
    if max_program_size is not None and compiled.programsize > max_program_size:
        raise RegexError(f"the compiled program has size {compiled.programsize}, over the limit of "
                         f"{max_program_size} (Envoy's default re2.max_program_size.error_level); simplify it")
    return compiled.fullmatch

"""Configured values that reach the wire, in-process: what the checks accept compiles to clean header
lines and paths, RE2 matching, Secret keys, and a worker that cannot apply a table."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.config.compiler import compile_table
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import load_paths
from modelyard.core.regex import RegexError, compile_full
from modelyard.core.wire import header_name_problem, header_value_problem, owned_header_problem, path_problem
from tests.conftest import openai_backend, route, write_config
from tests.resources import key_policy
from tests.support import worker_on_segment

def _compile(tmp_path: Path, text: str) -> tuple[Diagnostics, object]:
    write_config(tmp_path / "c.yaml", text)
    diags = Diagnostics()
    return diags, compile_table(load_paths([str(tmp_path)], diags, set()).resources, diags)


def test_good_values_pass_and_secret_keys_are_trimmed(tmp_path: Path) -> None:
    diags, compiled = _compile(tmp_path, route("r", "m", backend="b", ref_extra=", modelNameOverride: 'gpt-4o mini/é'")
                               + "\n---\n" + openai_backend("b", "API.example.com", 443, extra="""\
        headerMutation: {set: [{name: X-Team, value: "a\\tb é"}], remove: [x-drop]}
        """) + key_policy("b", "s", 'data: {apiKey: c2stZnJvbS1kYXRhCg==}\n'))  # "sk-from-data\n", as `echo` writes it
    assert not diags.errors, [str(e) for e in diags.errors]
    table = compiled.table  # type: ignore[attr-defined]
    assert table.backends[0].auth_headers == (("authorization", "Bearer sk-from-data"),)
    assert table.rules[0].refs[0].header_set == (("x-team", "a\tb é"),)


@pytest.mark.parametrize("pattern, words", [
    (r"(a)\1", r"backreference \1 is not supported by RE2"),
    (r"(?P<x>a)(?P=x)", "named backreference (?P=name) is not supported by RE2"),
    (r"(?<!a)b", "negative lookbehind (?<!...) is not supported by RE2"),
    (r"a(?=b)", "lookahead (?=...) is not supported by RE2"),
    (r"a++", "possessive quantifier ++ is not supported by RE2"),
    (r"gpt-(", "missing )"),
    ("x{200}", "size 204, over the limit of 100"),
])
def test_re2_rejects_what_needs_backtracking_and_names_the_construct(pattern: str, words: str) -> None:
    with pytest.raises(RegexError) as e:
        compile_full(pattern)
    assert words in str(e.value)


def test_re2_keeps_full_match_semantics() -> None:
    test = compile_full(r"gpt-4o.*|llama-[0-9]+")
    assert test("gpt-4o-mini") and test("llama-3") and not test("xgpt-4o") and not test("llama-3x")
    assert compile_full(r"(a+)+$")("a" * 100_000)
    assert not compile_full(r"(a+)+$")("a" * 100_000 + "b")


def test_a_table_workers_cannot_apply_is_logged_once_and_readyz_says_so(tmp_path: Path, monkeypatch,
                                                                          caplog) -> None:
    """A table that got past the watcher some other way: the worker keeps what it serves, logs once
    per generation, and /readyz does not claim the generation it could not apply."""
    from aiohttp import test_utils

    from modelyard.config.compiler import CompileOptions
    from modelyard.config.watcher import ConfigWatcher
    from modelyard.core.table import Backend, Endpoint, Table, encode_table
    from modelyard.core import worker_registry
    from modelyard.config.admin import ListenerProbe, build_admin_app

    def table(generation: int, prefix: str) -> bytes:
        backend = Backend("ns/b", "OpenAI", None, prefix, (Endpoint("127.0.0.1", 1),), None)
        return encode_table(Table(generation, (), {}, (), (), (backend,), (), (), {}))

    async def readyz(watcher: ConfigWatcher, probe: ListenerProbe) -> tuple[int, str]:
        async with test_utils.TestClient(test_utils.TestServer(build_admin_app(watcher, probe))) as client:
            resp = await client.get("/readyz")
            return resp.status, await resp.text()

    with worker_on_segment(tmp_path, monkeypatch, table(1, "/v1é\r\nx: y")) as (app, segment, loop):
        with caplog.at_level(logging.ERROR, logger="modelyard.worker"):
            app.__rsgi_init__(loop)  # the first table fails: the worker starts anyway, serving nothing
            for _ in range(5):
                app._refresh()
        assert app.state is None
        assert sum("could not apply routing table generation 1" in r.getMessage() for r in caplog.records) == 1
        assert worker_registry.live_workers(str(tmp_path / "workers")) == [
            {"pid": os.getpid(), "generation": 0, "failed": 1}]

        watcher = ConfigWatcher([], CompileOptions(), None)
        watcher.generation = 1
        with socket.create_server(("127.0.0.1", 0)) as listener:
            probe = ListenerProbe("127.0.0.1", listener.getsockname()[1])
            status, text = asyncio.run(readyz(watcher, probe))
            assert status == 503 and "could not apply generation 1" in text, (status, text)

            segment.publish(table(2, "/v1"), 2)
            app._refresh()
            assert app.state is not None and app.state.generation == 2
            watcher.generation = 2
            status, text = asyncio.run(readyz(watcher, probe))
            assert status == 200, (status, text)


_TOKENS = st.one_of(st.sampled_from(["Content-Length", "host", "Proxy-Foo"]),
                    st.from_regex(r"[A-Za-z0-9!#$%&'*+\-.^_`|~:]{1,12}", fullmatch=True))
_PATHS = st.from_regex(r"(/[a-z0-9%é ?]{0,4}){0,3}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_TOKENS, st.text()), st.text(), st.one_of(_PATHS, st.text()))
def test_what_the_checks_accept_is_written_as_one_header_line_and_a_clean_path(name: str, value: str,
                                                                              prefix: str) -> None:
    from modelyard.gateway.state import InvalidTable, _header_lines

    if not header_name_problem(name) and not owned_header_problem(name) and not header_value_problem(value, None):
        line = _header_lines(((name, value),), "test")
        head, _, rest = line.partition(b": ")
        assert rest.endswith(b"\r\n") and not any(c in rest[:-2] for c in b"\r\n\0") and b":" not in head
        assert rest[:-2] == value.encode("utf-8")
    else:  # the worker refuses what the watcher would have rejected
        with pytest.raises(InvalidTable):
            _header_lines(((name, value),), "test")
    if not path_problem(prefix):
        assert prefix.isascii() and not any(c in prefix for c in " ?#\r\n\0")


def test_the_data_plane_writes_no_header_that_could_split_the_head() -> None:
    from modelyard.gateway.state import InvalidTable, _header_lines, valid_header
    assert valid_header("x-team", "a b\tc é") and valid_header("x-a", "\u2603")  # text, written as UTF-8
    for name, value in (("x-a", "v\r\nx-evil: 1"), ("x-a", "v\0"), ("x a", "v"), ("x-a:", "v"), ("", "v"),
                        ("x-\u00e9", "v")):
        assert not valid_header(name, value), (name, value)
    assert _header_lines((("x-ok", "1"),), "test") == b"x-ok: 1\r\n"
    with pytest.raises(InvalidTable):  # the worker keeps its previous table rather than write it
        _header_lines((("x-ok", "1"), ("x-bad", "1\r\nx-evil: 2")), "test")

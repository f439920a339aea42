"""The routing table's format version: written by the control process, checked by the worker on decode."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest

from modelyard.core.table import (
    TABLE_FORMAT, Backend, BackendHeader, CondKind, Endpoint, ErrorReply, Table, TableFormatError, decode_table,
    decode_table_in_steps, encode_table,
)
from tests.support import worker_on_segment


def _table(generation: int) -> Table:
    backend = Backend("ns/b", "OpenAI", None, "/v1", (Endpoint("127.0.0.1", 1),), None,
                      error=ErrorReply(503, "backend_not_found", "no such backend"))
    return Table(generation, (), {}, (), (), (backend,), (), (), {})


def _in_format(data: bytes, fmt: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, 4, fmt)
    return bytes(out)


def _steps(data: bytes) -> Table:
    gen = decode_table_in_steps(data)
    try:
        while True:
            next(gen)
    except StopIteration as done:
        return done.value


def test_the_format_is_written_and_checked() -> None:
    data = encode_table(_table(1))
    assert struct.unpack_from("<I", data, 4)[0] == TABLE_FORMAT
    assert decode_table(data) == _table(1) == _steps(data)
    assert decode_table(data).backends[0].error == ErrorReply(503, "backend_not_found", "no such backend")
    newer = _in_format(data, TABLE_FORMAT + 1)
    for decode in (decode_table, _steps):
        with pytest.raises(TableFormatError, match=f"format {TABLE_FORMAT + 1}.*reads format {TABLE_FORMAT}") as info:
            decode(newer)
        assert info.value.found == TABLE_FORMAT + 1
        with pytest.raises(TableFormatError, match="no format mark"):
            decode(data[8:])  # a table from before format marks
        with pytest.raises(TableFormatError):
            decode(b"")


def test_enums_travel_as_ints_and_are_checked() -> None:
    assert CondKind.REGEX == 1 and BackendHeader.NAMESPACE == 2
    assert isinstance(decode_table(encode_table(_table(1))).backends[0].error, ErrorReply)


def test_a_worker_keeps_its_table_on_a_format_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from modelyard.config.admin import config_view
    from modelyard.config.compiler import CompileOptions
    from modelyard.config.watcher import ConfigWatcher
    from modelyard.gateway import app as app_module

    def complaints() -> int:
        return sum("cannot read routing table generation 2" in r.getMessage() for r in caplog.records)

    with worker_on_segment(tmp_path, monkeypatch, encode_table(_table(1))) as (app, segment, loop):
        app.__rsgi_init__(loop)
        assert app.state is not None and app.state.generation == 1
        segment.publish(_in_format(encode_table(_table(2)), TABLE_FORMAT + 1), 2)
        with caplog.at_level(logging.ERROR, logger="modelyard.worker"):
            for _ in range(5):  # the watch task's ticks
                app._refresh()
            assert app.state.generation == 1
            assert complaints() == 1  # one clear line, not one per tick
            assert not any(r.exc_info for r in caplog.records)
            app.format_error_at -= app_module.FORMAT_REMINDER  # a while later: said again
            app._refresh()
            app._refresh()
            assert complaints() == 2

        watcher = ConfigWatcher([], CompileOptions(), None)
        watcher.generation = 2
        assert config_view(watcher)["workers"] == [{"pid": os.getpid(), "generation": 1, "failed": 2}]

        segment.publish(encode_table(_table(3)), 3)  # the control process speaks our format again
        app._refresh()
        assert app.state.generation == 3 and app.format_error == ""
        assert config_view(watcher)["workers"] == [{"pid": os.getpid(), "generation": 3}]

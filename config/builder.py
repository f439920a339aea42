"""Building a routing table from the files, in a process of its own while the gateway runs.

Parsing a 10,000-rule file takes seconds, and PyYAML's C parser holds the GIL while it
composes a document, so in a thread it still stalls the event loop that answers the
admin port (half a second at a time, measured). A single forked worker process does
the reading, parsing and compiling instead; the table comes back msgspec-encoded,
which is a hundred times faster than pickling it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import setproctitle

from modelyard.config.compiler import CompileOptions, Compiled, compile_table
from modelyard.config.diagnostics import Diagnostics
from modelyard.config.loader import LoadResult, expand_paths, load_paths
from modelyard.core.table import decode_table, encode_table

log = logging.getLogger("modelyard.config")

Fingerprint = tuple[tuple[str, int, int, int], ...]
PR_SET_PDEATHSIG = 1


def fingerprint(paths: Sequence[str]) -> Fingerprint:
    out = []
    for f in expand_paths(paths, Diagnostics()):
        try:
            st = os.stat(f)
        except OSError:
            continue
        out.append((f, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass
class Build:
    """What one load and compile found: made off the event loop, applied on it."""
    diags: Diagnostics
    compiled: Compiled
    fingerprint: Fingerprint
    unknown_kinds: set[str]  # the kinds reported as skipped so far, this load's included

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.diags, self.compiled.summary, encode_table(self.compiled.table), self.fingerprint,
                  self.unknown_kinds, self.compiled.cloud_sources)
        return _unpack, fields


def _unpack(diags: Diagnostics, summary: list[str], table: bytes, taken: Fingerprint, kinds: set[str],
            cloud_sources: dict[str, Any]) -> Build:
    return Build(diags, Compiled(decode_table(table), summary, cloud_sources), taken, kinds)


def build(paths: Sequence[str], options: CompileOptions, unknown_kinds: set[str]) -> Build:
    """Read, validate and compile the files; touches no shared state."""
    taken = fingerprint(paths)  # before reading: a change while reading shows as a new fingerprint
    diags = Diagnostics()
    result = load_paths(paths, diags, unknown_kinds) if paths else LoadResult()
    options = dataclasses.replace(options, mtimes={f: _mtime(f) for f in result.files})
    return Build(diags, compile_table(result.resources, diags, options), taken, unknown_kinds)


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _builder_init() -> None:
    setproctitle.setproctitle("modelyard config-builder")
    try:  # ends with the control process, even one that was killed (Linux)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Builder:
    """Runs build() in one worker process, forked when start() is called.

    Call start() before the process has threads (forking copies only the calling one, and
    a lock another thread held stays held in the copy). Without it, or once the worker has
    died, builds run in a thread: slower to answer the admin port, but still correct.
    """

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def start(self) -> None:
        if threading.active_count() > 1:
            log.warning("config reloads parse in a thread: the control process has threads already, "
                        "so it cannot fork a builder safely")
            return
        pool = concurrent.futures.ProcessPoolExecutor(1, multiprocessing.get_context("fork"), _builder_init)
        pool.submit(int).result()  # forks now, while this process is single-threaded
        self._pool = pool

    async def build(self, paths: Sequence[str], options: CompileOptions, unknown_kinds: set[str]) -> Build:
        loop = asyncio.get_running_loop()
        if self._pool is not None:
            try:
                return await loop.run_in_executor(self._pool, build, paths, options, unknown_kinds)
            except BrokenProcessPool:
                log.warning("the config builder process died; building in a thread from now on")
                self.close()
        return await loop.run_in_executor(None, build, paths, options, unknown_kinds)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            # Ended here rather than left to the executor's exit hook, which held the control
            # process's exit for seconds; a build under way is abandoned (stopping, or broken).
            for proc in list((pool._processes or {}).values()):
                proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)

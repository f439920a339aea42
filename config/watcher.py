"""The config watcher: load -> validate -> compile -> publish, again whenever a file changes.

Changes are noticed through watchfiles (inotify and friends) and, as a safety
net for filesystems and volume types that drop events, a cheap fingerprint of
the files (path, inode, size, mtime) taken every second. Deleting a rule, an
object or a whole file is just another change: the next table no longer has it.
A configuration with errors is reported and the last good table keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import watchfiles

from modelyard.config.builder import Build, Builder, Fingerprint, build, fingerprint
from modelyard.config.cloud_credentials.sources import Source
from modelyard.config.compiler import CompileOptions, with_health_slots
from modelyard.config.diagnostics import Diagnostic, Diagnostics
from modelyard.config.loader import YAML_SUFFIXES
from modelyard.core.health import HealthBoard
from modelyard.core.shm import TableSegment
from modelyard.core.table import Table, encode_table

log = logging.getLogger("modelyard.config")

POLL_INTERVAL = 1.0


class ConfigWatcher:
    def __init__(self, paths: Sequence[str], options: CompileOptions, segment: TableSegment | None,
                 on_reload: Callable[[bool, int], None] = lambda ok, generation: None,
                 health: HealthBoard | None = None):
        self.paths = list(paths)
        self.on_reload = on_reload  # (compiled?, generation in use), for metrics
        self.options = options
        self.segment = segment
        self.health = health  # endpoints get their slots on it before a table is published
        # A restarted watcher continues the numbering, so workers notice its first table.
        self.generation = segment.generation() if segment is not None else 0
        self.table: Table | None = None
        self.summary: list[str] = []
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.loaded_at: float | None = None
        self.last_attempt_at: float | None = None
        self._unknown_kinds: set[str] = set()
        self._reported: set[str] = set()
        self._payload = b""
        self._fingerprint: Fingerprint = ()
        self.builder = Builder()  # reloads while running; start() it to build in a process of its own
        # The cloud credentials the compiled configuration needs (config/cloud_credentials/), and
        # who wants to know when they change (the credential refresher).
        self.cloud_sources: dict[str, Source] = {}
        self.on_sources: Callable[[dict[str, Source]], None] | None = None

    def reload(self) -> bool:
        """Load and compile everything; publish when it compiled and differs. True when it compiled."""
        self.last_attempt_at = time.time()
        return self._apply(build(self.paths, self.options, self._unknown_kinds))

    async def reload_in_background(self) -> bool:
        """reload(), with the reading, parsing and compiling away from the event loop, so that the
        admin port answers meanwhile (a 10,000-rule file takes seconds)."""
        self.last_attempt_at = time.time()
        try:
            built = await self.builder.build(self.paths, self.options, set(self._unknown_kinds))
        except Exception:  # a bug in loading or compiling must not stop the watcher; the table in use stays
            log.exception("reloading the configuration failed; still serving generation %d", self.generation)
            self.on_reload(False, self.generation)
            return False
        return self._apply(built)

    def _apply(self, built: Build) -> bool:
        """Report what a build found; publish its table when it compiled and differs."""
        self._fingerprint = built.fingerprint
        self._unknown_kinds = built.unknown_kinds
        diags, compiled = built.diags, built.compiled
        self._report(diags)
        if diags.errors:
            self.errors = diags.errors
            self.on_reload(False, self.generation)
            if self.table is not None:
                log.error("configuration has %d error(s); still serving generation %d", len(diags.errors), self.generation)
            return False
        self.errors = []
        self.warnings = diags.warnings
        self.summary = compiled.summary
        if compiled.cloud_sources != self.cloud_sources:  # a Secret can change with the table unchanged
            self.cloud_sources = compiled.cloud_sources
            if self.on_sources is not None:
                self.on_sources(self.cloud_sources)
        table = compiled.table
        if self.health is not None:
            table = with_health_slots(table, self.health.assign)
        payload = encode_table(table)
        if payload == self._payload:
            return True
        self._payload = payload
        self.generation += 1
        self.table = msgspec.structs.replace(table, generation=self.generation)
        if self.segment is not None:
            self.segment.publish(encode_table(self.table), self.generation)
        self.loaded_at = time.time()
        self.on_reload(True, self.generation)
        log.info("published routing table generation %d (%d rules, %d models)", self.generation,
                 len(self.table.rules), len(self.table.models))
        return True

    def _report(self, diags: Diagnostics) -> None:
        # Warnings and notes are logged once each; errors every time a load fails.
        for d in diags.items:
            text = str(d)
            if d.severity == "error":
                log.error("%s", text)
            elif text not in self._reported:
                self._reported.add(text)
                log.log(logging.WARNING if d.severity == "warning" else logging.INFO, "%s", text)

    def changed(self) -> bool:
        return fingerprint(self.paths) != self._fingerprint

    async def run(self) -> None:
        """Reload on every change until cancelled."""
        if not self.paths:
            return
        wake = asyncio.Event()
        tasks = [asyncio.create_task(self._watch(dirs, recursive, wake)) for dirs, recursive in self._watch_sets()]
        try:
            while True:
                try:
                    await asyncio.wait_for(wake.wait(), POLL_INTERVAL)
                    notified = True
                except asyncio.TimeoutError:
                    notified = False
                wake.clear()
                # An event always reloads: an in-place edit can keep size and mtime (coarse
                # timestamps, tools that preserve them). Publishing is skipped when the
                # compiled table is unchanged, so a spurious event costs one compile.
                if notified or self.changed():
                    # One reload at a time; a change during it wakes the next, which reads the files afresh.
                    await self.reload_in_background()
        finally:
            for t in tasks:
                t.cancel()

    def _watch_sets(self) -> list[tuple[list[str], bool]]:
        dirs = [p for p in self.paths if Path(p).is_dir()]
        # abspath, not resolve: a ConfigMap volume's files are symlinks into a directory
        # that kubelet replaces on every update; the folder holding the links stays.
        parents = sorted({os.path.dirname(os.path.abspath(p)) for p in self.paths if not Path(p).is_dir()})
        return [(d, r) for d, r in ((dirs, True), (parents, False)) if d]

    @staticmethod
    async def _watch(dirs: list[str], recursive: bool, wake: asyncio.Event) -> None:
        def relevant(_change: watchfiles.Change, path: str) -> bool:
            return path.endswith(YAML_SUFFIXES) or os.path.basename(path).startswith("..")

        while True:
            existing = [d for d in dirs if os.path.isdir(d)]
            if not existing:
                await asyncio.sleep(POLL_INTERVAL)
                continue
            try:
                async for _ in watchfiles.awatch(*existing, watch_filter=relevant, recursive=recursive,
                                                 debounce=50, step=20):
                    wake.set()
            except Exception as e:  # the poll loop still notices changes
                log.warning("file watching stopped (%s); falling back to polling", e)
                return

"""The control process: the config watcher and the admin server on one event loop, and the
tokens process (modelyard.config.token_process) it keeps running as a child, so that counting's memory
and crashes stay out of this process.

It is the only process that reads configuration files. It publishes compiled
tables into the shared segment and reports its first load to the supervisor,
which refuses to start the workers on a configuration that does not compile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import setproctitle
from aiohttp import web

from modelyard.config.cloud_credentials.fetch import Fetcher
from modelyard.config.cloud_credentials.refresher import CredentialRefresher
from modelyard.config.compiler import CompileOptions
from modelyard.config.watcher import ConfigWatcher
from modelyard.core.credentials import CredentialsSegment
from modelyard.core.health import HealthBoard
from modelyard.core.shm import TableSegment
from modelyard.core.table import ListenerLimits, Table, credential_headers
from modelyard.config.token_process import TokenProcess
from modelyard.core.settings import DEFAULT_MAX_COUNT_BYTES, credential_labels, current as current_settings


@dataclass
class RunOptions:
    config: list[str]
    backend: str | None
    api_key: str | None
    host: str
    port: int | None  # None: the Gateway listener's port, else 1975
    admin_port: int
    workers: int
    resolve: dict[str, str] = field(default_factory=dict)
    grace: float = 30.0
    admin_host: str = "127.0.0.1"
    # None: from the ClientTrafficPolicy, else the supervisor's default (see supervisor.listener_settings)
    max_connections: int | None = None  # client connections per instance (Granian's backlog and backpressure)
    header_timeout: float | None = None  # seconds to receive a request head, idle keep-alive gaps included
    body_timeout: float | None = None  # seconds to receive a request body
    retries: int = 2
    allow_backend_header: bool = False
    access_log: str = "-"  # "-" stdout, "off", or a file
    header_labels: list[tuple[str, str]] = field(default_factory=list)  # (request header, metric label)
    tokenizers: list[tuple[str, str]] = field(default_factory=list)  # (model pattern, tokenizer.json)
    max_count_bytes: int = DEFAULT_MAX_COUNT_BYTES  # request bytes the gateway's own token counting takes
    log_level: str = "info"
    backend_source: str = ""  # where --backend came from, for the start-up banner


@dataclass
class FirstLoad:
    ok: bool
    summary: list[str]
    errors: list[str]
    warnings: list[str]
    listen_port: int | None
    generation: int
    listener: ListenerLimits | None = None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


CONTROL_NICE = 10


def control_main(opts: RunOptions, conn: Connection | None, listen_port: int | None = None) -> int:
    """Entry point of the control process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us in order
    setproctitle.setproctitle("modelyard control")
    # The control plane takes only the CPU the workers leave: it shares their cores, and its work
    # (compiling a reload, loading a tokenizer, counting tokens, answering a scrape) can run for
    # a second at a time, which at the workers' priority would stall requests behind it.
    os.nice(CONTROL_NICE)
    setup_logging(opts.log_level)
    from modelyard.core import metrics

    log = logging.getLogger("modelyard.config")
    started_with: list[ListenerLimits] = []
    withheld: list[str] = []  # the --metrics-header headers last found to carry client keys

    def on_reload(ok: bool, generation: int) -> None:
        metrics.CONFIG_RELOADS.labels("ok" if ok else "error").inc()
        metrics.CONFIG_GENERATION.set(generation)
        table = watcher.table if ok else None
        if table is None:
            return
        if not started_with:
            started_with.append(table.listener)
        elif table.listener != started_with[0]:
            log.warning("ClientTrafficPolicy connectionLimit, requestReceivedTimeout and idleTimeout apply at start: "
                        "the changed values take effect when the gateway restarts")
        _warn_of_credential_labels(opts.header_labels, table, withheld, log)

    settings = current_settings()  # the shared segments' paths, from the supervisor
    segment = TableSegment.attach(settings.table, writable=True)
    health_path = settings.health_board
    health = HealthBoard.attach(health_path) if health_path else None
    options = CompileOptions(resolve=opts.resolve, default_backend=opts.backend, default_api_key=opts.api_key,
                             retries=opts.retries, allow_backend_header=opts.allow_backend_header)
    watcher = ConfigWatcher(opts.config, options, segment, on_reload, health)
    ok = watcher.reload()
    if conn is not None:
        table = watcher.table
        conn.send(FirstLoad(ok, watcher.summary, [str(e) for e in watcher.errors], [str(w) for w in watcher.warnings],
                            table.listen_port if table else None, watcher.generation,
                            table.listener if table else None))
        port = conn.recv() if ok else None  # the supervisor answers with the port the workers listen on
        conn.close()
    else:
        port = listen_port
    if not ok or port is None:
        return 1
    watcher.builder.start()  # reloads parse in a process of their own; forked before any thread exists
    asyncio.run(_serve(watcher, opts, port))
    return 0


def _warn_of_credential_labels(header_labels: list[tuple[str, str]], table: Table, withheld: list[str],
                               log: logging.Logger) -> None:
    """Say once per change which --metrics-header labels the workers leave empty because a
    credentialOverride now reads client keys from their header."""
    now = credential_labels(header_labels, credential_headers(table))
    if now != withheld:
        withheld[:] = now
        if now:
            log.warning("--metrics-header %s: a BackendSecurityPolicy credentialOverride reads client keys from "
                        "this header, so its metric label is left empty", ", ".join(now))


async def _serve(watcher: ConfigWatcher, opts: RunOptions, port: int) -> None:
    from modelyard.config.admin import ADMIN_SERVER_LOG, ListenerProbe, build_admin_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Cloud credentials: fetched and refreshed here, published to the workers beside the table.
    credentials_path = current_settings().credentials
    fetcher = Fetcher(resolve=opts.resolve)
    refresher = CredentialRefresher(CredentialsSegment.attach(credentials_path, writable=True)
                                    if credentials_path else None, fetcher.fetch)
    refresher.update(watcher.cloud_sources)
    watcher.on_sources = refresher.update
    refreshing = asyncio.create_task(refresher.run())
    runner = web.AppRunner(build_admin_app(watcher, ListenerProbe(opts.host, port), refresher), access_log=None,
                           logger=ADMIN_SERVER_LOG)
    await runner.setup()
    await web.TCPSite(runner, opts.admin_host, opts.admin_port, reuse_address=True).start()
    watch = asyncio.create_task(watcher.run())
    tokens = None
    socket_path = current_settings().tokens_socket
    if socket_path:  # counting runs in a child: a tokenizer crash or OOM leaves the admin port and watcher
        tokens = TokenProcess(socket_path)  # which inherits the settings: tokenizers, log level
        tokens.start()
    parent = os.getppid()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                if os.getppid() != parent:  # the supervisor is gone: do not linger as an orphan
                    break
    finally:
        watch.cancel()
        refreshing.cancel()
        await refresher.close()
        await fetcher.close()
        watcher.builder.close()  # started here, ended here: with no files to watch, run() returned at once
        if tokens is not None:
            await tokens.stop()
        await runner.cleanup()

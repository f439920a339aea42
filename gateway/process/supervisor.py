"""The supervisor behind `modelyard run`: segment, control process, then Granian workers.

Order matters: the shared segment and the metrics directory exist before any
child starts; the control process must compile the configuration before a
worker is spawned; the listening port is checked first, since Granian binds
with SO_REUSEPORT and would otherwise quietly share a port another server holds.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import msgspec

from modelyard.core import segments
from modelyard.core.credentials import CredentialsSegment
from modelyard.core.health import HealthBoard
from modelyard.core.settings import Settings
from modelyard.core.shm import TableSegment, default_dir
from modelyard.core.table import ListenerLimits
from modelyard.config.control import FirstLoad, RunOptions, control_main, setup_logging
from modelyard.core import worker_registry

DEFAULT_PORT = 1975
log = logging.getLogger("modelyard.supervisor")


class StartupError(RuntimeError):
    pass


def port_free(host: str, port: int) -> bool:
    """Whether `port` can be bound exclusively (no SO_REUSEPORT, so any holder makes it fail)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def require_port(host: str, port: int, what: str) -> None:
    if not port_free(host, port):
        raise StartupError(f"{what} port {port} on {host} is already in use; stop the other server "
                           f"or choose another port with --{'admin-port' if what == 'admin' else 'port'}")


class ControlProcess:
    """Runs control_main in a child, and starts it again if it dies while the gateway runs."""

    def __init__(self, opts: RunOptions):
        self.opts = opts
        self.ctx = multiprocessing.get_context("fork")
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.port: int | None = None
        self.stopping = threading.Event()

    def first_load(self) -> FirstLoad:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_control_entry, args=(self.opts, child), name="modelyard-control")
        self.proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(120):
            raise StartupError("the config watcher did not report within 120 s")
        try:
            return parent.recv()
        except EOFError:
            raise StartupError("the config watcher exited before loading the configuration") from None

    def confirm(self, port: int) -> None:
        self.port = port
        self._conn.send(port)
        self._conn.close()
        threading.Thread(target=self._keep_alive, daemon=True, name="control-monitor").start()

    def _keep_alive(self) -> None:
        while not self.stopping.is_set():
            assert self.proc is not None
            self.proc.join(0.5)
            if self.proc.exitcode is None or self.stopping.is_set():
                continue
            time.sleep(0.5)
            if self.stopping.is_set():
                return
            print(f"modelyard: config watcher exited ({self.proc.exitcode}); restarting it", file=sys.stderr)
            self.proc = self.ctx.Process(target=_control_entry, args=(self.opts, None, self.port),
                                         name="modelyard-control")
            self.proc.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()


def _control_entry(opts: RunOptions, conn, port: int | None = None) -> None:  # type: ignore[no-untyped-def]
    sys.exit(control_main(opts, conn, port))


def run(opts: RunOptions) -> int:
    setup_logging(opts.log_level)
    run_dir = tempfile.mkdtemp(prefix=segments.RUN_DIR_PREFIX, dir=default_dir())
    paths = segments.run_paths(run_dir)
    for folder in (paths.workers, paths.metrics):  # the others are files, made by their owners
        os.mkdir(folder)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = paths.metrics  # prometheus-client's own variable
    segment = TableSegment.create(paths.table)
    HealthBoard.create(path=paths.health_board)  # removed with the run directory
    CredentialsSegment.create(path=paths.credentials)  # written by the control process
    # Set before the control process and the workers are forked; the tokens socket is served
    # by the control's tokens process.
    settings = Settings(table=segment.path, health_board=paths.health_board, workers_dir=paths.workers,
                        tokens_socket=paths.tokens_socket,
                        credentials=paths.credentials, access_log=opts.access_log,
                        header_labels=tuple(opts.header_labels), tokenizers=tuple(opts.tokenizers),
                        max_count_bytes=opts.max_count_bytes, log_level=opts.log_level)
    settings.export()
    control = ControlProcess(opts)
    try:
        require_port(opts.admin_host, opts.admin_port, "admin")
        first = control.first_load()
        for w in first.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if not first.ok:
            for e in first.errors:
                print(f"error: {e}", file=sys.stderr)
            raise StartupError(f"the configuration has {len(first.errors)} error(s); nothing was started")
        port = opts.port or first.listen_port or DEFAULT_PORT
        require_port(opts.host, port, "listener")
        control.confirm(port)
        listener_settings(opts, first.listener or ListenerLimits())
        assert opts.body_timeout is not None
        settings = msgspec.structs.replace(settings, body_timeout=opts.body_timeout)
        settings.export()  # for the workers, forked later
        assert opts.max_connections is not None
        raise_open_files(opts.max_connections, opts.workers)
        _banner(opts, first, port)
        return _serve_workers(opts, port, control, settings)
    except StartupError as e:
        print(f"modelyard: {e}", file=sys.stderr)
        return 1
    finally:
        control.stop()
        segment.close()
        segment.unlink()
        shutil.rmtree(run_dir, ignore_errors=True)


DEFAULT_MAX_CONNECTIONS = 16384
DEFAULT_HEADER_TIMEOUT = 30.0
DEFAULT_BODY_TIMEOUT = 60.0
NO_TIMEOUT = 86400.0  # Granian's head timeout cannot be switched off; a zero duration means a day


def listener_settings(opts: RunOptions, limits: ListenerLimits) -> None:
    """Fill in what the flags left out: from the ClientTrafficPolicy (with Envoy Gateway's meaning:
    requestReceivedTimeout bounds receiving the whole request, idleTimeout a connection without a
    request; Granian has one timer for a request head and for idle keep-alive gaps, so it gets the
    smaller), else the defaults."""
    if opts.max_connections is None:
        opts.max_connections = limits.connection_limit or DEFAULT_MAX_CONNECTIONS
    if opts.header_timeout is None:
        found = [t for t in (limits.request_received_timeout, limits.idle_timeout) if t is not None]
        opts.header_timeout = min(found) if found else DEFAULT_HEADER_TIMEOUT
    if opts.body_timeout is None:
        received = limits.request_received_timeout
        opts.body_timeout = DEFAULT_BODY_TIMEOUT if received is None else received
    if opts.header_timeout == 0:
        opts.header_timeout = NO_TIMEOUT


def raise_open_files(max_connections: int, workers: int) -> int:
    """Raise the open-file soft limit to the hard limit (workers inherit it); warn when even that is
    below what --max-connections needs: a worker holds a file per client connection, one more
    upstream per stream, and a few of its own. Returns the soft limit in force."""
    wanted = 2 * -(-max_connections // workers) + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard or hard == resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        print(f"warning: the open-file limit is {soft}; a worker may need {wanted} files for "
              f"{max_connections} client connections and their upstream connections: raise it (ulimit -Hn) "
              f"or lower --max-connections", file=sys.stderr)
    return soft


def connection_limits(max_connections: int, workers: int) -> tuple[int, int]:
    """Granian's listen backlog (the kernel caps it at net.core.somaxconn) and per-worker
    backpressure: the connections each worker serves at once, idle keep-alives included."""
    return max_connections, -(-max_connections // workers)


def _banner(opts: RunOptions, first: FirstLoad, port: int) -> None:
    sources = ", ".join(opts.config) if opts.config else "no files"
    print(f"modelyard: loaded {sources} (routing table generation {first.generation})")
    if opts.backend:
        print(f"modelyard: default backend {opts.backend} ({opts.backend_source})")
    for line in first.summary:
        print(f"  {line}")
    print(f"modelyard: listening on {_url(opts.host, port)} ({opts.workers} worker{'s' if opts.workers != 1 else ''}); "
          f"admin on {_url(opts.admin_host, opts.admin_port)} (/healthz /readyz /metrics /config)", flush=True)


def _url(host: str, port: int) -> str:
    """What is really bound: 0.0.0.0 means every interface, and says so."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _serve_workers(opts: RunOptions, port: int, control: ControlProcess, settings: Settings) -> int:
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    class _Server(Server):  # type: ignore[misc, valid-type]
        def _spawn_worker(self, idx: int, target: Any, callback_loader: Any) -> Any:
            worker = super()._spawn_worker(idx, target, callback_loader)
            start = worker.start

            def masked_start() -> None:
                # Fork with SIGINT/SIGTERM blocked: a stop signal that reaches a starting worker
                # after Granian gave it loop signal handlers but before its loop runs would be
                # lost, and the worker then "refused to gracefully stop". The child unblocks once
                # its loop runs (_MaskedApp), so a pending signal reaches the loop's handlers.
                old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
                try:
                    start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)

            worker.start = masked_start
            return worker

        def signal_handler_interrupt(self, *args: object, **kwargs: object) -> None:
            # Workers never run this copy: they are forked with the stop signals blocked.
            control.stopping.set()  # shutting down: a control process that exits now stays down
            super().signal_handler_interrupt(*args, **kwargs)

        def _stop_workers(self) -> None:
            # Granian's own version joins each worker here while that worker's watcher thread
            # joins it too. Whichever reaps it second gets "no such child", and until the other
            # thread records the exit code the worker reads as alive; on a busy machine that lasts
            # past Granian's 1 ms second look, and it warns that a worker which exited "refused to
            # gracefully stop" and kills it. Here a worker is stopped once its process is gone.
            for wrk in self.wrks:
                wrk.terminate()
            deadline = time.monotonic() + self.workers_kill_timeout
            for wrk in self.wrks:
                while _running(wrk.inner.pid) and time.monotonic() < deadline:
                    wrk.join(max(0.001, min(0.1, deadline - time.monotonic())))
                if _running(wrk.inner.pid):
                    log.warning("worker-%d did not stop within %ds: killing it", wrk.idx + 1,
                                self.workers_kill_timeout)
                    wrk.kill()
                    wrk.join()

        def shutdown(self, exit_code: int = 0) -> None:
            requests, streams = worker_registry.load(settings.workers_dir)
            log.info("draining: %d request(s) in flight, %d of them streams; up to %gs", requests, streams,
                     opts.grace)
            started = time.monotonic()
            try:
                super().shutdown(exit_code)
            finally:
                log.info("drained and stopped in %.1fs", time.monotonic() - started)

    assert opts.max_connections is not None and opts.header_timeout is not None
    backlog, backpressure = connection_limits(opts.max_connections, opts.workers)
    server = _Server(
        "modelyard.gateway.app:app",
        address=opts.host,
        port=port,
        interface=Interfaces.RSGI,
        workers=opts.workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        backlog=backlog,
        backpressure=backpressure,
        # The head timeout also closes idle keep-alive connections and ones that never send a byte
        # (Granian 2 has no separate idle timeout).
        http1_settings=HTTP1Settings(header_read_timeout=max(1, int(opts.header_timeout * 1000)), keep_alive=True),
        websockets=False,
        log_level=LogLevels.warning,
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=max(1, int(opts.grace)),
        process_name="modelyard",
    )
    server.serve(target_loader=_load_app, wrap_loader=False)
    return 0


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _running(pid: int | None) -> bool:
    """Whether a worker process still runs: not reaped, and not a zombie waiting to be."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        if os.path.isdir("/proc/self"):
            return False  # Linux: no such process
    try:  # no /proc (macOS): signal 0 says whether the PID exists; a zombie counts until reaped
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _MaskedApp:
    """The worker's app, unblocking the stop signals (blocked at fork) once its event loop runs:
    uvloop listens for the signals it was given only while running, so one that arrives between
    Granian's add_signal_handler and the loop's start would be dispatched to a no-op and lost."""

    def __init__(self, app: Any):
        self.app = app
        self.__rsgi__ = app.__rsgi__
        self.__rsgi_del__ = app.__rsgi_del__

    def __rsgi_init__(self, loop: Any) -> None:
        loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, _STOP_SIGNALS)
        self.app.__rsgi_init__(loop)


def _load_app() -> _MaskedApp:
    from modelyard.gateway.app import app
    return _MaskedApp(app)
